package emulator

import (
	"strings"
	"testing"
)

// TestRESTModulesReachTheCore: the IoT Central REST module routes answer
// from the core's module identities: the module list, its properties (a
// PATCH reaches the connected module as a desired patch), a command run
// on it and kept in its command history, and its latest telemetry value;
// an unknown module is 404.
func TestRESTModulesReachTheCore(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{WebSocketAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0"})
	_, modKey := newModule(t, e, "rm1", "m1")
	cl, err := dial(t, e, dialOpts{clientID: "rm1/m1", username: moduleUser(e, "rm1", "m1"), password: moduleSAS(t, e, "rm1", "m1", modKey), clean: true})
	if err != nil {
		t.Fatal(err)
	}
	desired := cl.subscribe("$iothub/twin/PATCH/properties/desired/#", 0)
	methods := cl.subscribe("$iothub/methods/POST/#", 0)

	list := restJSON(t, e, "GET", "/api/devices/rm1/modules", nil, 200)
	if v, _ := list["value"].([]any); len(v) != 1 || v[0].(map[string]any)["name"] != "m1" {
		t.Fatalf("modules: %v", list)
	}
	restJSON(t, e, "GET", "/api/devices/rm1/modules/nope/properties", nil, 404)

	restJSON(t, e, "PATCH", "/api/devices/rm1/modules/m1/properties", map[string]any{"target": 21}, 202)
	if m := recv(t, desired); !strings.Contains(string(m.Payload()), `"target":21`) {
		t.Fatalf("desired patch at the module: %s", m.Payload())
	}
	if p := restJSON(t, e, "GET", "/api/devices/rm1/modules/m1/properties", nil, 200); p["target"] != 21.0 {
		t.Fatalf("module properties: %v", p)
	}

	done := make(chan map[string]any, 1)
	go func() {
		st, b := restDo(t, e, "POST", "/api/devices/rm1/modules/m1/commands/reboot", e.APIToken(), map[string]any{"request": map[string]any{"delay": 1}, "responseTimeout": 10})
		out := decodeJSON(t, b)
		out["http"] = st
		done <- out
	}()
	m := recv(t, methods)
	rid := strings.TrimPrefix(m.Topic(), "$iothub/methods/POST/reboot/?$rid=")
	if rid == m.Topic() || !strings.Contains(string(m.Payload()), `"delay":1`) {
		t.Fatalf("command at the module: %s %s", m.Topic(), m.Payload())
	}
	cl.publish("$iothub/methods/res/200/?$rid="+rid, 0, []byte(`{"ok":true}`))
	if res := <-done; res["http"] != 201 || res["responseCode"] != 200.0 {
		t.Fatalf("command answer: %v", res)
	}
	hist := restJSON(t, e, "GET", "/api/devices/rm1/modules/m1/commands/reboot", nil, 200)
	if v, _ := hist["value"].([]any); len(v) != 1 || v[0].(map[string]any)["responseCode"] != 200.0 {
		t.Fatalf("module command history: %v", hist)
	}

	cl.publish("devices/rm1/modules/m1/messages/events/", 1, []byte(`{"temp":7.5}`))
	if v := restJSON(t, e, "GET", "/api/devices/rm1/modules/m1/telemetry/temp", nil, 200); v["value"] != 7.5 {
		t.Fatalf("module telemetry: %v", v)
	}
	restJSON(t, e, "GET", "/api/devices/rm1/modules/m1/telemetry/nothing", nil, 404)
}
