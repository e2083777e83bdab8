package restapi

import (
	"net/http"
	"net/url"
	"testing"
)

// The extensions' old paths answer 308 with the new path, the query kept,
// and the IoT Central error shape; nothing reaches the backend.
func TestMovedExtensions(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ method, path, want string }{
		{"POST", "/api/devices/dev1/messages", "/api/emulator/devices/dev1/messages"},
		{"GET", "/api/devices/dev1/telemetry?limit=2", "/api/emulator/devices/dev1/telemetry?api-version=" + APIVersion + "&limit=2"},
		{"POST", "/api/devices/dev1/faults", "/api/emulator/devices/dev1/faults"},
		{"DELETE", "/api/devices/%2A/faults", "/api/emulator/devices/%2A/faults"},
		{"POST", "/api/devices/dev1/components/th/commands/reset?queue=true", "/api/emulator/devices/dev1/components/th/commands/reset/queue"},
	} {
		r := e.call(c.method, c.path, `{}`)
		r.wantError(t, http.StatusPermanentRedirect, "MovedPermanently")
		want := c.want
		if u, _ := url.Parse(want); u.RawQuery == "" {
			want += "?api-version=" + APIVersion
		}
		if got := r.header.Get("Location"); got != want {
			t.Errorf("%s %s: Location %q, want %q", c.method, c.path, got, want)
		}
		if r.header.Get("Deprecation") != "true" {
			t.Errorf("%s %s: no Deprecation header", c.method, c.path)
		}
	}
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	if len(e.f.messages)+len(e.f.queued)+len(e.f.invokes) != 0 {
		t.Fatalf("a moved route reached the backend: %d messages, %d queued, %d invoked", len(e.f.messages), len(e.f.queued), len(e.f.invokes))
	}
}

// A command the template marks "durable" (Queue if offline) is sent as a
// cloud-to-device message, online or not, and answered without a
// response; other commands are invoked.
func TestDurableCommandFromTemplate(t *testing.T) {
	e := newEnv(t)
	tid := "dtmi:contoso:durable;1"
	e.call("PUT", "/api/deviceTemplates/"+url.PathEscape(tid), `{"@type":["ModelDefinition","DeviceModel"],"capabilityModel":{
		"@id":"dtmi:contoso:durableModel;1","@type":"Interface","contents":[
		{"@type":"Command","name":"GenerateDiagnostics","durable":true},
		{"@type":"Command","name":"reboot"},
		{"@type":"Component","name":"th","schema":{"@type":"Interface","contents":[{"@type":"Command","name":"reset","durable":true}]}}]}}`).want(t, http.StatusOK)
	e.call("PUT", "/api/devices/dev3", `{"template":"`+tid+`"}`).want(t, http.StatusOK)
	r := e.call("POST", "/api/devices/dev3/commands/GenerateDiagnostics", `{"request":{"Bank":2}}`)
	r.want(t, http.StatusCreated)
	if r.body["id"] == "" || r.body["responseCode"] != nil || r.body["response"] != nil {
		t.Fatalf("durable answer %s", r.raw)
	}
	jsonEqual(t, r.body["request"], `{"Bank":2}`)
	e.call("POST", "/api/devices/dev3/components/th/commands/reset", `{}`).want(t, http.StatusCreated)
	e.call("POST", "/api/devices/dev3/commands/reboot", `{}`).want(t, http.StatusCreated)
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	if len(e.f.queued) != 2 || e.f.queued[0].name != "GenerateDiagnostics" || e.f.queued[1].component != "th" || len(e.f.invokes) != 1 || e.f.invokes[0].name != "reboot" {
		t.Fatalf("queued %+v, invoked %+v", e.f.queued, e.f.invokes)
	}
}
