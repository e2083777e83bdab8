package emulator

import (
	"bytes"
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/pki"
)

// service calls the IoT Hub service API on the hub host (the WebSocket
// listener) with a token of policy, TLS verified against the emulator's CA.
func service(t *testing.T, e *Emulator, policy, method, path string, body any, hdr ...string) (int, http.Header, map[string]any) {
	t.Helper()
	var key string
	for _, p := range e.SharedAccessPolicies() {
		if p.Name == policy {
			key = p.PrimaryKey
		}
	}
	tok := testSAS(t, key, e.HubHost(), time.Now().Add(time.Hour), policy)
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctxT(t), method, "https://"+e.WebSocketAddr()+path+"?api-version=2021-04-12", rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", tok)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return res.StatusCode, res.Header, m
}

// TestServiceAPIDisablesConnectedDevice: a device created through the
// service API connects over MQTT with its keys; disabling it through the
// API drops its connection and refuses the next connect.
func TestServiceAPIDisablesConnectedDevice(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{WebSocketAddr: "127.0.0.1:0"})
	st, hdr, dev := service(t, e, "registryReadWrite", "PUT", "/devices/svc1", map[string]any{"deviceId": "svc1"})
	if st != 200 {
		t.Fatalf("create: %d %v", st, dev)
	}
	key := dev["authentication"].(map[string]any)["symmetricKey"].(map[string]any)["primaryKey"].(string)
	d := connectHub(t, e, "svc1", key, true)
	st, _, body := service(t, e, "registryReadWrite", "PUT", "/devices/svc1", map[string]any{"deviceId": "svc1", "status": "disabled"}, "If-Match", hdr.Get("ETag"))
	if st != 200 || body["status"] != "disabled" {
		t.Fatalf("disable: %d %v", st, body)
	}
	d.expectLost()
	_, err := dial(t, e, dialOpts{clientID: "svc1", username: hubUser(e, "svc1", ""), password: hubSAS(t, e, "svc1", key, time.Hour), clean: true})
	expectRefused(t, err)
	// A registryRead token cannot enable it again.
	st, hdr2, body := service(t, e, "registryRead", "PUT", "/devices/svc1", map[string]any{"deviceId": "svc1", "status": "enabled"}, "If-Match", "*")
	if st != 401 || hdr2.Get("iothub-errorcode") != "IotHubUnauthorizedAccess" || !strings.HasPrefix(body["Message"].(string), "ErrorCode:IotHubUnauthorizedAccess;") {
		t.Fatalf("registryRead write: %d %v", st, body)
	}
}

// TestServiceStateSurvivesRestart: the policies' keys, device tags,
// status and etags are kept in the data directory.
func TestServiceStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := Options{DataDir: dir, CertDir: dir + "/certs", WebSocketAddr: "127.0.0.1:0"}
	e, err := startData(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	policies := jsonOf(t, e.SharedAccessPolicies())
	owner, err := e.ServiceConnectionString("iothubowner")
	if err != nil || !strings.HasPrefix(owner, "HostName="+e.HubHost()+";SharedAccessKeyName=iothubowner;SharedAccessKey=") {
		t.Fatalf("connection string %v", err)
	}
	if _, err := e.ServiceConnectionString("nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown policy: %v", err)
	}
	if st, _, b := service(t, e, "iothubowner", "PUT", "/devices/keep", map[string]any{"status": "disabled"}); st != 200 {
		t.Fatalf("create: %d %v", st, b)
	}
	st, _, tw := service(t, e, "service", "PATCH", "/twins/keep", map[string]any{"tags": map[string]any{"site": "lab"},
		"properties": map[string]any{"desired": map[string]any{"fan": true}}})
	if st != 200 {
		t.Fatalf("twin: %d %v", st, tw)
	}
	_, _, dev := service(t, e, "iothubowner", "GET", "/devices/keep", nil)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e2, err := startData(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if got := jsonOf(t, e2.SharedAccessPolicies()); got != policies {
		t.Fatalf("policies changed across a restart")
	}
	_, _, tw2 := service(t, e2, "service", "GET", "/twins/keep", nil)
	if tw2["etag"] != tw["etag"] || tw2["tags"].(map[string]any)["site"] != "lab" || tw2["status"] != "disabled" {
		t.Fatalf("twin after restart %v, before %v", tw2, tw)
	}
	_, _, dev2 := service(t, e2, "iothubowner", "GET", "/devices/keep", nil)
	if dev2["etag"] != dev["etag"] {
		t.Fatalf("device etag %v, before %v", dev2["etag"], dev["etag"])
	}
}

