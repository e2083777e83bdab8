package emulator

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"
)

func restJSON(t *testing.T, e *Emulator, method, path string, body any, want int) map[string]any {
	t.Helper()
	status, b := restDo(t, e, method, path, e.APIToken(), body)
	if status != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, status, b, want)
	}
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return m
}

// A device pre-registered through REST connects with its own key; disabling
// it drops the connection and refuses new ones; deleting it refuses it too.
func TestRESTDeviceLifecycleWithDevice(t *testing.T) {
	t.Parallel()
	off := false
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", AutoApprove: &off})
	d := restJSON(t, e, "PUT", "/api/devices/pre1", map[string]any{"displayName": "Pre-registered", "simulated": false}, http.StatusOK)
	if d["provisioned"] != false || d["enabled"] != true || d["displayName"] != "Pre-registered" {
		t.Fatalf("created = %v", d)
	}
	att := restJSON(t, e, "GET", "/api/devices/pre1/attestation", nil, http.StatusOK)
	key := att["symmetricKey"].(map[string]any)["primaryKey"].(string)
	dev := connectHub(t, e, "pre1", key, true)

	restJSON(t, e, "PATCH", "/api/devices/pre1", map[string]any{"enabled": false}, http.StatusOK)
	dev.expectLost()
	_, err := dial(t, e, dialOpts{clientID: "pre1", username: hubUser(e, "pre1", ""), password: hubSAS(t, e, "pre1", key, time.Hour), clean: true})
	expectRefused(t, err)

	// DPS answers "disabled" for the blocked device, even with its own key.
	s, err := dialDPS(t, e, "pre1", dpsSAS(t, e, "pre1", key, time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ans := s.register(1, `{"registrationId":"pre1"}`); ans["status"] != "disabled" {
		t.Fatalf("DPS answer for a disabled device: %v", ans)
	}

	restJSON(t, e, "PATCH", "/api/devices/pre1", map[string]any{"enabled": true}, http.StatusOK)
	dev = connectHub(t, e, "pre1", key, true)
	if status, _ := restDo(t, e, "DELETE", "/api/devices/pre1", e.APIToken(), nil); status != http.StatusNoContent {
		t.Fatalf("DELETE = %d", status)
	}
	dev.expectLost()
	_, err = dial(t, e, dialOpts{clientID: "pre1", username: hubUser(e, "pre1", ""), password: hubSAS(t, e, "pre1", key, time.Hour), clean: true})
	if err == nil {
		t.Fatal("a deleted device connected")
	}
	if _, err := e.Device("pre1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Device after delete: %v", err)
	}
}

const testTemplate = `{
  "@type": ["ModelDefinition", "DeviceModel"],
  "displayName": "Thermostat controller",
  "capabilityModel": {
    "@id": "dtmi:com:example:TemperatureController;2",
    "@type": "Interface",
    "contents": [
      {"@type": "Property", "name": "serialNumber", "schema": "string"},
      {"@type": "Command", "name": "reboot"},
      {"@type": "Component", "name": "thermostat1", "schema": {"@type": "Interface", "contents": [
        {"@type": "Property", "name": "targetTemperature", "schema": "double", "writable": true},
        {"@type": "Command", "name": "getMaxMinReport"}]}}
    ]
  }
}`

// With a template, a root PATCH naming a component reaches the device as a
// component patch, and names the template lacks are refused.
func TestRESTTemplateRoutesRootPatchToComponent(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	var doc map[string]any
	if err := json.Unmarshal([]byte(testTemplate), &doc); err != nil {
		t.Fatal(err)
	}
	tid := "dtmi:com:example:TemperatureController;2"
	restJSON(t, e, "PUT", "/api/deviceTemplates/"+url.PathEscape(tid), doc, http.StatusOK)
	if _, err := e.PutDevice("tc1", DeviceSpec{Template: &tid}); err != nil {
		t.Fatal(err)
	}
	dd, err := e.DeviceDetails("tc1")
	if err != nil || dd.Template != tid {
		t.Fatalf("details = %+v, %v", dd, err)
	}
	key := restJSON(t, e, "GET", "/api/devices/tc1/attestation", nil, http.StatusOK)["symmetricKey"].(map[string]any)["primaryKey"].(string)
	dev := connectHub(t, e, "tc1", key, true)
	if err := e.WaitSubscribed(ctxT(t), "tc1", TopicDesired); err != nil {
		t.Fatal(err)
	}
	ans := restJSON(t, e, "PATCH", "/api/devices/tc1/properties", map[string]any{"thermostat1": map[string]any{"targetTemperature": 21.5}}, http.StatusAccepted)
	if ans["thermostat1"] == nil {
		t.Fatalf("answer = %v", ans)
	}
	m := recv(t, dev.desired)
	p := decodeJSON(t, m.Payload())
	comp, _ := p["thermostat1"].(map[string]any)
	if comp == nil || comp["__t"] != "c" || comp["targetTemperature"] != 21.5 {
		t.Fatalf("device got %s", m.Payload())
	}
	restJSON(t, e, "PATCH", "/api/devices/tc1/properties", map[string]any{"thermostat1": map[string]any{"nope": 1}}, http.StatusNotFound)
	restJSON(t, e, "PATCH", "/api/devices/tc1/properties", map[string]any{"serialNumber": "x"}, http.StatusUnprocessableEntity)
	restJSON(t, e, "POST", "/api/devices/tc1/commands/selfDestruct", map[string]any{}, http.StatusNotFound)
	comps := restJSON(t, e, "GET", "/api/devices/tc1/components", nil, http.StatusOK)
	if list := comps["value"].([]any); len(list) != 1 || list[0].(map[string]any)["name"] != "thermostat1" {
		t.Fatalf("components = %v", comps)
	}
	// A template in use cannot be deleted.
	restJSON(t, e, "DELETE", "/api/deviceTemplates/"+url.PathEscape(tid), nil, http.StatusConflict)
}

// A command run through REST with a connected device gets an id and is
// kept in the command history.
func TestRESTCommandHistoryWithDevice(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	dev, _ := newHubDevice(t, e, "cmd1")
	if err := e.WaitSubscribed(ctxT(t), "cmd1", TopicMethods); err != nil {
		t.Fatal(err)
	}
	go func() {
		select {
		case m := <-dev.methods:
			dev.c.Publish("$iothub/methods/res/200/?$rid="+ridOf(t, m.Topic()), 0, false, []byte(`{"done":true}`))
		case <-time.After(wait):
		}
	}()
	inv := restJSON(t, e, "POST", "/api/devices/cmd1/commands/reboot", map[string]any{"request": map[string]any{"delay": 1}}, http.StatusCreated)
	if inv["id"] == "" || inv["responseCode"] != 200.0 {
		t.Fatalf("invocation = %v", inv)
	}
	hist := restJSON(t, e, "GET", "/api/devices/cmd1/commands/reboot", nil, http.StatusOK)
	list := hist["value"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != inv["id"] {
		t.Fatalf("history = %v", hist)
	}
	recs, err := e.CommandHistory("cmd1", "", "reboot")
	if err != nil || len(recs) != 1 || string(recs[0].Response) != `{"done":true}` {
		t.Fatalf("CommandHistory = %+v, %v", recs, err)
	}
	restJSON(t, e, "POST", "/api/devices/cmd1/commands/reboot", map[string]any{"responseTimeout": 300}, http.StatusUnprocessableEntity)
}

// Bearer is refused unless RESTAllowBearer is set; paging follows nextLink.
func TestRESTBearerAndPaging(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", RESTPageSize: 1})
	for _, id := range []string{"p1", "p2"} {
		if _, err := e.CreateDevice(id); err != nil {
			t.Fatal(err)
		}
	}
	if status, _ := restDo(t, e, "GET", "/api/devices", "Bearer "+e.APIToken(), nil); status != http.StatusUnauthorized {
		t.Fatalf("Bearer API token: %d, want 401", status)
	}
	first := restJSON(t, e, "GET", "/api/devices", nil, http.StatusOK)
	next, _ := first["nextLink"].(string)
	u, err := url.Parse(next)
	if err != nil || next == "" {
		t.Fatalf("nextLink %q", next)
	}
	second := restJSON(t, e, "GET", u.RequestURI(), nil, http.StatusOK)
	if second["nextLink"] != nil || second["value"].([]any)[0].(map[string]any)["id"] != "p2" {
		t.Fatalf("second page = %v", second)
	}
	b := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", RESTAllowBearer: true})
	if status, _ := restDo(t, b, "GET", "/api/devices", "Bearer "+b.APIToken(), nil); status != http.StatusOK {
		t.Fatalf("Bearer with RESTAllowBearer: %d", status)
	}
}

// A device that announces a model id shows, in the REST API, the id of the
// device template whose capability model has that id (as IoT Central
// associates it), not the model id; with no such template it is
// unassigned. An iotEdge enrollment group keeps its type.
func TestRESTTemplateOfModelIDAndGroupType(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	key, err := e.CreateDevice("pnp1")
	if err != nil {
		t.Fatal(err)
	}
	const model = "dtmi:com:example:TemperatureController;2"
	c, err := dial(t, e, dialOpts{clientID: "pnp1", username: hubUser(e, "pnp1", model), password: hubSAS(t, e, "pnp1", key, time.Hour), clean: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if dev := restJSON(t, e, "GET", "/api/devices/pnp1", nil, http.StatusOK); dev["template"] != nil {
		t.Fatalf("no template matches the model id, yet template = %v", dev["template"])
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(testTemplate), &doc); err != nil {
		t.Fatal(err)
	}
	const tid = "dtmi:contoso:thermostatTemplate;1" // differs from the model id, as in the spec's example
	restJSON(t, e, "PUT", "/api/deviceTemplates/"+url.PathEscape(tid), doc, http.StatusOK)
	if dev := restJSON(t, e, "GET", "/api/devices/pnp1", nil, http.StatusOK); dev["template"] != tid {
		t.Fatalf("template = %v, want %s", dev["template"], tid)
	}
	restJSON(t, e, "GET", "/api/deviceTemplates/"+url.PathEscape(tid), nil, http.StatusOK)
	// The device uses the template through its model id: the template cannot be deleted.
	restJSON(t, e, "DELETE", "/api/deviceTemplates/"+url.PathEscape(tid), nil, http.StatusConflict)
	list := restJSON(t, e, "GET", "/api/devices?$filter="+url.QueryEscape("template eq '"+tid+"'"), nil, http.StatusOK)
	if v := list["value"].([]any); len(v) != 1 {
		t.Fatalf("filter on the template id: %v", list)
	}

	g := restJSON(t, e, "PUT", "/api/enrollmentGroups/edge1", map[string]any{"displayName": "Edge", "type": "iotEdge",
		"attestation": map[string]any{"type": "symmetricKey"}}, http.StatusOK)
	if g["type"] != "iotEdge" {
		t.Fatalf("PUT answered type %v", g["type"])
	}
	if g = restJSON(t, e, "GET", "/api/enrollmentGroups/edge1", nil, http.StatusOK); g["type"] != "iotEdge" {
		t.Fatalf("GET answered type %v", g["type"])
	}
	if g = restJSON(t, e, "PATCH", "/api/enrollmentGroups/edge1", map[string]any{"displayName": "E2"}, http.StatusOK); g["type"] != "iotEdge" {
		t.Fatalf("PATCH lost the type: %v", g["type"])
	}
}
