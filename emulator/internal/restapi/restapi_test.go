package restapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"crypto/x509"
	"crypto/x509/pkix"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testToken = "SharedAccessSignature sr=emulator&sig=s3cr3t-token&skn=operator"

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type env struct {
	t   *testing.T
	f   *fakeBackend
	srv *httptest.Server
	log *syncBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	f := newFake()
	f.devices["dev1"] = Device{ID: "dev1", DisplayName: "Device 1", Template: "dtmi:com:example:Thermostat;1", Enabled: true, Provisioned: true, Connected: true}
	f.devices["dev2"] = Device{ID: "dev2", Enabled: true}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := httptest.NewServer(New(f, Options{Token: testToken, Logger: logger, PageSize: 2}))
	t.Cleanup(srv.Close)
	// Redirects are answers to check (the moved extensions), not to follow.
	srv.Client().CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &env{t: t, f: f, srv: srv, log: logs}
}

type response struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (e *env) call(method, path, body string) response {
	e.t.Helper()
	return e.callAuth(method, path, body, testToken)
}

func (e *env) callAuth(method, path, body, auth string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	if !strings.Contains(path, "api-version=") && !strings.Contains(path, "no-api-version") {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "api-version=" + APIVersion
	}
	path = strings.Replace(strings.Replace(path, "&no-api-version", "", 1), "?no-api-version", "", 1)
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := response{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			e.t.Fatalf("%s %s: response is not a JSON object: %v: %s", method, path, err, raw)
		}
	}
	return out
}

// wantRefused checks a 400 BadRequest (unreadable) or 422
// UnprocessableEntity (invalid) refusal.
func (r response) wantRefused(t *testing.T) {
	t.Helper()
	if r.status == http.StatusUnprocessableEntity {
		r.wantError(t, r.status, "UnprocessableEntity")
		return
	}
	r.wantError(t, http.StatusBadRequest, "BadRequest")
}

// wantError checks the status and the IoT Central error shape.
func (r response) wantError(t *testing.T, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.raw)
	}
	e, ok := r.body["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %s", r.raw)
	}
	if e["code"] != code {
		t.Fatalf("error code = %v, want %s; body %s", e["code"], code, r.raw)
	}
	if e["message"] == "" || e["requestId"] == "" || e["requestId"] != r.header.Get("x-ms-request-id") {
		t.Fatalf("error lacks message or matching requestId: %s (header %q)", r.raw, r.header.Get("x-ms-request-id"))
	}
	if r.header.Get("x-ms-error-code") != code {
		t.Fatalf("x-ms-error-code = %q, want %q", r.header.Get("x-ms-error-code"), code)
	}
}

func (r response) want(t *testing.T, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.raw)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q", ct)
	}
}

// jsonEqual compares a decoded value with the decoding of want.
func jsonEqual(t *testing.T, got any, want string) {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want JSON: %v", err)
	}
	gb, _ := json.Marshal(got)
	var g any
	_ = json.Unmarshal(gb, &g)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("got  %s\nwant %s", gb, want)
	}
}

func TestAuthorization(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name, auth string
		ok         bool
	}{
		{"whole header", testToken, true},
		{"bearer prefix refused (API tokens are sent bare)", "Bearer " + testToken, false},
		{"lower-case bearer refused", "bearer " + testToken, false},
		{"missing", "", false},
		{"wrong", "SharedAccessSignature sr=emulator&sig=wrong&skn=operator", false},
		{"bearer wrong", "Bearer nope", false},
		{"prefix of token", testToken[:10], false},
		{"token plus suffix", testToken + "x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.callAuth("GET", "/api/devices", "", tc.auth)
			if tc.ok {
				r.want(t, http.StatusOK)
				return
			}
			r.wantError(t, http.StatusUnauthorized, "Unauthorized")
		})
	}
	// Unknown routes are refused before routing, so they reveal nothing.
	e.callAuth("GET", "/nowhere", "", "").wantError(t, http.StatusUnauthorized, "Unauthorized")
}

func TestEmptyTokenRefusesEverything(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(New(newFake(), Options{}))
	defer srv.Close()
	for _, auth := range []string{"", "Bearer ", "Bearer", " "} {
		req, _ := http.NewRequest("GET", srv.URL+"/api/devices", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("auth %q: status %d, want 401", auth, res.StatusCode)
		}
	}
}

