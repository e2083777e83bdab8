package dashboardtest

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait bounds every wait of a test: reaching it is a failure, never a
// measurement.
const wait = 20 * time.Second

// skipBrowserEnv set to "1" skips the browser test when no Chromium is
// installed.
const skipBrowserEnv = "IOTC_SKIP_BROWSER_TEST"

// chromium returns the path of a Chromium or Chrome binary, or "".
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser starts headless Chromium; the emulator's certificate is signed by
// its own CA, which this throw-away profile is told to accept.
func browser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	bin := chromium()
	if bin == "" {
		// A skip is invisible in "go test ./..." (only -v prints it), so
		// a missing browser fails unless it is skipped knowingly; CI
		// (.ci/run) installs one and never sets the opt-out.
		if os.Getenv(skipBrowserEnv) != "1" {
			t.Fatalf("no Chromium installed: the dashboard browser test needs one (apt-get install chromium), or set %s=1 to skip it knowingly", skipBrowserEnv)
		}
		t.Skipf("no Chromium installed, and %s=1", skipBrowserEnv)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.Flag("no-sandbox", os.Geteuid() == 0), // CI runs as root
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancelA := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelB()
		cancelA()
	})
	if err := chromedp.Run(bctx); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	return bctx
}

func TestDashboardInBrowser(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 6*wait)
	defer cancel()
	emu, err := emulator.Start(ctx, &emulator.Options{
		MQTTAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0", WebSocketAddr: "-", AMQPAddr: "-", CertDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := emu.Close(); err != nil {
			t.Errorf("emulator Close: %v", err)
		}
	}()
	bctx := browser(t, ctx)

	// A device connects through the SDK.
	host, portStr, _ := net.SplitHostPort(emu.MQTTAddr())
	port, _ := strconv.Atoi(portStr)
	client, err := iotc.New(iotc.Config{
		DeviceID: "thermostat-01", IDScope: emu.IDScope(), Credential: iotc.GroupKey(emu.GroupKey()),
		ModelID: "dtmi:com:example:Thermostat;1", ProvisioningHost: host, Port: port, RootCAs: emu.CAPool(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(context.Background())
	applied := make(chan float64, 4)
	client.OnProperty(func(ctx context.Context, p iotc.Property) iotc.PropertyAck {
		var v float64
		if err := p.Unmarshal(&v); err != nil {
			return iotc.PropertyAck{Status: 400, Description: "not a number"}
		}
		applied <- v
		return iotc.PropertyAck{Status: 200, Description: "heating to " + strconv.FormatFloat(v, 'f', -1, 64)}
	})
	client.OnCommand(func(ctx context.Context, c iotc.Command) iotc.CommandResponse {
		var req map[string]any
		_ = c.Unmarshal(&req)
		return iotc.CommandResponse{Status: 200, Payload: map[string]any{"command": c.Name, "request": req}}
	})
	if err := client.Connect(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := client.SendTelemetry(ctx, map[string]any{"temperature": 20 + float64(i)/2, "humidity": 40 + i}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A second, never-connected device for the list.
	if _, err := emu.CreateDevice("sensor-02"); err != nil {
		t.Fatal(err)
	}

	// Opening the printed URL (token in the fragment) logs in and lists the
	// device as connected.
	var rows int
	if err := run(bctx,
		chromedp.Navigate(emu.DashboardURL()),
		chromedp.WaitVisible(`#dev-thermostat-01 .pill.on`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll("#devices tbody tr[data-id]").length`, &rows),
	); err != nil {
		t.Fatalf("devices page: %v\n%s", err, dump(bctx))
	}
	if rows != 2 {
		t.Errorf("devices page lists %d devices, want 2", rows)
	}
	var href string
	if err := run(bctx, chromedp.Location(&href)); err != nil || strings.Contains(href, "token") {
		t.Errorf("address bar after login is %q (%v): the token must be gone", href, err)
	}
	shot(t, bctx, "dashboard-devices.png")

	// Its telemetry appears in the chart while the page is open.
	if err := run(bctx,
		chromedp.Navigate(emu.RESTURL()+"/devices/thermostat-01"),
		chromedp.WaitVisible(`figure.chart[data-field="temperature"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("device page: %v", err)
	}
	if err := client.SendTelemetry(ctx, map[string]any{"temperature": 27.75, "humidity": 45}, nil); err != nil {
		t.Fatal(err)
	}
	if err := run(bctx,
		chromedp.WaitVisible(`//figure[@data-field="temperature"]//span[@class="last"][text()="27.75"]`, chromedp.BySearch),
		chromedp.WaitVisible(`//ol[@id="raw"]/li[1]/code[contains(text(), "27.75")]`, chromedp.BySearch),
	); err != nil {
		t.Fatalf("live telemetry did not reach the chart: %v", err)
	}

	// A burst of messages keeps the page bounded: the raw list holds the
	// newest 20 only.
	for i := range 60 {
		if err := client.SendTelemetry(ctx, map[string]any{"temperature": 30 + float64(i)/100, "seq": i}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var rawItems int
	if err := run(bctx,
		chromedp.WaitVisible(`//ol[@id="raw"]/li[1]/code[contains(text(), '"seq":59')]`, chromedp.BySearch),
		chromedp.Evaluate(`document.querySelectorAll("#raw li").length`, &rawItems),
	); err != nil {
		t.Fatalf("burst of telemetry: %v", err)
	}
	if rawItems != 20 {
		t.Errorf("raw message list holds %d items after 66 messages, want 20", rawItems)
	}

	// Writing a property in the form reaches the device's handler, and its
	// acknowledgement appears.
	if err := run(bctx,
		chromedp.SetValue(`#write-form input[name=name]`, "targetTemperature", chromedp.ByQuery),
		chromedp.SetValue(`#write-form input[name=value]`, "23.5", chromedp.ByQuery),
		chromedp.Click(`#write-form button[type=submit]`, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-applied:
		if v != 23.5 {
			t.Errorf("device handler got %v, want 23.5", v)
		}
	case <-time.After(wait):
		t.Fatal("the property written in the form never reached the device's handler")
	}
	var ad string
	if err := run(bctx,
		chromedp.WaitVisible(`#writable tr[data-name="targetTemperature"] .pill.acknowledged`, chromedp.ByQuery),
		chromedp.Text(`#writable tr[data-name="targetTemperature"] .ad`, &ad, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("acknowledgement not shown: %v", err)
	}
	if ad != "heating to 23.5" {
		t.Errorf("ack description shown %q", ad)
	}

	// A command typed in the form gets the device's answer shown.
	var status, body string
	if err := run(bctx,
		chromedp.SetValue(`#command-form input[name=name]`, "reboot", chromedp.ByQuery),
		chromedp.SetValue(`#command-form textarea[name=payload]`, `{"delay": 5}`, chromedp.ByQuery),
		chromedp.Click(`#command-form button[type=submit]`, chromedp.ByQuery),
		chromedp.WaitVisible(`//strong[@id="command-status"][text()="200"]`, chromedp.BySearch),
		chromedp.Text(`#command-body`, &body, chromedp.ByQuery),
		chromedp.Text(`#command-status`, &status, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("command answer not shown: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(body), &got); err != nil || got["command"] != "reboot" || got["request"].(map[string]any)["delay"] != 5.0 {
		t.Errorf("command body shown %q (%v)", body, err)
	}
	shot(t, bctx, "dashboard-device.png")

	// Without the session (logged out) the pages are refused: the browser
	// lands on the login page.
	var title string
	if err := run(bctx,
		chromedp.Evaluate(`fetch("/logout", {method: "POST", credentials: "same-origin"}).then(() => true)`, nil, awaitPromise),
		chromedp.Navigate(emu.RESTURL()+"/devices/thermostat-01"),
		chromedp.WaitVisible(`#login-form`, chromedp.ByQuery),
		chromedp.Title(&title),
	); err != nil {
		t.Fatalf("request without the session: %v", err)
	}
	if !strings.HasPrefix(title, "Log in") {
		t.Errorf("without a session the page is %q, want the login page", title)
	}
}

func awaitPromise(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }

// shot saves a full-page screenshot in the test's temp dir, or under docs/
// when IOTC_DASHBOARD_SCREENSHOTS=1 (how docs/dashboard-*.png are made).
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var png []byte
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := t.TempDir()
	if os.Getenv("IOTC_DASHBOARD_SCREENSHOTS") == "1" {
		dir = filepath.Join("..", "..", "docs")
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// dump describes the page for a failure message.
func dump(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var loc, html string
	_ = chromedp.Run(ctx, chromedp.Location(&loc), chromedp.OuterHTML("html", &html, chromedp.ByQuery))
	if len(html) > 4000 {
		html = html[:4000]
	}
	return "at " + loc + ":\n" + html
}

// run runs actions within wait.
func run(ctx context.Context, actions ...chromedp.Action) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return chromedp.Run(ctx, actions...)
}
