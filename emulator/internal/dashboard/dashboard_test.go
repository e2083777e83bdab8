package dashboard

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fake is a Backend with canned state that records the writes it gets.
type fake struct {
	mu       sync.Mutex
	devices  []Device
	desired  map[string]any
	reported map[string]any
	writes   []string
	tel      chan Telemetry
}

func (f *fake) IDScope() string { return "0ne00TEST" }
func (f *fake) Devices() []Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Device(nil), f.devices...)
}
func (f *fake) Device(id string) (Device, error) {
	for _, d := range f.Devices() {
		if d.ID == id {
			return d, nil
		}
	}
	return Device{}, fmt.Errorf("%w: device %q", ErrNotFound, id)
}
func (f *fake) Events(string) []Event {
	return []Event{{Kind: "connected", Protocol: "mqtt", Time: time.Unix(0, 0)}, {Kind: "disconnected", Protocol: "mqtt", Time: time.Unix(1, 0)}}
}
func (f *fake) WatchEvents(string) (<-chan Event, func()) { return make(chan Event), func() {} }
func (f *fake) Twin(id string) (map[string]any, map[string]any, error) {
	if _, err := f.Device(id); err != nil {
		return nil, nil, err
	}
	return f.desired, f.reported, nil
}
func (f *fake) UpdateProperties(_ context.Context, id, component string, patch map[string]any) error {
	b, _ := json.Marshal(patch)
	f.mu.Lock()
	f.writes = append(f.writes, id+"/"+component+":"+string(b))
	f.mu.Unlock()
	return nil
}
func (f *fake) InvokeCommand(_ context.Context, id, component, name string, payload json.RawMessage, timeout time.Duration) (CommandResult, error) {
	if name == "offline" {
		return CommandResult{}, errors.New("emulator: device is not online")
	}
	return CommandResult{Status: 202, Body: json.RawMessage(fmt.Sprintf(`{"got":%s,"timeout":%g}`, payload, timeout.Seconds()))}, nil
}
func (f *fake) QueueCommand(_ context.Context, id, component, name string, payload json.RawMessage) error {
	f.mu.Lock()
	f.writes = append(f.writes, "queue "+component+"*"+name+":"+string(payload))
	f.mu.Unlock()
	return nil
}
func (f *fake) TelemetryHistory(id string, limit int) ([]Telemetry, error) {
	if _, err := f.Device(id); err != nil {
		return nil, err
	}
	return []Telemetry{{Body: []byte(`{"temperature":21.5,"mode":"eco"}`), Received: time.Unix(10, 0)}}, nil
}
func (f *fake) WatchTelemetry(string) (<-chan Telemetry, func()) { return f.tel, func() {} }
func (f *fake) Groups() []Group {
	return []Group{{ID: "g1", DisplayName: "Group one", Enabled: true, PrimaryKey: "PRIMARY-KEY", SecondaryKey: "SECONDARY-KEY"}}
}

func newFake() *fake {
	return &fake{
		devices: []Device{{ID: "d1", ModelID: "dtmi:x;1", Connected: true, Provisioned: true, Messages: 7}, {ID: "d2"}},
		desired: map[string]any{
			"$version": int64(5), "target": 23.5, "fan": "on",
			"thermostat1": map[string]any{"__t": "c", "max": 30.0},
			"$metadata": map[string]any{"target": map[string]any{"$lastUpdatedVersion": int64(4)}, "fan": map[string]any{"$lastUpdatedVersion": int64(5)},
				"thermostat1": map[string]any{"max": map[string]any{"$lastUpdatedVersion": int64(2)}}},
		},
		reported: map[string]any{
			"$version": float64(9), "serial": "SN-1",
			"target":      map[string]any{"value": 23.5, "ac": 200.0, "av": 4.0, "ad": "ok"},
			"fan":         map[string]any{"value": "off", "ac": 200.0, "av": 3.0},
			"thermostat1": map[string]any{"__t": "c", "max": map[string]any{"value": 99.0, "ac": 400.0, "av": 2.0, "ad": "too hot"}},
		},
		tel: make(chan Telemetry, 4),
	}
}

