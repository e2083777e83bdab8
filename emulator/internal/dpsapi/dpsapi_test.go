package dpsapi

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/pki"
	"github.com/iotc-go/iotc/emulator/internal/sas"
)

const (
	testScope = "0ne00000DPS"
	testHost  = "localhost"
)

type env struct {
	t    *testing.T
	core *core.Core
	srv  *httptest.Server
}

func newEnv(t *testing.T, groups ...core.EnrollmentGroup) *env {
	t.Helper()
	for i := range groups {
		g, err := core.NormalizeGroup(groups[i])
		if err != nil {
			t.Fatal(err)
		}
		groups[i] = g
	}
	c := core.New(core.Config{IDScope: testScope, HubHost: testHost, AutoApprove: true, RetryAfter: 1, Groups: groups})
	t.Cleanup(c.Close)
	srv := httptest.NewUnstartedServer(New(c, nil))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &env{t: t, core: c, srv: srv}
}

// token is a DPS service SAS token of the provisioningserviceowner policy.
func (e *env) token() string {
	tok, err := sas.Build(e.core.DPSPolicy().PrimaryKey, testHost, time.Now().Add(time.Hour), core.DPSPolicyName)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

type answer struct {
	status int
	header http.Header
	raw    []byte
}

func (a answer) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.raw, &m); err != nil {
		t.Fatalf("answer %d %q is not a JSON object: %v", a.status, a.raw, err)
	}
	return m
}

func (a answer) list(t *testing.T) []map[string]any {
	t.Helper()
	var l []map[string]any
	if err := json.Unmarshal(a.raw, &l); err != nil {
		t.Fatalf("answer %d %q is not a JSON array: %v", a.status, a.raw, err)
	}
	return l
}

// do sends a request; path may carry its own query, else api-version
// 2021-10-01 is added. hdr are header name/value pairs ("Authorization"
// "" sends none; without it the service token is sent).
func (e *env) do(method, path string, body any, cert *tls.Certificate, hdr ...string) answer {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	if !strings.Contains(path, "?") {
		path += "?api-version=2021-10-01"
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", e.token())
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	pool := x509.NewCertPool()
	pool.AddCert(e.srv.Certificate())
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, header: res.Header, raw: b}
}

// wantError checks a DPS error answer: the status, a numeric errorCode
// starting with it, a trackingId, a message holding msg and a timestamp.
func wantError(t *testing.T, a answer, status int, msg string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d (%s), want %d", a.status, a.raw, status)
	}
	var b struct {
		ErrorCode    *int   `json:"errorCode"`
		TrackingID   string `json:"trackingId"`
		Message      string `json:"message"`
		TimestampUtc string `json:"timestampUtc"`
	}
	if err := json.Unmarshal(a.raw, &b); err != nil {
		t.Fatalf("error body %q: %v", a.raw, err)
	}
	if b.ErrorCode == nil || *b.ErrorCode/1000 != status {
		t.Fatalf("errorCode of %s does not start with %d", a.raw, status)
	}
	if b.TrackingID == "" || b.Message == "" {
		t.Fatalf("error body %s lacks trackingId or message", a.raw)
	}
	if _, err := time.Parse(time.RFC3339Nano, b.TimestampUtc); err != nil {
		t.Fatalf("timestampUtc %q: %v", b.TimestampUtc, err)
	}
	if !strings.Contains(b.Message, msg) {
		t.Fatalf("message %q does not say %q", b.Message, msg)
	}
}

func symEnrollment(id string) map[string]any {
	return map[string]any{"registrationId": id, "attestation": map[string]any{"type": "symmetricKey"}}
}

