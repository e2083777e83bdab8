package devicehttp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/sas"
)

const host = "hub.test"

type env struct {
	t    testing.TB
	core *core.Core
	srv  *httptest.Server
	keys map[string]string
}

func newEnv(t testing.TB, opts Options) *env {
	t.Helper()
	c := core.New(core.Config{IDScope: "0ne00000001", HubHost: host})
	t.Cleanup(c.Close)
	srv := httptest.NewUnstartedServer(New(c, opts))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &env{t: t, core: c, srv: srv, keys: map[string]string{}}
}

// device creates a symmetric-key device.
func (e *env) device(id string) {
	e.t.Helper()
	k, err := e.core.CreateDevice(id)
	if err != nil {
		e.t.Fatal(err)
	}
	e.keys[id] = k
}

// token is a device SAS token of id valid for ttl (negative: expired).
func (e *env) token(id string, ttl time.Duration) string {
	e.t.Helper()
	tok, err := sas.Build(e.keys[id], sas.HubResource(host, id), time.Now().Add(ttl), "")
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) policyToken(name, resource string) string {
	e.t.Helper()
	for _, p := range e.core.Policies() {
		if p.Name == name {
			tok, err := sas.Build(p.PrimaryKey, resource, time.Now().Add(time.Hour), p.Name)
			if err != nil {
				e.t.Fatal(err)
			}
			return tok
		}
	}
	e.t.Fatalf("no policy %s", name)
	return ""
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

// errorCode checks IoT Hub's error shape and returns its code.
func (r resp) errorCode(t *testing.T) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("status %d body %q: %v", r.status, r.body, err)
	}
	msg, _ := m["Message"].(string)
	code := r.header.Get("iothub-errorcode")
	if code == "" || !strings.HasPrefix(msg, "ErrorCode:"+code+";") || m["ExceptionMessage"] == nil {
		t.Fatalf("error %d body %s header %q is not IoT Hub's shape", r.status, r.body, code)
	}
	return code
}

// req sends a request; path gets api-version unless it has one; auth is
// the Authorization header ("" for none); hdr are header name/value pairs.
func (e *env) req(client *http.Client, method, path, auth string, body []byte, hdr ...string) resp {
	e.t.Helper()
	if !strings.Contains(path, "api-version") {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "api-version=2021-04-12"
	}
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header[hdr[i]] = []string{hdr[i+1]}
	}
	if client == nil {
		client = e.srv.Client()
	}
	res, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *env) do(method, path, auth string, body []byte, hdr ...string) resp {
	e.t.Helper()
	return e.req(nil, method, path, auth, body, hdr...)
}

