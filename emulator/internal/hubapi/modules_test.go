package hubapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// TestModuleRegistry: module CRUD with etags and IoT Hub's errors; a
// module of an unknown device, a second create, a stale etag, keys with
// thumbprints, a CA module and a body naming another module are refused.
func TestModuleRegistry(t *testing.T) {
	e := newEnv(t)
	if r := e.do("PUT", "/devices/d1/modules/m1", "iothubowner", map[string]any{}); r.status != 404 || r.errorCode(t) != "DeviceNotFound" {
		t.Fatalf("module of an unknown device: %d %s", r.status, r.body)
	}
	e.do("PUT", "/devices/d1", "iothubowner", map[string]any{})
	r := e.do("PUT", "/devices/d1/modules/m1", "registryReadWrite", map[string]any{"deviceId": "d1", "moduleId": "m1", "managedBy": "me"})
	m := r.json(t)
	keys, _ := m["authentication"].(map[string]any)["symmetricKey"].(map[string]any)
	if r.status != 200 || m["moduleId"] != "m1" || m["deviceId"] != "d1" || m["managedBy"] != "me" || keys["primaryKey"] == "" ||
		m["etag"] == "" || m["generationId"] == "" || m["connectionState"] != "Disconnected" || `"`+m["etag"].(string)+`"` != r.header.Get("ETag") {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r := e.do("PUT", "/devices/d1/modules/m1", "iothubowner", map[string]any{}); r.status != 409 || r.errorCode(t) != "ModuleAlreadyExistsOnDevice" {
		t.Fatalf("second create: %d %s", r.status, r.body)
	}
	for path, code := range map[string]string{"/devices/d1/modules/nope": "ModuleNotFound", "/devices/d9/modules/m1": "DeviceNotFound"} {
		if r := e.do("GET", path, "registryRead", nil); r.status != 404 || r.errorCode(t) != code {
			t.Fatalf("GET %s: %d %s", path, r.status, r.body)
		}
	}
	if r := e.do("PUT", "/devices/d1/modules/nope", "iothubowner", map[string]any{}, "If-Match", "*"); r.status != 404 || r.errorCode(t) != "ModuleNotFound" {
		t.Fatalf("update of a missing module: %d %s", r.status, r.body)
	}
	// A registryRead token cannot write.
	if r := e.do("PUT", "/devices/d1/modules/m2", "registryRead", map[string]any{}); r.status != 401 {
		t.Fatalf("registryRead create: %d", r.status)
	}
	for _, b := range []map[string]any{
		{"moduleId": "other"},
		{"deviceId": "d2"},
		{"authentication": map[string]any{"type": "certificateAuthority"}},
		{"authentication": map[string]any{"type": "selfSigned"}},
		{"authentication": map[string]any{"symmetricKey": map[string]any{"primaryKey": "not base64!"}}},
	} {
		if r := e.do("PUT", "/devices/d1/modules/m2", "iothubowner", b); r.status != 400 || r.errorCode(t) != "ArgumentInvalid" {
			t.Fatalf("bad body %v: %d %s", b, r.status, r.body)
		}
	}
	if r := e.do("PUT", "/devices/d1/modules/bad%2Fid", "iothubowner", map[string]any{}); r.status != 400 {
		t.Fatalf("module id with '/': %d %s", r.status, r.body)
	}
	// Update with the etag keeps the keys; the old etag is then stale.
	etag := r.header.Get("ETag")
	r = e.do("PUT", "/devices/d1/modules/m1", "iothubowner", map[string]any{"managedBy": "you"}, "If-Match", etag)
	u := r.json(t)
	if r.status != 200 || u["managedBy"] != "you" || u["etag"] == m["etag"] ||
		u["authentication"].(map[string]any)["symmetricKey"].(map[string]any)["primaryKey"] != keys["primaryKey"] {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	if r := e.do("PUT", "/devices/d1/modules/m1", "iothubowner", map[string]any{}, "If-Match", etag); r.status != 412 || r.errorCode(t) != "PreconditionFailed" {
		t.Fatalf("stale etag: %d %s", r.status, r.body)
	}
	// A selfSigned module: thumbprints, no keys.
	tp := strings.Repeat("AB", 20)
	r = e.do("PUT", "/devices/d1/modules/x509", "iothubowner", map[string]any{"authentication": map[string]any{"type": "selfSigned",
		"x509Thumbprint": map[string]any{"primaryThumbprint": strings.ToLower(tp)}}})
	x := r.json(t)
	auth := x["authentication"].(map[string]any)
	if r.status != 200 || auth["type"] != "selfSigned" || auth["x509Thumbprint"].(map[string]any)["primaryThumbprint"] != tp ||
		auth["symmetricKey"].(map[string]any)["primaryKey"] != nil {
		t.Fatalf("selfSigned module: %d %s", r.status, r.body)
	}
	// List, sorted; delete with a stale etag refused, then deleted.
	r = e.do("GET", "/devices/d1/modules", "registryRead", nil)
	var list []map[string]any
	if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 2 || list[0]["moduleId"] != "m1" || list[1]["moduleId"] != "x509" {
		t.Fatalf("list: %s", r.body)
	}
	if r := e.do("GET", "/devices/d9/modules", "registryRead", nil); r.status != 404 {
		t.Fatalf("list of an unknown device: %d", r.status)
	}
	if r := e.do("DELETE", "/devices/d1/modules/m1", "iothubowner", nil, "If-Match", etag); r.status != 412 {
		t.Fatalf("delete with a stale etag: %d", r.status)
	}
	if r := e.do("DELETE", "/devices/d1/modules/m1", "iothubowner", nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/devices/d1/modules/m1", "iothubowner", nil); r.status != 404 || r.errorCode(t) != "ModuleNotFound" {
		t.Fatalf("second delete: %d %s", r.status, r.body)
	}
	// Deleting the device deletes its modules: a new device of the same id has none.
	e.do("DELETE", "/devices/d1", "iothubowner", nil)
	e.do("PUT", "/devices/d1", "iothubowner", map[string]any{})
	if r := e.do("GET", "/devices/d1/modules", "registryRead", nil); r.status != 200 || string(r.body) != "[]" {
		t.Fatalf("modules of a recreated device: %d %s", r.status, r.body)
	}
}

// TestModuleTwinAndMethods: a module twin has its own desired and
// reported sections and $versions (the device twin is another one);
// desired changes reach the module's connection; module methods reach the
// module, not the device.
func TestModuleTwinAndMethods(t *testing.T) {
	e := newEnv(t)
	e.do("PUT", "/devices/d1", "iothubowner", map[string]any{})
	e.do("PUT", "/devices/d1/modules/m1", "iothubowner", map[string]any{})
	r := e.do("GET", "/twins/d1/modules/m1", "service", nil)
	tw := r.json(t)
	if r.status != 200 || tw["moduleId"] != "m1" || tw["deviceId"] != "d1" || tw["etag"] == "" {
		t.Fatalf("module twin: %d %s", r.status, r.body)
	}
	desired := func(tw map[string]any) map[string]any {
		return tw["properties"].(map[string]any)["desired"].(map[string]any)
	}
	v0 := desired(tw)["$version"].(float64)
	if r := e.do("GET", "/twins/d1/modules/m9", "service", nil); r.status != 404 || r.errorCode(t) != "ModuleNotFound" {
		t.Fatalf("twin of an unknown module: %d %s", r.status, r.body)
	}
	l := &fakeLink{answer: func(_ context.Context, method string, p []byte) (int, []byte, error) {
		return 200, []byte(`{"module":"` + method + `"}`), nil
	}}
	sess, _, err := e.core.Connect(core.ModuleKey("d1", "m1"), core.HubAuth{}, l, "")
	if err != nil {
		t.Fatal(err)
	}
	r = e.do("PATCH", "/twins/d1/modules/m1", "service", map[string]any{"properties": map[string]any{"desired": map[string]any{"mode": "eco"}}, "tags": map[string]any{"k": 1}}, "If-Match", r.header.Get("ETag"))
	tw = r.json(t)
	if r.status != 200 || desired(tw)["mode"] != "eco" || desired(tw)["$version"].(float64) != v0+1 || tw["tags"].(map[string]any)["k"] != 1.0 {
		t.Fatalf("module twin patch: %d %s", r.status, r.body)
	}
	if len(l.desired) != 1 || !strings.Contains(string(l.desired[0]), `"mode":"eco"`) {
		t.Fatalf("desired pushed to the module: %q", l.desired)
	}
	if r := e.do("PATCH", "/twins/d1/modules/m1", "service", map[string]any{"tags": map[string]any{"k": 2}}, "If-Match", `"AAAAAAAAAAE="`); r.status != 412 {
		t.Fatalf("stale twin etag: %d", r.status)
	}
	// The module reports; its reported $version grows; the device twin stays as it was.
	if st, v, body := sess.PatchReported(context.Background(), []byte(`{"fw":"1.0"}`)); st != 204 || v != 2 {
		t.Fatalf("reported patch: %d %d %s", st, v, body)
	}
	tw = e.do("GET", "/twins/d1/modules/m1", "service", nil).json(t)
	rep := tw["properties"].(map[string]any)["reported"].(map[string]any)
	if rep["fw"] != "1.0" || rep["$version"] != 2.0 || tw["connectionState"] != "Connected" {
		t.Fatalf("module twin after the report: %v", tw)
	}
	dev := e.do("GET", "/twins/d1", "service", nil).json(t)
	if dp := dev["properties"].(map[string]any); dp["reported"].(map[string]any)["fw"] != nil || dp["desired"].(map[string]any)["mode"] != nil || dev["moduleId"] != nil {
		t.Fatalf("the device twin changed with the module's: %v", dev)
	}
	// PUT replaces tags and desired.
	r = e.do("PUT", "/twins/d1/modules/m1", "service", map[string]any{"properties": map[string]any{"desired": map[string]any{"x": 1}}})
	if d := desired(r.json(t)); r.status != 200 || d["mode"] != nil || d["x"] != 1.0 {
		t.Fatalf("module twin put: %d %s", r.status, r.body)
	}
	// Methods: to the module; the device itself is offline.
	r = e.do("POST", "/twins/d1/modules/m1/methods", "service", map[string]any{"methodName": "reboot", "payload": map[string]any{"a": 1}, "responseTimeoutInSeconds": 5})
	if got := r.json(t); r.status != 200 || got["status"] != 200.0 || got["payload"].(map[string]any)["module"] != "reboot" {
		t.Fatalf("module method: %d %s", r.status, r.body)
	}
	if h, err := e.core.CommandHistory("d1", "", "reboot"); err != nil || len(h) != 0 {
		t.Fatalf("a module method in the device's command history: %v %v", h, err)
	}
	if r := e.do("POST", "/twins/d1/methods", "service", map[string]any{"methodName": "reboot", "responseTimeoutInSeconds": 5}); r.status != 404 || r.errorCode(t) != "DeviceNotOnline" {
		t.Fatalf("device method while only its module is connected: %d %s", r.status, r.body)
	}
	for _, b := range []map[string]any{{}, {"methodName": "a", "responseTimeoutInSeconds": 1}, {"methodName": "a", "payload": 1, "connectTimeoutInSeconds": -1}} {
		if r := e.do("POST", "/twins/d1/modules/m1/methods", "service", b); r.status != 400 {
			t.Fatalf("bad method request %v: %d %s", b, r.status, r.body)
		}
	}
	if r := e.do("POST", "/twins/d1/modules/m9/methods", "service", map[string]any{"methodName": "a"}); r.status != 404 || r.errorCode(t) != "ModuleNotFound" {
		t.Fatalf("method to an unknown module: %d %s", r.status, r.body)
	}
	// Deleting the module drops its connection.
	e.do("DELETE", "/devices/d1/modules/m1", "iothubowner", nil)
	l.mu.Lock()
	dropped := l.dropped
	l.mu.Unlock()
	if dropped == nil {
		t.Fatal("the deleted module's connection was not dropped")
	}
}

// TestModuleQuery: FROM devices.modules reads module twins.
func TestModuleQuery(t *testing.T) {
	e := newEnv(t)
	for _, d := range []string{"a", "b"} {
		e.do("PUT", "/devices/"+d, "iothubowner", map[string]any{})
		e.do("PUT", "/devices/"+d+"/modules/m", "iothubowner", map[string]any{})
	}
	e.do("PATCH", "/twins/b/modules/m", "service", map[string]any{"tags": map[string]any{"role": "x"}})
	q := func(query string) []map[string]any {
		t.Helper()
		r := e.do("POST", "/devices/query", "service", map[string]any{"query": query})
		var rows []map[string]any
		if err := json.Unmarshal(r.body, &rows); err != nil || r.status != 200 {
			t.Fatalf("%s: %d %s", query, r.status, r.body)
		}
		return rows
	}
	if rows := q("SELECT * FROM devices.modules"); len(rows) != 2 || rows[0]["deviceId"] != "a" || rows[1]["moduleId"] != "m" {
		t.Fatalf("all modules: %v", rows)
	}
	if rows := q("SELECT deviceId, moduleId FROM devices.modules WHERE tags.role = 'x'"); len(rows) != 1 || rows[0]["deviceId"] != "b" || rows[0]["moduleId"] != "m" {
		t.Fatalf("modules by tag: %v", rows)
	}
	if rows := q("SELECT * FROM devices"); len(rows) != 2 || rows[0]["moduleId"] != nil {
		t.Fatalf("devices: %v", rows)
	}
}

// TestEdgeScopes: an edge device gets a generated, immutable scope and
// the $edgeAgent and $edgeHub modules; a child names it by that scope
// (deviceScope, mirrored in parentScopes), a nested edge device in
// parentScopes; a scope naming no edge device is refused; the scopes show
// in twins and queries.
func TestEdgeScopes(t *testing.T) {
	e := newEnv(t)
	r := e.do("PUT", "/devices/gw", "iothubowner", map[string]any{"capabilities": map[string]any{"iotEdge": true}})
	gw := r.json(t)
	scope, _ := gw["deviceScope"].(string)
	if r.status != 200 || scope != "ms-azure-iot-edge://gw-"+gw["generationId"].(string) || len(gw["parentScopes"].([]any)) != 0 {
		t.Fatalf("edge device: %d %s", r.status, r.body)
	}
	var mods []map[string]any
	if err := json.Unmarshal(e.do("GET", "/devices/gw/modules", "registryRead", nil).body, &mods); err != nil || len(mods) != 2 ||
		mods[0]["moduleId"] != "$edgeAgent" || mods[1]["moduleId"] != "$edgeHub" {
		t.Fatalf("edge modules: %v", mods)
	}
	// An update keeps the scope whatever the body says.
	r = e.do("PUT", "/devices/gw", "iothubowner", map[string]any{"capabilities": map[string]any{"iotEdge": true}, "deviceScope": "ms-azure-iot-edge://other-1"}, "If-Match", "*")
	if got := r.json(t); r.status != 200 || got["deviceScope"] != scope {
		t.Fatalf("edge update: %d %s", r.status, r.body)
	}
	// A child by deviceScope, one by parentScopes; both show both.
	for _, b := range []map[string]any{{"deviceScope": scope}, {"parentScopes": []string{scope}}} {
		r = e.do("PUT", "/devices/leaf", "iothubowner", b)
		got := r.json(t)
		if r.status != 200 || got["deviceScope"] != scope || len(got["parentScopes"].([]any)) != 1 || got["parentScopes"].([]any)[0] != scope {
			t.Fatalf("child %v: %d %s", b, r.status, r.body)
		}
		e.do("DELETE", "/devices/leaf", "iothubowner", nil)
	}
	// A nested edge device under gw: its own scope, gw's as its parent.
	r = e.do("PUT", "/devices/gw2", "iothubowner", map[string]any{"capabilities": map[string]any{"iotEdge": true}, "parentScopes": []string{scope}})
	gw2 := r.json(t)
	if r.status != 200 || gw2["deviceScope"] == scope || !strings.HasPrefix(gw2["deviceScope"].(string), "ms-azure-iot-edge://gw2-") || gw2["parentScopes"].([]any)[0] != scope {
		t.Fatalf("nested edge: %d %s", r.status, r.body)
	}
	for _, b := range []map[string]any{
		{"deviceScope": "ms-azure-iot-edge://nobody-1"},
		{"deviceScope": scope, "parentScopes": []string{gw2["deviceScope"].(string)}},
		{"capabilities": map[string]any{"iotEdge": true}, "parentScopes": []string{"ms-azure-iot-edge://nobody-1"}},
	} {
		if r := e.do("PUT", "/devices/bad", "iothubowner", b); r.status != 400 || r.errorCode(t) != "ArgumentInvalid" {
			t.Fatalf("bad scopes %v: %d %s", b, r.status, r.body)
		}
	}
	// An edge device's own scope cannot be its parent.
	if r := e.do("PUT", "/devices/gw", "iothubowner", map[string]any{"capabilities": map[string]any{"iotEdge": true}, "parentScopes": []string{scope}}, "If-Match", "*"); r.status != 400 {
		t.Fatalf("an edge device as its own parent: %d %s", r.status, r.body)
	}
	e.do("PUT", "/devices/leaf", "iothubowner", map[string]any{"deviceScope": scope})
	tw := e.do("GET", "/twins/leaf", "service", nil).json(t)
	if tw["deviceScope"] != scope || tw["capabilities"].(map[string]any)["iotEdge"] != false {
		t.Fatalf("child twin: %v", tw)
	}
	r = e.do("POST", "/devices/query", "service", map[string]any{"query": "SELECT deviceId FROM devices WHERE capabilities.iotEdge = true"})
	if string(r.body) != `[{"deviceId":"gw"},{"deviceId":"gw2"}]` {
		t.Fatalf("edge query: %s", r.body)
	}
	r = e.do("POST", "/devices/query", "service", map[string]any{"query": "SELECT deviceId FROM devices WHERE deviceScope = '" + scope + "' AND capabilities.iotEdge = false"})
	if string(r.body) != `[{"deviceId":"leaf"}]` {
		t.Fatalf("children query: %s", r.body)
	}
}