func TestHandles(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]bool{
		"/enrollments/x": true, "/enrollmentGroups/g": true, "/enrollmentgroups/g/attestationmechanism": true,
		"/registrations/r": true, "/enrollments": true, "/0ne0001/registrations/r/register": true,
		"/0ne0001/registrations/r/operations/o": true, "/0ne0001/registrations/r": true,
		"/devices/registrations/r": false, "/twins/x": false, "/devices/d": false, "/$iothub/websocket": false,
		"/0ne0001/registrations": false, "/": false,
	} {
		if got := Handles(path); got != want {
			t.Errorf("Handles(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestServiceAuthAndVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantError(t, e.do("GET", "/enrollments/x?other=1", nil, nil), 400, "api-version")
	wantError(t, e.do("GET", "/enrollments/x", nil, nil, "Authorization", ""), 401, "SAS")
	p := e.core.DPSPolicy()
	for name, tok := range map[string]func() (string, error){
		"hub policy name": func() (string, error) {
			return sas.Build(p.PrimaryKey, testHost, time.Now().Add(time.Hour), "iothubowner")
		},
		"wrong key": func() (string, error) {
			return sas.Build(core.RandomKey(), testHost, time.Now().Add(time.Hour), core.DPSPolicyName)
		},
		"expired": func() (string, error) {
			return sas.Build(p.PrimaryKey, testHost, time.Now().Add(-time.Minute), core.DPSPolicyName)
		},
		"other host": func() (string, error) {
			return sas.Build(p.PrimaryKey, "elsewhere", time.Now().Add(time.Hour), core.DPSPolicyName)
		},
	} {
		tk, err := tok()
		if err != nil {
			t.Fatal(err)
		}
		a := e.do("GET", "/enrollments/x", nil, nil, "Authorization", tk)
		t.Run(name, func(t *testing.T) { wantError(t, a, 401, "") })
	}
	// The secondary key signs too; the answer never echoes the token.
	tk, _ := sas.Build(p.SecondaryKey, testHost, time.Now().Add(time.Hour), core.DPSPolicyName)
	a := e.do("GET", "/enrollments/x", nil, nil, "Authorization", tk)
	wantError(t, a, 404, "enrollment")
	if strings.Contains(string(a.raw), "sig=") {
		t.Fatalf("answer echoes the token: %s", a.raw)
	}
	wantError(t, e.do("PATCH", "/enrollments/x", "{}", nil), 404, "not part of the DPS service API")
}

func TestEnrollmentValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca, err := pki.NewCA("validation CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueClient("x", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := string(leaf.CertPEM)
	cases := []struct {
		name string
		body any
		msg  string
	}{
		{"no body", nil, "no body"},
		{"not JSON", "{", "not the expected JSON"},
		{"id differs", map[string]any{"registrationId": "other", "attestation": map[string]any{"type": "symmetricKey"}}, "differs from the path"},
		{"no attestation", map[string]any{"registrationId": "x"}, "attestation is missing"},
		{"tpm", map[string]any{"attestation": map[string]any{"type": "tpm"}}, "TPM"},
		{"unknown type", map[string]any{"attestation": map[string]any{"type": "magic"}}, "magic"},
		{"bad key", map[string]any{"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{"primaryKey": "!!", "secondaryKey": "!!"}}}, "base64"},
		{"one key", map[string]any{"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{"primaryKey": core.RandomKey()}}}, "both symmetric keys"},
		{"x509 without x509", map[string]any{"attestation": map[string]any{"type": "x509"}}, "without x509"},
		{"x509 no certificates", map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{}}}, "no certificates"},
		{"x509 signing certificates", map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{"signingCertificates": map[string]any{"primary": map[string]any{"certificate": cert}}}}}, "clientCertificates"},
		{"x509 bad certificate", map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{"clientCertificates": map[string]any{"primary": map[string]any{"certificate": "bm90IGEgY2VydA=="}}}}}, "certificate"},
		{"x509 CA references", map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{"caReferences": map[string]any{"primary": "myca"}}}}, "CA references"},
		{"custom allocation", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}, "allocationPolicy": "custom"}, "custom allocation"},
		{"custom definition", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}, "customAllocationDefinition": map[string]any{"webhookUrl": "https://x"}}, "custom allocation"},
		{"unknown allocation", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}, "allocationPolicy": "random"}, "allocationPolicy"},
		{"static without hub", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}, "allocationPolicy": "static"}, "static allocation"},
		{"provisioningStatus", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}, "provisioningStatus": "paused"}, "provisioningStatus"},
		{"deviceId", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}, "deviceId": "a/b"}, "deviceId"},
		{"initialTwin tag", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}, "initialTwin": map[string]any{"tags": map[string]any{"a$b": 1}}}, "initialTwin tags"},
	}
	for _, c := range cases {
		a := e.do("PUT", "/enrollments/x", c.body, nil)
		t.Run(c.name, func(t *testing.T) { wantError(t, a, 400, c.msg) })
	}
	if _, err := e.core.Enrollment("x"); err == nil {
		t.Fatal("a refused PUT stored the enrollment")
	}
	wantError(t, e.do("PUT", "/enrollments/bad%20id", symEnrollment("bad id"), nil), 400, "character")
	wantError(t, e.do("PUT", "/enrollments/"+strings.Repeat("a", 129), symEnrollment(strings.Repeat("a", 129)), nil), 400, "1..128")
}

