package mqttws_test

import (
	"context"
	"errors"
	"testing"

	"github.com/iotc-go/iotc/adapters/mqttws"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

// TestX509OverWebSockets: the client certificate presented in the TLS
// handshake under the WebSocket reaches the emulator's CONNECT check, for
// DPS and for the hub.
func TestX509OverWebSockets(t *testing.T) {
	t.Parallel()
	ca := contract.NewCA(t, "ws-test-ca")
	e, err := emulator.Start(context.Background(), &emulator.Options{
		MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1, CertDir: t.TempDir(),
		Groups: []emulator.EnrollmentGroup{{ID: "x509-group", Enabled: true, CACertPEM: ca.PEM}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	tr := mqttws.New(&mqttws.Options{Port: wsPort(t, e), RootCAs: e.CAPool(), NoProxy: true})
	ctx, cancel := context.WithTimeout(context.Background(), contract.StepTimeout)
	defer cancel()

	const id = "x509-ws-device"
	cert := ca.Device(t, id)
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
	other := contract.NewCA(t, "untrusted-ca").Device(t, "x509-ws-intruder")
	_, err = tr.Connect(ctx, ports.HubConnection{Host: a.Hub, DeviceID: "x509-ws-intruder", Auth: ports.Auth{Certificate: other}}, contract.NewRecorder())
	if !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("Connect with an untrusted certificate = %v, want ErrUnauthorized", err)
	}
}
