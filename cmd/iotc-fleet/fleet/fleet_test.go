package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc"
)

// bound is how long any wait in these tests may take before failing.
const bound = time.Minute

func startLocal(t *testing.T) *Local {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	l, err := StartEmulator(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// syncBuffer is a bytes.Buffer safe for the summary goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type runResult struct {
	r   Report
	err error
}

func runAsync(ctx context.Context, f *Fleet) <-chan runResult {
	done := make(chan runResult, 1)
	go func() {
		r, err := f.Run(ctx)
		done <- runResult{r, err}
	}()
	return done
}

func waitRun(t *testing.T, done <-chan runResult) Report {
	t.Helper()
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatal(res.err)
		}
		return res.r
	case <-time.After(bound):
		t.Fatal("Run did not return after its context ended")
	}
	return Report{}
}

// waitFor polls cond until it holds, failing after bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFleetTelemetryPropertiesCommands(t *testing.T) {
	for _, tr := range []iotc.Transport{iotc.MQTT, iotc.AMQP} {
		t.Run(tr.String(), func(t *testing.T) {
			l := startLocal(t)
			target, err := l.Target(tr)
			if err != nil {
				t.Fatal(err)
			}
			var out syncBuffer
			f, err := New(Config{
				Devices: 4, IDPattern: "t-" + tr.String() + "-%d", Transport: tr, Target: target,
				Interval: 20 * time.Millisecond, ConnectRate: -1, SummaryEvery: 50 * time.Millisecond, Out: &out,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := runAsync(ctx, f)
			select {
			case <-f.Ready():
			case <-time.After(bound):
				t.Fatal("the fleet never finished connecting")
			}
			if n := f.Connected(); n != 4 {
				t.Fatalf("%d devices connected, want 4", n)
			}

			cc, err := NewCommandClient(l.RESTURL, l.APIToken, l.RootCAs())
			if err != nil {
				t.Fatal(err)
			}
			defer cc.CloseIdle()
			id := f.DeviceIDs()[2]
			cctx, ccancel := context.WithTimeout(ctx, bound)
			res, err := cc.Invoke(cctx, id, "reboot", map[string]any{"delay": 3}, 10)
			ccancel()
			if err != nil {
				t.Fatal(err)
			}
			var payload struct {
				Device, Command string
				Request         struct{ Delay int }
			}
			if err := json.Unmarshal(res.Response, &payload); err != nil {
				t.Fatalf("response %s: %v", res.Response, err)
			}
			if res.ResponseCode != 200 || payload.Device != id || payload.Command != "reboot" || payload.Request.Delay != 3 {
				t.Errorf("command answer %d %s", res.ResponseCode, res.Response)
			}

			patchProperty(t, l, id, map[string]any{"targetTemperature": 22})
			waitFor(t, "the property acknowledgement", func() bool { return f.props.Load() >= 1 })
			waitFor(t, "telemetry", func() bool { return f.sent.Load() >= 20 })
			waitFor(t, "a live summary line", func() bool { return strings.Contains(out.String(), "connected 4/4") })

			cancel()
			r := waitRun(t, done)
			if r.Connected != 4 || r.PeakConnected != 4 || r.ConnectFailed != 0 || r.Registered != 4 {
				t.Errorf("report: connected %d peak %d failed %d registered %d", r.Connected, r.PeakConnected, r.ConnectFailed, r.Registered)
			}
			if r.Sent < 20 || r.SendErrors != 0 || r.Commands != 1 || r.Properties < 1 || r.SendLatency.Count() != r.Sent {
				t.Errorf("report: sent %d errors %d commands %d properties %d latencies %d", r.Sent, r.SendErrors, r.Commands, r.Properties, r.SendLatency.Count())
			}
			if r.RampTime <= 0 || r.ConnectLatency.Count() != 4 {
				t.Errorf("report: ramp %s, %d connect latencies", r.RampTime, r.ConnectLatency.Count())
			}
			var table bytes.Buffer
			r.WriteTable(&table)
			for _, want := range []string{`connected at stop +4\n`, `commands answered +1\n`, `send p50 / p99 / max +\S+ / \S+ / \S+\n`} {
				if !regexp.MustCompile(want).MatchString(table.String()) {
					t.Errorf("summary table lacks %q:\n%s", want, table.String())
				}
			}
		})
	}
}

func patchProperty(t *testing.T, l *Local, id string, patch map[string]any) {
	t.Helper()
	body, _ := json.Marshal(patch)
	req, err := http.NewRequest(http.MethodPatch, l.RESTURL+"/api/devices/"+id+"/properties?api-version="+APIVersion, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", l.APIToken)
	req.Header.Set("Content-Type", "application/json")
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: l.RootCAs()}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: bound}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH properties: HTTP %d", resp.StatusCode)
	}
}