func TestEnrollmentLifecycleAndETags(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := symEnrollment("dev1")
	body["initialTwin"] = map[string]any{"tags": map[string]any{"site": "lab"}, "properties": map[string]any{"desired": map[string]any{"fan": true}}}
	body["reprovisionPolicy"] = map[string]any{"migrateDeviceData": false}
	body["capabilities"] = map[string]any{"iotEdge": true}
	body["iotHubHostName"] = testHost
	body["allocationPolicy"] = "static"
	a := e.do("PUT", "/enrollments/dev1", body, nil)
	if a.status != 200 {
		t.Fatalf("create: %d %s", a.status, a.raw)
	}
	en := a.obj(t)
	etag, _ := en["etag"].(string)
	sk := en["attestation"].(map[string]any)["symmetricKey"].(map[string]any)
	if etag == "" || sk["primaryKey"] == "" || sk["secondaryKey"] == "" || en["provisioningStatus"] != "enabled" {
		t.Fatalf("created %s", a.raw)
	}
	rp := en["reprovisionPolicy"].(map[string]any)
	if rp["updateHubAssignment"] != true || rp["migrateDeviceData"] != false {
		t.Fatalf("reprovision policy %v", rp)
	}
	if en["capabilities"].(map[string]any)["iotEdge"] != true || en["allocationPolicy"] != "static" || en["iotHubHostName"] != testHost {
		t.Fatalf("settings %s", a.raw)
	}
	if en["createdDateTimeUtc"] == "" || en["initialTwin"].(map[string]any)["tags"].(map[string]any)["site"] != "lab" {
		t.Fatalf("created %s", a.raw)
	}
	got := e.do("GET", "/enrollments/dev1", nil, nil).obj(t)
	if got["etag"] != etag {
		t.Fatalf("GET etag %v, want %v", got["etag"], etag)
	}
	// If-Match: a stale etag is refused (header or body), the current one works.
	body["etag"] = `"stale"`
	wantError(t, e.do("PUT", "/enrollments/dev1", body, nil), 412, "etag")
	delete(body, "etag")
	wantError(t, e.do("PUT", "/enrollments/dev1", body, nil, "If-Match", `"stale"`), 412, "etag")
	wantError(t, e.do("PUT", "/enrollments/none", symEnrollment("none"), nil, "If-Match", etag), 404, "enrollment")
	up := e.do("PUT", "/enrollments/dev1", body, nil, "If-Match", etag)
	if up.status != 200 || up.obj(t)["etag"] == etag {
		t.Fatalf("update with the etag: %d %s", up.status, up.raw)
	}
	if up.obj(t)["createdDateTimeUtc"] != en["createdDateTimeUtc"] {
		t.Fatalf("an update changed the creation time")
	}
	wantError(t, e.do("DELETE", "/enrollments/dev1", nil, nil, "If-Match", etag), 412, "etag")
	// Attestation mechanism.
	m := e.do("POST", "/enrollments/dev1/attestationmechanism", nil, nil).obj(t)
	if m["type"] != "symmetricKey" {
		t.Fatalf("attestation %v", m)
	}
	wantError(t, e.do("POST", "/enrollments/none/attestationmechanism", nil, nil), 404, "enrollment")
	if a := e.do("DELETE", "/enrollments/dev1", nil, nil, "If-Match", up.obj(t)["etag"].(string)); a.status != 204 {
		t.Fatalf("delete: %d %s", a.status, a.raw)
	}
	wantError(t, e.do("GET", "/enrollments/dev1", nil, nil), 404, "enrollment")
	wantError(t, e.do("DELETE", "/enrollments/dev1", nil, nil), 404, "enrollment")
}

func TestX509EnrollmentCertificateForms(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca, err := pki.NewCA("forms CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueClient("xdev", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	der := base64.StdEncoding.EncodeToString(leaf.Cert.Raw)
	pemB64 := base64.StdEncoding.EncodeToString(leaf.CertPEM)
	for name, form := range map[string]string{"PEM": string(leaf.CertPEM), "base64 DER": der, "base64 PEM": pemB64} {
		body := map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"clientCertificates": map[string]any{"primary": map[string]any{"certificate": form}}}}}
		a := e.do("PUT", "/enrollments/xdev", body, nil)
		t.Run(name, func(t *testing.T) {
			if a.status != 200 {
				t.Fatalf("%d %s", a.status, a.raw)
			}
			info := a.obj(t)["attestation"].(map[string]any)["x509"].(map[string]any)["clientCertificates"].(map[string]any)["primary"].(map[string]any)["info"].(map[string]any)
			if info["subjectName"] != "CN=xdev" || len(info["sha256Thumbprint"].(string)) != 64 || !strings.HasPrefix(info["issuerName"].(string), "CN=forms CA") {
				t.Fatalf("info %v", info)
			}
		})
	}
}