const token = "tok en+/="

func serve(t *testing.T, f *fake, done <-chan struct{}) *Handler {
	t.Helper()
	h, err := New(f, token, done, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func do(h http.Handler, method, path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

var authed = map[string]string{"Authorization": token, csrfHeader: "1", "Content-Type": "application/json"}

// form is what the login page's form sends from a browser.
var form = map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "same-origin", "Origin": "null"}

func TestAuth(t *testing.T) {
	h := serve(t, newFake(), nil)
	if w := do(h, "GET", "/", "", map[string]string{"Accept": "text/html"}); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login?next=%2F" {
		t.Errorf("GET / anonymous: %d %q", w.Code, w.Header().Get("Location"))
	}
	for _, p := range []string{"/devices/d1", "/live", "/groups/g1/keys", "/devices/d1/properties"} {
		if w := do(h, "GET", p, "", nil); w.Code != http.StatusUnauthorized {
			t.Errorf("GET %s anonymous: %d", p, w.Code)
		}
		if w := do(h, "GET", p, "", map[string]string{"Authorization": "nope"}); w.Code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d", p, w.Code)
		}
		if w := do(h, "GET", p, "", map[string]string{"Cookie": CookieName + "=" + strings.Repeat("0", 64)}); w.Code != http.StatusUnauthorized {
			t.Errorf("GET %s with a forged cookie: %d", p, w.Code)
		}
	}
	if w := do(h, "GET", "/static/app.js", "", nil); w.Code != 200 || !strings.Contains(w.Body.String(), "EventSource") {
		t.Errorf("static asset: %d", w.Code)
	}
	if w := do(h, "GET", "/", "", map[string]string{"Authorization": "Bearer " + token}); w.Code != 200 {
		t.Errorf("Bearer token: %d", w.Code)
	}
	// Login sets a cookie holding a random session id, then the cookie works.
	w := do(h, "POST", "/login", "token=tok+en%2B%2F%3D&next=%2F%2Fevil.example", form)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Fatalf("login: %d to %q (an off-site next must become /)", w.Code, w.Header().Get("Location"))
	}
	ck := w.Result().Cookies()
	if len(ck) != 1 || len(ck[0].Value) != 64 || strings.Contains(ck[0].Value, "tok") {
		t.Fatalf("cookies %+v", ck)
	}
	if w := do(h, "GET", "/groups", "", map[string]string{"Cookie": CookieName + "=" + ck[0].Value}); w.Code != 200 || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("GET /groups with the cookie: %d", w.Code)
	}
	if w := do(h, "POST", "/login", "token=tok", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"}); w.Code != http.StatusForbidden {
		t.Errorf("cross-site login: %d", w.Code)
	}
	if w := do(h, "POST", "/devices/d1/commands", `{"name":"x"}`, map[string]string{"Authorization": token}); w.Code != http.StatusForbidden {
		t.Errorf("POST without %s: %d", csrfHeader, w.Code)
	}
	// An empty token refuses everything, even an empty Authorization.
	h2, _ := New(newFake(), "", nil, nil)
	if w := do(h2, "GET", "/live", "", map[string]string{"Authorization": ""}); w.Code != http.StatusUnauthorized {
		t.Errorf("empty token: %d", w.Code)
	}
	if w := do(h2, "POST", "/login", "token=", form); len(w.Result().Cookies()) != 0 {
		t.Errorf("empty token login set a cookie")
	}
	if _, err := New(nil, token, nil, nil); err == nil {
		t.Error("New(nil backend) succeeded")
	}
}

