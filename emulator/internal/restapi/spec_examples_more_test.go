package restapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// More of the spec's example files replayed, here against the REST API
// served over the emulator's own core (NewCore), so the answers are the
// emulator's, not a fake's. Same comparison as spec_examples_files_test.go.

func newSpecCoreEnv(t *testing.T) (*env, *core.Core) {
	t.Helper()
	c := core.New(core.Config{IDScope: "0ne00000001", HubHost: "h"})
	t.Cleanup(c.Close)
	srv := httptest.NewServer(NewCore(c, Options{Token: testToken}))
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv}, c
}

// specTemplate is devicetemplates_update.json's request body: the
// template the device examples below use.
func specTemplate(t *testing.T) string {
	return loadExample(t, "devicetemplates_update.json").body()
}

// devicetemplates_update.json, devicetemplates_get.json,
// devicetemplates_delete.json. Exceptions: $.etag is the emulator's own
// (an opaque value the service generates); $.@id: the examples answer
// "dtmi:modelDefinition:contoso;1" for template
// "dtmi:contoso:testDeviceTemplate;1" though no request carries that id
// (the example's own inconsistency: the path's id is the template's
// @id), and the emulator answers the path's id, asserted below. devicetemplates_get.json
// shows a template with "extends" and more contents than the update
// example: it is PUT first (its response as the request, etag dropped)
// and read back.
func TestSpecExampleFilesDeviceTemplates(t *testing.T) {
	t.Parallel()
	e, _ := newSpecCoreEnv(t)
	up := loadExample(t, "devicetemplates_update.json")
	path := "/api/deviceTemplates/" + up.param(t, "deviceTemplateId")
	wantExample(t, e.call("PUT", path, up.body()), http.StatusOK, up.response(t, "200"), "$.etag", "$.@id")
	r := e.call("GET", path, "")
	wantExample(t, r, http.StatusOK, up.response(t, "200"), "$.etag", "$.@id")
	if r.body["@id"] != up.param(t, "deviceTemplateId") {
		t.Fatalf("@id %v", r.body["@id"])
	}

	get := loadExample(t, "devicetemplates_get.json")
	want := get.response(t, "200").(map[string]any)
	req := map[string]any{}
	for k, v := range want {
		if k != "etag" {
			req[k] = v
		}
	}
	b, _ := json.Marshal(req)
	gpath := "/api/deviceTemplates/" + get.param(t, "deviceTemplateId")
	delete(req, "@id")
	b, _ = json.Marshal(req)
	wantExample(t, e.call("PUT", gpath, string(b)), http.StatusOK, want, "$.etag", "$.@id")
	wantExample(t, e.call("GET", gpath, ""), http.StatusOK, want, "$.etag", "$.@id")

	del := loadExample(t, "devicetemplates_delete.json")
	if _, ok := del.Responses["204"]; !ok {
		t.Fatal("devicetemplates_delete.json has no 204")
	}
	e.call("DELETE", "/api/deviceTemplates/"+del.param(t, "deviceTemplateId"), "").wantNoContent(t)
	e.call("GET", gpath, "").wantError(t, http.StatusNotFound, "NotFound")
}

// devices_create.json: the device, of the update example's template, in
// organization "seattle" (created first). Exception: $.etag is generated.
func TestSpecExampleFilesDevicesCreate(t *testing.T) {
	t.Parallel()
	e, _ := newSpecCoreEnv(t)
	x := loadExample(t, "devices_create.json")
	e.call("PUT", "/api/deviceTemplates/dtmi:contoso:testDeviceTemplate;1", specTemplate(t)).want(t, http.StatusOK)
	e.call("PUT", "/api/organizations/seattle", `{"displayName":"Seattle"}`).want(t, http.StatusOK)
	path := "/api/devices/" + x.param(t, "deviceId")
	wantExample(t, e.call("PUT", path, x.body()), http.StatusOK, x.response(t, "200"), "$.etag")
	wantExample(t, e.call("GET", path, ""), http.StatusOK, x.response(t, "200"), "$.etag")
}