func TestRouting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.call("GET", "/api/nothing", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", "/api/devices/dev1/unknown", "").wantError(t, http.StatusNotFound, "NotFound")
	r := e.call("POST", "/api/devices/dev1", "{}")
	r.wantError(t, http.StatusMethodNotAllowed, "MethodNotAllowed")
	if got := r.header.Get("Allow"); got != "DELETE, GET, HEAD, PATCH, PUT" {
		t.Fatalf("Allow = %q", got)
	}
	r = e.call("POST", "/api/devices/dev1/properties", "{}")
	r.wantError(t, http.StatusMethodNotAllowed, "MethodNotAllowed")
	if got := r.header.Get("Allow"); got != "GET, HEAD, PATCH, PUT" {
		t.Fatalf("Allow = %q", got)
	}
	e.call("PUT", "/api/devices/dev1/commands/reboot", "").wantError(t, http.StatusMethodNotAllowed, "MethodNotAllowed")
	e.call("POST", "/api/enrollmentGroups/g", "").wantError(t, http.StatusMethodNotAllowed, "MethodNotAllowed")
	// HEAD answers like GET without a body.
	r = e.call("HEAD", "/api/devices", "")
	if r.status != http.StatusOK || len(r.raw) != 0 {
		t.Fatalf("HEAD: %d %q", r.status, r.raw)
	}
	// api-version is required and must be the served one.
	e.call("GET", "/api/devices/dev1?api-version=2022-07-31", "").want(t, http.StatusOK)
	e.call("GET", "/api/devices/dev1?api-version=whatever", "").wantError(t, http.StatusBadRequest, "InvalidApiVersionParameter")
	e.call("GET", "/api/devices/dev1?api-version=2022-07-31&api-version=1.0", "").wantError(t, http.StatusBadRequest, "InvalidApiVersionParameter")
	e.call("GET", "/api/devices/dev1?no-api-version", "").wantError(t, http.StatusBadRequest, "MissingApiVersionParameter")
	e.call("GET", "/api/devices/dev1?api-version=", "").wantError(t, http.StatusBadRequest, "MissingApiVersionParameter")
}