func TestDeviceRegistrationOverHTTPS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := symEnrollment("hdev")
	body["deviceId"] = "hub-dev"
	body["initialTwin"] = map[string]any{"properties": map[string]any{"desired": map[string]any{"mode": "eco"}}}
	en := e.do("PUT", "/enrollments/hdev", body, nil).obj(t)
	key := en["attestation"].(map[string]any)["symmetricKey"].(map[string]any)["secondaryKey"].(string)
	tok, err := sas.Build(key, sas.DPSResource(testScope, "hdev"), time.Now().Add(time.Hour), sas.DPSKeyName)
	if err != nil {
		t.Fatal(err)
	}
	base := "/" + testScope + "/registrations/hdev"
	const ver = "?api-version=2019-03-31"
	// The status lookup before any registration: 404.
	wantError(t, e.do("POST", base+ver, nil, nil, "Authorization", tok), 404, "registration")
	a := e.do("PUT", base+"/register"+ver+"&forceRegistration=true", `{"registrationId":"hdev"}`, nil, "Authorization", tok)
	if a.status != 202 || a.header.Get("Retry-After") != "1" {
		t.Fatalf("register: %d %v %s", a.status, a.header, a.raw)
	}
	op := a.obj(t)
	if op["status"] != "assigning" || op["operationId"] == "" {
		t.Fatalf("register answer %s", a.raw)
	}
	p := e.do("GET", base+"/operations/"+op["operationId"].(string)+"?api-version=2021-06-01", nil, nil, "Authorization", tok)
	if p.status != 200 {
		t.Fatalf("poll: %d %s", p.status, p.raw)
	}
	st := p.obj(t)["registrationState"].(map[string]any)
	if p.obj(t)["status"] != "assigned" || st["deviceId"] != "hub-dev" || st["assignedHub"] != testHost || st["substatus"] != "initialAssignment" {
		t.Fatalf("poll answer %s", p.raw)
	}
	d, err := e.core.Device("hub-dev")
	if err != nil || d.SecondaryKey != key {
		t.Fatalf("hub device %+v, %v", d, err)
	}
	desired, _, err := e.core.Twin("hub-dev")
	if err != nil || desired["mode"] != "eco" {
		t.Fatalf("initial twin %v, %v", desired, err)
	}
	if s := e.do("GET", base+ver, nil, nil, "Authorization", tok); s.status != 200 || s.obj(t)["deviceId"] != "hub-dev" {
		t.Fatalf("status lookup: %d %s", s.status, s.raw)
	}
	// The service sees the registration state.
	rs := e.do("GET", "/registrations/hdev", nil, nil).obj(t)
	if rs["status"] != "assigned" || rs["deviceId"] != "hub-dev" || rs["etag"] == "" {
		t.Fatalf("registration state %v", rs)
	}

	t.Run("refusals", func(t *testing.T) {
		wantError(t, e.do("GET", base+"/operations/nope"+ver, nil, nil, "Authorization", tok), 404, "operation")
		wantError(t, e.do("PUT", base+"/register"+ver, `{"registrationId":"other"}`, nil, "Authorization", tok), 400, "registrationId")
		wantError(t, e.do("PUT", base+"/register"+ver, `[1]`, nil, "Authorization", tok), 400, "JSON object")
		wantError(t, e.do("PUT", base+"/register"+ver, `{}`, nil, "Authorization", ""), 401, "no SAS token")
		wantError(t, e.do("PUT", "/0neOTHER/registrations/hdev/register"+ver, `{}`, nil, "Authorization", tok), 404, "scope")
		bad, _ := sas.Build(core.RandomKey(), sas.DPSResource(testScope, "hdev"), time.Now().Add(time.Hour), sas.DPSKeyName)
		wantError(t, e.do("PUT", base+"/register"+ver, `{}`, nil, "Authorization", bad), 401, "registration")
		wantError(t, e.do("DELETE", base+"/register"+ver, nil, nil, "Authorization", tok), 404, "not a DPS device registration request")
		wantError(t, e.do("PUT", base+"/register?x=1", `{}`, nil, "Authorization", tok), 400, "api-version")
	})
}

