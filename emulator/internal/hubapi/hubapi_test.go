package hubapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/sas"
)

const host = "hub.test"

type env struct {
	t    *testing.T
	core *core.Core
	srv  *httptest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := core.New(core.Config{IDScope: "0ne00000001", HubHost: host})
	t.Cleanup(c.Close)
	srv := httptest.NewServer(New(c, nil))
	t.Cleanup(srv.Close)
	return &env{t: t, core: c, srv: srv}
}

// token signs a service token with the named policy's primary key.
func (e *env) token(policy string) string {
	e.t.Helper()
	for _, p := range e.core.Policies() {
		if p.Name == policy {
			tok, err := sas.Build(p.PrimaryKey, host, time.Now().Add(time.Hour), p.Name)
			if err != nil {
				e.t.Fatal(err)
			}
			return tok
		}
	}
	e.t.Fatalf("no policy %s", policy)
	return ""
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return m
}

// errorCode checks IoT Hub's error shape and returns its code.
func (r resp) errorCode(t *testing.T) string {
	t.Helper()
	m := r.json(t)
	msg, _ := m["Message"].(string)
	code := r.header.Get("iothub-errorcode")
	if !strings.HasPrefix(msg, "ErrorCode:"+code+";") || code == "" || m["ExceptionMessage"] == nil {
		t.Fatalf("error %d body %s header %q is not IoT Hub's shape", r.status, r.body, code)
	}
	return code
}