// devicecredentials_get.json and the three devices_attestations_set_*
// examples. Exceptions: the ID scope and the keys of credentials are the
// emulator's own (generated; the example shows placeholders); the x509
// example's X.509 attestation of a single device is refused 422
// UnprocessableEntity by the emulator (it provisions X.509 devices only
// through an X.509 enrollment group: a mismatch with IoT Central, left,
// see /work/notes/issue30b.md), as-is and with a real certificate; the
// emulator refuses TPM attestation (it emulates no TPM). Both refusals
// are asserted with IoT Central's error shape and lose the key
// attestation set before.
func TestSpecExampleFilesDeviceAttestation(t *testing.T) {
	t.Parallel()
	e, _ := newSpecCoreEnv(t)
	cred := loadExample(t, "devicecredentials_get.json")
	e.call("PUT", "/api/devices/"+cred.param(t, "deviceId"), `{"displayName":"Checkout 4"}`).want(t, http.StatusOK)
	wantExample(t, e.call("GET", "/api/devices/"+cred.param(t, "deviceId")+"/credentials", ""), http.StatusOK, cred.response(t, "200"),
		"$.idScope", "$.symmetricKey.primaryKey", "$.symmetricKey.secondaryKey")

	sym := loadExample(t, "devices_attestations_set_symmetricKey.json")
	dev := "/api/devices/" + sym.param(t, "deviceId")
	e.call("PUT", dev, `{"displayName":"Checkout thermostat"}`).want(t, http.StatusOK)
	// The example's keys are placeholders; base64 keys in their place.
	keys := []string{"<primary key>", "cHJpbWFyeS1rZXktb2YtMzItYnl0ZXMtbG9uZy4uLi4=", "<secondary key>", "c2Vjb25kYXJ5LWtleS1vZi0zMi1ieXRlcy1sb25nLi4="}
	wantExample(t, e.call("PUT", dev+"/attestation", sym.body(keys...)), http.StatusOK, sym.response(t, "200", keys...))
	wantExample(t, e.call("GET", dev+"/attestation", ""), http.StatusOK, sym.response(t, "200", keys...))

	x5 := loadExample(t, "devices_attestations_set_x509.json")
	e.call("PUT", dev+"/attestation", x5.body()).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	cb, _ := json.Marshal(newCert(t, sym.param(t, "deviceId"), false))
	e.call("PUT", dev+"/attestation", x5.body(`"<string representation of the certificate>"`, string(cb))).
		wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")

	tpm := loadExample(t, "devices_attestations_set_tpm.json")
	if tpm.response(t, "200") == nil {
		t.Fatal("devices_attestations_set_tpm.json has no 200 body")
	}
	e.call("PUT", dev+"/attestation", tpm.body()).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	wantExample(t, e.call("GET", dev+"/attestation", ""), http.StatusOK, sym.response(t, "200", keys...)) // lost nothing
}

// enrollmentgroups_create.json, enrollmentgroups_get.json,
// enrollmentgroups_list.json. Exceptions: the group's symmetric keys and
// $.etag are generated (the examples show placeholders and another
// application's etag).
func TestSpecExampleFilesEnrollmentGroups(t *testing.T) {
	t.Parallel()
	e, _ := newSpecCoreEnv(t)
	cr := loadExample(t, "enrollmentgroups_create.json")
	path := "/api/enrollmentGroups/" + cr.param(t, "enrollmentGroupId")
	keys := []string{"$.attestation.symmetricKey.primaryKey", "$.attestation.symmetricKey.secondaryKey", "$.etag"}
	created := e.call("PUT", path, cr.body())
	wantExample(t, created, http.StatusOK, cr.response(t, "200"), keys...)
	get := loadExample(t, "enrollmentgroups_get.json")
	got := e.call("GET", "/api/enrollmentGroups/"+get.param(t, "enrollmentGroupId"), "")
	wantExample(t, got, http.StatusOK, get.response(t, "200"), keys...)
	if string(got.raw) != string(created.raw) {
		t.Fatalf("GET %s, PUT answered %s", got.raw, created.raw)
	}
	list := loadExample(t, "enrollmentgroups_list.json")
	var items []string
	for _, k := range keys {
		items = append(items, "$.value[*]"+k[1:])
	}
	wantExample(t, e.call("GET", "/api/enrollmentGroups", ""), http.StatusOK, list.response(t, "200"), items...)
}

