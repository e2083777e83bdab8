package restapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// These tests replay the request of each example of the IoT Central
// data-plane spec 2022-07-31 (Azure/azure-rest-api-specs,
// specification/iotcentral/data-plane/Microsoft.IoTCentral/stable/2022-07-31/examples/,
// file named in each case) against the handler and compare the answer's
// status and body shape with the example's response: every member of the
// example is present with the same JSON type (ids, etags and times are not
// compared by value). The bodies are transcribed, not copied.

// shapeContains reports where got lacks a member of want or has another
// JSON type; "" when got has want's shape.
func shapeContains(path string, got, want any) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: got %T, want an object", path, got)
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				return fmt.Sprintf("%s.%s: missing", path, k)
			}
			if d := shapeContains(path+"."+k, gv, wv); d != "" {
				return d
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Sprintf("%s: got %T, want an array", path, got)
		}
		if len(w) > 0 && len(g) > 0 {
			return shapeContains(path+"[0]", g[0], w[0])
		}
		if len(w) > 0 && len(g) == 0 {
			return path + ": empty array"
		}
	case nil:
	default:
		if fmt.Sprintf("%T", got) != fmt.Sprintf("%T", want) {
			return fmt.Sprintf("%s: got %T, want %T", path, got, want)
		}
	}
	return ""
}

func (r response) wantShape(t *testing.T, status int, example string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.raw)
	}
	var want any
	if err := json.Unmarshal([]byte(example), &want); err != nil {
		t.Fatalf("bad example: %v", err)
	}
	var got any
	_ = json.Unmarshal(r.raw, &got)
	if d := shapeContains("$", got, want); d != "" {
		t.Fatalf("shape differs from the spec example: %s\n got %s", d, r.raw)
	}
}

// exampleTemplate is the capability model of devicetemplates_get.json,
// shortened to one of each kind of entry.
const exampleTemplate = `{
  "displayName": "Test Contoso Definition",
  "@type": ["ModelDefinition", "DeviceModel"],
  "capabilityModel": {
    "@id": "dtmi:contoso:testCapabilityModel;1",
    "@type": "Interface",
    "displayName": "Test Capability Model",
    "contents": [
      {"@id": "dtmi:contoso:testCapabilityModel:settings;1", "@type": "Component", "displayName": "Settings", "name": "settings",
       "schema": {"@id": "dtmi:contoso:settings;1", "@type": "Interface", "displayName": "Settings", "contents": [
         {"@type": "Telemetry", "displayName": "Test Component Telemetry", "name": "testComponentTelemetry", "schema": "double"},
         {"@type": ["Property", "Initialized"], "displayName": "Temperature Threshold", "name": "threshold", "schema": "double", "writable": true, "initialValue": "100"},
         {"@type": "Property", "name": "voltage", "schema": "double", "writable": true},
         {"@type": "Property", "name": "current", "schema": "double", "writable": true},
         {"@type": "Property", "name": "fanSpeed", "schema": "double", "writable": true},
         {"@type": "Property", "name": "irSwitch", "schema": "boolean", "writable": true},
         {"@type": "Command", "name": "CoolDown", "request": {"@type": "CommandPayload", "name": "tempVal", "schema": "double"}}]}},
      {"@type": ["Telemetry", "Humidity"], "displayName": "Humidity", "name": "humidity", "schema": "double"},
      {"@type": ["Property", "Cloud"], "displayName": "Online Status", "name": "status", "schema": "string"}
    ],
    "extends": [{"@id": "dtmi:contoso:testInterface;1", "@type": ["Interface", "NamedInterface"], "name": "contoso_testInterface", "contents": [
      {"@type": ["Initialized", "Property"], "name": "testProperty", "schema": "string", "writable": true, "initialValue": "initialValue1"},
      {"@type": "Property", "name": "testReadOnly", "schema": "string"},
      {"@type": "Command", "commandType": "synchronous", "name": "testCommand"}]}]
  }
}`

