package emulator

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/pki"
)

// dpsCall calls the DPS HTTPS paths on the provisioning host (the
// WebSocket listener) with the provisioningserviceowner token unless hdr
// sets another Authorization ("" sends none), and cert as TLS client
// certificate.
func dpsCall(t *testing.T, e *Emulator, method, path string, body any, cert *tls.Certificate, hdr ...string) (int, http.Header, map[string]any) {
	t.Helper()
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
	req, err := http.NewRequestWithContext(ctxT(t), method, "https://"+e.WebSocketAddr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	p := e.DPSSharedAccessPolicy()
	req.Header.Set("Authorization", testSAS(t, p.PrimaryKey, e.HubHost(), time.Now().Add(time.Hour), p.Name))
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	cfg := &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
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

func TestDPSConnectionString(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{WebSocketAddr: "127.0.0.1:0"})
	p := e.DPSSharedAccessPolicy()
	if p.Name != "provisioningserviceowner" || p.PrimaryKey == "" || p.SecondaryKey == "" {
		t.Fatalf("policy %+v", p)
	}
	if cs := e.DPSConnectionString(); cs != "HostName="+e.HubHost()+";SharedAccessKeyName=provisioningserviceowner;SharedAccessKey="+p.PrimaryKey {
		t.Fatal("connection string is not HostName=...;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={primary}")
	}
	// The DPS paths go to DPS, the hub's to the hub, on the same listener.
	if st, _, b := dpsCall(t, e, "GET", "/enrollments/nobody", nil, nil); st != 404 || b["errorCode"] != float64(404201) {
		t.Fatalf("DPS path: %d %v", st, b)
	}
	if st, hdr, _ := service(t, e, "iothubowner", "GET", "/devices/nobody", nil); st != 404 || hdr.Get("iothub-errorcode") != "DeviceNotFound" {
		t.Fatalf("hub path: %d %v", st, hdr)
	}
	// A hub policy does not sign DPS requests.
	hubKey := e.SharedAccessPolicies()[0].PrimaryKey
	tok := testSAS(t, hubKey, e.HubHost(), time.Now().Add(time.Hour), "iothubowner")
	if st, _, b := dpsCall(t, e, "GET", "/enrollments/nobody", nil, nil, "Authorization", tok); st != 401 || b["errorCode"] != float64(401002) {
		t.Fatalf("hub token on DPS: %d %v", st, b)
	}
}

// TestX509IndividualEnrollmentEveryTransport: an X.509 individual
// enrollment made through the DPS service API registers over HTTPS, MQTT
// and AMQP with its certificate, then the device connects to the hub with
// it and reads its initial twin.
func TestX509IndividualEnrollmentEveryTransport(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{WebSocketAddr: "127.0.0.1:0", AMQPAddr: "127.0.0.1:0"})
	ca, err := pki.NewCA("individual CA")
	if err != nil {
		t.Fatal(err)
	}
	const reg = "x509-solo"
	leaf, err := ca.IssueClient(reg, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	enr := map[string]any{"registrationId": reg,
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{"clientCertificates": map[string]any{"primary": map[string]any{"certificate": string(leaf.CertPEM)}}}},
		"initialTwin": map[string]any{"properties": map[string]any{"desired": map[string]any{"mode": "cert"}}}}
	if st, _, b := dpsCall(t, e, "PUT", "/enrollments/"+reg, enr, nil); st != 200 {
		t.Fatalf("enrollment: %d %v", st, b)
	}

	// HTTPS: the certificate in the TLS handshake, no Authorization.
	st, hdr, op := dpsCall(t, e, "PUT", "/"+e.IDScope()+"/registrations/"+reg+"/register?api-version=2019-03-31", `{"registrationId":"`+reg+`"}`, &leaf.TLS, "Authorization", "")
	if st != 202 || hdr.Get("Retry-After") == "" || op["status"] != "assigning" {
		t.Fatalf("HTTPS register: %d %v %v", st, hdr, op)
	}
	st, _, fin := dpsCall(t, e, "GET", "/"+e.IDScope()+"/registrations/"+reg+"/operations/"+op["operationId"].(string)+"?api-version=2019-03-31", nil, &leaf.TLS, "Authorization", "")
	if st != 200 || fin["status"] != "assigned" || regState(t, fin)["substatus"] != "initialAssignment" {
		t.Fatalf("HTTPS poll: %d %v", st, fin)
	}
	// Another certificate with the same CN is refused over HTTPS.
	other, _ := ca.IssueClient(reg, time.Hour)
	if st, _, b := dpsCall(t, e, "PUT", "/"+e.IDScope()+"/registrations/"+reg+"/register?api-version=2019-03-31", `{}`, &other.TLS, "Authorization", ""); st != 401 || b["errorCode"] != float64(401002) {
		t.Fatalf("other certificate over HTTPS: %d %v", st, b)
	}

	// MQTT.
	s, err := dialDPS(t, e, reg, "", &leaf.TLS)
	if err != nil {
		t.Fatalf("DPS MQTT connect: %v", err)
	}
	if ans := s.register(1, `{"registrationId":"`+reg+`"}`); ans["status"] != "assigned" || regState(t, ans)["substatus"] != "reprovisionedToInitialAssignment" {
		t.Fatalf("MQTT register %v", ans)
	}
	s.close()
	_, err = dialDPS(t, e, reg, "", &other.TLS)
	expectRefused(t, err)

	// AMQP: no SASL, the TLS client certificate.
	cfg := amqpTLS(e)
	cfg.Certificates = []tls.Certificate{leaf.TLS}
	c, err := amqp.Dial(ctxT(t), "amqps://"+e.AMQPAddr(), &amqp.ConnOptions{TLSConfig: cfg})
	if err != nil {
		t.Fatalf("AMQP dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	as := amqpSessionOf(t, c)
	addr := e.IDScope() + "/registrations/" + reg
	snd, err := as.NewSender(ctxT(t), addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := as.NewReceiver(ctxT(t), addr, &amqp.ReceiverOptions{Credit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctxT(t), &amqp.Message{Properties: &amqp.MessageProperties{CorrelationID: "c1"},
		ApplicationProperties: map[string]any{"iotdps-operation-type": "iotdps-register"}, Data: [][]byte{[]byte(`{"registrationId":"` + reg + `"}`)}}, nil); err != nil {
		t.Fatal(err)
	}
	m, err := rcv.Receive(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = rcv.AcceptMessage(ctxT(t), m)
	if ans := decodeJSON(t, m.GetData()); ans["status"] != "assigning" {
		t.Fatalf("AMQP register %v", ans)
	}

	// The hub takes the certificate; the twin holds the initial desired
	// properties.
	hub, err := dial(t, e, dialOpts{clientID: reg, username: hubUser(e, reg, ""), cert: &leaf.TLS})
	if err != nil {
		t.Fatalf("hub connect: %v", err)
	}
	h := subscribeAll(t, hub, reg)
	status, _, body := h.twinRequest("$iothub/twin/GET/", nil)
	if status != "200" || decodeJSON(t, body)["desired"].(map[string]any)["mode"] != "cert" {
		t.Fatalf("twin %s %s", status, body)
	}
	if d, err := e.Device(reg); err != nil || d.Attestation != AttestationX509 || d.GroupID != "" {
		t.Fatalf("device %+v, %v", d, err)
	}
}

// TestDPSServiceStateSurvivesRestart: individual enrollments, the DPS
// settings of groups, registration states and the DPS policy are kept in
// the data directory.
func TestDPSServiceStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := Options{DataDir: dir, CertDir: dir + "/certs", WebSocketAddr: "127.0.0.1:0"}
	e, err := startData(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = e.Close()
		}
	})
	policy := jsonOf(t, e.DPSSharedAccessPolicy())
	enr := map[string]any{"registrationId": "kept", "deviceId": "kept-dev", "attestation": map[string]any{"type": "symmetricKey"},
		"initialTwin": map[string]any{"tags": map[string]any{"site": "lab"}}, "reprovisionPolicy": map[string]any{"migrateDeviceData": false}}
	st, _, en := dpsCall(t, e, "PUT", "/enrollments/kept", enr, nil)
	if st != 200 {
		t.Fatalf("enrollment: %d %v", st, en)
	}
	grp := map[string]any{"enrollmentGroupId": "kept-group", "attestation": map[string]any{"type": "symmetricKey"},
		"initialTwin": map[string]any{"properties": map[string]any{"desired": map[string]any{"rate": 2}}}, "allocationPolicy": "geoLatency"}
	st, _, g := dpsCall(t, e, "PUT", "/enrollmentGroups/kept-group", grp, nil)
	if st != 200 {
		t.Fatalf("group: %d %v", st, g)
	}
	key := en["attestation"].(map[string]any)["symmetricKey"].(map[string]any)["primaryKey"].(string)
	st, _, op := dpsCall(t, e, "PUT", "/"+e.IDScope()+"/registrations/kept/register?api-version=2019-03-31", `{}`, nil,
		"Authorization", dpsSAS(t, e, "kept", key, time.Hour))
	if st != 202 || op["status"] != "assigning" {
		t.Fatalf("register: %d %v", st, op)
	}
	_, _, rs := dpsCall(t, e, "GET", "/registrations/kept", nil, nil)
	_, _, en1 := dpsCall(t, e, "GET", "/enrollments/kept", nil, nil)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true

	e2, err := startData(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if got := jsonOf(t, e2.DPSSharedAccessPolicy()); got != policy {
		t.Fatal("the DPS policy changed across a restart")
	}
	_, _, en2 := dpsCall(t, e2, "GET", "/enrollments/kept", nil, nil)
	if jsonOf(t, en2) != jsonOf(t, en1) {
		t.Fatalf("enrollment after restart %v, before %v", en2, en1)
	}
	_, _, g2 := dpsCall(t, e2, "GET", "/enrollmentGroups/kept-group", nil, nil)
	if g2["etag"] != g["etag"] || g2["allocationPolicy"] != "geoLatency" || g2["initialTwin"] == nil {
		t.Fatalf("group after restart %v, before %v", g2, g)
	}
	_, _, rs2 := dpsCall(t, e2, "GET", "/registrations/kept", nil, nil)
	if rs2["etag"] != rs["etag"] || rs2["deviceId"] != "kept-dev" {
		t.Fatalf("registration state after restart %v, before %v", rs2, rs)
	}
	// The device registers again with the enrollment's key: not a first
	// assignment (the registration state was kept).
	st, _, op = dpsCall(t, e2, "PUT", "/"+e2.IDScope()+"/registrations/kept/register?api-version=2019-03-31", `{}`, nil,
		"Authorization", dpsSAS(t, e2, "kept", key, time.Hour))
	if st != 202 {
		t.Fatalf("register after restart: %d %v", st, op)
	}
	_, _, fin := dpsCall(t, e2, "GET", "/"+e2.IDScope()+"/registrations/kept/operations/"+op["operationId"].(string)+"?api-version=2019-03-31", nil, nil,
		"Authorization", dpsSAS(t, e2, "kept", key, time.Hour))
	if regState(t, fin)["substatus"] != "reprovisionedToInitialAssignment" || regState(t, fin)["deviceId"] != "kept-dev" {
		t.Fatalf("registration after restart %v", fin)
	}
}