func (e *env) history(id string) []core.Telemetry {
	e.t.Helper()
	h, err := e.core.TelemetryHistory(id, core.HistoryFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

func TestTelemetrySingle(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	r := e.do("POST", "/devices/d1/messages/events", e.token("d1", time.Hour), []byte(`{"temperature":21.5}`),
		"iothub-to", "/devices/d1/messages/events",
		"IoTHub-MessageId", "m-1", "IoTHub-CorrelationId", "c-1", "iothub-contenttype", "application/json",
		"iothub-contentencoding", "utf-8", "iothub-app-color", "red", "iothub-app-Mixed", "Case",
		"dt-subject", "thermostat1", "IoTHub-UserId", "u-1", "iothub-creation-time-utc", "2026-01-02T03:04:05Z",
		"Content-Type", "application/json")
	if r.status != http.StatusNoContent {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	h := e.history("d1")
	if len(h) != 1 {
		t.Fatalf("history %d messages, want 1", len(h))
	}
	m := h[0]
	if string(m.Body) != `{"temperature":21.5}` || m.MessageID != "m-1" || m.CorrelationID != "c-1" ||
		m.ContentType != "application/json" || m.ContentEncoding != "utf-8" || m.Component != "thermostat1" ||
		m.AuthMethod != core.AuthMethodSAS || m.DeviceID != "d1" {
		t.Errorf("stored %+v", m)
	}
	// Header names are case-insensitive: application property names
	// arrive lower-cased.
	if len(m.Properties) != 2 || m.Properties["color"] != "red" || m.Properties["mixed"] != "Case" {
		t.Errorf("properties %v", m.Properties)
	}
	sys := m.SystemProperties()
	if sys[core.PropTo] != "/devices/d1/messages/events" || sys[core.PropUserID] != "u-1" || sys[core.PropCreationTime] != "2026-01-02T03:04:05Z" ||
		sys[core.PropDeviceID] != "d1" {
		t.Errorf("system properties %v", sys)
	}
	if v, err := e.core.LatestTelemetry("d1", "thermostat1", "temperature"); err != nil || v.Value != 21.5 {
		t.Errorf("latest %v %v", v, err)
	}
	// An HTTPS device holds no connection: the registry shows it
	// disconnected, with its activity recorded.
	d, err := e.core.Device("d1")
	if err != nil || d.Connected || d.LastActivity.IsZero() {
		t.Errorf("registry %+v %v: want disconnected with a last activity", d, err)
	}
}

func TestTelemetryBatch(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	body := `[{"body":"` + b64(`{"n":1}`) + `","properties":{"iothub-app-Color":"red","iothub-messageid":"b1","dt-subject":"c1"}},` +
		`{"body":"` + b64("two") + `","base64Encoded":true},` +
		`{"body":"plain text","base64Encoded":false,"properties":{"iothub-app-k":"v","iothub-contenttype":"text/plain"}}]`
	r := e.do("POST", "/devices/d1/messages/events", e.token("d1", time.Hour), []byte(body),
		"Content-Type", "application/vnd.microsoft.iothub.json")
	if r.status != http.StatusNoContent {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	h := e.history("d1")
	if len(h) != 3 {
		t.Fatalf("history %d messages, want 3", len(h))
	}
	if string(h[0].Body) != `{"n":1}` || h[0].Properties["Color"] != "red" || h[0].MessageID != "b1" || h[0].Component != "c1" {
		t.Errorf("message 0: %+v", h[0])
	}
	if string(h[1].Body) != "two" || len(h[1].Properties) != 0 {
		t.Errorf("message 1: %+v", h[1])
	}
	if string(h[2].Body) != "plain text" || h[2].Properties["k"] != "v" || h[2].ContentType != "text/plain" {
		t.Errorf("message 2: %+v", h[2])
	}
}

func TestMalformedBatchRefused(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	for _, tc := range []struct{ name, body string }{
		{"not JSON", `[{"body":`},
		{"an object", `{"body":"aGk="}`},
		{"empty array", `[]`},
		{"no body", `[{"properties":{}}]`},
		{"body not a string", `[{"body":12}]`},
		{"body not base64", `[{"body":"%%%"}]`},
		{"properties not strings", `[{"body":"aGk=","properties":{"iothub-app-n":1}}]`},
		{"empty property name", `[{"body":"aGk=","properties":{"iothub-app-":"v"}}]`},
		{"trailing data", `[{"body":"aGk="}] []`},
		{"one bad among good", `[{"body":"aGk="},{"body":"!"}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", "/devices/d1/messages/events", e.token("d1", time.Hour), []byte(tc.body),
				"Content-Type", "application/vnd.microsoft.iothub.json; charset=utf-8")
			if r.status != http.StatusBadRequest || r.errorCode(t) != "ArgumentInvalid" {
				t.Fatalf("got %d %s, want 400 ArgumentInvalid", r.status, r.body)
			}
		})
	}
	if h := e.history("d1"); len(h) != 0 {
		t.Fatalf("a refused batch stored %d messages", len(h))
	}
}

func TestOversizedMessagesRefused(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	tok := e.token("d1", time.Hour)
	// The body alone over the limit.
	r := e.do("POST", "/devices/d1/messages/events", tok, bytes.Repeat([]byte("x"), MaxMessage+1))
	if r.status != http.StatusRequestEntityTooLarge || r.errorCode(t) != "MessageTooLarge" {
		t.Fatalf("body over the limit: %d %s", r.status, r.body)
	}
	// A body at the limit plus a property.
	r = e.do("POST", "/devices/d1/messages/events", tok, bytes.Repeat([]byte("x"), MaxMessage), "iothub-app-a", "b")
	if r.status != http.StatusRequestEntityTooLarge || r.errorCode(t) != "MessageTooLarge" {
		t.Fatalf("body and properties over the limit: %d %s", r.status, r.body)
	}
	// A batch of two messages each under the limit, together over it.
	half := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("y"), MaxBatch/2+1))
	r = e.do("POST", "/devices/d1/messages/events", tok, []byte(`[{"body":"`+half+`"},{"body":"`+half+`"}]`),
		"Content-Type", BatchContentType)
	if r.status != http.StatusRequestEntityTooLarge || r.errorCode(t) != "MessageTooLarge" {
		t.Fatalf("batch over the limit: %d %s", r.status, r.body)
	}
	// A batch request too large to read.
	r = e.do("POST", "/devices/d1/messages/events", tok, bytes.Repeat([]byte(" "), MaxBatchRequest+1), "Content-Type", BatchContentType)
	if r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("batch request over the limit: %d %s", r.status, r.body)
	}
	if h := e.history("d1"); len(h) != 0 {
		t.Fatalf("refused messages stored: %d", len(h))
	}
	// Exactly at the limit is accepted.
	r = e.do("POST", "/devices/d1/messages/events", tok, bytes.Repeat([]byte("x"), MaxMessage))
	if r.status != http.StatusNoContent {
		t.Fatalf("message at the limit: %d %s", r.status, r.body)
	}
}

func TestAuthenticationRefused(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	e.device("d2")
	e.device("off")
	off := false
	if _, err := e.core.PutHubDevice("off", false, "*", core.HubDeviceSpec{Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	good := e.token("d1", time.Hour)
	badSig := good[:strings.Index(good, "sig=")+4] + "AAAA" + good[strings.Index(good, "sig=")+8:]
	for _, tc := range []struct{ name, path, auth string }{
		{"no credentials", "/devices/d1/messages/events", ""},
		{"not a SAS token", "/devices/d1/messages/events", "Bearer abc"},
		{"malformed SAS", "/devices/d1/messages/events", "SharedAccessSignature sr=x"},
		{"bad signature", "/devices/d1/messages/events", badSig},
		{"wrong device", "/devices/d2/messages/events", good},
		{"expired token", "/devices/d1/messages/events", e.token("d1", -time.Minute)},
		{"unknown device", "/devices/ghost/messages/events", good},
		{"disabled device", "/devices/off/messages/events", e.token("off", time.Hour)},
		{"policy without DeviceConnect", "/devices/d1/messages/events", e.policyToken("service", host)},
		{"policy token for another device", "/devices/d1/messages/events", e.policyToken("iothubowner", sas.HubResource(host, "d2"))},
		{"module not supported", "/devices/d1/modules/m1/messages/events", good},
		{"receive with another device's token", "/devices/d2/messages/devicebound", good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			if strings.HasSuffix(tc.path, "devicebound") {
				method = "GET"
			}
			r := e.do(method, tc.path, tc.auth, []byte("x"))
			if r.status != http.StatusUnauthorized || r.errorCode(t) != "IotHubUnauthorizedAccess" {
				t.Fatalf("got %d %s, want 401 IotHubUnauthorizedAccess", r.status, r.body)
			}
			if strings.Contains(string(r.body), "sig=") {
				t.Fatalf("the error echoes the token: %s", r.body)
			}
		})
	}
	for _, id := range []string{"d1", "d2", "off"} {
		if h := e.history(id); len(h) != 0 {
			t.Fatalf("%s: refused messages stored", id)
		}
	}
}

func TestPolicyToken(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	for _, res := range []string{host, sas.HubResource(host, "d1")} {
		r := e.do("POST", "/devices/d1/messages/events", e.policyToken("iothubowner", res), []byte("hi"))
		if r.status != http.StatusNoContent {
			t.Fatalf("policy token for %s: %d %s", res, r.status, r.body)
		}
	}
	h := e.history("d1")
	if len(h) != 2 || h[0].AuthMethod != core.AuthMethodPolicy {
		t.Fatalf("history %+v", h)
	}
}

func TestAPIVersionAndMethods(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	tok := e.token("d1", time.Hour)
	r := e.do("POST", "/devices/d1/messages/events?api-version=2000-01-01", tok, []byte("x"))
	if r.status != http.StatusBadRequest || r.errorCode(t) != "InvalidProtocolVersion" {
		t.Fatalf("bad api-version: %d %s", r.status, r.body)
	}
	for _, v := range []string{"2016-11-14", "2020-09-30"} {
		if r := e.do("POST", "/devices/d1/messages/events?api-version="+v, tok, []byte("x")); r.status != http.StatusNoContent {
			t.Fatalf("api-version %s: %d %s", v, r.status, r.body)
		}
	}
	r = e.do("PUT", "/devices/d1/messages/events", tok, []byte("x"))
	if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "POST" {
		t.Fatalf("PUT events: %d %v", r.status, r.header)
	}
	r = e.do("POST", "/devices/d1/messages/devicebound", tok, nil)
	if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET" {
		t.Fatalf("POST devicebound: %d %v", r.status, r.header)
	}
	// Twins and methods have no device HTTPS API: not this package's paths.
	for _, p := range []string{"/twins/d1", "/twins/d1/methods", "/devices/d1", "/devices/d1/twin", "/devices/d1/files", "/devices/d1/messages/other"} {
		req := httptest.NewRequest("GET", p, nil)
		if Owns(req) {
			t.Errorf("Owns(%s)", p)
		}
	}
	for _, p := range []string{"/devices/d1/messages/events", "/devices/d%2F1/messages/deviceBound", "/devices/d1/messages/devicebound/abc", "/devices/d1/messages/devicebound/abc/abandon", "/devices/d1/modules/m/messages/events"} {
		if !Owns(httptest.NewRequest("GET", p, nil)) {
			t.Errorf("!Owns(%s)", p)
		}
	}
	if len(e.history("d1")) != 2 {
		t.Fatal("refused requests stored telemetry")
	}
}

// selfSigned makes a self-signed client certificate with CN id and
// returns it with its SHA-256 thumbprint.
func selfSigned(t *testing.T, id string) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: id},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, hex.EncodeToString(sum[:])
}

func TestX509ClientCertificate(t *testing.T) {
	e := newEnv(t, Options{})
	cert, tp := selfSigned(t, "x1")
	if _, err := e.core.PutHubDevice("x1", true, "", core.HubDeviceSpec{Thumbprints: []string{tp}}); err != nil {
		t.Fatal(err)
	}
	client := func(c tls.Certificate) *http.Client {
		tr := e.srv.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{c}
		return &http.Client{Transport: tr}
	}
	r := e.req(client(cert), "POST", "/devices/x1/messages/events", "", []byte("by cert"))
	if r.status != http.StatusNoContent {
		t.Fatalf("send with the device's certificate: %d %s", r.status, r.body)
	}
	h := e.history("x1")
	if len(h) != 1 || h[0].AuthMethod != core.AuthMethodX509 {
		t.Fatalf("history %+v", h)
	}
	other, _ := selfSigned(t, "x1")
	r = e.req(client(other), "POST", "/devices/x1/messages/events", "", []byte("wrong cert"))
	if r.status != http.StatusUnauthorized || r.errorCode(t) != "IotHubUnauthorizedAccess" {
		t.Fatalf("another certificate: %d %s", r.status, r.body)
	}
	r = e.req(client(cert), "GET", "/devices/x1/messages/devicebound", "", nil)
	if r.status != http.StatusNoContent {
		t.Fatalf("receive with the device's certificate: %d %s", r.status, r.body)
	}
}

func (e *env) send(id string, m core.ServiceC2D) string {
	e.t.Helper()
	mid, err := e.core.SendServiceC2D(context.Background(), id, m)
	if err != nil {
		e.t.Fatal(err)
	}
	return mid
}

// lock is a received message's lock token (its ETag without quotes).
func lock(t *testing.T, r resp) string {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("receive: %d %s", r.status, r.body)
	}
	et := r.header.Get("ETag")
	if len(et) < 3 || et[0] != '"' || et[len(et)-1] != '"' {
		t.Fatalf("ETag %q is not a quoted lock token", et)
	}
	return et[1 : len(et)-1]
}

func TestC2DReceiveAndComplete(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	tok := e.token("d1", time.Hour)
	r := e.do("GET", "/devices/d1/messages/devicebound", tok, nil)
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("empty queue: %d %q", r.status, r.body)
	}
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	e.send("d1", core.ServiceC2D{MessageID: "m1", Ack: core.AckFull, Body: []byte("hello"), Expiry: exp,
		CorrelationID: "corr", UserID: "user", Properties: map[string]string{"color": "red", "Shape": "round"}})
	r = e.do("GET", "/devices/d1/messages/devicebound", tok, nil)
	lt := lock(t, r)
	want := map[string]string{
		"iothub-messageid": "m1", "iothub-sequencenumber": "1", "iothub-deliverycount": "1",
		"iothub-to": "/devices/d1/messages/devicebound", "iothub-correlationid": "corr", "iothub-userid": "user",
		"iothub-expiry": exp.Format(timeFormat), "iothub-app-color": "red", "iothub-app-Shape": "round",
	}
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if _, err := time.Parse(timeFormat, r.header.Get("iothub-enqueuedtime")); err != nil {
		t.Errorf("iothub-enqueuedtime %q: %v", r.header.Get("iothub-enqueuedtime"), err)
	}
	if string(r.body) != "hello" {
		t.Errorf("body %q", r.body)
	}
	// Locked: not handed out again.
	if r2 := e.do("GET", "/devices/d1/messages/devicebound", tok, nil); r2.status != http.StatusNoContent {
		t.Fatalf("a locked message was handed out again: %d", r2.status)
	}
	r = e.do("DELETE", "/devices/d1/messages/devicebound/"+lt, tok, nil, "If-Match", lt)
	if r.status != http.StatusNoContent {
		t.Fatalf("complete: %d %s", r.status, r.body)
	}
	if n := e.core.PendingC2D("d1"); n != 0 {
		t.Fatalf("%d messages pending after complete", n)
	}
	fb := e.core.TakeFeedback(10)
	if len(fb) != 1 || fb[0].OriginalMessageID != "m1" || fb[0].StatusCode != core.FeedbackSuccess {
		t.Fatalf("feedback %+v", fb)
	}
	// A completed message's lock token is lost.
	r = e.do("DELETE", "/devices/d1/messages/devicebound/"+lt, tok, nil)
	if r.status != http.StatusPreconditionFailed || r.errorCode(t) != "DeviceMessageLockLost" {
		t.Fatalf("second complete: %d %s", r.status, r.body)
	}
}

func TestC2DAbandonRedelivers(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	tok := e.token("d1", time.Hour)
	e.send("d1", core.ServiceC2D{MessageID: "m1", Body: []byte("again")})
	lt1 := lock(t, e.do("GET", "/devices/d1/messages/devicebound", tok, nil))
	if r := e.do("POST", "/devices/d1/messages/devicebound/"+lt1+"/abandon", tok, nil); r.status != http.StatusNoContent {
		t.Fatalf("abandon: %d %s", r.status, r.body)
	}
	r := e.do("GET", "/devices/d1/messages/devicebound", tok, nil)
	lt2 := lock(t, r)
	if lt2 == lt1 || r.header.Get("iothub-messageid") != "m1" || r.header.Get("iothub-deliverycount") != "2" || string(r.body) != "again" {
		t.Fatalf("redelivery: lock %q (first %q) headers %v body %q", lt2, lt1, r.header, r.body)
	}
	if r := e.do("DELETE", "/devices/d1/messages/devicebound/"+lt1, tok, nil); r.status != http.StatusPreconditionFailed {
		t.Fatalf("the abandoned delivery's lock token still settles: %d", r.status)
	}
	if r := e.do("DELETE", "/devices/d1/messages/devicebound/"+lt2, tok, nil); r.status != http.StatusNoContent {
		t.Fatalf("complete the redelivery: %d %s", r.status, r.body)
	}
}

func TestC2DReject(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	tok := e.token("d1", time.Hour)
	for i, q := range []string{"?reject", "?reject=true"} {
		mid := fmt.Sprintf("m%d", i)
		e.send("d1", core.ServiceC2D{MessageID: mid, Ack: core.AckNegative, Body: []byte("no")})
		lt := lock(t, e.do("GET", "/devices/d1/messages/devicebound", tok, nil))
		r := e.do("DELETE", "/devices/d1/messages/devicebound/"+lt+q+"&api-version=2021-04-12", tok, nil)
		if r.status != http.StatusNoContent {
			t.Fatalf("reject %s: %d %s", q, r.status, r.body)
		}
		dl := e.core.DeadLetters("d1")
		if len(dl) != i+1 || dl[i].MessageID != mid {
			t.Fatalf("dead letters %+v", dl)
		}
		fb := e.core.TakeFeedback(10)
		if len(fb) != 1 || fb[0].StatusCode != core.FeedbackRejected || fb[0].OriginalMessageID != mid {
			t.Fatalf("feedback %+v", fb)
		}
	}
	if n := e.core.PendingC2D("d1"); n != 0 {
		t.Fatalf("%d pending after rejects", n)
	}
}

func TestC2DUnknownLockToken(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	e.device("d2")
	tok := e.token("d1", time.Hour)
	e.send("d2", core.ServiceC2D{MessageID: "other"})
	lt2 := lock(t, e.do("GET", "/devices/d2/messages/devicebound", e.token("d2", time.Hour), nil))
	for _, tc := range []struct{ name, method, path string }{
		{"unknown complete", "DELETE", "/devices/d1/messages/devicebound/00000000-0000-0000-0000-000000000000"},
		{"unknown reject", "DELETE", "/devices/d1/messages/devicebound/nope?reject"},
		{"unknown abandon", "POST", "/devices/d1/messages/devicebound/nope/abandon"},
		{"another device's lock", "DELETE", "/devices/d1/messages/devicebound/" + lt2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, tok, nil)
			if r.status != http.StatusPreconditionFailed || r.errorCode(t) != "DeviceMessageLockLost" {
				t.Fatalf("got %d %s, want 412 DeviceMessageLockLost", r.status, r.body)
			}
		})
	}
	if e.core.PendingC2D("d2") != 1 {
		t.Fatal("another device's message was settled")
	}
}

// eventually polls f until it is true or the test's patience ends.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !f() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s never happened", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestC2DLockExpiryMakesTheMessageVisibleAgain(t *testing.T) {
	e := newEnv(t, Options{LockTimeout: 30 * time.Millisecond})
	e.device("d1")
	tok := e.token("d1", time.Hour)
	e.send("d1", core.ServiceC2D{MessageID: "m1", Body: []byte("x")})
	lt1 := lock(t, e.do("GET", "/devices/d1/messages/devicebound", tok, nil))
	var r resp
	eventually(t, "the message visible again", func() bool {
		r = e.do("GET", "/devices/d1/messages/devicebound", tok, nil)
		return r.status == http.StatusOK
	})
	lt2 := lock(t, r)
	if lt2 == lt1 || r.header.Get("iothub-deliverycount") != "2" {
		t.Fatalf("redelivery after lock expiry: lock %q/%q count %q", lt1, lt2, r.header.Get("iothub-deliverycount"))
	}
	if r := e.do("DELETE", "/devices/d1/messages/devicebound/"+lt1, tok, nil); r.status != http.StatusPreconditionFailed {
		t.Fatalf("an expired lock settles: %d", r.status)
	}
}

func TestC2DMaxDeliveryCountDeadLetters(t *testing.T) {
	e := newEnv(t, Options{MaxDeliveryCount: 2})
	e.device("d1")
	tok := e.token("d1", time.Hour)
	e.send("d1", core.ServiceC2D{MessageID: "m1", Ack: core.AckNegative, Body: []byte("x")})
	e.send("d1", core.ServiceC2D{MessageID: "m2", Body: []byte("y")})
	for range 2 {
		r := e.do("GET", "/devices/d1/messages/devicebound", tok, nil)
		if r.header.Get("iothub-messageid") != "m1" {
			t.Fatalf("got %q, want m1", r.header.Get("iothub-messageid"))
		}
		e.do("POST", "/devices/d1/messages/devicebound/"+lock(t, r)+"/abandon", tok, nil)
	}
	r := e.do("GET", "/devices/d1/messages/devicebound", tok, nil)
	if r.status != http.StatusOK || r.header.Get("iothub-messageid") != "m2" {
		t.Fatalf("after m1's last delivery: %d %q, want m2", r.status, r.header.Get("iothub-messageid"))
	}
	dl := e.core.DeadLetters("d1")
	if len(dl) != 1 || dl[0].MessageID != "m1" {
		t.Fatalf("dead letters %+v", dl)
	}
	fb := e.core.TakeFeedback(10)
	if len(fb) != 1 || fb[0].StatusCode != core.FeedbackDeliveryCountExceeded {
		t.Fatalf("feedback %+v", fb)
	}
}

func TestC2DQueueLimit(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	tok := e.token("d1", time.Hour)
	for i := range core.MaxC2DQueue {
		e.send("d1", core.ServiceC2D{MessageID: fmt.Sprint(i)})
	}
	full := func() error {
		_, err := e.core.SendServiceC2D(context.Background(), "d1", core.ServiceC2D{MessageID: "over"})
		return err
	}
	if err := full(); !errors.Is(err, core.ErrQueueFull) {
		t.Fatalf("message 51: %v, want ErrQueueFull", err)
	}
	// A locked message still counts against the queue.
	lt := lock(t, e.do("GET", "/devices/d1/messages/devicebound", tok, nil))
	if err := full(); !errors.Is(err, core.ErrQueueFull) {
		t.Fatalf("with one locked: %v, want ErrQueueFull", err)
	}
	if r := e.do("DELETE", "/devices/d1/messages/devicebound/"+lt, tok, nil); r.status != http.StatusNoContent {
		t.Fatalf("complete: %d", r.status)
	}
	if err := full(); err != nil {
		t.Fatalf("after a complete: %v", err)
	}
	// Every message comes out in order.
	for i := 1; i < core.MaxC2DQueue; i++ {
		r := e.do("GET", "/devices/d1/messages/devicebound", tok, nil)
		if r.header.Get("iothub-messageid") != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, r.header.Get("iothub-messageid"))
		}
		e.do("DELETE", "/devices/d1/messages/devicebound/"+lock(t, r), tok, nil)
	}
}

// fakeLink is a device connection (MQTT or AMQP) as the core sees it.
type fakeLink struct{ notified chan struct{} }

func (*fakeLink) Protocol() string                { return "fake" }
func (*fakeLink) Subscribed(core.Feature) bool    { return true }
func (*fakeLink) PushDesired([]byte, int64) error { return nil }
func (*fakeLink) Drop(error)                      {}
func (l *fakeLink) NotifyC2D() {
	select {
	case l.notified <- struct{}{}:
	default:
	}
}
func (l *fakeLink) wait(t *testing.T) {
	t.Helper()
	select {
	case <-l.notified:
	case <-time.After(20 * time.Second):
		t.Fatal("the connection was not told of a message")
	}
}
func (*fakeLink) InvokeMethod(context.Context, string, []byte) (int, []byte, error) {
	return 0, nil, errors.New("none")
}

// TestC2DSharedWithAConnection: a message locked by an HTTPS receive is not
// handed to the device's MQTT/AMQP connection; abandoned, it is offered to
// that connection, and a message the connection holds is not pulled.
func TestC2DSharedWithAConnection(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	tok := e.token("d1", time.Hour)
	l := &fakeLink{notified: make(chan struct{}, 1)}
	sess, _, err := e.core.Connect("d1", core.HubAuth{}, l, "")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	e.send("d1", core.ServiceC2D{MessageID: "m1"})
	l.wait(t)
	lt := lock(t, e.do("GET", "/devices/d1/messages/devicebound", tok, nil))
	if m, ok := sess.NextC2D(); ok {
		t.Fatalf("the connection got the locked message %q", m.MessageID)
	}
	if r := e.do("POST", "/devices/d1/messages/devicebound/"+lt+"/abandon", tok, nil); r.status != http.StatusNoContent {
		t.Fatalf("abandon: %d", r.status)
	}
	l.wait(t)
	m, ok := sess.NextC2D()
	if !ok || m.MessageID != "m1" || m.DeliveryCount != 2 {
		t.Fatalf("the connection after the abandon: %+v %v", m, ok)
	}
	if r := e.do("GET", "/devices/d1/messages/devicebound", tok, nil); r.status != http.StatusNoContent {
		t.Fatalf("pulled a message in flight on the connection: %d", r.status)
	}
	if err := sess.SettleC2D("m1", core.Complete); err != nil {
		t.Fatal(err)
	}
	// The device stays connected: HTTPS requests do not replace its connection.
	if !sess.Current() {
		t.Fatal("the HTTPS requests replaced the device's connection")
	}
}

// TestFaultSwitches: the fault switches refuse HTTPS requests as IoT Hub's
// answers: connections refused 503, quota 403, an auth-error window 401.
func TestFaultSwitches(t *testing.T) {
	e := newEnv(t, Options{})
	e.device("d1")
	tok := e.token("d1", time.Hour)
	if err := e.core.RefuseConnections("d1", time.Hour); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/devices/d1/messages/events", tok, []byte("x"))
	if r.status != http.StatusServiceUnavailable || r.errorCode(t) != "ServiceUnavailable" {
		t.Fatalf("connections refused: %d %s", r.status, r.body)
	}
	e.core.ClearFaults("d1")
	if err := e.core.InjectFault("d1", core.Fault{Kind: core.FaultMaxMessageQuota, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the quota fault", func() bool {
		r = e.do("POST", "/devices/d1/messages/events", tok, []byte("x"))
		return r.status != http.StatusNoContent
	})
	if r.status != http.StatusForbidden || r.errorCode(t) != "IotHubQuotaExceeded" {
		t.Fatalf("over quota: %d %s", r.status, r.body)
	}
	e.core.ClearFaults("d1")
	if err := e.core.InjectFault("d1", core.Fault{Kind: core.FaultAuthError, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the auth-error fault", func() bool {
		r = e.do("GET", "/devices/d1/messages/devicebound", tok, nil)
		return r.status != http.StatusNoContent
	})
	if r.status != http.StatusUnauthorized {
		t.Fatalf("auth-error fault: %d %s", r.status, r.body)
	}
	e.core.ClearFaults("d1")
	if r := e.do("POST", "/devices/d1/messages/events", tok, []byte("ok")); r.status != http.StatusNoContent {
		t.Fatalf("after ClearFaults: %d %s", r.status, r.body)
	}
}