// exampleModel is what a backend derives from exampleTemplate.
func exampleModel() *TemplateModel {
	return &TemplateModel{
		Root: TemplateInterface{Properties: map[string]bool{"status": false, "testProperty": true, "testReadOnly": false},
			Commands: map[string]bool{"testCommand": true}},
		Components: map[string]TemplateInterface{"settings": {
			Properties: map[string]bool{"threshold": true, "voltage": true, "current": true, "fanSpeed": true, "irSwitch": true},
			Commands:   map[string]bool{"CoolDown": true}}},
	}
}

func TestSpecExamplesDevices(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The device names a template, which must exist (else 422, as IoT Central).
	e.call("PUT", "/api/devices/ccc", `{"template":"dtmi:contoso:testDeviceTemplate;1"}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PUT", "/api/deviceTemplates/"+url.PathEscape("dtmi:contoso:testDeviceTemplate;1"), exampleTemplate).want(t, http.StatusOK)
	// devices_create.json names organization "seattle", which must exist (else 422).
	body := `{"displayName":"CheckoutThermostatccc","template":"dtmi:contoso:testDeviceTemplate;1","organizations":["seattle"]}`
	e.call("PUT", "/api/devices/ccc", body).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PUT", "/api/organizations/seattle", `{"displayName":"Seattle"}`).want(t, http.StatusOK)
	// devices_create.json (Devices_Create, and Devices_Update uses it too).
	r := e.call("PUT", "/api/devices/ccc?api-version=2022-07-31", `{"displayName":"CheckoutThermostatccc",
		"template":"dtmi:contoso:testDeviceTemplate;1","simulated":true,"enabled":true,"organizations":["seattle"]}`)
	r.wantShape(t, http.StatusOK, `{"id":"ccc","etag":"x","displayName":"CheckoutThermostatccc",
		"template":"dtmi:contoso:testDeviceTemplate;1","simulated":true,"provisioned":false,"enabled":true,"organizations":["seattle"]}`)
	jsonEqual(t, r.body["organizations"], `["seattle"]`)
	if r.body["simulated"] != true || r.body["provisioned"] != false || r.body["template"] != "dtmi:contoso:testDeviceTemplate;1" {
		t.Fatalf("created device = %s", r.raw)
	}
	etag := r.body["etag"]
	r = e.call("PATCH", "/api/devices/ccc", `{"displayName":"Renamed","enabled":false}`)
	r.wantShape(t, http.StatusOK, `{"id":"ccc","etag":"x","displayName":"x","template":"x","simulated":true,"provisioned":false,"enabled":false}`)
	if r.body["displayName"] != "Renamed" || r.body["enabled"] != false || r.body["simulated"] != true || r.body["etag"] == etag {
		t.Fatalf("PATCH kept the other fields or the etag: %s", r.raw)
	}
	// PUT replaces: absent fields take their defaults again.
	r = e.call("PUT", "/api/devices/ccc", `{}`)
	if r.body["displayName"] != "ccc" || r.body["enabled"] != true || r.body["simulated"] != false || r.body["template"] != nil {
		t.Fatalf("PUT {} = %s", r.raw)
	}
	// devices_get / devices_list shapes.
	e.call("GET", "/api/devices/ccc", "").wantShape(t, http.StatusOK, `{"id":"ccc","etag":"x","displayName":"x","simulated":false,"provisioned":false,"enabled":true}`)
	// Devices_Remove: 204, then 404.
	r = e.call("DELETE", "/api/devices/ccc", "")
	if r.status != http.StatusNoContent || len(r.raw) != 0 {
		t.Fatalf("DELETE = %d %s", r.status, r.raw)
	}
	e.call("DELETE", "/api/devices/ccc", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("PATCH", "/api/devices/ghost", `{"enabled":false}`).wantError(t, http.StatusNotFound, "NotFound")
	// Refusals: not JSON 400, wrong types and ids 422.
	e.call("PUT", "/api/devices/x", `{"enabled":`).wantError(t, http.StatusBadRequest, "BadRequest")
	e.call("PUT", "/api/devices/x", `{"enabled":"yes"}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	// A 422 says what is wrong in JSON's words, never Go's.
	for body, want := range map[string]string{
		`{"enabled":"yes"}`: `field "enabled" must be a JSON boolean, not a string`,
		`[1, 2]`:            `the body must be a JSON object, not an array`,
	} {
		r := e.call("PUT", "/api/devices/x", body)
		r.wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
		msg, _ := r.body["error"].(map[string]any)["message"].(string)
		if !strings.Contains(msg, want) || strings.Contains(msg, "Go value") {
			t.Errorf("PUT %s: %s, want it to say %s", body, r.raw, want)
		}
	}
	e.call("PUT", "/api/devices/x", `{"id":"y"}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PUT", "/api/devices/a%2Fb", `{}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PUT", "/api/devices/x", `{"organizations":["a","b"]}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
}

func TestListPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // page size 2
	for _, id := range []string{"dev3", "dev4", "dev5"} {
		e.call("PUT", "/api/devices/"+id, `{}`).want(t, http.StatusOK)
	}
	var ids []string
	path := "/api/devices"
	for range 10 {
		r := e.call("GET", path, "")
		r.want(t, http.StatusOK)
		for _, d := range r.body["value"].([]any) {
			ids = append(ids, d.(map[string]any)["id"].(string))
		}
		next, _ := r.body["nextLink"].(string)
		if next == "" {
			break
		}
		u, err := url.Parse(next)
		if err != nil || u.Query().Get("api-version") != APIVersion || !strings.HasPrefix(next, e.srv.URL) {
			t.Fatalf("nextLink %q", next)
		}
		path = u.RequestURI()
	}
	if strings.Join(ids, ",") != "dev1,dev2,dev3,dev4,dev5" {
		t.Fatalf("paged ids = %v", ids)
	}
	e.call("GET", "/api/devices?$skiptoken=x", "").wantError(t, http.StatusBadRequest, "BadRequest")
}

func TestSpecExamplesProperties(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	seedTwin(t, e)
	// devices_properties_update.json without a template: "settings" is not
	// known as a component, so it is a root property (an object value).
	r := e.call("PATCH", "/api/devices/dev1/properties", `{"settings":{"voltage":25,"current":7}}`)
	r.wantShape(t, http.StatusAccepted, `{"$metadata":{"settings":{"desiredValue":{}}}}`)
	// With the example template, it patches component settings.
	e.f.mu.Lock()
	e.f.x().models["dev1"] = exampleModel()
	e.f.mu.Unlock()
	r = e.call("PATCH", "/api/devices/dev1/properties", `{"settings":{"voltage":25,"current":7}}`)
	r.wantShape(t, http.StatusAccepted, `{"settings":{"$metadata":{"voltage":{"desiredValue":25},"current":{"desiredValue":7}}}}`)
	jsonEqual(t, r.body, `{"settings":{"$metadata":{"voltage":{"desiredValue":25},"current":{"desiredValue":7}}}}`)
	e.f.mu.Lock()
	last := e.f.patches[len(e.f.patches)-1]
	e.f.mu.Unlock()
	jsonEqual(t, last, `{"settings":{"__t":"c","voltage":25,"current":7}}`)
	// devices_properties_components_set.json.
	r = e.call("PATCH", "/api/devices/dev1/components/settings/properties", `{"fanSpeed":35,"voltage":5,"current":2,"irSwitch":true}`)
	jsonEqual(t, r.body, `{"$metadata":{"fanSpeed":{"desiredValue":35},"voltage":{"desiredValue":5},"current":{"desiredValue":2},"irSwitch":{"desiredValue":true}}}`)
	r.want(t, http.StatusAccepted)
	// Names are checked against the template.
	e.call("PATCH", "/api/devices/dev1/properties", `{"settings":{"nope":1}}`).wantError(t, http.StatusNotFound, "NotFound")
	e.call("PATCH", "/api/devices/dev1/properties", `{"nope":1}`).wantError(t, http.StatusNotFound, "NotFound")
	e.call("PATCH", "/api/devices/dev1/properties", `{"testReadOnly":"x"}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PATCH", "/api/devices/dev1/components/other/properties", `{"x":1}`).wantError(t, http.StatusNotFound, "NotFound")
	e.call("PATCH", "/api/devices/dev1/properties", `{"testProperty":"v"}`).want(t, http.StatusAccepted)
}

func TestComponentByReportedMarker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	seedTwin(t, e) // the device reported thermostat1 with "__t":"c"
	e.call("PATCH", "/api/devices/dev1/properties", `{"thermostat1":{"targetTemperature":22}}`).want(t, http.StatusAccepted)
	e.f.mu.Lock()
	last := e.f.patches[len(e.f.patches)-1]
	e.f.mu.Unlock()
	jsonEqual(t, last, `{"thermostat1":{"__t":"c","targetTemperature":22}}`)
}

func TestReplaceProperties(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	seedTwin(t, e) // desired: targetTemperature 21, fanSpeed "low", thermostat1{targetTemperature 25}
	r := e.call("PUT", "/api/devices/dev1/properties", `{"targetTemperature":19}`)
	r.want(t, http.StatusAccepted)
	jsonEqual(t, r.body, `{"$metadata":{"targetTemperature":{"desiredValue":19}}}`)
	e.f.mu.Lock()
	last := e.f.patches[len(e.f.patches)-1]
	e.f.mu.Unlock()
	jsonEqual(t, last, `{"targetTemperature":19,"fanSpeed":null}`)
	r = e.call("PUT", "/api/devices/dev1/components/thermostat1/properties", `{}`)
	r.want(t, http.StatusAccepted)
	e.f.mu.Lock()
	last = e.f.patches[len(e.f.patches)-1]
	e.f.mu.Unlock()
	jsonEqual(t, last, `{"thermostat1":{"__t":"c","targetTemperature":null}}`)
	e.call("PUT", "/api/devices/dev1/properties", `[1]`).wantRefused(t)
}

func TestSpecExamplesCommands(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.f.invokeRes = CommandResult{ResponseCode: 200, Response: json.RawMessage(`{"ok":true}`)}
	// devices_commands_send.json: 201 with the spec's DeviceCommand shape.
	r := e.call("POST", "/api/devices/dev1/components/Thermostat_1o/commands/CoolDown", `{"request":{"tempVal":30}}`)
	r.wantShape(t, http.StatusCreated, `{"id":"x","request":{"tempVal":30},"response":{},"responseCode":200,"connectionTimeout":0,"responseTimeout":30}`)
	id := r.body["id"]
	// Devices_GetComponentCommandHistory: the invocation, by id.
	r = e.call("GET", "/api/devices/dev1/components/Thermostat_1o/commands/CoolDown", "")
	r.wantShape(t, http.StatusOK, `{"value":[{"id":"x","request":{},"response":{},"responseCode":200,"connectionTimeout":0,"responseTimeout":30}]}`)
	if r.body["value"].([]any)[0].(map[string]any)["id"] != id {
		t.Fatalf("history = %s", r.raw)
	}
	e.call("GET", "/api/devices/dev1/commands/CoolDown", "").wantShape(t, http.StatusOK, `{"value":[]}`)
	e.call("GET", "/api/devices/ghost/commands/CoolDown", "").wantError(t, http.StatusNotFound, "NotFound")
	// Bounds of the spec: connectionTimeout 0..30, responseTimeout 5..30.
	for _, body := range []string{`{"connectionTimeout":31}`, `{"responseTimeout":4}`, `{"responseTimeout":60}`, ``} {
		e.call("POST", "/api/devices/dev1/commands/reboot", body).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	}
	e.call("POST", "/api/devices/dev1/commands/reboot", `{"connectionTimeout":30,"responseTimeout":5}`).want(t, http.StatusCreated)
	// With a template, an unknown command is 404 and never reaches the device.
	e.f.mu.Lock()
	e.f.x().models["dev1"] = exampleModel()
	n := len(e.f.invokes)
	e.f.mu.Unlock()
	e.call("POST", "/api/devices/dev1/commands/reboot", `{}`).wantError(t, http.StatusNotFound, "NotFound")
	e.call("POST", "/api/devices/dev1/components/nope/commands/CoolDown", `{}`).wantError(t, http.StatusNotFound, "NotFound")
	e.call("POST", "/api/devices/dev1/commands/testCommand", `{}`).want(t, http.StatusCreated)
	e.f.mu.Lock()
	if got := len(e.f.invokes) - n; got != 1 {
		t.Fatalf("%d invocations reached the backend, want 1", got)
	}
	e.f.mu.Unlock()
}

func TestSpecExamplesTemplates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := "dtmi:contoso:testDeviceTemplate;1"
	// devicetemplates_create/get.json.
	r := e.call("PUT", "/api/deviceTemplates/"+url.PathEscape(id), exampleTemplate)
	r.wantShape(t, http.StatusOK, `{"@id":"x","@type":["x"],"etag":"x","displayName":"x","capabilityModel":{"@id":"x","@type":"Interface","contents":[{}]}}`)
	if r.body["@id"] != id {
		t.Fatalf("@id = %v", r.body["@id"])
	}
	e.call("GET", "/api/deviceTemplates/"+url.PathEscape(id), "").wantShape(t, http.StatusOK, `{"@id":"x","@type":["x"],"etag":"x","capabilityModel":{}}`)
	e.call("GET", "/api/deviceTemplates", "").wantShape(t, http.StatusOK, `{"value":[{"@id":"x","etag":"x","capabilityModel":{}}]}`)
	// devicetemplates_update.json: a merge patch of the display name.
	r = e.call("PATCH", "/api/deviceTemplates/"+url.PathEscape(id), `{"displayName":"New Name"}`)
	r.want(t, http.StatusOK)
	if r.body["displayName"] != "New Name" || r.body["capabilityModel"] == nil {
		t.Fatalf("patched template = %s", r.raw)
	}
	// Refusals: required @type and capabilityModel (422), unknown id (404).
	e.call("PUT", "/api/deviceTemplates/t2", `{"capabilityModel":{}}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PUT", "/api/deviceTemplates/t2", `{"@type":["DeviceModel"]}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PUT", "/api/deviceTemplates/t2", `{"@type":["DeviceModel"],"@id":"other","capabilityModel":{}}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("GET", "/api/deviceTemplates/ghost", "").wantError(t, http.StatusNotFound, "NotFound")
	// devicetemplates_delete.json: 204.
	if r := e.call("DELETE", "/api/deviceTemplates/"+url.PathEscape(id), ""); r.status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", r.status, r.raw)
	}
	e.call("DELETE", "/api/deviceTemplates/"+url.PathEscape(id), "").wantError(t, http.StatusNotFound, "NotFound")
}

func TestSpecExamplesAttestationAndComponents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// devices_attestations_set_symmetricKey.json.
	key := "dGhpcyBpcyBhIDMyIGJ5dGUga2V5IGZvciB0ZXN0cyE="
	r := e.call("PUT", "/api/devices/dev1/attestation", `{"type":"symmetricKey","symmetricKey":{"primaryKey":"`+key+`","secondaryKey":"`+key+`"}}`)
	r.wantShape(t, http.StatusOK, `{"type":"symmetricKey","symmetricKey":{"primaryKey":"x","secondaryKey":"x"}}`)
	e.call("GET", "/api/devices/dev1/attestation", "").wantShape(t, http.StatusOK, `{"type":"symmetricKey","symmetricKey":{"primaryKey":"x","secondaryKey":"x"}}`)
	r = e.call("PATCH", "/api/devices/dev1/attestation", `{"type":"symmetricKey"}`)
	r.want(t, http.StatusOK)
	if r.body["symmetricKey"].(map[string]any)["primaryKey"] == "" {
		t.Fatalf("generated keys = %s", r.raw)
	}
	if r := e.call("DELETE", "/api/devices/dev1/attestation", ""); r.status != http.StatusNoContent {
		t.Fatalf("DELETE = %d", r.status)
	}
	e.call("GET", "/api/devices/dev1/attestation", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("PUT", "/api/devices/dev1/attestation", `{"type":"symmetricKey","symmetricKey":{"primaryKey":"!!"}}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PUT", "/api/devices/dev1/attestation", `{}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PUT", "/api/devices/ghost/attestation", `{"type":"symmetricKey"}`).wantError(t, http.StatusNotFound, "NotFound")

	// Devices_ListComponents: from the twin, else the template.
	seedTwin(t, e)
	e.call("GET", "/api/devices/dev1/components", "").wantShape(t, http.StatusOK, `{"value":[{"@type":"Component","name":"thermostat1","displayName":"x"}]}`)
	e.f.mu.Lock()
	e.f.x().models["dev1"] = exampleModel()
	e.f.mu.Unlock()
	r = e.call("GET", "/api/devices/dev1/components", "")
	jsonEqual(t, r.body, `{"value":[{"@type":"Component","name":"settings","displayName":"settings"}]}`)
	e.call("GET", "/api/devices/ghost/components", "").wantError(t, http.StatusNotFound, "NotFound")
}

func TestSpecExamplesEnrollmentGroups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// enrollmentgroups_create.json.
	r := e.call("PUT", "/api/enrollmentGroups/myEnrollmentGroupId", `{"displayName":"My group","enabled":true,"type":"iot","attestation":{"type":"symmetricKey"}}`)
	r.wantShape(t, http.StatusOK, `{"id":"myEnrollmentGroupId","displayName":"My group","enabled":true,"type":"iot",
		"attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"x","secondaryKey":"x"}},"etag":"x"}`)
	// enrollmentgroups_update.json: a merge patch.
	r = e.call("PATCH", "/api/enrollmentGroups/myEnrollmentGroupId", `{"displayName":"Renamed","enabled":false}`)
	r.want(t, http.StatusOK)
	if r.body["displayName"] != "Renamed" || r.body["enabled"] != false || r.body["type"] != "iot" {
		t.Fatalf("patched group = %s", r.raw)
	}
	e.call("PATCH", "/api/enrollmentGroups/ghost", `{"enabled":false}`).wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", "/api/enrollmentGroups", "").wantShape(t, http.StatusOK, `{"value":[{"id":"x","etag":"x"}]}`)
	// Required fields and the id pattern ^[a-zA-Z0-9-]*$.
	e.call("PUT", "/api/enrollmentGroups/my_group", `{"displayName":"g","type":"iot","attestation":{"type":"symmetricKey"}}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PUT", "/api/enrollmentGroups/g", `{"type":"iot","attestation":{"type":"symmetricKey"}}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	// enrollmentgroups_delete.json: 204.
	if r := e.call("DELETE", "/api/enrollmentGroups/myEnrollmentGroupId", ""); r.status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", r.status, r.raw)
	}
	e.call("GET", "/api/enrollmentGroups/myEnrollmentGroupId", "").wantError(t, http.StatusNotFound, "NotFound")
}

// newCA returns a CA certificate PEM and its key.
func newCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// signedLeaf returns a PEM leaf with subject cn signed by ca.
func signedLeaf(t *testing.T, cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestSpecExamplesGroupCertificates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca, caKey, caPEM := newCA(t, "Group CA")
	other, otherKey, otherPEM := newCA(t, "Other CA")
	_ = other
	body := mustJSON(t, map[string]any{"displayName": "X", "type": "iot", "attestation": map[string]any{"type": "x509",
		"x509": map[string]any{"signingCertificates": map[string]any{"primary": map[string]any{"certificate": caPEM}}}}})
	e.call("PUT", "/api/enrollmentGroups/x509grp", body).want(t, http.StatusOK)
	// enrollmentgroups_getx509.json.
	r := e.call("GET", "/api/enrollmentGroups/x509grp/certificates/primary", "")
	r.wantShape(t, http.StatusOK, `{"verified":false,"certificate":"x","info":{"sha1Thumbprint":"x"}}`)
	e.call("GET", "/api/enrollmentGroups/x509grp/certificates/secondary", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", "/api/enrollmentGroups/x509grp/certificates/tertiary", "").wantError(t, http.StatusBadRequest, "BadRequest")
	// enrollmentgroups_setx509.json.
	r = e.call("PUT", "/api/enrollmentGroups/x509grp/certificates/secondary", mustJSON(t, map[string]any{"certificate": otherPEM}))
	r.wantShape(t, http.StatusOK, `{"verified":false,"certificate":"x","info":{"sha1Thumbprint":"x"}}`)
	e.call("PUT", "/api/enrollmentGroups/x509grp/certificates/secondary", `{"certificate":"junk"}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	// enrollmentgroups_generateverificationcodex509.json.
	r = e.call("POST", "/api/enrollmentGroups/x509grp/certificates/primary/generateVerificationCode", "")
	r.wantShape(t, http.StatusOK, `{"verificationCode":"x"}`)
	code := r.body["verificationCode"].(string)
	// enrollmentgroups_verifyx509.json: a certificate signed by the wrong CA is refused.
	e.call("POST", "/api/enrollmentGroups/x509grp/certificates/primary/verify",
		mustJSON(t, map[string]any{"certificate": signedLeaf(t, code, other, otherKey)})).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("POST", "/api/enrollmentGroups/x509grp/certificates/primary/verify",
		mustJSON(t, map[string]any{"certificate": signedLeaf(t, "not-the-code", ca, caKey)})).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	r = e.call("POST", "/api/enrollmentGroups/x509grp/certificates/primary/verify",
		mustJSON(t, map[string]any{"certificate": signedLeaf(t, code, ca, caKey)}))
	if r.status != http.StatusOK || len(r.raw) != 0 {
		t.Fatalf("verify = %d %s", r.status, r.raw)
	}
	e.f.mu.Lock()
	thumb := e.f.x().verified["x509grp/primary"]
	e.f.mu.Unlock()
	if thumb == "" || thumb != thumbprint(caPEM) {
		t.Fatalf("verified thumbprint %q", thumb)
	}
	// A code is good once.
	e.call("POST", "/api/enrollmentGroups/x509grp/certificates/primary/verify",
		mustJSON(t, map[string]any{"certificate": signedLeaf(t, code, ca, caKey)})).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	// enrollmentgroups_removex509.json: 204 for the secondary; the primary stays.
	if r := e.call("DELETE", "/api/enrollmentGroups/x509grp/certificates/secondary", ""); r.status != http.StatusNoContent {
		t.Fatalf("remove secondary = %d %s", r.status, r.raw)
	}
	e.call("DELETE", "/api/enrollmentGroups/x509grp/certificates/primary", "").wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	// A symmetric-key group has no certificates.
	e.call("PUT", "/api/enrollmentGroups/sas", `{"displayName":"s","type":"iot","attestation":{"type":"symmetricKey"}}`).want(t, http.StatusOK)
	e.call("GET", "/api/enrollmentGroups/sas/certificates/primary", "").wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
}

func TestErrorProtocol(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.call("GET", "/api/devices/ghost", "")
	r.wantError(t, http.StatusNotFound, "NotFound")
	msg := r.body["error"].(map[string]any)["message"].(string)
	tm := r.body["error"].(map[string]any)["time"].(string)
	if strings.Contains(msg, "restapi:") || strings.Contains(msg, "emulator:") {
		t.Fatalf("message names internal packages: %q", msg)
	}
	if _, err := time.Parse(time.RFC1123, tm); err != nil {
		t.Fatalf("time %q is not RFC 1123: %v", tm, err)
	}
	// The unknown-route answer names the extensions.
	r = e.call("GET", "/api/devices/dev1/nothing", "")
	if !strings.Contains(r.body["error"].(map[string]any)["message"].(string), "extensions") {
		t.Fatalf("unknown route message: %s", r.raw)
	}
}

func TestBearerOption(t *testing.T) {
	t.Parallel()
	f := newFake()
	h := New(f, Options{Token: testToken, AllowBearer: true})
	for _, auth := range []string{testToken, "Bearer " + testToken} {
		req, _ := http.NewRequest("GET", "/api/devices?api-version="+APIVersion, nil)
		req.Header.Set("Authorization", auth)
		rec := newRecorder()
		h.ServeHTTP(rec, req)
		if rec.status != http.StatusOK {
			t.Fatalf("%q: %d", auth[:6], rec.status)
		}
	}
}

type recorder struct {
	header http.Header
	status int
}

func newRecorder() *recorder                    { return &recorder{header: http.Header{}} }
func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(s int)           { r.status = s }