func TestPagesRender(t *testing.T) {
	h := serve(t, newFake(), nil)
	body := do(h, "GET", "/", "", authed).Body.String()
	for _, want := range []string{`id="dev-d1"`, "dtmi:x;1", `<td class="num msgs">7</td>`, `id="dev-d2"`, `<span id="online">1</span> of <span id="total">2</span>`, "0ne00TEST"} {
		if !strings.Contains(body, want) {
			t.Errorf("devices page lacks %q", want)
		}
	}
	w := do(h, "GET", "/devices/d1", "", authed)
	body = w.Body.String()
	for _, want := range []string{"connected over mqtt", "disconnected (mqtt)", "temperature", "mode", "Queue if offline", "Write a property", "serial", "SN-1"} {
		if !strings.Contains(body, want) {
			t.Errorf("device page (%d) lacks %q", w.Code, want)
		}
	}
	if strings.Count(body, "eco") != 1 {
		t.Errorf("the raw body must be shown once (chart data carries numbers only)")
	}
	big := toRaw(Telemetry{Body: []byte(`{"s":"` + strings.Repeat("x", 10000) + `"}`)})
	if len(big.Body) > MaxRawBody+32 || !strings.HasSuffix(big.Body, "(10008 bytes)") {
		t.Errorf("a large body is shown as %d bytes ending %q", len(big.Body), big.Body[len(big.Body)-20:])
	}
	if w := do(h, "GET", "/devices/nobody", "", authed); w.Code != http.StatusNotFound {
		t.Errorf("unknown device page: %d", w.Code)
	}
	body = do(h, "GET", "/groups", "", authed).Body.String()
	if !strings.Contains(body, "Group one") || strings.Contains(body, "PRIMARY-KEY") {
		t.Errorf("groups page must list the group and hide its keys")
	}
	w = do(h, "GET", "/groups/g1/keys", "", authed)
	if w.Code != 200 || !strings.Contains(w.Body.String(), "PRIMARY-KEY") || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("keys on demand: %d %s", w.Code, w.Body)
	}
	if w := do(h, "GET", "/groups/nope/keys", "", authed); w.Code != http.StatusNotFound {
		t.Errorf("keys of an unknown group: %d", w.Code)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
}

func TestPropertiesView(t *testing.T) {
	h := serve(t, newFake(), nil)
	pv, err := h.props("d1")
	if err != nil {
		t.Fatal(err)
	}
	if pv.DesiredVersion != 5 || pv.ReportedVersion != 9 {
		t.Errorf("versions %d %d", pv.DesiredVersion, pv.ReportedVersion)
	}
	got := map[string]writableProp{}
	for _, w := range pv.Writable {
		got[w.Component+"/"+w.Name] = w
	}
	want := map[string]struct {
		status  string
		version int64
		ad      string
	}{
		"/target":         {"acknowledged", 4, "ok"},
		"/fan":            {"pending", 5, ""},        // acked version 3 < 5
		"thermostat1/max": {"refused", 2, "too hot"}, // ac 400 at the current version
	}
	if len(got) != len(want) {
		t.Fatalf("writable %+v", pv.Writable)
	}
	for k, w := range want {
		g := got[k]
		if g.Status != w.status || g.Version != w.version || g.AckDescription != w.ad {
			t.Errorf("%s = %+v, want %+v", k, g, w)
		}
	}
	if len(pv.Reported) != 1 || pv.Reported[0].Name != "serial" || pv.Reported[0].Value != `"SN-1"` {
		t.Errorf("reported-only %+v", pv.Reported)
	}
	frag := do(h, "GET", "/devices/d1/properties", "", authed).Body.String()
	if !strings.Contains(frag, `<span class="pill refused">refused</span>`) || strings.Contains(frag, "<html") {
		t.Errorf("properties fragment:\n%s", frag)
	}
}

