package emulator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
)

// dashClient is an HTTPS client of the emulator's dashboard that keeps
// cookies and does not follow redirects.
func dashClient(t *testing.T, e *Emulator) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := restClient(e)
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

func dashGet(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), "GET", u, nil)
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func dashPost(t *testing.T, c *http.Client, u string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctxT(t), "POST", u, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-IOTC-Dashboard", "1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("POST %s: status %d, body not JSON: %v", u, resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

func dashLogin(t *testing.T, e *Emulator, c *http.Client, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), "POST", e.RESTURL()+"/login",
		strings.NewReader(url.Values{"token": {token}, "next": {"/groups"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestDashboardAuth(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", APIToken: "dash-secret"})
	if got, want := e.DashboardURL(), e.RESTURL()+"/#token=dash-secret"; got != want {
		t.Errorf("DashboardURL = %q, want %q", got, want)
	}
	c := dashClient(t, e)
	st, _ := dashGet(t, c, e.RESTURL()+"/")
	if st != http.StatusSeeOther {
		t.Errorf("GET / without a session: %d, want a redirect to /login", st)
	}
	for _, p := range []string{"/live", "/groups/x/keys", "/devices/x/live"} {
		req, _ := http.NewRequestWithContext(ctxT(t), "GET", e.RESTURL()+p, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a session: %d, want 401", p, resp.StatusCode)
		}
	}
	if st, body := dashGet(t, c, e.RESTURL()+"/login"); st != 200 || !strings.Contains(body, `name="token"`) {
		t.Errorf("login page: %d %q", st, body)
	}
	if resp := dashLogin(t, e, c, "wrong"); resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "failed") || len(resp.Cookies()) != 0 {
		t.Errorf("wrong token: %d %q cookies %v", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	resp := dashLogin(t, e, c, "dash-secret")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/groups" {
		t.Fatalf("login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	ck := resp.Cookies()
	if len(ck) != 1 || !ck[0].HttpOnly || !ck[0].Secure || ck[0].SameSite != http.SameSiteStrictMode || strings.Contains(ck[0].Value, "dash-secret") {
		t.Fatalf("session cookie %+v: want one HttpOnly, Secure, SameSite=Strict cookie without the token", ck)
	}
	st, body := dashGet(t, c, e.RESTURL()+"/groups")
	if st != 200 || !strings.Contains(body, "Show keys") || strings.Contains(body, e.GroupKey()) {
		t.Errorf("groups page after login: %d; want the group with its keys hidden until asked", st)
	}
	// The REST API is still served on the same listener, with its own auth.
	if st, _ := restDo(t, e, "GET", "/api/devices", "dash-secret", nil); st != 200 {
		t.Errorf("REST API next to the dashboard: %d", st)
	}
	if st, _ := restDo(t, e, "GET", "/api/devices", "", nil); st != 401 {
		t.Errorf("REST API without a token: %d", st)
	}
	// A state-changing request without the dashboard header is refused
	// even with a session (cross-site forms cannot add it).
	req, _ := http.NewRequestWithContext(ctxT(t), "POST", e.RESTURL()+"/devices/x/commands", strings.NewReader(`{"name":"a"}`))
	r2, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusForbidden {
		t.Errorf("POST without the dashboard header: %d, want 403", r2.StatusCode)
	}
}

func TestDashboardDeviceLive(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	d, _ := newHubDevice(t, e, "thermo-1")
	c := dashClient(t, e)
	if resp := dashLogin(t, e, c, e.APIToken()); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	msgs, stop := e.WatchTelemetry("thermo-1")
	defer stop()
	sendTelemetry(t, d, msgs, "", []byte(`{"temperature":21.5,"label":"x"}`))

	st, body := dashGet(t, c, e.RESTURL()+"/")
	if st != 200 || !strings.Contains(body, `id="dev-thermo-1"`) || !strings.Contains(body, "connected</span>") {
		t.Fatalf("devices page: %d, want thermo-1 connected:\n%s", st, body)
	}
	st, body = dashGet(t, c, e.RESTURL()+"/devices/thermo-1")
	for _, want := range []string{"connected over mqtt", "temperature", "21.5", "Write a property", "Queue if offline"} {
		if !strings.Contains(body, want) {
			t.Errorf("device page (%d) lacks %q", st, want)
		}
	}

	// The live stream delivers a telemetry message sent after it opened.
	req, _ := http.NewRequestWithContext(ctxT(t), "GET", e.RESTURL()+"/devices/thermo-1/live", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("live stream: %d %q", resp.StatusCode, ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() (event, data string) {
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				data = line[len("data: "):]
			case line == "" && event != "":
				return event, data
			}
		}
		t.Fatalf("live stream ended: %v", sc.Err())
		return "", ""
	}
	if ev, data := next(); ev != "status" || !strings.Contains(data, `"connected":true`) {
		t.Fatalf("first event %s %s, want the status", ev, data)
	}
	sendTelemetry(t, d, msgs, "", []byte(`{"temperature":22.25}`))
	for {
		ev, data := next()
		if ev != "telemetry" {
			continue
		}
		var m struct {
			B string             `json:"b"`
			F map[string]float64 `json:"f"`
		}
		if err := json.Unmarshal([]byte(data), &m); err != nil || m.F["temperature"] != 22.25 {
			t.Fatalf("telemetry event %s (%v), want temperature 22.25", data, err)
		}
		break
	}

	// A property written in the form reaches the device; its ack shows.
	st, out := dashPost(t, c, e.RESTURL()+"/devices/thermo-1/properties", map[string]any{"name": "targetTemperature", "value": 23})
	if st != 200 {
		t.Fatalf("write property: %d %v", st, out)
	}
	patch := decodeJSON(t, recv(t, d.desired).Payload())
	if patch["targetTemperature"] != 23.0 {
		t.Fatalf("device got desired patch %v", patch)
	}
	v := patch["$version"].(float64)
	if st, _, _ := d.twinRequest("$iothub/twin/PATCH/properties/reported/", []byte(`{"targetTemperature":{"value":23,"ac":200,"av":`+jsonNum(v)+`,"ad":"done"}}`)); st != "204" {
		t.Fatalf("reported ack: %s", st)
	}
	for {
		if ev, data := next(); ev == "event" && strings.Contains(data, "reported") {
			break
		}
	}
	_, frag := dashGet(t, c, e.RESTURL()+"/devices/thermo-1/properties")
	if !strings.Contains(frag, "acknowledged") || !strings.Contains(frag, "done") {
		t.Errorf("properties after the ack lack its status:\n%s", frag)
	}

	// A command typed in the form gets the device's answer.
	go func() {
		m := <-d.methods
		d.publish("$iothub/methods/res/201/?$rid="+ridOf(t, m.Topic()), 0, []byte(`{"echo":`+string(m.Payload())+`}`))
	}()
	st, out = dashPost(t, c, e.RESTURL()+"/devices/thermo-1/commands", map[string]any{"name": "reboot", "payload": `{"delay":5}`, "timeout": 10})
	if st != 200 || out["status"] != 201.0 {
		t.Fatalf("command: %d %v", st, out)
	}
	if b, _ := json.Marshal(out["body"]); string(b) != `{"echo":{"delay":5}}` {
		t.Errorf("command body %s", b)
	}
	// The dashboard's command is in the history the REST API shows.
	status, hb := restDo(t, e, "GET", "/api/devices/thermo-1/commands/reboot", e.APIToken(), nil)
	var hist struct {
		Value []struct {
			ID           string          `json:"id"`
			Request      json.RawMessage `json:"request"`
			Response     json.RawMessage `json:"response"`
			ResponseCode int             `json:"responseCode"`
		} `json:"value"`
	}
	if err := json.Unmarshal(hb, &hist); status != 200 || err != nil || len(hist.Value) != 1 ||
		hist.Value[0].ResponseCode != 201 || string(hist.Value[0].Request) != `{"delay":5}` ||
		string(hist.Value[0].Response) != `{"echo":{"delay":5}}` || hist.Value[0].ID == "" {
		t.Errorf("command history after the dashboard's command: %d %s", status, hb)
	}
	// Queue for offline: the device gets it as a cloud-to-device message.
	st, out = dashPost(t, c, e.RESTURL()+"/devices/thermo-1/commands", map[string]any{"name": "later", "payload": `1`, "queue": true})
	if st != 200 || out["queued"] != true {
		t.Fatalf("queued command: %d %v", st, out)
	}
	if m := recv(t, d.c2d); !strings.Contains(m.Topic(), "method-name=later") {
		t.Errorf("queued command arrived on %s", m.Topic())
	}
	// Bad input gets a clear error.
	if st, out := dashPost(t, c, e.RESTURL()+"/devices/thermo-1/commands", map[string]any{"name": "x", "payload": `{`}); st != 400 || !strings.Contains(out["error"].(string), "JSON") {
		t.Errorf("bad payload: %d %v", st, out)
	}
	if st, out := dashPost(t, c, e.RESTURL()+"/devices/nobody/properties", map[string]any{"name": "x", "value": 1}); st != 404 {
		t.Errorf("unknown device: %d %v", st, out)
	}
}

func jsonNum(f float64) string { b, _ := json.Marshal(f); return string(b) }
