package restapi

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// callIf is call with an If-Match header.
func (e *env) callIf(method, path, body, ifMatch string) response {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path+"?api-version="+APIVersion, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", testToken)
	req.Header.Set("If-Match", ifMatch)
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	res.Body.Close()
	return response{status: res.StatusCode, header: res.Header}
}

func TestEtagDevices(t *testing.T) {
	e := newEnv(t)
	r := e.call("GET", "/api/devices/dev2", "")
	old := r.body["etag"].(string)
	// A matching If-Match and body etag pass; the etag then changes.
	r = e.call("PATCH", "/api/devices/dev2", `{"displayName":"two","etag":`+jsonString(old)+`}`)
	r.want(t, http.StatusOK)
	cur := r.body["etag"].(string)
	if cur == old {
		t.Fatal("etag did not change with the device")
	}
	// The stale one is refused 412, in the body and in If-Match.
	e.call("PATCH", "/api/devices/dev2", `{"displayName":"x","etag":`+jsonString(old)+`}`).wantError(t, http.StatusPreconditionFailed, "PreconditionFailed")
	e.call("PUT", "/api/devices/dev2", `{"displayName":"x","etag":`+jsonString(old)+`}`).wantError(t, http.StatusPreconditionFailed, "PreconditionFailed")
	if st := e.callIf("PATCH", "/api/devices/dev2", `{"displayName":"x"}`, old).status; st != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match PATCH = %d", st)
	}
	if st := e.callIf("DELETE", "/api/devices/dev2", ``, old).status; st != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match DELETE = %d", st)
	}
	if got := e.call("GET", "/api/devices/dev2", "").body["displayName"]; got != "two" {
		t.Fatalf("a refused write changed the device: displayName %v", got)
	}
	// If-Match on a device that does not exist fails, even "*"; a body etag on create is ignored.
	if st := e.callIf("PUT", "/api/devices/newdev", `{}`, "*").status; st != http.StatusPreconditionFailed {
		t.Fatalf("If-Match * on a new device = %d", st)
	}
	e.call("PUT", "/api/devices/newdev", `{"etag":"\"copied\""}`).want(t, http.StatusOK)
	// "*", a list holding the current tag, and a weak form of it pass.
	if st := e.callIf("PATCH", "/api/devices/dev2", `{"simulated":true}`, `"nope", `+cur).status; st != http.StatusOK {
		t.Fatalf("If-Match list = %d", st)
	}
	cur = e.call("GET", "/api/devices/dev2", "").body["etag"].(string)
	if st := e.callIf("PATCH", "/api/devices/dev2", `{"simulated":false}`, "W/"+cur).status; st != http.StatusOK {
		t.Fatalf("weak If-Match = %d", st)
	}
	if st := e.callIf("DELETE", "/api/devices/dev2", ``, "*").status; st != http.StatusNoContent {
		t.Fatalf("If-Match * DELETE = %d", st)
	}
}

func TestEtagTemplatesAndGroups(t *testing.T) {
	e := newEnv(t)
	id := url.PathEscape("dtmi:contoso:testDeviceTemplate;1")
	r := e.call("PUT", "/api/deviceTemplates/"+id, exampleTemplate)
	r.want(t, http.StatusOK)
	old := r.body["etag"].(string)
	e.call("PATCH", "/api/deviceTemplates/"+id, `{"displayName":"B","etag":`+jsonString(old)+`}`).want(t, http.StatusOK)
	e.call("PATCH", "/api/deviceTemplates/"+id, `{"displayName":"C","etag":`+jsonString(old)+`}`).wantError(t, http.StatusPreconditionFailed, "PreconditionFailed")
	if st := e.callIf("PUT", "/api/deviceTemplates/"+id, exampleTemplate, old).status; st != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match template PUT = %d", st)
	}
	if st := e.callIf("DELETE", "/api/deviceTemplates/"+id, "", old).status; st != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match template DELETE = %d", st)
	}
	if got := e.call("GET", "/api/deviceTemplates/"+id, "").body["displayName"]; got != "B" {
		t.Fatalf("displayName = %v after a refused patch", got)
	}

	r = e.call("PUT", "/api/enrollmentGroups/g1", `{"displayName":"G","type":"iot","attestation":{"type":"symmetricKey"}}`)
	r.want(t, http.StatusOK)
	old = r.body["etag"].(string)
	e.call("PATCH", "/api/enrollmentGroups/g1", `{"enabled":false,"etag":`+jsonString(old)+`}`).want(t, http.StatusOK)
	e.call("PATCH", "/api/enrollmentGroups/g1", `{"enabled":true,"etag":`+jsonString(old)+`}`).wantError(t, http.StatusPreconditionFailed, "PreconditionFailed")
	e.call("PUT", "/api/enrollmentGroups/g1", `{"displayName":"G","type":"iot","attestation":{"type":"symmetricKey"},"etag":`+jsonString(old)+`}`).wantError(t, http.StatusPreconditionFailed, "PreconditionFailed")
	if st := e.callIf("DELETE", "/api/enrollmentGroups/g1", "", old).status; st != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match group DELETE = %d", st)
	}
	if got := e.call("GET", "/api/enrollmentGroups/g1", "").body["enabled"]; got != false {
		t.Fatalf("enabled = %v after a refused patch", got)
	}
}

func jsonString(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}