// TestServiceAPIThumbprintDevice: a selfSigned device created through the
// service API connects over MQTT with the certificate whose thumbprint it
// was given, and only with it.
func TestServiceAPIThumbprintDevice(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{WebSocketAddr: "127.0.0.1:0"})
	ca, err := pki.NewCA("thumbprint test")
	if err != nil {
		t.Fatal(err)
	}
	good, err := ca.IssueClient("tp-dev", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.IssueClient("tp-dev", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(good.Cert.Raw)
	tp := strings.ToLower(hex.EncodeToString(sum[:]))
	st, _, dev := service(t, e, "iothubowner", "PUT", "/devices/tp-dev", map[string]any{"deviceId": "tp-dev",
		"authentication": map[string]any{"type": "selfSigned", "x509Thumbprint": map[string]any{"primaryThumbprint": tp}}})
	if st != 200 {
		t.Fatalf("create: %d %v", st, dev)
	}
	auth := dev["authentication"].(map[string]any)
	if auth["type"] != "selfSigned" || auth["x509Thumbprint"].(map[string]any)["primaryThumbprint"] != strings.ToUpper(tp) {
		t.Fatalf("authentication %v", auth)
	}
	if _, err := dial(t, e, dialOpts{clientID: "tp-dev", username: hubUser(e, "tp-dev", ""), cert: &other.TLS}); err == nil {
		t.Fatal("a certificate with another thumbprint connected")
	} else {
		expectRefused(t, err)
	}
	if _, err := dial(t, e, dialOpts{clientID: "tp-dev", username: hubUser(e, "tp-dev", ""), cert: &good.TLS}); err != nil {
		t.Fatalf("connect with the registered certificate: %v", err)
	}
	// A bad thumbprint is refused.
	st, _, _ = service(t, e, "iothubowner", "PUT", "/devices/tp-bad", map[string]any{"deviceId": "tp-bad",
		"authentication": map[string]any{"type": "selfSigned", "x509Thumbprint": map[string]any{"primaryThumbprint": "abc"}}})
	if st != 400 {
		t.Fatalf("bad thumbprint: %d", st)
	}
}

// TestServiceAPICertificateAuthorityDevice: a certificateAuthority device
// connects with a certificate of a CA in Options.TrustedCAs whose CN is its
// id, and with no other.
func TestServiceAPICertificateAuthorityDevice(t *testing.T) {
	t.Parallel()
	trusted, err := pki.NewCA("trusted hub CA")
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := pki.NewCA("rogue CA")
	if err != nil {
		t.Fatal(err)
	}
	e := startEmu(t, &Options{WebSocketAddr: "127.0.0.1:0", TrustedCAs: [][]byte{trusted.CertPEM}})
	st, _, dev := service(t, e, "iothubowner", "PUT", "/devices/ca-dev", map[string]any{"deviceId": "ca-dev",
		"authentication": map[string]any{"type": "certificateAuthority"}})
	if st != 200 || dev["authentication"].(map[string]any)["type"] != "certificateAuthority" {
		t.Fatalf("create: %d %v", st, dev)
	}
	leaf := func(ca *pki.Issuer, cn string) *tls.Certificate {
		l, err := ca.IssueClient(cn, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return &l.TLS
	}
	for name, cert := range map[string]*tls.Certificate{"rogue CA": leaf(rogue, "ca-dev"), "other CN": leaf(trusted, "someone-else")} {
		_, err := dial(t, e, dialOpts{clientID: "ca-dev", username: hubUser(e, "ca-dev", ""), cert: cert})
		if err == nil {
			t.Fatalf("%s: connected", name)
		}
		expectRefused(t, err)
	}
	if _, err := dial(t, e, dialOpts{clientID: "ca-dev", username: hubUser(e, "ca-dev", ""), cert: leaf(trusted, "ca-dev")}); err != nil {
		t.Fatalf("connect with a certificate of the trusted CA: %v", err)
	}
	if _, err := Start(t.Context(), &Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", CertDir: t.TempDir(), TrustedCAs: [][]byte{[]byte("not a PEM")}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a trusted CA without a certificate: %v", err)
	}
}

// TestServiceAPISeesRESTDevicesAndTheReverse: one registry behind both
// APIs (and the dashboard, which reads the same core).
func TestServiceAPISeesRESTDevicesAndTheReverse(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{WebSocketAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0"})
	if st, b := restDo(t, e, "PUT", "/api/devices/from-rest", e.APIToken(), map[string]any{"displayName": "R"}); st != 200 {
		t.Fatalf("REST create: %d %s", st, b)
	}
	if st, _, dev := service(t, e, "registryRead", "GET", "/devices/from-rest", nil); st != 200 || dev["deviceId"] != "from-rest" {
		t.Fatalf("service API GET of a REST device: %d %v", st, dev)
	}
	if st, _, b := service(t, e, "iothubowner", "PUT", "/devices/from-hub", map[string]any{"status": "disabled"}); st != 200 {
		t.Fatalf("service create: %d %v", st, b)
	}
	st, b := restDo(t, e, "GET", "/api/devices/from-hub", e.APIToken(), nil)
	var d map[string]any
	_ = json.Unmarshal(b, &d)
	if st != 200 || d["enabled"] != false {
		t.Fatalf("REST GET of a service API device: %d %s", st, b)
	}
}
