package restapi

import (
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/url"
	"testing"
)

// The components list shows the template's display name of a component.
func TestComponentDisplayNameFromTemplate(t *testing.T) {
	e := newEnv(t)
	tid := "dtmi:contoso:testDeviceTemplate;1"
	e.call("PUT", "/api/deviceTemplates/"+url.PathEscape(tid), exampleTemplate).want(t, http.StatusOK)
	e.call("PUT", "/api/devices/dev9", `{"template":"`+tid+`"}`).want(t, http.StatusOK)
	e.f.mu.Lock()
	e.f.x().models["dev9"] = exampleModel()
	e.f.mu.Unlock()
	r := e.call("GET", "/api/devices/dev9/components", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body["value"], `[{"@type":"Component","name":"settings","displayName":"Settings"}]`)
}

// An attestation PATCH is a merge patch: no type needed, a key left out
// keeps its value.
func TestAttestationMergePatch(t *testing.T) {
	e := newEnv(t)
	k1 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	k2 := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	k3 := base64.StdEncoding.EncodeToString([]byte("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"))
	e.call("PUT", "/api/devices/dev2/attestation", `{"type":"symmetricKey","symmetricKey":{"primaryKey":"`+k1+`","secondaryKey":"`+k2+`"}}`).want(t, http.StatusOK)
	r := e.call("PATCH", "/api/devices/dev2/attestation", `{"symmetricKey":{"primaryKey":"`+k3+`"}}`)
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"type":"symmetricKey","symmetricKey":{"primaryKey":"`+k3+`","secondaryKey":"`+k2+`"}}`)
	// PUT still replaces the whole attestation and needs its type.
	e.call("PUT", "/api/devices/dev2/attestation", `{"symmetricKey":{"primaryKey":"`+k1+`"}}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
}

// A CA certificate is accepted as PEM text, as base64 of the PEM file (the
// Azure CLI's encoding) and as base64 of DER, and stored as PEM.
func TestCertificateEncodings(t *testing.T) {
	e := newEnv(t)
	ca := newCert(t, "root", true)
	block, _ := pem.Decode([]byte(ca))
	for name, cert := range map[string]string{
		"pem":        ca,
		"base64-pem": base64.StdEncoding.EncodeToString([]byte(ca)),
		"base64-der": base64.StdEncoding.EncodeToString(block.Bytes),
	} {
		body := mustJSON(t, map[string]any{"displayName": "g", "type": "iot", "attestation": map[string]any{"type": "x509",
			"x509": map[string]any{"signingCertificates": map[string]any{"primary": map[string]any{"certificate": cert}}}}})
		r := e.call("PUT", "/api/enrollmentGroups/g-"+name, body)
		r.want(t, http.StatusOK)
		got := r.body["attestation"].(map[string]any)["x509"].(map[string]any)["signingCertificates"].(map[string]any)["primary"].(map[string]any)
		if got["certificate"] != ca {
			t.Errorf("%s: stored certificate %v, want the PEM", name, got["certificate"])
		}
		r = e.call("PUT", "/api/enrollmentGroups/g-"+name+"/certificates/secondary", mustJSON(t, map[string]any{"certificate": cert}))
		r.want(t, http.StatusOK)
		if r.body["certificate"] != ca {
			t.Errorf("%s: certificate entry stored %v", name, r.body["certificate"])
		}
	}
	e.call("PUT", "/api/enrollmentGroups/g-bad/certificates/primary", `{"certificate":"bm90IGEgY2VydA=="}`).wantError(t, http.StatusNotFound, "NotFound")
	body := mustJSON(t, map[string]any{"displayName": "g", "type": "iot", "attestation": map[string]any{"type": "x509",
		"x509": map[string]any{"signingCertificates": map[string]any{"primary": map[string]any{"certificate": "bm90IGEgY2VydA=="}}}}})
	e.call("PUT", "/api/enrollmentGroups/g-bad", body).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
}

// Template ids are DTMIs (version optional, as IoT Central's own), the
// capability model is a non-empty object with a DTMI @id.
func TestTemplateValidation(t *testing.T) {
	e := newEnv(t)
	ok := `{"@type":["ModelDefinition","DeviceModel"],"capabilityModel":{"@id":"dtmi:c:m;1","@type":"Interface","contents":[]}}`
	for _, id := range []string{"thermostat", "urn:contoso:x", "dtmi:contoso:x;0", "dtmi:1x;1"} {
		e.call("PUT", "/api/deviceTemplates/"+url.PathEscape(id), ok).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	}
	for _, id := range []string{"dtmi:modelDefinition:spzeut3n:n2lteu39u6", "dtmi:contoso:x;2"} {
		e.call("PUT", "/api/deviceTemplates/"+url.PathEscape(id), ok).want(t, http.StatusOK)
	}
	for _, body := range []string{
		`{"@type":["ModelDefinition"],"capabilityModel":{}}`,
		`{"@type":["ModelDefinition"],"capabilityModel":{"@id":"not-a-dtmi","@type":"Interface"}}`,
	} {
		e.call("PUT", "/api/deviceTemplates/"+url.PathEscape("dtmi:c:t;1"), body).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	}
	e.call("PATCH", "/api/deviceTemplates/"+url.PathEscape("dtmi:contoso:x;2"), `{"capabilityModel":null}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
}