// intermediate makes a CA signed by root.
func intermediate(t *testing.T, root *pki.Issuer, cn string) *pki.Issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, &key.PublicKey, root.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.Issuer{Cert: c, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func x509Group(id string, pems ...string) map[string]any {
	sc := map[string]any{"primary": map[string]any{"certificate": pems[0]}}
	if len(pems) > 1 {
		sc["secondary"] = map[string]any{"certificate": pems[1]}
	}
	return map[string]any{"enrollmentGroupId": id, "attestation": map[string]any{"type": "x509", "x509": map[string]any{"signingCertificates": sc}}}
}

func TestX509RegistrationOverHTTPS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root, err := pki.NewCA("root CA")
	if err != nil {
		t.Fatal(err)
	}
	inter := intermediate(t, root, "intermediate CA")
	// A group whose signing certificate is the intermediate: a device
	// presenting its leaf (with the intermediate) registers.
	if a := e.do("PUT", "/enrollmentGroups/chain", x509Group("chain", string(inter.CertPEM)), nil); a.status != 200 {
		t.Fatalf("group: %d %s", a.status, a.raw)
	}
	leaf, err := inter.IssueClient("chained-dev", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	register := func(reg string, cert *tls.Certificate) answer {
		return e.do("PUT", "/"+testScope+"/registrations/"+reg+"/register?api-version=2019-03-31", `{"registrationId":"`+reg+`"}`, cert, "Authorization", "")
	}
	if a := register("chained-dev", &leaf.TLS); a.status != 202 {
		t.Fatalf("chained registration: %d %s", a.status, a.raw)
	}
	if d, err := e.core.Device("chained-dev"); err != nil || d.GroupID != "chain" || d.Attestation != core.AttestationX509 {
		t.Fatalf("device %+v, %v", d, err)
	}
	// A group with the root as primary and another CA as secondary: the
	// root's leaf registers.
	other, _ := pki.NewCA("other CA")
	if a := e.do("PUT", "/enrollmentGroups/roots", x509Group("roots", string(other.CertPEM), string(root.CertPEM)), nil); a.status != 200 {
		t.Fatalf("group: %d %s", a.status, a.raw)
	} else if sc := a.obj(t)["attestation"].(map[string]any)["x509"].(map[string]any)["signingCertificates"].(map[string]any); sc["secondary"] == nil {
		t.Fatalf("secondary signing certificate not shown: %v", sc)
	}
	direct, _ := root.IssueClient("direct-dev", time.Hour)
	if a := register("direct-dev", &direct.TLS); a.status != 202 {
		t.Fatalf("root registration: %d %s", a.status, a.raw)
	}
	// An individual X.509 enrollment wins over the groups: only its own
	// certificate registers that id.
	own, _ := other.IssueClient("solo", time.Hour)
	enr := map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{
		"clientCertificates": map[string]any{"primary": map[string]any{"certificate": string(own.CertPEM)}}}}}
	if a := e.do("PUT", "/enrollments/solo", enr, nil); a.status != 200 {
		t.Fatalf("enrollment: %d %s", a.status, a.raw)
	}
	groupLeaf, _ := root.IssueClient("solo", time.Hour)
	wantError(t, register("solo", &groupLeaf.TLS), 401, "thumbprint")
	if a := register("solo", &own.TLS); a.status != 202 {
		t.Fatalf("own certificate: %d %s", a.status, a.raw)
	}
	d, err := e.core.HubDevice("solo")
	if err != nil || d.Attestation != core.AttestationX509 || len(d.Thumbprints) == 0 || d.GroupID != "" {
		t.Fatalf("hub device %+v, %v", d, err)
	}
	// The hub then takes the enrollment's certificate, not another one.
	if _, err := e.core.AuthenticateHub("solo", "", []*x509.Certificate{own.Cert}); err != nil {
		t.Fatalf("hub auth with the enrollment's certificate: %v", err)
	}
	if _, err := e.core.AuthenticateHub("solo", "", []*x509.Certificate{groupLeaf.Cert}); err == nil {
		t.Fatal("hub auth with another certificate of the same CN succeeded")
	}
	wantError(t, e.do("PUT", "/enrollmentGroups/cr", map[string]any{"attestation": map[string]any{"type": "x509",
		"x509": map[string]any{"caReferences": map[string]any{"primary": "ca"}}}}, nil), 400, "CA references")
	wantError(t, e.do("PUT", "/enrollmentGroups/cc", map[string]any{"attestation": map[string]any{"type": "x509",
		"x509": map[string]any{"clientCertificates": map[string]any{"primary": map[string]any{"certificate": string(own.CertPEM)}}}}}, nil), 400, "signingCertificates")
}