// TestCredentialsCacheSkipsDPS runs a fleet twice against one emulator
// with a credentials directory: the second run registers no device.
func TestCredentialsCacheSkipsDPS(t *testing.T) {
	l := startLocal(t)
	target, err := l.Target(iotc.MQTT)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for run, wantRegistered := range []int{3, 0} {
		f, err := New(Config{Devices: 3, Target: target, Interval: -1, ConnectRate: -1, CredentialsDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := runAsync(ctx, f)
		select {
		case <-f.Ready():
		case <-time.After(bound):
			t.Fatal("the fleet never finished connecting")
		}
		cancel()
		r := waitRun(t, done)
		if r.Connected != 3 || r.Registered != wantRegistered || r.FromCache != 3-wantRegistered {
			t.Errorf("run %d: connected %d, registered %d, from the cache %d; want 3, %d and %d", run, r.Connected, r.Registered, r.FromCache, wantRegistered, 3-wantRegistered)
		}
	}
}

// TestStopDuringRamp cancels a slow ramp after its first device connected:
// Run returns, the devices not yet started are never started, and (TestMain)
// no goroutine is left behind.
func TestStopDuringRamp(t *testing.T) {
	l := startLocal(t)
	target, err := l.Target(iotc.MQTTWebSockets)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Devices: 50, Transport: iotc.MQTTWebSockets, Target: target, ConnectRate: 5, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, f)
	waitFor(t, "a first connected device", func() bool { return f.Connected() >= 1 })
	cancel()
	r := waitRun(t, done)
	if r.Launched < 1 || r.Launched >= 50 || r.RampTime != 0 {
		t.Errorf("launched %d of 50, ramp time %s: the ramp should have stopped early", r.Launched, r.RampTime)
	}
	if r.ConnectFailed != 0 {
		t.Errorf("%d connect failures counted for a cancelled ramp", r.ConnectFailed)
	}
	select {
	case <-f.Ready():
		t.Error("Ready closed though the ramp did not finish")
	default:
	}
}

// TestDuration stops the fleet by itself after Config.Duration.
func TestDuration(t *testing.T) {
	l := startLocal(t)
	target, err := l.Target(iotc.AMQPWebSockets)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Devices: 2, Transport: iotc.AMQPWebSockets, Target: target, ConnectRate: -1, Interval: 10 * time.Millisecond, Duration: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	r := waitRun(t, runAsync(context.Background(), f))
	if r.Elapsed < 2*time.Second {
		t.Errorf("stopped after %s, before the 2 s duration", r.Elapsed)
	}
	if r.ConnectFailed != 0 || r.SendErrors != 0 {
		t.Errorf("connect failures %d, send errors %d", r.ConnectFailed, r.SendErrors)
	}
}

// TestChildEmulator runs a fleet against the emulator in a child process
// (this test binary, see TestMain) and checks that Close stops the child.
func TestChildEmulator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	l, err := StartEmulator(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if l.PID == os.Getpid() || l.IDScope == "" || l.GroupKey == "" {
		t.Fatalf("child emulator: pid %d, scope %q", l.PID, l.IDScope)
	}
	target, err := l.Target(iotc.AMQP)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Devices: 3, Transport: iotc.AMQP, Target: target, ConnectRate: -1, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithCancel(ctx)
	done := runAsync(fctx, f)
	waitFor(t, "telemetry to the child emulator", func() bool { return f.Sent() >= 9 })
	fcancel()
	if r := waitRun(t, done); r.Connected != 3 || r.SendErrors != 0 {
		t.Errorf("connected %d, send errors %d", r.Connected, r.SendErrors)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("stopping the child: %v", err)
	}
	if rss, _ := ProcessRSS(fmt.Sprint(l.PID)); rss != 0 {
		t.Errorf("the child process %d is still running after Close", l.PID)
	}
}

// TestShardsSplitTheFleet: N shards of one fleet hold every device once.
func TestShardsSplitTheFleet(t *testing.T) {
	target := Target{IDScope: "0ne00000001", GroupKey: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", ProvisioningHost: "127.0.0.1"}
	seen := map[string]int{}
	for k := range 3 {
		f, err := New(Config{Devices: 10, Target: target, Shard: k, Shards: 3})
		if err != nil {
			t.Fatal(err)
		}
		again, err := New(Config{Devices: 10, Target: target, Shard: k, Shards: 3})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(f.DeviceIDs(), ",") != strings.Join(again.DeviceIDs(), ",") {
			t.Errorf("shard %d is not deterministic: %v, %v", k, f.DeviceIDs(), again.DeviceIDs())
		}
		for _, id := range f.DeviceIDs() {
			seen[id]++
		}
	}
	all, err := New(Config{Devices: 10, Target: target})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range all.DeviceIDs() {
		if seen[id] != 1 {
			t.Errorf("device %s is in %d shards, want 1", id, seen[id])
		}
	}
	if len(seen) != 10 {
		t.Errorf("%d devices over the shards, want 10", len(seen))
	}
	if _, err := New(Config{Devices: 10, Target: target, Shard: 3, Shards: 3}); !errors.Is(err, ErrConfig) {
		t.Errorf("shard 3/3: %v", err)
	}
}

// TestFailuresCountedFromTheFirstAttempt: devices whose DPS refuses the
// connection are shown failing (with the cause) from their first attempt,
// long before their Connect gives up; nothing is counted from a cache.
func TestFailuresCountedFromTheFirstAttempt(t *testing.T) {
	target := Target{IDScope: "0ne00000001", GroupKey: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", ProvisioningHost: "127.0.0.1", Port: 1}
	out := &syncBuffer{}
	f, err := New(Config{Devices: 2, Target: target, Interval: -1, ConnectRate: -1, ConnectTimeout: time.Hour, SummaryEvery: 10 * time.Millisecond, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(ctx, f)
	waitFor(t, "both devices failing", func() bool { n, _ := f.Failing(); return n == 2 })
	waitFor(t, "the live line", func() bool { return strings.Contains(out.String(), "failing 2 (last: ") })
	if _, last := f.Failing(); !strings.Contains(last, "connection refused") {
		t.Errorf("last failure %q does not say why", last)
	}
	cancel()
	r := waitRun(t, done)
	if r.FromCache != 0 || r.Registered != 0 {
		t.Errorf("registered %d, from the cache %d; want 0 and 0", r.Registered, r.FromCache)
	}
}

// TestExternalEmulator drives an emulator the fleet did not start, from
// the info file iotc-emulator writes.
func TestExternalEmulator(t *testing.T) {
	l := startLocal(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, l.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	info, _ := json.Marshal(map[string]any{"idScope": l.IDScope, "groupKey": l.GroupKey, "caFile": ca, "restUrl": l.RESTURL,
		"apiToken": l.APIToken, "mqttAddr": l.MQTTAddr, "webSocketAddr": l.WebSocketAddr, "amqpAddr": l.AMQPAddr, "hubHost": l.HubHost})
	file := filepath.Join(dir, "info.json")
	if err := os.WriteFile(file, info, 0o600); err != nil {
		t.Fatal(err)
	}
	ext, err := ExternalEmulator(file)
	if err != nil {
		t.Fatal(err)
	}
	if ext.APIToken != l.APIToken || ext.RESTURL != l.RESTURL {
		t.Errorf("external emulator %+v", ext)
	}
	target, err := ext.Target(iotc.MQTT)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Devices: 2, Target: target, Interval: -1, ConnectRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(ctx, f)
	select {
	case <-f.Ready():
	case <-time.After(bound):
		t.Fatal("the fleet never finished connecting")
	}
	cancel()
	if r := waitRun(t, done); r.Connected != 2 {
		t.Errorf("connected %d, want 2", r.Connected)
	}
	if _, err := ExternalEmulator(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing info file was accepted")
	}
}

// TestStopsWhenNoDeviceCanConnect: a group key the emulator refuses makes
// every device fail at once; Run then stops by itself, with the cause.
func TestStopsWhenNoDeviceCanConnect(t *testing.T) {
	l := startLocal(t)
	target, err := l.Target(iotc.MQTT)
	if err != nil {
		t.Fatal(err)
	}
	target.GroupKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	f, err := New(Config{Devices: 3, Target: target, Interval: -1, ConnectRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan runResult, 1)
	go func() { r, err := f.Run(context.Background()); done <- runResult{r, err} }()
	select {
	case res := <-done:
		if !errors.Is(res.err, ErrNoneConnected) || !errors.Is(res.err, iotc.ErrUnauthorized) || res.r.ConnectFailed != 3 {
			t.Errorf("Run = %v, %d failed; want ErrNoneConnected with the refusal, 3 failed", res.err, res.r.ConnectFailed)
		}
	case <-time.After(bound):
		t.Fatal("Run kept running with no device able to connect")
	}
}