func TestWritesAndCommands(t *testing.T) {
	f := newFake()
	h := serve(t, f, nil)
	w := do(h, "POST", "/devices/d1/properties", `{"component":"thermostat1","name":"max","value":{"a":[1,2]}}`, authed)
	if w.Code != 200 {
		t.Fatalf("write: %d %s", w.Code, w.Body)
	}
	w = do(h, "POST", "/devices/d1/commands", `{"name":"reboot","payload":" {\"delay\":5} ","timeout":7}`, authed)
	var res struct {
		Status int             `json:"status"`
		Body   json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || w.Code != 200 || res.Status != 202 || string(res.Body) != `{"got":{"delay":5},"timeout":7}` {
		t.Errorf("command: %d %s", w.Code, w.Body)
	}
	if w := do(h, "POST", "/devices/d1/commands", `{"component":"c","name":"later","payload":"3","queue":true}`, authed); w.Code != 200 || !strings.Contains(w.Body.String(), `"queued":true`) {
		t.Errorf("queued: %d %s", w.Code, w.Body)
	}
	if got, want := strings.Join(f.writes, "|"), `d1/thermostat1:{"max":{"a":[1,2]}}|queue c*later:3`; got != want {
		t.Errorf("backend got %q, want %q", got, want)
	}
	for _, c := range []struct{ path, body, want string }{
		{"/devices/d1/properties", `{"name":"","value":1}`, "name is required"},
		{"/devices/d1/properties", `{"name":"x"}`, "not JSON"},
		{"/devices/d1/properties", `nope`, "bad request body"},
		{"/devices/d1/commands", `{"name":"x","payload":"{"}`, "not JSON"},
		{"/devices/d1/commands", `{"payload":"1"}`, "name is required"},
		{"/devices/d1/commands", `{"name":"offline"}`, "not online"},
		{"/devices/d1/commands", strings.Repeat(" ", MaxBody+1) + "{}", "bad request body"},
	} {
		w := do(h, "POST", c.path, c.body, authed)
		if w.Code < 400 || !strings.Contains(w.Body.String(), c.want) {
			t.Errorf("POST %s %.40q: %d %s, want an error with %q", c.path, c.body, w.Code, w.Body, c.want)
		}
	}
}

func TestDeviceStreamDeliversTelemetry(t *testing.T) {
	f := newFake()
	done := make(chan struct{})
	h := serve(t, f, done)
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/devices/d1/live", nil)
	req.Header.Set("Authorization", token)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	f.tel <- Telemetry{Component: "thermostat1", Body: []byte(`{"temperature":30.5,"on":true}`), Received: time.Unix(20, 0)}
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 1024)
	deadline := time.AfterFunc(10*time.Second, func() { resp.Body.Close() }) // bounds the read
	defer deadline.Stop()
	for !strings.Contains(string(buf), "event: telemetry") || !strings.Contains(string(buf[strings.Index(string(buf), "event: telemetry"):]), "\n\n") {
		n, err := resp.Body.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			t.Fatalf("stream ended before a telemetry event (%v):\n%s", err, buf)
		}
	}
	s := string(buf)
	if !strings.HasPrefix(s, "event: status\n") {
		t.Errorf("stream does not open with the status:\n%s", s)
	}
	if !strings.Contains(s, `"f":{"thermostat1/temperature":30.5}`) || !strings.Contains(s, `"c":"thermostat1"`) {
		t.Errorf("telemetry event lacks the numeric field:\n%s", s)
	}
	close(done) // the emulator closing ends the stream
	for {
		if _, err := resp.Body.Read(tmp); err != nil {
			break
		}
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{"/devices/a": "/devices/a", "": "/", "//evil": "/", "https://evil": "/", "/\\evil": "/"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDevicesStreamSendsChangedRows(t *testing.T) {
	f := newFake()
	h := serve(t, f, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/live", nil)
	req.Header.Set("Authorization", token)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	f.mu.Lock()
	f.devices[1].Connected = true
	f.devices = append(f.devices, Device{ID: "d3", ModelID: "dtmi:new;1"})
	f.mu.Unlock()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Rows   []deviceRow `json:"rows"`
			Total  int         `json:"total"`
			Online int         `json:"online"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event %s: %v", line, err)
		}
		if ev.Total != 3 || ev.Online != 2 || len(ev.Rows) != 2 || ev.Rows[0].ID != "d2" || !ev.Rows[0].Connected || ev.Rows[1].ID != "d3" {
			t.Fatalf("devices event %s: want only d2 (now connected) and the new d3", line)
		}
		return
	}
	t.Fatalf("stream ended without a devices event: %v", sc.Err())
}

func login(t *testing.T, h http.Handler) string {
	t.Helper()
	w := do(h, "POST", "/login", "token="+url.QueryEscape(token), form)
	ck := w.Result().Cookies()
	if w.Code != http.StatusSeeOther || len(ck) != 1 {
		t.Fatalf("login: %d, cookies %+v", w.Code, ck)
	}
	return CookieName + "=" + ck[0].Value
}

func TestSessionsAreRandomAndLogoutRevokes(t *testing.T) {
	h := serve(t, newFake(), nil)
	a, b := login(t, h), login(t, h)
	if a == b {
		t.Fatal("two logins got the same session id")
	}
	if w := do(h, "GET", "/groups", "", map[string]string{"Cookie": a}); w.Code != 200 {
		t.Fatalf("session a: %d", w.Code)
	}
	w := do(h, "POST", "/logout", "", map[string]string{"Cookie": a, csrfHeader: "1"})
	if w.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d", w.Code)
	}
	// The old cookie, replayed, no longer works; the other session does.
	if w := do(h, "GET", "/groups", "", map[string]string{"Cookie": a}); w.Code != http.StatusUnauthorized {
		t.Errorf("revoked session still works: %d", w.Code)
	}
	if w := do(h, "GET", "/groups", "", map[string]string{"Cookie": b}); w.Code != 200 {
		t.Errorf("other session: %d", w.Code)
	}
}

func TestCrossSiteLogoutAndLoginAreRefused(t *testing.T) {
	h := serve(t, newFake(), nil)
	c := login(t, h)
	for _, hdr := range []map[string]string{
		{"Cookie": c, "Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
		{"Cookie": c, "Sec-Fetch-Site": "cross-site", "Origin": "null"},
		{"Cookie": c}, // no header, no same-origin fetch metadata
	} {
		if w := do(h, "POST", "/logout", "", hdr); w.Code != http.StatusForbidden {
			t.Errorf("logout with %v: %d, want 403", hdr, w.Code)
		}
	}
	if w := do(h, "GET", "/groups", "", map[string]string{"Cookie": c}); w.Code != 200 {
		t.Errorf("session ended by a refused logout: %d", w.Code)
	}
	if w := do(h, "POST", "/login", "token="+url.QueryEscape(token), map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "cross-site"}); w.Code != http.StatusForbidden {
		t.Errorf("cross-site login: %d", w.Code)
	}
	if w := do(h, "POST", "/devices/d1/commands", `{"name":"x"}`, map[string]string{"Authorization": token, csrfHeader: "1", "Origin": "https://evil.example"}); w.Code != http.StatusForbidden {
		t.Errorf("POST from another origin: %d", w.Code)
	}
}

func TestSessionExpiresAndSlides(t *testing.T) {
	h := serve(t, newFake(), nil)
	h.SetSessionIdle(time.Hour)
	c := login(t, h)
	id := strings.TrimPrefix(c, CookieName+"=")
	key := sha256.Sum256([]byte(id))
	h.mu.Lock()
	before := h.sessions[key].expires
	h.sessions[key].expires = time.Now().Add(time.Minute) // nearly idle
	h.mu.Unlock()
	if w := do(h, "GET", "/groups", "", map[string]string{"Cookie": c}); w.Code != 200 {
		t.Fatalf("GET: %d", w.Code)
	}
	h.mu.Lock()
	renewed := h.sessions[key].expires
	h.sessions[key].expires = time.Now().Add(-time.Second) // idle too long
	h.mu.Unlock()
	if !renewed.After(time.Now().Add(30*time.Minute)) || before.IsZero() {
		t.Errorf("request did not renew the session: expires %v", renewed)
	}
	if w := do(h, "GET", "/groups", "", map[string]string{"Cookie": c}); w.Code != http.StatusUnauthorized {
		t.Errorf("expired session: %d", w.Code)
	}
}

func TestStatsPage(t *testing.T) {
	h := serve(t, newFake(), nil)
	h.SetStats(func() Stats {
		return Stats{Connections: map[string]int{"mqtt": 3}, Refusals: map[string]int64{"mqtt_auth": 7}}
	})
	w := do(h, "GET", "/stats", "", map[string]string{"Authorization": token})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "mqtt_auth") {
		t.Errorf("stats page: %d %s", w.Code, w.Body.String())
	}
}