func TestGroupsBulkQueryAndRegistrationStates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := map[string]any{"enrollmentGroupId": "fleet", "attestation": map[string]any{"type": "symmetricKey"},
		"initialTwin":  map[string]any{"tags": map[string]any{"fleet": "a"}, "properties": map[string]any{"desired": map[string]any{"rate": 5}}},
		"capabilities": map[string]any{"iotEdge": true}}
	a := e.do("PUT", "/enrollmentGroups/fleet", g, nil)
	if a.status != 200 {
		t.Fatalf("group: %d %s", a.status, a.raw)
	}
	grp := a.obj(t)
	gkey := grp["attestation"].(map[string]any)["symmetricKey"].(map[string]any)["primaryKey"].(string)
	if grp["etag"] == "" || grp["capabilities"].(map[string]any)["iotEdge"] != true {
		t.Fatalf("group %s", a.raw)
	}
	// The model's group (IoT Central's view) is the same one: iotEdge type.
	cg, err := e.core.EnrollmentGroup("fleet")
	if err != nil || cg.Type != core.GroupTypeIoTEdge || cg.PrimaryKey != gkey {
		t.Fatalf("core group %+v, %v", cg, err)
	}
	// A put through the IoT Central shape (no DPS settings) keeps them.
	if _, err := e.core.PutEnrollmentGroup(core.EnrollmentGroup{ID: "fleet", DisplayName: "Fleet", Enabled: true, PrimaryKey: gkey, SecondaryKey: cg.SecondaryKey, Type: core.GroupTypeIoTEdge}); err != nil {
		t.Fatal(err)
	}
	after := e.do("GET", "/enrollmentGroups/fleet", nil, nil).obj(t)
	if after["initialTwin"] == nil || after["etag"] == grp["etag"] {
		t.Fatalf("after the REST put: %v", after)
	}
	wantError(t, e.do("PUT", "/enrollmentGroups/fleet", g, nil, "If-Match", grp["etag"].(string)), 412, "etag")
	wantError(t, e.do("PUT", "/enrollmentGroups/other", map[string]any{"enrollmentGroupId": "x", "attestation": map[string]any{"type": "symmetricKey"}}, nil), 400, "differs from the path")

	// Three devices register with derived keys.
	for _, id := range []string{"d1", "d2", "d3"} {
		dk, _ := sas.DeriveKey(gkey, id)
		auth, err := e.core.AuthenticateDPS(testScope, id, mustToken(t, dk, id), nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := e.core.Register(auth, []byte(`{"registrationId":"`+id+`"}`)); r.Status != 202 {
			t.Fatalf("register %s: %s", id, r.Body)
		}
	}
	tw, err := e.core.HubTwin("d1")
	if err != nil || tw.Tags["fleet"] != "a" || tw.Desired["rate"] != float64(5) {
		t.Fatalf("initial twin of a group device: %+v, %v", tw, err)
	}
	if d, _ := e.core.HubDevice("d1"); !d.IotEdge {
		t.Fatal("a device of an iotEdge group is not an edge device")
	}

	// Registration states of the group, two per page.
	var seen []string
	cont := ""
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("paging does not end")
		}
		a := e.do("POST", "/registrations/fleet/query", `{"query":"*"}`, nil, "x-ms-max-item-count", "2", "x-ms-continuation", cont)
		if a.status != 200 || a.header.Get("x-ms-item-type") != "DeviceRegistration" {
			t.Fatalf("query: %d %v %s", a.status, a.header, a.raw)
		}
		for _, r := range a.list(t) {
			seen = append(seen, r["registrationId"].(string))
		}
		if cont = a.header.Get("x-ms-continuation"); cont == "" {
			break
		}
	}
	if strings.Join(seen, ",") != "d1,d2,d3" {
		t.Fatalf("registration states %v", seen)
	}
	wantError(t, e.do("POST", "/registrations/nogroup/query", `{"query":"*"}`, nil), 404, "enrollment group")
	wantError(t, e.do("POST", "/enrollmentGroups/query", `{"query":"SELECT name FROM x"}`, nil), 400, "SELECT *")
	wantError(t, e.do("POST", "/enrollments/query", `{"query":"*"}`, nil, "x-ms-max-item-count", "0"), 400, "x-ms-max-item-count")
	wantError(t, e.do("POST", "/enrollments/query", `{"query":"*"}`, nil, "x-ms-continuation", "!!"), 400, "x-ms-continuation")
	if a := e.do("POST", "/enrollmentGroups/query", `{"query":"select * from enrollmentGroups"}`, nil); a.status != 200 || len(a.list(t)) != 1 || a.header.Get("x-ms-item-type") != "EnrollmentGroup" {
		t.Fatalf("group query: %d %s", a.status, a.raw)
	}
	if m := e.do("POST", "/enrollmentgroups/fleet/attestationmechanism", nil, nil).obj(t); m["type"] != "symmetricKey" {
		t.Fatalf("group attestation %v", m)
	}

	// Deleting a registration state: the next registration is a first
	// assignment again and gets the initial twin back.
	if _, err := e.core.UpdateHubTwin(t.Context(), "d1", "", map[string]any{"fleet": "b"}, map[string]any{"rate": 9}, false); err != nil {
		t.Fatal(err)
	}
	rs := e.do("GET", "/registrations/d1", nil, nil).obj(t)
	wantError(t, e.do("DELETE", "/registrations/d1", nil, nil, "If-Match", `"old"`), 412, "etag")
	if a := e.do("DELETE", "/registrations/d1", nil, nil, "If-Match", rs["etag"].(string)); a.status != 204 {
		t.Fatalf("delete: %d %s", a.status, a.raw)
	}
	wantError(t, e.do("GET", "/registrations/d1", nil, nil), 404, "registration")
	dk, _ := sas.DeriveKey(gkey, "d1")
	auth, _ := e.core.AuthenticateDPS(testScope, "d1", mustToken(t, dk, "d1"), nil)
	r := e.core.Register(auth, []byte(`{}`))
	var op map[string]any
	_ = json.Unmarshal(r.Body, &op)
	fin := e.core.PollOperation(auth, op["operationId"].(string))
	if !strings.Contains(string(fin.Body), `"substatus":"initialAssignment"`) {
		t.Fatalf("after the delete: %s", fin.Body)
	}
	if tw, _ := e.core.HubTwin("d1"); tw.Tags["fleet"] != "a" || tw.Desired["rate"] != float64(5) {
		t.Fatalf("initial twin not applied again: %+v", tw)
	}

	// Deleting the group removes its registration states.
	wantError(t, e.do("DELETE", "/enrollmentGroups/fleet", nil, nil, "If-Match", `"old"`), 412, "etag")
	if a := e.do("DELETE", "/enrollmentGroups/fleet", nil, nil); a.status != 204 {
		t.Fatalf("delete group: %d %s", a.status, a.raw)
	}
	if len(e.core.RegistrationStates("fleet")) != 0 {
		t.Fatal("registration states of a deleted group remain")
	}
	wantError(t, e.do("GET", "/enrollmentGroups/fleet", nil, nil), 404, "enrollment group")
}