// enrollmentgroups_verifyx509.json and enrollmentgroups_removex509.json
// on an X.509 group myEnrollmentGroupId with a primary and a secondary
// CA. The example's "<base64-certificate>" is a placeholder: a
// certificate whose subject is the issued verification code, signed by
// the primary CA, in its place. Exception: the emulator refuses to
// remove the primary certificate (422; a group keeps a primary CA), a
// mismatch with the example's 204, left (see /work/notes/issue30b.md);
// the secondary is removed with the example's 204.
func TestSpecExampleFilesEnrollmentGroupCertificates(t *testing.T) {
	t.Parallel()
	e, _ := newSpecCoreEnv(t)
	ver := loadExample(t, "enrollmentgroups_verifyx509.json")
	ca, caKey, caPEM := newCA(t, "Group CA")
	_, _, otherPEM := newCA(t, "Other CA")
	group := "/api/enrollmentGroups/" + ver.param(t, "enrollmentGroupId")
	e.call("PUT", group, mustJSON(t, map[string]any{"displayName": "My group", "type": "iot", "attestation": map[string]any{"type": "x509",
		"x509": map[string]any{"signingCertificates": map[string]any{"primary": map[string]any{"certificate": caPEM},
			"secondary": map[string]any{"certificate": otherPEM}}}}})).want(t, http.StatusOK)
	cert := group + "/certificates/" + ver.param(t, "entry")
	r := e.call("POST", cert+"/generateVerificationCode", "")
	r.want(t, http.StatusOK)
	leaf, _ := json.Marshal(signedLeaf(t, r.body["verificationCode"].(string), ca, caKey))
	if _, ok := ver.Responses["200"]; !ok {
		t.Fatal("enrollmentgroups_verifyx509.json has no 200")
	}
	r = e.call("POST", cert+"/verify", ver.body(`"<base64-certificate>"`, string(leaf)))
	if r.status != http.StatusOK || len(r.raw) != 0 {
		t.Fatalf("verify: %d %s, want the example's 200 without a body", r.status, r.raw)
	}
	if r := e.call("GET", cert, ""); r.body["verified"] != true {
		t.Fatalf("after verify: %s", r.raw)
	}

	rm := loadExample(t, "enrollmentgroups_removex509.json")
	if _, ok := rm.Responses["204"]; !ok {
		t.Fatal("enrollmentgroups_removex509.json has no 204")
	}
	path := "/api/enrollmentGroups/" + rm.param(t, "enrollmentGroupId") + "/certificates/"
	e.call("DELETE", path+rm.param(t, "entry"), "").wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("DELETE", path+"secondary", "").wantNoContent(t)
	e.call("GET", path+"secondary", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", path+"primary", "").want(t, http.StatusOK)
}

// apitoken_list.json: the example's token (an App Administrator and an
// Org Administrator of "seattle", created first) PUT, then listed as the
// example shows it (a listing never shows the token's secret). The
// example's expiry, 2020-10-18, is past: the emulator refuses a token
// that has expired (422, asserted), so 2099-10-18 takes its place.
func TestSpecExampleFilesAPITokenList(t *testing.T) {
	t.Parallel()
	e, _ := newSpecCoreEnv(t)
	x := loadExample(t, "apitoken_list.json")
	past := x.response(t, "200").(map[string]any)["value"].([]any)[0].(map[string]any)
	e.call("PUT", "/api/organizations/seattle", `{"displayName":"Seattle"}`).want(t, http.StatusOK)
	b, _ := json.Marshal(map[string]any{"roles": past["roles"], "expiry": past["expiry"]})
	e.call("PUT", "/api/apiTokens/"+past["id"].(string), string(b)).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	want := x.response(t, "200", "2020-10-18T18:30:40.227Z", "2099-10-18T18:30:40.227Z").(map[string]any)
	tok := want["value"].([]any)[0].(map[string]any)
	b, _ = json.Marshal(map[string]any{"roles": tok["roles"], "expiry": tok["expiry"]})
	e.call("PUT", "/api/apiTokens/"+tok["id"].(string), string(b)).want(t, http.StatusOK)
	r := e.call("GET", "/api/apiTokens", "")
	wantExample(t, r, http.StatusOK, want)
	if strings.Contains(string(r.raw), "SharedAccessSignature") {
		t.Fatalf("a listing shows a token: %s", r.raw)
	}
}

// fileUpload_delete.json: a configured file upload is deleted (204), and
// then is not there (404).
func TestSpecExampleFilesFileUploadDelete(t *testing.T) {
	t.Parallel()
	e, _ := newSpecCoreEnv(t)
	x := loadExample(t, "fileUpload_delete.json")
	if _, ok := x.Responses["204"]; !ok {
		t.Fatal("fileUpload_delete.json has no 204")
	}
	e.call("PUT", "/api/fileUploads", `{"container":"devlogs","sasTtl":"PT1H"}`).want(t, http.StatusOK)
	e.call("DELETE", "/api/fileUploads", "").wantNoContent(t)
	e.call("GET", "/api/fileUploads", "").wantError(t, http.StatusNotFound, "NotFound")
}

// specLink is a device (or module) connection to the core that answers
// every command with answer.
type specLink struct {
	answer []byte
}

func (l *specLink) Protocol() string                       { return "test" }
func (l *specLink) Subscribed(core.Feature) bool           { return true }
func (l *specLink) PushDesired(body []byte, _ int64) error { return nil }
func (l *specLink) InvokeMethod(ctx context.Context, _ string, _ []byte) (int, []byte, error) {
	return http.StatusOK, l.answer, nil
}
func (l *specLink) NotifyC2D() {}
func (l *specLink) Drop(error) {}

// mx1Template is the model of the device examples' "mx1": component
// "settings" with the writable properties the examples set, "sensors"
// with telemetry "temperature", "Thermostat_1o" with command "CoolDown".
const mx1Template = `{"@type":["ModelDefinition","DeviceModel"],"displayName":"mx","capabilityModel":{"@id":"dtmi:contoso:mx;1","@type":"Interface","contents":[
	{"@type":"Component","name":"settings","schema":{"@id":"dtmi:contoso:settings;1","@type":"Interface","contents":[
		{"@type":"Property","name":"fanSpeed","schema":"double","writable":true},
		{"@type":"Property","name":"voltage","schema":"double","writable":true},
		{"@type":"Property","name":"current","schema":"double","writable":true},
		{"@type":"Property","name":"irSwitch","schema":"boolean","writable":true}]}},
	{"@type":"Component","name":"sensors","schema":{"@id":"dtmi:contoso:sensors;1","@type":"Interface","contents":[
		{"@type":"Telemetry","name":"temperature","schema":"double"}]}},
	{"@type":"Component","name":"Thermostat_1o","schema":{"@id":"dtmi:contoso:thermostat;1","@type":"Interface","contents":[
		{"@type":"Command","name":"CoolDown","request":{"name":"tempVal","schema":"double"}}]}}]}}`

// devices_properties_update.json, devices_properties_components_set.json,
// devices_telemetry_get.json, devices_commands_send.json and
// modules_commandshistory_get.json on device "mx1" (of mx1Template),
// connected, with module "camera" connected: its commands answer
// "Success". Exception: the telemetry's $.timestamp is when the emulator
// received the message (the example's is another message's).
func TestSpecExampleFilesDeviceOperations(t *testing.T) {
	t.Parallel()
	e, c := newSpecCoreEnv(t)
	e.call("PUT", "/api/deviceTemplates/dtmi:contoso:mx;1", mx1Template).want(t, http.StatusOK)
	e.call("PUT", "/api/devices/mx1", `{"displayName":"mx1","template":"dtmi:contoso:mx;1","enabled":true}`).want(t, http.StatusOK)
	sess, _, err := c.Connect("mx1", core.HubAuth{}, &specLink{answer: []byte(`{}`)}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	up := loadExample(t, "devices_properties_update.json")
	wantExample(t, e.call("PATCH", "/api/devices/"+up.param(t, "deviceId")+"/properties", up.body()), http.StatusAccepted, up.response(t, "202"))
	set := loadExample(t, "devices_properties_components_set.json")
	wantExample(t, e.call("PATCH", "/api/devices/"+set.param(t, "deviceId")+"/components/"+set.param(t, "componentName")+"/properties", set.body()),
		http.StatusAccepted, set.response(t, "202"))

	tel := loadExample(t, "devices_telemetry_get.json")
	if err := sess.Telemetry(core.Telemetry{DeviceID: "mx1", Component: tel.param(t, "componentName"), ContentType: "application/json",
		Body: []byte(`{"` + tel.param(t, "telemetryName") + `":32}`)}); err != nil {
		t.Fatal(err)
	}
	wantExample(t, e.call("GET", "/api/devices/"+tel.param(t, "deviceId")+"/components/"+tel.param(t, "componentName")+"/telemetry/"+tel.param(t, "telemetryName"), ""),
		http.StatusOK, tel.response(t, "200"), "$.timestamp")

	cmd := loadExample(t, "devices_commands_send.json")
	wantExample(t, e.call("POST", "/api/devices/"+cmd.param(t, "deviceId")+"/components/"+cmd.param(t, "componentName")+"/commands/"+cmd.param(t, "commandName"), cmd.body()),
		http.StatusCreated, cmd.response(t, "201"))

	hist := loadExample(t, "modules_commandshistory_get.json")
	if _, err := c.PutHubModule(hist.param(t, "deviceId"), hist.param(t, "moduleName"), true, "", core.HubModuleSpec{}); err != nil {
		t.Fatal(err)
	}
	msess, _, err := c.Connect(core.ModuleKey(hist.param(t, "deviceId"), hist.param(t, "moduleName")), core.HubAuth{}, &specLink{answer: []byte(`"Success"`)}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer msess.Close()
	path := "/api/devices/" + hist.param(t, "deviceId") + "/modules/" + hist.param(t, "moduleName") + "/components/" + hist.param(t, "componentName") + "/commands/" + hist.param(t, "commandName")
	e.call("POST", path, `{"request":{}}`).want(t, http.StatusCreated)
	wantExample(t, e.call("GET", path, ""), http.StatusOK, hist.response(t, "200"))
}