func (e *env) do(method, path, policy string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	if !strings.Contains(path, "api-version") {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "api-version=2021-04-12"
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if policy != "" {
		req.Header.Set("Authorization", e.token(policy))
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func TestAPIVersionAndAuthRefused(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, path, policy string
		hdr                []string
		status             int
		code               string
	}{
		{"no api-version", "/devices/d1?x=1&api-version=", "iothubowner", nil, 400, "InvalidProtocolVersion"},
		{"old api-version", "/devices/d1?api-version=2018-06-30", "iothubowner", nil, 400, "InvalidProtocolVersion"},
		{"no token", "/devices/d1", "", nil, 401, "IotHubUnauthorizedAccess"},
		{"device token", "/devices/d1", "", []string{"Authorization", mustBuild(t, core.RandomKey(), host+"/devices/d1", "")}, 401, "IotHubUnauthorizedAccess"},
		{"unknown policy", "/devices/d1", "", []string{"Authorization", mustBuild(t, core.RandomKey(), host, "nobody")}, 401, "IotHubUnauthorizedAccess"},
		{"wrong key", "/devices/d1", "", []string{"Authorization", mustBuild(t, core.RandomKey(), host, "iothubowner")}, 401, "IotHubUnauthorizedAccess"},
		{"unknown path", "/nothing/here", "iothubowner", nil, 404, "IotHubNotFound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("GET", tc.path, tc.policy, nil, tc.hdr...)
			if r.status != tc.status || r.errorCode(t) != tc.code {
				t.Fatalf("status %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	// A token for another hub is refused although well signed.
	p := e.core.Policies()[0]
	other := mustBuild(t, p.PrimaryKey, "other.test", p.Name)
	if r := e.do("GET", "/devices", "", nil, "Authorization", other); r.status != 401 {
		t.Fatalf("token for another hub: %d", r.status)
	}
	// The secondary key signs too.
	sec := mustBuild(t, p.SecondaryKey, host, p.Name)
	if r := e.do("GET", "/devices", "", nil, "Authorization", sec); r.status != 200 {
		t.Fatalf("secondary key: %d %s", r.status, r.body)
	}
}

func mustBuild(t *testing.T, key, res, skn string) string {
	t.Helper()
	tok, err := sas.Build(key, res, time.Now().Add(time.Hour), skn)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestPolicyRights: each policy does what its rights allow and no more.
func TestPolicyRights(t *testing.T) {
	e := newEnv(t)
	if _, err := e.core.PutHubDevice("d0", true, "", core.HubDeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	type call struct {
		method, path string
		body         any
	}
	create := call{"PUT", "/devices/new-%s", map[string]any{}}
	readDev := call{"GET", "/devices/d0", nil}
	twinPatch := call{"PATCH", "/twins/d0", map[string]any{"tags": map[string]any{"a": 1}}}
	method := call{"POST", "/twins/d0/methods", map[string]any{"methodName": "m"}}
	for _, tc := range []struct {
		policy  string
		allowed map[*call]bool
	}{
		{"iothubowner", map[*call]bool{&create: true, &readDev: true, &twinPatch: true, &method: true}},
		{"service", map[*call]bool{&twinPatch: true, &method: true}},
		{"registryRead", map[*call]bool{&readDev: true}},
		{"registryReadWrite", map[*call]bool{&create: true, &readDev: true, &twinPatch: true}},
	} {
		for _, c := range []*call{&create, &readDev, &twinPatch, &method} {
			path := c.path
			if strings.Contains(path, "%s") {
				path = strings.ReplaceAll(path, "%s", tc.policy)
			}
			r := e.do(c.method, path, tc.policy, c.body)
			refused := r.status == 401
			if refused == tc.allowed[c] {
				t.Errorf("%s %s %s: status %d %s (allowed %v)", tc.policy, c.method, path, r.status, r.body, tc.allowed[c])
			}
			if refused && r.errorCode(t) != "IotHubUnauthorizedAccess" {
				t.Errorf("refusal code %s", r.errorCode(t))
			}
		}
	}
}

func TestRegistryCRUDWithETags(t *testing.T) {
	e := newEnv(t)
	key := core.RandomKey()
	r := e.do("PUT", "/devices/d1", "registryReadWrite", map[string]any{"deviceId": "d1",
		"authentication": map[string]any{"type": "sas", "symmetricKey": map[string]any{"primaryKey": key, "secondaryKey": ""}}})
	if r.status != 200 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	d := r.json(t)
	sk := d["authentication"].(map[string]any)["symmetricKey"].(map[string]any)
	if sk["primaryKey"] != key || sk["secondaryKey"] == "" || d["status"] != "enabled" {
		t.Fatalf("created %s", r.body)
	}
	etag1 := d["etag"].(string)
	if r.header.Get("ETag") != `"`+etag1+`"` {
		t.Fatalf("ETag header %q, body etag %q", r.header.Get("ETag"), etag1)
	}
	// A second create is a conflict.
	if r := e.do("PUT", "/devices/d1", "iothubowner", map[string]any{"deviceId": "d1"}); r.status != 409 || r.errorCode(t) != "DeviceAlreadyExists" {
		t.Fatalf("second create: %d %s", r.status, r.body)
	}
	// Update with the current etag: disabled, new etag.
	r = e.do("PUT", "/devices/d1", "iothubowner", map[string]any{"deviceId": "d1", "status": "disabled", "statusReason": "test"}, "If-Match", `"`+etag1+`"`)
	if r.status != 200 || r.json(t)["status"] != "disabled" || r.json(t)["etag"] == etag1 {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	if dev, _ := e.core.Device("d1"); dev.Enabled || dev.PrimaryKey != key {
		t.Fatalf("core sees %+v", dev)
	}
	// The old etag is now stale: update and delete are refused with 412.
	if r := e.do("PUT", "/devices/d1", "iothubowner", map[string]any{"deviceId": "d1", "status": "enabled"}, "If-Match", `"`+etag1+`"`); r.status != 412 || r.errorCode(t) != "PreconditionFailed" {
		t.Fatalf("stale update: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/devices/d1", "iothubowner", nil, "If-Match", `"`+etag1+`"`); r.status != 412 {
		t.Fatalf("stale delete: %d %s", r.status, r.body)
	}
	// Update of a device that does not exist.
	if r := e.do("PUT", "/devices/nope", "iothubowner", map[string]any{"deviceId": "nope"}, "If-Match", "*"); r.status != 404 || r.errorCode(t) != "DeviceNotFound" {
		t.Fatalf("update of unknown: %d %s", r.status, r.body)
	}
	// Body and path disagree; bad status; unsupported authentication.
	for _, b := range []map[string]any{
		{"deviceId": "other"},
		{"deviceId": "d2", "status": "paused"},
		{"deviceId": "d2", "authentication": map[string]any{"type": "selfSigned"}},
		{"deviceId": "d2", "authentication": map[string]any{"symmetricKey": map[string]any{"primaryKey": "not base64!"}}},
	} {
		if r := e.do("PUT", "/devices/d2", "iothubowner", b); r.status != 400 || r.errorCode(t) != "ArgumentInvalid" {
			t.Fatalf("bad body %v: %d %s", b, r.status, r.body)
		}
	}
	// IoT Edge: the capability stored, a scope generated (a given one
	// ignored); two parents refused (scopes in detail: TestEdgeScopes).
	edge := map[string]any{"capabilities": map[string]any{"iotEdge": true}, "deviceScope": "ms-azure-iot-edge://edge1-1"}
	r = e.do("PUT", "/devices/edge1", "iothubowner", edge)
	got := r.json(t)
	if r.status != 200 || got["capabilities"].(map[string]any)["iotEdge"] != true || got["deviceScope"] != "ms-azure-iot-edge://edge1-"+got["generationId"].(string) {
		t.Fatalf("edge device: %d %s", r.status, r.body)
	}
	edge["parentScopes"] = []string{"a", "b"}
	if r := e.do("PUT", "/devices/edge2", "iothubowner", edge); r.status != 400 {
		t.Fatalf("two parent scopes: %d", r.status)
	}
	e.do("DELETE", "/devices/edge1", "iothubowner", nil)

	// List, statistics, delete with "*".
	e.do("PUT", "/devices/d3", "iothubowner", map[string]any{})
	r = e.do("GET", "/devices", "registryRead", nil)
	var list []map[string]any
	if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 2 || list[0]["deviceId"] != "d1" || list[1]["deviceId"] != "d3" {
		t.Fatalf("list: %s", r.body)
	}
	st := e.do("GET", "/statistics/devices", "registryRead", nil).json(t)
	if st["totalDeviceCount"] != 2.0 || st["enabledDeviceCount"] != 1.0 || st["disabledDeviceCount"] != 1.0 {
		t.Fatalf("statistics %v", st)
	}
	if r := e.do("DELETE", "/devices/d1", "iothubowner", nil, "If-Match", "*"); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/devices/d1", "iothubowner", nil); r.status != 404 || r.errorCode(t) != "DeviceNotFound" {
		t.Fatalf("get deleted: %d %s", r.status, r.body)
	}
}

// fakeLink is a connected device that answers methods with answer.
type fakeLink struct {
	mu      sync.Mutex
	desired [][]byte
	answer  func(ctx context.Context, method string, payload []byte) (int, []byte, error)
	dropped error
}

func (l *fakeLink) Protocol() string             { return "fake" }
func (l *fakeLink) Subscribed(core.Feature) bool { return true }
func (l *fakeLink) PushDesired(b []byte, _ int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.desired = append(l.desired, b)
	return nil
}
func (l *fakeLink) InvokeMethod(ctx context.Context, m string, p []byte) (int, []byte, error) {
	return l.answer(ctx, m, p)
}
func (l *fakeLink) NotifyC2D() {}
func (l *fakeLink) Drop(reason error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropped = reason
}

func TestTwinTagsDesiredAndETag(t *testing.T) {
	e := newEnv(t)
	if _, err := e.core.PutHubDevice("d1", true, "", core.HubDeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	l := &fakeLink{}
	if _, err := e.core.Attach("d1", l, ""); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := e.core.PatchReported("d1", []byte(`{"temp":21}`)); st != 204 {
		t.Fatalf("reported: %d", st)
	}
	r := e.do("GET", "/twins/d1", "service", nil)
	tw := r.json(t)
	etag0 := tw["etag"].(string)
	if tw["connectionState"] != "Connected" || tw["properties"].(map[string]any)["reported"].(map[string]any)["temp"] != 21.0 {
		t.Fatalf("twin %s", r.body)
	}
	patch := map[string]any{"tags": map[string]any{"site": "lab", "floor": 2},
		"properties": map[string]any{"desired": map[string]any{"fan": true, "mode": "eco"}, "reported": map[string]any{"temp": 99}}}
	r = e.do("PATCH", "/twins/d1", "service", patch, "If-Match", `"`+etag0+`"`)
	if r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	tw = r.json(t)
	props := tw["properties"].(map[string]any)
	if tw["tags"].(map[string]any)["site"] != "lab" || props["desired"].(map[string]any)["fan"] != true ||
		props["reported"].(map[string]any)["temp"] != 21.0 || tw["etag"] == etag0 {
		t.Fatalf("patched twin %s (reported must stay read-only)", r.body)
	}
	if len(l.desired) != 1 || !strings.Contains(string(l.desired[0]), `"fan":true`) {
		t.Fatalf("desired pushed %q", l.desired)
	}
	// The old etag is stale.
	if r := e.do("PATCH", "/twins/d1", "service", map[string]any{"tags": map[string]any{"x": 1}}, "If-Match", `"`+etag0+`"`); r.status != 412 || r.errorCode(t) != "PreconditionFailed" {
		t.Fatalf("stale twin patch: %d %s", r.status, r.body)
	}
	// null removes a desired property and a tag.
	r = e.do("PATCH", "/twins/d1", "service", map[string]any{"tags": map[string]any{"floor": nil},
		"properties": map[string]any{"desired": map[string]any{"mode": nil}}}, "If-Match", "*")
	tw = r.json(t)
	if _, ok := tw["tags"].(map[string]any)["floor"]; ok {
		t.Fatalf("tag not removed: %s", r.body)
	}
	if _, ok := tw["properties"].(map[string]any)["desired"].(map[string]any)["mode"]; ok {
		t.Fatalf("desired not removed: %s", r.body)
	}
	// PUT replaces tags and desired.
	r = e.do("PUT", "/twins/d1", "iothubowner", map[string]any{"tags": map[string]any{"only": "this"},
		"properties": map[string]any{"desired": map[string]any{"speed": 3}}})
	tw = r.json(t)
	desired := tw["properties"].(map[string]any)["desired"].(map[string]any)
	if len(tw["tags"].(map[string]any)) != 1 || desired["speed"] != 3.0 || desired["fan"] != nil {
		t.Fatalf("replaced twin %s", r.body)
	}
	if r := e.do("GET", "/twins/nope", "service", nil); r.status != 404 || r.errorCode(t) != "DeviceNotFound" {
		t.Fatalf("twin of unknown: %d", r.status)
	}
	if r := e.do("PATCH", "/twins/d1", "service", map[string]any{"tags": map[string]any{"bad key": 1, "a$b": 2}}); r.status != 400 {
		t.Fatalf("bad tag key: %d %s", r.status, r.body)
	}
	if st := e.do("GET", "/statistics/service", "service", nil).json(t); st["connectedDeviceCount"] != 1.0 {
		t.Fatalf("service statistics %v", st)
	}
}

func TestDirectMethods(t *testing.T) {
	e := newEnv(t)
	if _, err := e.core.PutHubDevice("d1", true, "", core.HubDeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	// Offline.
	r := e.do("POST", "/twins/d1/methods", "service", map[string]any{"methodName": "reboot", "responseTimeoutInSeconds": 5})
	if r.status != 404 || r.errorCode(t) != "DeviceNotOnline" {
		t.Fatalf("offline: %d %s", r.status, r.body)
	}
	for _, b := range []map[string]any{
		{"methodName": "reboot", "responseTimeoutInSeconds": 4},
		{"methodName": "reboot", "responseTimeoutInSeconds": 301},
		{"methodName": "reboot", "connectTimeoutInSeconds": -1},
		{"methodName": ""},
	} {
		if r := e.do("POST", "/twins/d1/methods", "service", b); r.status != 400 || r.errorCode(t) != "ArgumentInvalid" {
			t.Fatalf("%v: %d %s", b, r.status, r.body)
		}
	}
	l := &fakeLink{answer: func(ctx context.Context, m string, p []byte) (int, []byte, error) {
		if m == "slow" {
			<-ctx.Done()
			return 0, nil, ctx.Err()
		}
		return 201, append([]byte(`{"echo":`), append(p, '}')...), nil
	}}
	if _, err := e.core.Attach("d1", l, ""); err != nil {
		t.Fatal(err)
	}
	r = e.do("POST", "/twins/d1/methods", "service", map[string]any{"methodName": "reboot", "payload": map[string]any{"in": 1}, "responseTimeoutInSeconds": 5})
	if r.status != 200 || r.json(t)["status"] != 201.0 || !strings.Contains(string(r.body), `"echo":{"in":1}`) {
		t.Fatalf("method: %d %s", r.status, r.body)
	}
	if hist, _ := e.core.CommandHistory("d1", "", "reboot"); len(hist) != 1 {
		t.Fatalf("history %v", hist)
	}
	r = e.do("POST", "/twins/d1/methods", "service", map[string]any{"methodName": "slow", "responseTimeoutInSeconds": 5})
	if r.status != 504 || r.errorCode(t) != "GatewayTimeoutException" {
		t.Fatalf("timeout: %d %s", r.status, r.body)
	}
}

func TestDisableDropsConnection(t *testing.T) {
	e := newEnv(t)
	d, err := e.core.PutHubDevice("d1", true, "", core.HubDeviceSpec{})
	if err != nil {
		t.Fatal(err)
	}
	l := &fakeLink{}
	if _, err := e.core.Attach("d1", l, ""); err != nil {
		t.Fatal(err)
	}
	if r := e.do("PUT", "/devices/d1", "iothubowner", map[string]any{"status": "disabled"}, "If-Match", d.ETag); r.status != 200 {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	if l.dropped == nil {
		t.Fatal("the connection of a disabled device was not dropped")
	}
	if _, err := e.core.Attach("d1", &fakeLink{}, ""); !errors.Is(err, core.ErrUnauthorized) {
		t.Fatalf("a disabled device connected: %v", err)
	}
}

func TestBulkRegistry(t *testing.T) {
	e := newEnv(t)
	bulk := func(policy string, list ...map[string]any) (int, map[string]any) {
		r := e.do("POST", "/devices", policy, list)
		if r.status != 200 {
			return r.status, nil
		}
		return r.status, r.json(t)
	}
	st, res := bulk("registryReadWrite",
		map[string]any{"id": "b1", "importMode": "create"},
		map[string]any{"id": "b2", "importMode": "create", "status": "disabled"})
	if st != 200 || res["isSuccessful"] != true {
		t.Fatalf("bulk create: %d %v", st, res)
	}
	d1, _ := e.core.HubDevice("b1")
	if d2, err := e.core.HubDevice("b2"); err != nil || d2.Enabled {
		t.Fatalf("b2 %+v %v", d2, err)
	}
	// One entry fails, the others apply.
	_, res = bulk("iothubowner",
		map[string]any{"id": "b1", "importMode": "create"},
		map[string]any{"id": "b2", "importMode": "update", "status": "enabled"},
		map[string]any{"id": "b1", "importMode": "updateIfMatchETag", "eTag": "stale"},
		map[string]any{"id": "b1", "importMode": "deleteIfMatchETag"},
		map[string]any{"id": "b3", "importMode": "explode"})
	errs, _ := res["errors"].([]any)
	codes := []string{}
	for _, x := range errs {
		codes = append(codes, x.(map[string]any)["errorCode"].(string))
	}
	if res["isSuccessful"] != false || strings.Join(codes, ",") != "DeviceAlreadyExists,PreconditionFailed,ArgumentInvalid,ArgumentInvalid" {
		t.Fatalf("bulk with failures: %v", res)
	}
	if d2, _ := e.core.HubDevice("b2"); !d2.Enabled {
		t.Fatal("the update in a partly failed bulk was not applied")
	}
	_, res = bulk("iothubowner", map[string]any{"id": "b1", "importMode": "deleteIfMatchETag", "eTag": d1.ETag},
		map[string]any{"id": "b2", "importMode": "delete"})
	if res["isSuccessful"] != true || len(e.core.HubDevices()) != 0 {
		t.Fatalf("bulk delete: %v", res)
	}
	if st, _ := bulk("registryRead", map[string]any{"id": "b9", "importMode": "create"}); st != 401 {
		t.Fatalf("bulk with registryRead: %d", st)
	}
	if st, _ := bulk("iothubowner"); st != 400 {
		t.Fatalf("empty bulk: %d", st)
	}
}

func TestPurgeCommands(t *testing.T) {
	e := newEnv(t)
	if _, err := e.core.PutHubDevice("d1", true, "", core.HubDeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := e.core.SendCloudToDevice(t.Context(), "d1", []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if r := e.do("DELETE", "/devices/d1/commands", "registryRead", nil); r.status != 401 {
		t.Fatalf("purge with registryRead: %d", r.status)
	}
	r := e.do("DELETE", "/devices/d1/commands", "service", nil)
	if r.status != 200 || r.json(t)["totalMessagesPurged"] != 3.0 || e.core.PendingC2D("d1") != 0 {
		t.Fatalf("purge: %d %s, %d pending", r.status, r.body, e.core.PendingC2D("d1"))
	}
	if r := e.do("DELETE", "/devices/nope/commands", "service", nil); r.status != 404 || r.errorCode(t) != "DeviceNotFound" {
		t.Fatalf("purge of unknown: %d %s", r.status, r.body)
	}
}

func TestQueryPaging(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if _, err := e.core.PutHubDevice(id, true, "", core.HubDeviceSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	cont := ""
	for pages := 0; ; pages++ {
		hdr := []string{"x-ms-max-item-count", "2"}
		if cont != "" {
			hdr = append(hdr, "x-ms-continuation", cont)
		}
		r := e.do("POST", "/devices/query", "service", map[string]any{"query": "SELECT deviceId FROM devices"}, hdr...)
		var rows []map[string]any
		if err := json.Unmarshal(r.body, &rows); err != nil || r.status != 200 || len(rows) > 2 {
			t.Fatalf("page: %d %s", r.status, r.body)
		}
		for _, row := range rows {
			got = append(got, row["deviceId"].(string))
		}
		if cont = r.header.Get("x-ms-continuation"); cont == "" || pages > 5 {
			break
		}
	}
	if strings.Join(got, ",") != "a,b,c,d,e" {
		t.Fatalf("paged %v", got)
	}
	if r := e.do("POST", "/devices/query", "service", map[string]any{"query": "SELECT * FROM devices WHERE"}); r.status != 400 || r.errorCode(t) != "ArgumentInvalid" {
		t.Fatalf("bad query: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/devices/query", "service", map[string]any{"query": "SELECT *"}, "x-ms-continuation", "garbage"); r.status != 400 {
		t.Fatalf("bad continuation: %d", r.status)
	}
}

// waitJob polls a job until it has ended (a bounded wait, not a measurement).
func (e *env) waitJob(id string) map[string]any {
	e.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		j := e.do("GET", "/jobs/v2/"+id, "service", nil).json(e.t)
		if s := j["status"]; s == "completed" || s == "failed" || s == "cancelled" {
			return j
		}
	}
	e.t.Fatalf("job %s did not end", id)
	return nil
}

func TestJobs(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"j1", "j2", "j3"} {
		if _, err := e.core.PutHubDevice(id, true, "", core.HubDeviceSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	calls := map[string]string{}
	for _, id := range []string{"j1", "j2"} {
		id := id
		l := &fakeLink{answer: func(_ context.Context, m string, p []byte) (int, []byte, error) {
			mu.Lock()
			calls[id] = m + string(p)
			mu.Unlock()
			return 200, nil, nil
		}}
		if _, err := e.core.Attach(id, l, ""); err != nil {
			t.Fatal(err)
		}
	}
	// A method job over three devices, one offline.
	r := e.do("PUT", "/jobs/v2/m1", "service", map[string]any{"jobId": "m1", "type": "scheduleDeviceMethod",
		"queryCondition":      "deviceId IN ['j1', 'j2', 'j3']",
		"cloudToDeviceMethod": map[string]any{"methodName": "reboot", "payload": map[string]any{"n": 1}, "responseTimeoutInSeconds": 5}})
	if r.status != 200 || r.json(t)["status"] != "scheduled" {
		t.Fatalf("schedule: %d %s", r.status, r.body)
	}
	j := e.waitJob("m1")
	st := j["deviceJobStatistics"].(map[string]any)
	if j["status"] != "completed" || st["deviceCount"] != 3.0 || st["succeededCount"] != 2.0 || st["failedCount"] != 1.0 || st["pendingCount"] != 0.0 {
		t.Fatalf("method job %v", j)
	}
	mu.Lock()
	if calls["j1"] != `reboot{"n":1}` || calls["j2"] != `reboot{"n":1}` {
		t.Fatalf("devices saw %v", calls)
	}
	mu.Unlock()
	if r := e.do("PUT", "/jobs/v2/m1", "service", map[string]any{"type": "scheduleDeviceMethod", "queryCondition": "deviceId = 'j1'",
		"cloudToDeviceMethod": map[string]any{"methodName": "x"}}); r.status != 409 {
		t.Fatalf("same job id again: %d %s", r.status, r.body)
	}
	// A twin job by tag condition.
	if _, err := e.core.UpdateHubTwin(t.Context(), "j3", "*", map[string]any{"site": "lab"}, nil, false); err != nil {
		t.Fatal(err)
	}
	r = e.do("PUT", "/jobs/v2/t1", "service", map[string]any{"type": "scheduleUpdateTwin", "queryCondition": "tags.site = 'lab'",
		"updateTwin": map[string]any{"tags": map[string]any{"updated": true}, "properties": map[string]any{"desired": map[string]any{"fan": 1}}}})
	if r.status != 200 {
		t.Fatalf("twin job: %d %s", r.status, r.body)
	}
	if j := e.waitJob("t1"); j["status"] != "completed" || j["deviceJobStatistics"].(map[string]any)["succeededCount"] != 1.0 {
		t.Fatalf("twin job %v", j)
	}
	if tw, _ := e.core.HubTwin("j3"); tw.Tags["updated"] != true || tw.Desired["fan"] != 1.0 {
		t.Fatalf("twin after the job %+v", tw)
	}
	// A job in the future is cancelled; a finished one cannot be.
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if r := e.do("PUT", "/jobs/v2/later", "service", map[string]any{"type": "scheduleDeviceMethod", "queryCondition": "deviceId = 'j1'",
		"cloudToDeviceMethod": map[string]any{"methodName": "x"}, "startTime": future}); r.status != 200 {
		t.Fatalf("future job: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/jobs/v2/later/cancel", "service", nil); r.status != 200 || r.json(t)["status"] != "cancelled" {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/jobs/v2/m1/cancel", "service", nil); r.status != 400 {
		t.Fatalf("cancel of a finished job: %d %s", r.status, r.body)
	}
	// Query by type.
	r = e.do("GET", "/jobs/v2/query?jobType=scheduleUpdateTwin", "service", nil)
	var jobs []map[string]any
	if err := json.Unmarshal(r.body, &jobs); err != nil || len(jobs) != 1 || jobs[0]["jobId"] != "t1" {
		t.Fatalf("job query: %s", r.body)
	}
	// Refusals: bad type, no condition, bad condition, bad timeout, registryRead.
	for _, b := range []map[string]any{
		{"type": "explode", "queryCondition": "deviceId = 'j1'"},
		{"type": "scheduleDeviceMethod", "cloudToDeviceMethod": map[string]any{"methodName": "x"}},
		{"type": "scheduleDeviceMethod", "queryCondition": "deviceId ==", "cloudToDeviceMethod": map[string]any{"methodName": "x"}},
		{"type": "scheduleDeviceMethod", "queryCondition": "deviceId = 'j1'", "cloudToDeviceMethod": map[string]any{"methodName": "x", "responseTimeoutInSeconds": 1}},
		{"type": "scheduleUpdateTwin", "queryCondition": "deviceId = 'j1'"},
	} {
		if r := e.do("PUT", "/jobs/v2/bad", "service", b); r.status != 400 || r.errorCode(t) != "ArgumentInvalid" {
			t.Fatalf("%v: %d %s", b, r.status, r.body)
		}
	}
	if r := e.do("PUT", "/jobs/v2/bad", "service", map[string]any{"type": "scheduleDeviceMethod", "cloudToDeviceMethod": map[string]any{"methodName": "x"}}); !strings.Contains(string(r.body), "queryCondition is required") {
		t.Fatalf("a job without a condition: %d %s", r.status, r.body)
	}
	if r := e.do("PUT", "/jobs/v2/ro", "registryRead", map[string]any{"type": "scheduleDeviceMethod", "queryCondition": "deviceId = 'j1'",
		"cloudToDeviceMethod": map[string]any{"methodName": "x"}}); r.status != 401 {
		t.Fatalf("job with registryRead: %d", r.status)
	}
	if r := e.do("GET", "/jobs/v2/nope", "service", nil); r.status != 404 || r.errorCode(t) != "JobNotFound" {
		t.Fatalf("unknown job: %d", r.status)
	}
}

func TestDigitalTwins(t *testing.T) {
	e := newEnv(t)
	if _, err := e.core.PutHubDevice("pnp", true, "", core.HubDeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var methods []string
	l := &fakeLink{answer: func(_ context.Context, m string, p []byte) (int, []byte, error) {
		mu.Lock()
		methods = append(methods, m+" "+string(p))
		mu.Unlock()
		return 202, []byte(`{"done":true}`), nil
	}}
	if _, err := e.core.Attach("pnp", l, "dtmi:x:y;1"); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := e.core.PatchReported("pnp", []byte(`{"serial":"A1","thermostat1":{"__t":"c","target":20}}`)); st != 204 {
		t.Fatal(st)
	}
	r := e.do("GET", "/digitaltwins/pnp", "service", nil)
	dt := r.json(t)
	th, _ := dt["thermostat1"].(map[string]any)
	if r.status != 200 || dt["$dtId"] != "pnp" || dt["serial"] != "A1" || dt["$metadata"].(map[string]any)["$model"] != "dtmi:x:y;1" ||
		th == nil || th["target"] != 20.0 || th["__t"] != nil {
		t.Fatalf("digital twin %d %s", r.status, r.body)
	}
	etag := r.header.Get("ETag")
	ops := []map[string]any{{"op": "add", "path": "/fan", "value": true}, {"op": "replace", "path": "/thermostat1/target", "value": 22}}
	if r := e.do("PATCH", "/digitaltwins/pnp", "service", ops, "If-Match", etag); r.status != 202 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	tw, _ := e.core.HubTwin("pnp")
	comp, _ := tw.Desired["thermostat1"].(map[string]any)
	if tw.Desired["fan"] != true || comp["__t"] != "c" || comp["target"] != 22.0 {
		t.Fatalf("desired after the patch %v", tw.Desired)
	}
	dt = e.do("GET", "/digitaltwins/pnp", "service", nil).json(t)
	if dt["$metadata"].(map[string]any)["fan"].(map[string]any)["desiredValue"] != true {
		t.Fatalf("desired value in $metadata: %v", dt["$metadata"])
	}
	if r := e.do("PATCH", "/digitaltwins/pnp", "service", []map[string]any{{"op": "remove", "path": "/fan"}}, "If-Match", etag); r.status != 412 {
		t.Fatalf("stale etag: %d", r.status)
	}
	for _, bad := range [][]map[string]any{{{"op": "move", "path": "/fan"}}, {{"op": "add", "path": "fan", "value": 1}}, {{"op": "add", "path": "/fan"}}, {}} {
		if r := e.do("PATCH", "/digitaltwins/pnp", "service", bad); r.status != 400 {
			t.Fatalf("bad patch %v: %d %s", bad, r.status, r.body)
		}
	}
	r = e.do("POST", "/digitaltwins/pnp/components/thermostat1/commands/getMaxMinReport?responseTimeoutInSeconds=5", "service", "2024-01-01")
	if r.status != 200 || r.header.Get("x-ms-command-statuscode") != "202" || string(r.body) != `{"done":true}` {
		t.Fatalf("component command: %d %s %v", r.status, r.body, r.header)
	}
	if r := e.do("POST", "/digitaltwins/pnp/commands/reboot?responseTimeoutInSeconds=1", "service", nil); r.status != 400 {
		t.Fatalf("bad timeout: %d", r.status)
	}
	if r := e.do("POST", "/digitaltwins/pnp/commands/reboot", "service", nil); r.status != 200 {
		t.Fatalf("root command: %d %s", r.status, r.body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(methods) != 2 || methods[0] != `thermostat1*getMaxMinReport "2024-01-01"` || methods[1] != "reboot null" {
		t.Fatalf("device saw %q", methods)
	}
}

func TestConfigurations(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"c1", "c2", "c3"} {
		if _, err := e.core.PutHubDevice(id, true, "", core.HubDeviceSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"c1", "c2"} {
		if _, err := e.core.UpdateHubTwin(t.Context(), id, "*", map[string]any{"env": "prod"}, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	cfg := map[string]any{"id": "fw", "labels": map[string]any{"team": "a"}, "priority": 10,
		"targetCondition": "tags.env = 'prod'",
		"content":         map[string]any{"deviceContent": map[string]any{"properties.desired.firmware": map[string]any{"version": "2.0"}, "properties.desired.mode.level": 3}},
		"metrics":         map[string]any{"queries": map[string]any{"updated": "SELECT deviceId FROM devices WHERE properties.reported.firmware.version = '2.0'"}}}
	r := e.do("PUT", "/configurations/fw", "registryReadWrite", cfg)
	if r.status != 200 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	got := r.json(t)
	sys := got["systemMetrics"].(map[string]any)["results"].(map[string]any)
	if sys["targetedCount"] != 2.0 || sys["appliedCount"] != 2.0 || got["labels"].(map[string]any)["team"] != "a" || got["etag"] == "" {
		t.Fatalf("configuration %s", r.body)
	}
	for _, id := range []string{"c1", "c2"} {
		tw, _ := e.core.HubTwin(id)
		fw, _ := tw.Desired["firmware"].(map[string]any)
		mode, _ := tw.Desired["mode"].(map[string]any)
		if fw["version"] != "2.0" || mode["level"] != 3.0 {
			t.Fatalf("%s desired %v", id, tw.Desired)
		}
	}
	if tw, _ := e.core.HubTwin("c3"); tw.Desired["firmware"] != nil {
		t.Fatalf("c3 is not targeted but got %v", tw.Desired)
	}
	// A device reports the version: the custom metric counts it.
	if st, _, _ := e.core.PatchReported("c1", []byte(`{"firmware":{"version":"2.0"}}`)); st != 204 {
		t.Fatal(st)
	}
	got = e.do("GET", "/configurations/fw", "registryRead", nil).json(t)
	if got["metrics"].(map[string]any)["results"].(map[string]any)["updated"] != 1.0 {
		t.Fatalf("metrics %v", got["metrics"])
	}
	etag := got["etag"].(string)
	if r := e.do("PUT", "/configurations/fw", "iothubowner", cfg); r.status != 409 {
		t.Fatalf("second create: %d", r.status)
	}
	if r := e.do("PUT", "/configurations/fw", "iothubowner", cfg, "If-Match", `"`+etag+`"`); r.status != 200 || r.json(t)["etag"] == etag {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	if r := e.do("PUT", "/configurations/fw", "iothubowner", cfg, "If-Match", `"`+etag+`"`); r.status != 412 {
		t.Fatalf("stale update: %d", r.status)
	}
	for _, bad := range []map[string]any{
		{"targetCondition": "tags.env =="},
		{"content": map[string]any{"deviceContent": map[string]any{"tags.x": 1}}},
		{"content": map[string]any{"modulesContent": map[string]any{"m": map[string]any{}}}},
		{"metrics": map[string]any{"queries": map[string]any{"x": "DROP"}}},
		{"id": "other"},
	} {
		if r := e.do("PUT", "/configurations/bad", "iothubowner", bad); r.status != 400 {
			t.Fatalf("bad %v: %d %s", bad, r.status, r.body)
		}
	}
	if r := e.do("PUT", "/configurations/ro", "registryRead", map[string]any{}); r.status != 401 {
		t.Fatalf("create with registryRead: %d", r.status)
	}
	r = e.do("POST", "/configurations/testQueries", "service", map[string]any{"targetCondition": "tags.a = ", "customMetricQueries": map[string]any{"ok": "SELECT deviceId FROM devices", "bad": "SELECT"}})
	tq := r.json(t)
	if tq["targetConditionError"] == "" || tq["customMetricQueryErrors"].(map[string]any)["bad"] == nil || tq["customMetricQueryErrors"].(map[string]any)["ok"] != nil {
		t.Fatalf("testQueries %s", r.body)
	}
	if r := e.do("POST", "/devices/c3/applyConfigurationContent", "iothubowner", map[string]any{"deviceContent": map[string]any{"properties.desired.x": 1}}); r.status != 204 {
		t.Fatalf("applyConfigurationContent: %d %s", r.status, r.body)
	}
	if tw, _ := e.core.HubTwin("c3"); tw.Desired["x"] != 1.0 {
		t.Fatalf("c3 desired %v", tw.Desired)
	}
	var list []map[string]any
	if err := json.Unmarshal(e.do("GET", "/configurations", "registryRead", nil).body, &list); err != nil || len(list) != 1 {
		t.Fatalf("list %v %v", list, err)
	}
	if r := e.do("DELETE", "/configurations/fw", "iothubowner", nil, "If-Match", "*"); r.status != 204 {
		t.Fatalf("delete: %d", r.status)
	}
	if r := e.do("GET", "/configurations/fw", "iothubowner", nil); r.status != 404 || r.errorCode(t) != "ConfigurationNotFound" {
		t.Fatalf("deleted: %d %s", r.status, r.body)
	}
}