func mustToken(t *testing.T, key, reg string) string {
	t.Helper()
	tok, err := sas.Build(key, sas.DPSResource(testScope, reg), time.Now().Add(time.Hour), sas.DPSKeyName)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestBulkOperations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for name, c := range map[string]struct {
		body any
		msg  string
	}{
		"bad mode":       {map[string]any{"mode": "upsert", "enrollments": []any{symEnrollment("a")}}, "bulk mode"},
		"empty":          {map[string]any{"mode": "create", "enrollments": []any{}}, "1 to 10"},
		"too many":       {map[string]any{"mode": "create", "enrollments": make([]map[string]any, 11)}, "1 to 10"},
		"no id":          {map[string]any{"mode": "create", "enrollments": []any{map[string]any{}}}, "no registrationId"},
		"duplicate id":   {map[string]any{"mode": "create", "enrollments": []any{symEnrollment("a"), symEnrollment("a")}}, "twice"},
		"not JSON":       {"[", "not the expected JSON"},
		"no body at all": {nil, "no body"},
	} {
		a := e.do("POST", "/enrollments", c.body, nil)
		t.Run(name, func(t *testing.T) { wantError(t, a, 400, c.msg) })
	}
	bulk := func(mode string, es ...map[string]any) map[string]any {
		t.Helper()
		a := e.do("POST", "/enrollments", map[string]any{"mode": mode, "enrollments": es}, nil)
		if a.status != 200 {
			t.Fatalf("bulk %s: %d %s", mode, a.status, a.raw)
		}
		return a.obj(t)
	}
	if r := bulk("create", symEnrollment("a"), symEnrollment("b")); r["isSuccessful"] != true {
		t.Fatalf("create %v", r)
	}
	bad := symEnrollment("c")
	bad["attestation"] = map[string]any{"type": "tpm"}
	r := bulk("create", symEnrollment("a"), bad, symEnrollment("d"))
	errs := r["errors"].([]any)
	if r["isSuccessful"] != false || len(errs) != 2 {
		t.Fatalf("create again %v", r)
	}
	if e0 := errs[0].(map[string]any); e0["registrationId"] != "a" || e0["errorCode"] != float64(409201) {
		t.Fatalf("first error %v", e0)
	}
	if e1 := errs[1].(map[string]any); e1["registrationId"] != "c" || e1["errorCode"] != float64(400004) {
		t.Fatalf("second error %v", e1)
	}
	if _, err := e.core.Enrollment("d"); err != nil {
		t.Fatal("the valid enrollment of a partly failed bulk was not stored")
	}
	cur, _ := e.core.Enrollment("a")
	stale := symEnrollment("a")
	stale["etag"] = `"stale"`
	fresh := symEnrollment("b")
	if r := bulk("updateIfMatchETag", stale); r["isSuccessful"] != false || r["errors"].([]any)[0].(map[string]any)["errorCode"] != float64(412201) {
		t.Fatalf("updateIfMatchETag with a stale etag %v", r)
	}
	okA := symEnrollment("a")
	okA["etag"] = cur.ETag
	okA["provisioningStatus"] = "disabled"
	if r := bulk("updateIfMatchETag", okA, fresh); r["isSuccessful"] != true {
		t.Fatalf("updateIfMatchETag %v", r)
	}
	if a, _ := e.core.Enrollment("a"); a.Enabled {
		t.Fatal("the bulk update was not applied")
	}
	if r := bulk("update", symEnrollment("new")); r["isSuccessful"] != true {
		t.Fatalf("update creates %v", r)
	}
	if r := bulk("delete", map[string]any{"registrationId": "a"}, map[string]any{"registrationId": "ghost"}); r["isSuccessful"] != false ||
		r["errors"].([]any)[0].(map[string]any)["errorCode"] != float64(404201) {
		t.Fatalf("delete %v", r)
	}
	// Paged enrollment query: b, d, new remain, one per page.
	var ids []string
	cont := ""
	for range 5 {
		a := e.do("POST", "/enrollments/query", `{"query":"*"}`, nil, "x-ms-max-item-count", "1", "x-ms-continuation", cont)
		for _, x := range a.list(t) {
			ids = append(ids, x["registrationId"].(string))
		}
		if cont = a.header.Get("x-ms-continuation"); cont == "" {
			break
		}
	}
	if strings.Join(ids, ",") != "b,d,new" {
		t.Fatalf("query %v", ids)
	}
}