func TestDevices(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.call("GET", "/api/devices", "")
	r.want(t, http.StatusOK)
	list, _ := r.body["value"].([]any)
	if len(list) != 2 {
		t.Fatalf("value = %s", r.raw)
	}
	r = e.call("GET", "/api/devices/dev1", "")
	r.want(t, http.StatusOK)
	if etag, _ := r.body["etag"].(string); !strings.HasPrefix(etag, `"`) {
		t.Fatalf("etag = %v", r.body["etag"])
	}
	delete(r.body, "etag")
	jsonEqual(t, r.body, `{"id":"dev1","displayName":"Device 1","template":"dtmi:com:example:Thermostat;1",
		"enabled":true,"provisioned":true,"simulated":false}`)
	// Whether it is connected is an extension, under /api/emulator.
	r = e.call("GET", "/api/emulator/devices/dev1/connection", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"id":"dev1","connected":true}`)
	e.call("GET", "/api/emulator/devices/ghost/connection", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", "/api/devices/ghost", "").wantError(t, http.StatusNotFound, "NotFound")

	empty := httptest.NewServer(New(newFake(), Options{Token: testToken}))
	defer empty.Close()
	req, _ := http.NewRequest("GET", empty.URL+"/api/devices?api-version="+APIVersion, nil)
	req.Header.Set("Authorization", testToken)
	res, err := empty.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if strings.TrimSpace(string(b)) != `{"value":[]}` {
		t.Fatalf("empty list = %s", b)
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.f.creds["dev1"] = DeviceCredentials{IDScope: "0ne00ABCDEF", SymmetricKey: SymmetricKey{PrimaryKey: "cHJpbWFyeQ==", SecondaryKey: "c2Vjb25kYXJ5"}}
	e.f.creds["dev2"] = DeviceCredentials{IDScope: "0ne00ABCDEF", X509: true}
	r := e.call("GET", "/api/devices/dev1/credentials", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"idScope":"0ne00ABCDEF","symmetricKey":{"primaryKey":"cHJpbWFyeQ==","secondaryKey":"c2Vjb25kYXJ5"}}`)
	r = e.call("GET", "/api/devices/dev2/credentials", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"idScope":"0ne00ABCDEF","x509":{"clientCertificates":{}}}`)
	var back DeviceCredentials
	if err := json.Unmarshal(r.raw, &back); err != nil || back != e.f.creds["dev2"] {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	e.call("GET", "/api/devices/ghost/credentials", "").wantError(t, http.StatusNotFound, "NotFound")
}

func mustMap(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func seedTwin(t *testing.T, e *env) {
	e.f.twins["dev1"] = Twin{
		Desired: mustMap(t, `{"$version":3,"targetTemperature":21,"fanSpeed":"low",
			"thermostat1":{"targetTemperature":25}}`),
		Reported: mustMap(t, `{"$version":5,
			"$metadata":{"targetTemperature":{"$lastUpdated":"2024-05-01T10:00:00Z"},
				"thermostat1":{"maxTempSinceLastReboot":{"$lastUpdated":"2024-05-01T11:00:00Z"}}},
			"targetTemperature":{"value":20,"ac":200,"av":2,"ad":"applied"},
			"serialNumber":"SN-1",
			"thermostat1":{"__t":"c","maxTempSinceLastReboot":30},
			"deviceInformation":{"__t":"c","manufacturer":"Contoso"}}`),
	}
}

func TestGetProperties(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	seedTwin(t, e)
	r := e.call("GET", "/api/devices/dev1/properties", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{
		"targetTemperature":20,
		"fanSpeed":"low",
		"serialNumber":"SN-1",
		"thermostat1":{"targetTemperature":25,"maxTempSinceLastReboot":30,
			"$metadata":{"targetTemperature":{"desiredValue":25,"desiredVersion":3},
				"maxTempSinceLastReboot":{"lastUpdateTime":"2024-05-01T11:00:00Z"}}},
		"deviceInformation":{"manufacturer":"Contoso"},
		"$metadata":{
			"targetTemperature":{"desiredValue":21,"desiredVersion":3,"ackCode":200,"ackVersion":2,
				"ackDescription":"applied","lastUpdateTime":"2024-05-01T10:00:00Z"},
			"fanSpeed":{"desiredValue":"low","desiredVersion":3}}}`)

	r = e.call("GET", "/api/devices/dev1/components/thermostat1/properties", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"targetTemperature":25,"maxTempSinceLastReboot":30,
		"$metadata":{"targetTemperature":{"desiredValue":25,"desiredVersion":3},
			"maxTempSinceLastReboot":{"lastUpdateTime":"2024-05-01T11:00:00Z"}}}`)

	r = e.call("GET", "/api/devices/dev1/components/absent/properties", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{}`)
	// A device with an empty twin has an empty view.
	r = e.call("GET", "/api/devices/dev2/properties", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{}`)
	e.call("GET", "/api/devices/ghost/properties", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", "/api/devices/dev1/components/$bad/properties", "").wantError(t, http.StatusBadRequest, "BadRequest")
}

func TestPatchProperties(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	seedTwin(t, e)
	r := e.call("PATCH", "/api/devices/dev1/properties?api-version=2022-07-31", `{"targetTemperature":23.5}`)
	r.want(t, http.StatusAccepted)
	jsonEqual(t, r.body, `{"$metadata":{"targetTemperature":{"desiredValue":23.5}}}`)

	r = e.call("PATCH", "/api/devices/dev1/components/thermostat1/properties", `{"targetTemperature":26}`)
	r.want(t, http.StatusAccepted)
	jsonEqual(t, r.body, `{"$metadata":{"targetTemperature":{"desiredValue":26}}}`)
	// A component patch through the root names the component object.
	r = e.call("PATCH", "/api/devices/dev1/properties", `{"newComp":{"__t":"c","mode":"eco"}}`)
	r.want(t, http.StatusAccepted)
	jsonEqual(t, r.body, `{"newComp":{"$metadata":{"mode":{"desiredValue":"eco"}}}}`)

	e.f.mu.Lock()
	patches := e.f.patches
	e.f.mu.Unlock()
	if len(patches) != 3 {
		t.Fatalf("patches = %v", patches)
	}
	jsonEqual(t, patches[0], `{"targetTemperature":23.5}`)
	jsonEqual(t, patches[1], `{"thermostat1":{"__t":"c","targetTemperature":26}}`)
	jsonEqual(t, patches[2], `{"newComp":{"__t":"c","mode":"eco"}}`)

	// A null deletes the desired value; the reported one stays in view.
	r = e.call("PATCH", "/api/devices/dev1/properties", `{"serialNumber":null}`)
	r.want(t, http.StatusAccepted)
	r = e.call("GET", "/api/devices/dev1/properties", "")
	if r.body["serialNumber"] != "SN-1" {
		t.Fatalf("after null patch: %s", r.raw)
	}
}

func TestPatchPropertiesRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct{ name, path, body string }{
		{"malformed", "/api/devices/dev1/properties", `{"a":`},
		{"not an object", "/api/devices/dev1/properties", `[1,2]`},
		{"null", "/api/devices/dev1/properties", `null`},
		{"empty object", "/api/devices/dev1/properties", `{}`},
		{"empty body", "/api/devices/dev1/properties", ``},
		{"trailing data", "/api/devices/dev1/properties", `{"a":1} {"b":2}`},
		{"dollar name", "/api/devices/dev1/properties", `{"$version":1}`},
		{"dotted name", "/api/devices/dev1/properties", `{"a.b":1}`},
		{"space in name", "/api/devices/dev1/properties", `{"a b":1}`},
		{"empty name", "/api/devices/dev1/properties", `{"":1}`},
		{"bad name in component", "/api/devices/dev1/properties", `{"c":{"__t":"c","$x":1}}`},
		{"star in component", "/api/devices/dev1/components/a*b/properties", `{"x":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.call("PATCH", tc.path, tc.body).wantRefused(t)
		})
	}
	big := `{"blob":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	e.call("PATCH", "/api/devices/dev1/properties", big).wantError(t, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge")
	e.call("PATCH", "/api/devices/ghost/properties", `{"a":1}`).wantError(t, http.StatusNotFound, "NotFound")
	e.f.mu.Lock()
	e.f.patchErr = fmt.Errorf("desired section over 32 KiB: %w", ErrTooLarge)
	e.f.mu.Unlock()
	e.call("PATCH", "/api/devices/dev1/properties", `{"a":1}`).wantError(t, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge")
	e.f.mu.Lock()
	n := len(e.f.patches)
	e.f.mu.Unlock()
	if n != 0 {
		t.Fatalf("refused patches reached the backend: %d", n)
	}
}

func TestCommands(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.f.invokeRes = CommandResult{ResponseCode: 200, Response: json.RawMessage(`{"rebooted": true}`)}
	r := e.call("POST", "/api/devices/dev1/commands/reboot?api-version=2022-07-31",
		`{"request":{"delay": 5},"responseTimeout":10,"connectionTimeout":2}`)
	r.want(t, http.StatusCreated)
	if id, _ := r.body["id"].(string); len(id) != 36 {
		t.Fatalf("command id = %v", r.body["id"])
	}
	delete(r.body, "id")
	jsonEqual(t, r.body, `{"request":{"delay":5},"response":{"rebooted":true},"responseCode":200,
		"connectionTimeout":2,"responseTimeout":10}`)

	r = e.call("POST", "/api/devices/dev1/components/thermostat1/commands/getMaxMinReport", `{"request":"2024-01-01"}`)
	r.want(t, http.StatusCreated)
	delete(r.body, "id")
	jsonEqual(t, r.body, `{"request":"2024-01-01","response":{"rebooted":true},"responseCode":200,
		"connectionTimeout":0,"responseTimeout":30}`)

	// An empty object: all defaults, no request payload; a device error status passes through.
	e.f.mu.Lock()
	e.f.invokeRes = CommandResult{ResponseCode: 500, Response: json.RawMessage(`not json`)}
	e.f.mu.Unlock()
	r = e.call("POST", "/api/devices/dev1/commands/ping", "{}")
	r.want(t, http.StatusCreated)
	delete(r.body, "id")
	jsonEqual(t, r.body, `{"response":"not json","responseCode":500,"connectionTimeout":0,"responseTimeout":30}`)

	e.f.mu.Lock()
	e.f.invokeRes = CommandResult{ResponseCode: 204}
	e.f.mu.Unlock()
	r = e.call("POST", "/api/devices/dev1/commands/ping", `{"request":null}`)
	r.want(t, http.StatusCreated)
	delete(r.body, "id")
	jsonEqual(t, r.body, `{"response":null,"responseCode":204,"connectionTimeout":0,"responseTimeout":30}`)

	e.f.mu.Lock()
	calls := e.f.invokes
	e.f.mu.Unlock()
	if len(calls) != 4 {
		t.Fatalf("invokes = %+v", calls)
	}
	c := calls[0]
	if c.id != "dev1" || c.component != "" || c.name != "reboot" || string(c.req.Request) != `{"delay":5}` ||
		c.req.ResponseTimeout != 10 || c.req.ConnectionTimeout != 2 || !c.hasDeadline {
		t.Fatalf("first invoke = %+v", c)
	}
	if calls[1].component != "thermostat1" || calls[1].name != "getMaxMinReport" || calls[1].req.ResponseTimeout != 30 {
		t.Fatalf("component invoke = %+v", calls[1])
	}
	if calls[2].req.Request != nil || calls[3].req.Request != nil {
		t.Fatalf("empty requests passed a payload: %+v", calls[2:])
	}
}

func TestCommandRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, body := range []string{
		`{"responseTimeout":4}`, `{"responseTimeout":301}`, `{"responseTimeout":0}`,
		`{"connectionTimeout":-1}`, `{"connectionTimeout":301}`, `{"responseTimeout":"30"}`,
		`{"responseTimeout":1.5}`, `[]`, ``, `{"connectionTimeout":31}`, `{"responseTimeout":31}`,
	} {
		e.call("POST", "/api/devices/dev1/commands/reboot", body).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	}
	for _, body := range []string{`{"request":`, `{"request":1} x`} {
		e.call("POST", "/api/devices/dev1/commands/reboot", body).wantError(t, http.StatusBadRequest, "BadRequest")
	}
	e.call("POST", "/api/devices/dev1/commands/a*b", "{}").wantError(t, http.StatusBadRequest, "BadRequest")
	big := `{"request":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	e.call("POST", "/api/devices/dev1/commands/reboot", big).wantError(t, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge")
	e.f.mu.Lock()
	n := len(e.f.invokes)
	e.f.mu.Unlock()
	if n != 0 {
		t.Fatalf("refused commands reached the backend: %d", n)
	}

	e.call("POST", "/api/devices/ghost/commands/reboot", "{}").wantError(t, http.StatusNotFound, "NotFound")
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("device dev1: %w", ErrDeviceOffline), http.StatusNotFound, "DeviceNotOnline"},
		{fmt.Errorf("device dev1: %w", ErrTimeout), http.StatusGatewayTimeout, "GatewayTimeout"},
		{context.DeadlineExceeded, http.StatusGatewayTimeout, "GatewayTimeout"},
	} {
		e.f.mu.Lock()
		e.f.invokeErr = tc.err
		e.f.mu.Unlock()
		e.call("POST", "/api/devices/dev1/commands/reboot", "{}").wantError(t, tc.status, tc.code)
	}
}

