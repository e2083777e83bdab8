package mqttws_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/iotc-go/iotc/adapters/mqttws"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

// testCA is a CA that signs device certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// device issues a client certificate with CN = id.
func (ca *testCA) device(t *testing.T, id string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: id},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestX509OverWebSockets: the client certificate presented in the TLS
// handshake under the WebSocket reaches the emulator's CONNECT check, for
// DPS and for the hub.
func TestX509OverWebSockets(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "ws-test-ca")
	e, err := emulator.Start(context.Background(), &emulator.Options{
		MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1, CertDir: t.TempDir(),
		Groups: []emulator.EnrollmentGroup{{ID: "x509-group", Enabled: true, CACertPEM: ca.pem}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	tr := mqttws.New(&mqttws.Options{Port: wsPort(t, e), RootCAs: e.CAPool(), NoProxy: true})
	ctx, cancel := context.WithTimeout(context.Background(), contract.StepTimeout)
	defer cancel()

	const id = "x509-ws-device"
	cert := ca.device(t, id)
	a, err := tr.Provision(ctx, ports.ProvisioningRequest{Host: contract.DPSHost, IDScope: e.IDScope(),
		Registration: domain.RegistrationRequest{RegistrationID: id}, Auth: ports.Auth{Certificate: cert}})
	if err != nil {
		t.Fatalf("Provision with a certificate: %v", err)
	}
	if a.DeviceID != id || a.Hub != e.HubHost() {
		t.Fatalf("assignment %+v", a)
	}
	sess, err := tr.Connect(ctx, ports.HubConnection{Host: a.Hub, DeviceID: id, Auth: ports.Auth{Certificate: cert}}, contract.NewRecorder())
	if err != nil {
		t.Fatalf("Connect with a certificate: %v", err)
	}
	defer sess.Close()
	if err := sess.SendTelemetry(ctx, domain.Message{Body: []byte(`{"x509":true}`)}); err != nil {
		t.Fatalf("SendTelemetry: %v", err)
	}

	// A certificate from another CA is refused.
	other := newCA(t, "untrusted-ca").device(t, "x509-ws-intruder")
	_, err = tr.Connect(ctx, ports.HubConnection{Host: a.Hub, DeviceID: "x509-ws-intruder", Auth: ports.Auth{Certificate: other}}, contract.NewRecorder())
	if !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("Connect with an untrusted certificate = %v, want ErrUnauthorized", err)
	}
}