func TestAllocationAndDisabled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	register := func(id, key string) map[string]any {
		t.Helper()
		auth, err := e.core.AuthenticateDPS(testScope, id, mustToken(t, key, id), nil)
		if err != nil {
			t.Fatal(err)
		}
		r := e.core.Register(auth, []byte(`{}`))
		var op map[string]any
		_ = json.Unmarshal(r.Body, &op)
		var fin map[string]any
		_ = json.Unmarshal(e.core.PollOperation(auth, op["operationId"].(string)).Body, &fin)
		return fin
	}
	put := func(id string, extra map[string]any) string {
		t.Helper()
		b := symEnrollment(id)
		for k, v := range extra {
			b[k] = v
		}
		a := e.do("PUT", "/enrollments/"+id, b, nil)
		if a.status != 200 {
			t.Fatalf("put %s: %d %s", id, a.status, a.raw)
		}
		return a.obj(t)["attestation"].(map[string]any)["symmetricKey"].(map[string]any)["primaryKey"].(string)
	}
	k := put("elsewhere", map[string]any{"allocationPolicy": "static", "iotHubHostName": "other.azure-devices.net"})
	fin := register("elsewhere", k)
	st := fin["registrationState"].(map[string]any)
	if fin["status"] != "failed" || st["errorCode"] != float64(400208) {
		t.Fatalf("static allocation to another hub: %v", fin)
	}
	if rs := e.do("GET", "/registrations/elsewhere", nil, nil).obj(t); rs["status"] != "failed" || rs["errorCode"] != float64(400208) {
		t.Fatalf("failed registration state %v", rs)
	}
	if _, err := e.core.Device("elsewhere"); err == nil {
		t.Fatal("a failed registration created a device")
	}
	k = put("listed", map[string]any{"allocationPolicy": "hashed", "iotHubs": []string{"other.azure-devices.net", testHost}})
	if fin := register("listed", k); fin["status"] != "assigned" {
		t.Fatalf("hashed over a list with the hub: %v", fin)
	}
	k = put("off", map[string]any{"provisioningStatus": "disabled"})
	if fin := register("off", k); fin["status"] != "disabled" {
		t.Fatalf("disabled enrollment: %v", fin)
	}
}

func TestGroupValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sym := map[string]any{"type": "symmetricKey"}
	cases := []struct {
		name string
		body any
		msg  string
	}{
		{"no body", nil, "no body"},
		{"no attestation", map[string]any{}, "attestation is missing"},
		{"tpm", map[string]any{"attestation": map[string]any{"type": "tpm"}}, "TPM"},
		{"bad key", map[string]any{"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{"primaryKey": "!!", "secondaryKey": "!!"}}}, "base64"},
		{"x509 no primary", map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{"signingCertificates": map[string]any{}}}}, "no primary certificate"},
		{"x509 not a certificate", map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{"signingCertificates": map[string]any{"primary": map[string]any{"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}}}}}, "certificate"},
		{"custom allocation", map[string]any{"attestation": sym, "allocationPolicy": "custom"}, "custom allocation"},
		{"custom definition", map[string]any{"attestation": sym, "customAllocationDefinition": map[string]any{"webhookUrl": "https://x"}}, "custom allocation"},
		{"provisioningStatus", map[string]any{"attestation": sym, "provisioningStatus": "on"}, "provisioningStatus"},
		{"initialTwin desired", map[string]any{"attestation": sym, "initialTwin": map[string]any{"properties": map[string]any{"desired": map[string]any{"a.b": 1}}}}, "initialTwin desired"},
	}
	for _, c := range cases {
		a := e.do("PUT", "/enrollmentGroups/g", c.body, nil)
		t.Run(c.name, func(t *testing.T) { wantError(t, a, 400, c.msg) })
	}
	if _, err := e.core.EnrollmentGroup("g"); err == nil {
		t.Fatal("a refused PUT stored the group")
	}
	wantError(t, e.do("PUT", "/enrollmentGroups/g", map[string]any{"attestation": sym}, nil, "If-Match", `"x"`), 404, "enrollment group")
	wantError(t, e.do("POST", "/enrollmentGroups/none/attestationmechanism", nil, nil), 404, "enrollment group")
}