func TestQueuedCommand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.call("POST", "/api/emulator/devices/dev2/commands/reboot/queue", `{"request":{"delay":1}}`)
	r.want(t, http.StatusCreated)
	jsonEqual(t, r.body, `{"request":{"delay":1},"queued":true}`)
	r = e.call("POST", "/api/emulator/devices/dev2/components/thermostat1/commands/reset/queue", "{}")
	r.want(t, http.StatusCreated)
	jsonEqual(t, r.body, `{"queued":true}`)
	// The old ?queue= points at the new route (308), whatever its value.
	r = e.call("POST", "/api/devices/dev2/commands/reboot?queue=false", "{}")
	if r.status != http.StatusPermanentRedirect || r.header.Get("Location") != "/api/emulator/devices/dev2/commands/reboot/queue?api-version="+APIVersion {
		t.Fatalf("?queue= answered %d Location %q", r.status, r.header.Get("Location"))
	}
	e.call("POST", "/api/devices/dev2/commands/reboot", "{}").want(t, http.StatusCreated)

	e.f.mu.Lock()
	q, inv := e.f.queued, e.f.invokes
	e.f.queueErr = fmt.Errorf("50 messages waiting: %w", ErrQueueFull)
	e.f.mu.Unlock()
	if len(q) != 2 || len(inv) != 1 {
		t.Fatalf("queued %+v, invoked %+v", q, inv)
	}
	if q[0].id != "dev2" || q[0].name != "reboot" || q[0].component != "" || string(q[0].request) != `{"delay":1}` {
		t.Fatalf("queued[0] = %+v", q[0])
	}
	if q[1].component != "thermostat1" || q[1].name != "reset" || q[1].request != nil {
		t.Fatalf("queued[1] = %+v", q[1])
	}
	e.call("POST", "/api/emulator/devices/dev2/commands/reboot/queue", "{}").wantError(t, http.StatusForbidden, "DeviceMaximumQueueDepthExceeded")
	e.call("POST", "/api/emulator/devices/ghost/commands/reboot/queue", "{}").wantError(t, http.StatusNotFound, "NotFound")
}

func TestMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.call("POST", "/api/emulator/devices/dev1/messages", `{"data":"hello","properties":{"kind":"greeting","n":5,"urgent":true}}`)
	r.want(t, http.StatusAccepted)
	jsonEqual(t, r.body, `{"data":"hello","properties":{"kind":"greeting","n":"5","urgent":"true"},"queued":true}`)
	r = e.call("POST", "/api/emulator/devices/dev1/messages", `{"data": {"a": [1, 2]}}`)
	r.want(t, http.StatusAccepted)
	e.call("POST", "/api/emulator/devices/dev1/messages", `{"properties":{"only":"props"}}`).want(t, http.StatusAccepted)

	e.f.mu.Lock()
	msgs := e.f.messages
	e.f.mu.Unlock()
	if len(msgs) != 3 {
		t.Fatalf("messages = %+v", msgs)
	}
	if string(msgs[0].Data) != "hello" || !reflect.DeepEqual(msgs[0].Properties, map[string]string{"kind": "greeting", "n": "5", "urgent": "true"}) {
		t.Fatalf("msg 0 = %+v", msgs[0])
	}
	if string(msgs[1].Data) != `{"a":[1,2]}` || msgs[1].Properties != nil {
		t.Fatalf("msg 1 = %q %v", msgs[1].Data, msgs[1].Properties)
	}
	if msgs[2].Data != nil || msgs[2].Properties["only"] != "props" {
		t.Fatalf("msg 2 = %+v", msgs[2])
	}

	for _, body := range []string{`{"data":`, `"text"`, ``, `{"properties":{"x":{"nested":1}}}`,
		`{"properties":{"x":null}}`, `{"properties":{"":"v"}}`, `{"properties":[1]}`} {
		e.call("POST", "/api/emulator/devices/dev1/messages", body).wantRefused(t)
	}
	e.call("POST", "/api/emulator/devices/ghost/messages", `{"data":"x"}`).wantError(t, http.StatusNotFound, "NotFound")
	big := `{"data":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	e.call("POST", "/api/emulator/devices/dev1/messages", big).wantError(t, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge")
	e.f.mu.Lock()
	e.f.sendErr = fmt.Errorf("over 64 KiB: %w", ErrTooLarge)
	e.f.mu.Unlock()
	e.call("POST", "/api/emulator/devices/dev1/messages", `{"data":"x"}`).wantError(t, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge")
	e.f.mu.Lock()
	e.f.sendErr = fmt.Errorf("full: %w", ErrQueueFull)
	e.f.mu.Unlock()
	e.call("POST", "/api/emulator/devices/dev1/messages", `{"data":"x"}`).wantError(t, http.StatusForbidden, "DeviceMaximumQueueDepthExceeded")
}

func TestTelemetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ts := time.Date(2024, 5, 1, 12, 30, 0, 0, time.UTC)
	e.f.telemetry["dev1//temperature"] = TelemetryValue{Timestamp: ts, Value: 21.5}
	e.f.telemetry["dev1/thermostat1/temperature"] = TelemetryValue{Timestamp: ts, Value: map[string]any{"v": 1.0}}
	r := e.call("GET", "/api/devices/dev1/telemetry/temperature", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"timestamp":"2024-05-01T12:30:00.000Z","value":21.5}`)
	r = e.call("GET", "/api/devices/dev1/components/thermostat1/telemetry/temperature", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"timestamp":"2024-05-01T12:30:00.000Z","value":{"v":1}}`)
	if _, err := time.Parse(time.RFC3339, r.body["timestamp"].(string)); err != nil {
		t.Fatal(err)
	}
	e.call("GET", "/api/devices/dev1/telemetry/humidity", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", "/api/devices/ghost/telemetry/temperature", "").wantError(t, http.StatusNotFound, "NotFound")
}

func TestTelemetryHistoryRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ts := time.Date(2024, 5, 1, 12, 30, 0, 0, time.UTC)
	e.f.history = []TelemetryMessage{
		{Timestamp: ts, Component: "thermostat1", MessageID: "m1", CorrelationID: "c1", ContentType: "application/json",
			ContentEncoding: "utf-8", Properties: map[string]string{"unit": "C"}, SystemProperties: map[string]string{"message-id": "m1"},
			Data: json.RawMessage(`{"t":1}`)},
		{Timestamp: ts.Add(time.Second), Properties: map[string]string{}, SystemProperties: map[string]string{}, DataBase64: []byte{0xff, 0}},
	}
	r := e.call("GET", "/api/emulator/devices/dev1/telemetry", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"value":[
		{"timestamp":"2024-05-01T12:30:00.000Z","component":"thermostat1","messageId":"m1","correlationId":"c1",
		 "contentType":"application/json","contentEncoding":"utf-8","properties":{"unit":"C"},
		 "systemProperties":{"message-id":"m1"},"data":{"t":1}},
		{"timestamp":"2024-05-01T12:30:01.000Z","component":"","properties":{},"systemProperties":{},"dataBase64":"/wA="}]}`)

	e.call("GET", "/api/emulator/devices/dev1/telemetry?since=2024-05-01T12:30:00.5Z&component=thermostat1&limit=7", "").want(t, http.StatusOK)
	e.call("GET", "/api/emulator/devices/dev1/telemetry?component=", "").want(t, http.StatusOK)
	e.f.mu.Lock()
	got := e.f.queries
	e.f.mu.Unlock()
	want := []TelemetryQuery{
		{},
		{Since: ts.Add(501*time.Millisecond - time.Nanosecond), Component: "thermostat1", ByComponent: true, Limit: 7},
		{ByComponent: true},
	}
	if len(got) != len(want) {
		t.Fatalf("queries %+v, want %+v", got, want)
	}
	for i := range want {
		if !got[i].Since.Equal(want[i].Since) || got[i].Component != want[i].Component ||
			got[i].ByComponent != want[i].ByComponent || got[i].Limit != want[i].Limit {
			t.Errorf("query %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{
		"?since=yesterday", "?limit=0", "?limit=-1", "?limit=x", "?limit=100001", "?color=red",
		"?component=a.b", "?since=2024-05-01T12:30:00Z&since=2024-05-01T12:30:00Z",
	} {
		e.call("GET", "/api/emulator/devices/dev1/telemetry"+bad, "").wantError(t, http.StatusBadRequest, "BadRequest")
	}
	e.call("GET", "/api/emulator/devices/ghost/telemetry", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("POST", "/api/emulator/devices/dev1/telemetry", "{}").wantError(t, http.StatusMethodNotAllowed, "MethodNotAllowed")
}

// newCert makes a self-signed certificate in PEM, a CA or not.
func newCert(t *testing.T, cn string, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: isCA, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestEnrollmentGroups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.call("GET", "/api/enrollmentGroups", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"value":[]}`)

	r = e.call("PUT", "/api/enrollmentGroups/sas-group?api-version=2022-07-31", `{"displayName":"sas-group","type":"iot","attestation":{"type":"symmetricKey"}}`)
	r.want(t, http.StatusOK)
	var g EnrollmentGroup
	if err := json.Unmarshal(r.raw, &g); err != nil {
		t.Fatal(err)
	}
	if g.ID != "sas-group" || g.DisplayName != "sas-group" || g.Type != "iot" || !g.Enabled || g.Attestation.Type != "symmetricKey" {
		t.Fatalf("defaults not applied: %+v", g)
	}
	if strings.Contains(string(r.raw), `"x509"`) {
		t.Fatalf("symmetric group shows x509: %s", r.raw)
	}
	for _, k := range []string{g.Attestation.SymmetricKey.PrimaryKey, g.Attestation.SymmetricKey.SecondaryKey} {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(raw) != 64 {
			t.Fatalf("generated key %q: %d bytes, %v", k, len(raw), err)
		}
	}
	if g.Attestation.SymmetricKey.PrimaryKey == g.Attestation.SymmetricKey.SecondaryKey {
		t.Fatal("primary and secondary keys are equal")
	}
	r = e.call("GET", "/api/enrollmentGroups/sas-group", "")
	r.want(t, http.StatusOK)
	var got EnrollmentGroup
	if err := json.Unmarshal(r.raw, &got); err != nil || got != g {
		t.Fatalf("GET = %+v, %v; want %+v", got, err, g)
	}

	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	r = e.call("PUT", "/api/enrollmentGroups/sas-group", fmt.Sprintf(
		`{"id":"sas-group","displayName":"Fleet","type":"iotEdge","enabled":false,
		  "attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":%q}}}`, key))
	r.want(t, http.StatusOK)
	if err := json.Unmarshal(r.raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.DisplayName != "Fleet" || got.Type != "iotEdge" || got.Enabled || got.Attestation.SymmetricKey.PrimaryKey != key ||
		got.Attestation.SymmetricKey.SecondaryKey == "" {
		t.Fatalf("replace = %+v", got)
	}

	ca := newCert(t, "Emulator Test CA", true)
	r = e.call("PUT", "/api/enrollmentGroups/x509-group", mustJSON(t, map[string]any{
		"displayName": "Certs", "type": "iot",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"signingCertificates": map[string]any{"primary": map[string]any{"certificate": ca}}}},
	}))
	r.want(t, http.StatusOK)
	if err := json.Unmarshal(r.raw, &got); err != nil {
		t.Fatal(err)
	}
	prim := got.Attestation.X509.SigningCertificates.Primary
	if prim.Certificate != ca || len(prim.Info.SHA1Thumbprint) != 40 || strings.ToUpper(prim.Info.SHA1Thumbprint) != prim.Info.SHA1Thumbprint {
		t.Fatalf("x509 group = %+v", got)
	}
	if strings.Contains(string(r.raw), `"symmetricKey":{`) || strings.Contains(string(r.raw), `"secondary"`) {
		t.Fatalf("x509 group shows empty parts: %s", r.raw)
	}
	r = e.call("GET", "/api/enrollmentGroups", "")
	r.want(t, http.StatusOK)
	if n := len(r.body["value"].([]any)); n != 2 {
		t.Fatalf("groups listed = %d", n)
	}
	e.call("GET", "/api/enrollmentGroups/ghost", "").wantError(t, http.StatusNotFound, "NotFound")
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEnrollmentGroupRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	x509Body := func(cert string) string {
		return mustJSON(t, map[string]any{"displayName": "g", "type": "iot", "attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"signingCertificates": map[string]any{"primary": map[string]any{"certificate": cert}}}}})
	}
	badKey := "bm90IGVub3VnaA==" // 10 bytes: too short
	for _, tc := range []struct{ name, path, body string }{
		{"malformed", "/api/enrollmentGroups/g", `{"attestation":`},
		{"no displayName", "/api/enrollmentGroups/g", `{"type":"iot","attestation":{"type":"symmetricKey"}}`},
		{"no type", "/api/enrollmentGroups/g", `{"displayName":"g","attestation":{"type":"symmetricKey"}}`},
		{"underscore id", "/api/enrollmentGroups/my_group", `{"displayName":"g","type":"iot","attestation":{"type":"symmetricKey"}}`},
		{"empty body", "/api/enrollmentGroups/g", ``},
		{"no attestation", "/api/enrollmentGroups/g", `{"displayName":"x","type":"iot"}`},
		{"tpm", "/api/enrollmentGroups/g", `{"displayName":"g","type":"iot","attestation":{"type":"tpm"}}`},
		{"bad type", "/api/enrollmentGroups/g", `{"displayName":"g","type":"hub","attestation":{"type":"symmetricKey"}}`},
		{"id mismatch", "/api/enrollmentGroups/g", `{"displayName":"g","type":"iot","id":"other","attestation":{"type":"symmetricKey"}}`},
		{"bad id", "/api/enrollmentGroups/bad%20id", `{"displayName":"g","type":"iot","attestation":{"type":"symmetricKey"}}`},
		{"long id", "/api/enrollmentGroups/" + strings.Repeat("a", 256), `{"displayName":"g","type":"iot","attestation":{"type":"symmetricKey"}}`},
		{"key not base64", "/api/enrollmentGroups/g", `{"displayName":"g","type":"iot","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"!!secret!!"}}}`},
		{"key too short", "/api/enrollmentGroups/g", `{"displayName":"g","type":"iot","attestation":{"type":"symmetricKey","symmetricKey":{"secondaryKey":"` + badKey + `"}}}`},
		{"enabled not bool", "/api/enrollmentGroups/g", `{"displayName":"g","type":"iot","enabled":"yes","attestation":{"type":"symmetricKey"}}`},
		{"x509 without cert", "/api/enrollmentGroups/g", `{"displayName":"g","type":"iot","attestation":{"type":"x509"}}`},
		{"x509 garbage", "/api/enrollmentGroups/g", x509Body("not a certificate")},
		{"x509 bad DER", "/api/enrollmentGroups/g", x509Body(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})))},
		{"x509 not a CA", "/api/enrollmentGroups/g", x509Body(newCert(t, "leaf", false))},
		{"x509 with keys", "/api/enrollmentGroups/g", mustJSON(t, map[string]any{"displayName": "g", "type": "iot", "attestation": map[string]any{"type": "x509",
			"symmetricKey": map[string]any{"primaryKey": "AAAA"},
			"x509":         map[string]any{"signingCertificates": map[string]any{"primary": map[string]any{"certificate": newCert(t, "ca", true)}}}}})},
		{"symmetric with x509", "/api/enrollmentGroups/g", mustJSON(t, map[string]any{"displayName": "g", "type": "iot", "attestation": map[string]any{"type": "symmetricKey",
			"x509": map[string]any{"signingCertificates": map[string]any{"primary": map[string]any{"certificate": "x"}}}}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.call("PUT", tc.path, tc.body)
			r.wantRefused(t)
			if strings.Contains(string(r.raw), "!!secret!!") || strings.Contains(string(r.raw), badKey) {
				t.Fatalf("error quotes the key: %s", r.raw)
			}
		})
	}
	big := `{"displayName":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	e.call("PUT", "/api/enrollmentGroups/g", big).wantError(t, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge")
	e.f.mu.Lock()
	n := len(e.f.groups)
	e.f.mu.Unlock()
	if n != 0 {
		t.Fatalf("refused groups reached the backend: %d", n)
	}
}

func TestBackendErrorMapping(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("x: %w", ErrNotFound), http.StatusNotFound, "NotFound"},
		{fmt.Errorf("x: %w", ErrBadRequest), http.StatusBadRequest, "BadRequest"},
		{fmt.Errorf("x: %w", ErrDeviceOffline), http.StatusNotFound, "DeviceNotOnline"},
		{fmt.Errorf("x: %w", ErrTimeout), http.StatusGatewayTimeout, "GatewayTimeout"},
		{fmt.Errorf("x: %w", ErrQueueFull), http.StatusForbidden, "DeviceMaximumQueueDepthExceeded"},
		{fmt.Errorf("x: %w", ErrTooLarge), http.StatusRequestEntityTooLarge, "RequestEntityTooLarge"},
		{errors.New("disk on fire"), http.StatusInternalServerError, "InternalServerError"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.f.fail = tc.err
			for _, p := range []string{"/api/devices", "/api/devices/dev1", "/api/devices/dev1/credentials",
				"/api/devices/dev1/properties", "/api/devices/dev1/telemetry/t", "/api/enrollmentGroups", "/api/enrollmentGroups/g"} {
				r := e.call("GET", p, "")
				r.wantError(t, tc.status, tc.code)
				if tc.status == http.StatusInternalServerError && strings.Contains(string(r.raw), "disk on fire") {
					t.Fatalf("%s: internal error text leaked to the client: %s", p, r.raw)
				}
			}
			e.call("PUT", "/api/enrollmentGroups/g", `{"displayName":"g","type":"iot","attestation":{"type":"symmetricKey"}}`).wantError(t, tc.status, tc.code)
			if tc.status == http.StatusInternalServerError && !strings.Contains(e.log.String(), "disk on fire") {
				t.Fatalf("internal error not logged: %s", e.log.String())
			}
		})
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{42}, 32))
	e.callAuth("GET", "/api/devices", "", "Bearer wrong-token-value").wantError(t, http.StatusUnauthorized, "Unauthorized")
	e.call("GET", "/api/devices", "").want(t, http.StatusOK)
	r := e.call("PUT", "/api/enrollmentGroups/g", fmt.Sprintf(`{"displayName":"g","type":"iot","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":%q}}}`, key))
	r.want(t, http.StatusOK)
	e.f.mu.Lock()
	e.f.fail = errors.New("backend exploded")
	e.f.mu.Unlock()
	e.call("GET", "/api/enrollmentGroups/g", "").wantError(t, http.StatusInternalServerError, "InternalServerError")
	logs := e.log.String()
	if !strings.Contains(logs, "refused") || !strings.Contains(logs, "backend exploded") {
		t.Fatalf("expected log lines missing: %s", logs)
	}
	e.f.mu.Lock()
	secondary := e.f.groups["g"].Attestation.SymmetricKey.SecondaryKey
	e.f.mu.Unlock()
	if secondary == "" {
		t.Fatal("no generated secondary key")
	}
	for _, secret := range []string{testToken, "s3cr3t-token", "wrong-token-value", key, secondary} {
		if strings.Contains(logs, secret) {
			t.Fatalf("log holds a secret %q: %s", secret, logs)
		}
	}
}

func TestPropertiesViewEdgeCases(t *testing.T) {
	t.Parallel()
	// An ack without "value" and a plain object with "value" stay as reported.
	v := propertiesView(Twin{Reported: map[string]any{
		"odd":   map[string]any{"ac": 200.0},
		"plain": map[string]any{"value": 1.0},
	}}, "")
	jsonEqual(t, v, `{"odd":{"ac":200},"plain":{"value":1}}`)
	// A nil twin has an empty view.
	jsonEqual(t, propertiesView(Twin{}, ""), `{}`)
	jsonEqual(t, propertiesView(Twin{}, "c"), `{}`)
}

// TestGroupThumbprintFromBackend: a backend keeps only the PEM of an X.509
// group; GET and list still show each certificate's SHA-1 thumbprint.
func TestGroupThumbprintFromBackend(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca := newCert(t, "group-ca", true)
	block, _ := pem.Decode([]byte(ca))
	sum := sha1.Sum(block.Bytes)
	want := strings.ToUpper(hex.EncodeToString(sum[:]))
	g := EnrollmentGroup{ID: "x5", DisplayName: "x5", Type: "iot", Enabled: true}
	g.Attestation.Type = AttestationX509
	g.Attestation.X509.SigningCertificates.Primary.Certificate = ca
	e.f.mu.Lock()
	e.f.groups["x5"] = g
	e.f.mu.Unlock()
	for _, path := range []string{"/api/enrollmentGroups/x5", "/api/enrollmentGroups"} {
		r := e.call("GET", path, "")
		r.want(t, http.StatusOK)
		if !strings.Contains(string(r.raw), `"sha1Thumbprint":"`+want+`"`) {
			t.Errorf("GET %s = %s, want thumbprint %s", path, r.raw, want)
		}
	}
}
