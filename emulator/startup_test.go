package emulator

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHubHostWithReusedCertDir: a certificate directory made for
// localhost, reused with HubHost "vm", gets a server certificate for vm
// from the same CA, so a device that trusted the CA before connects to
// "vm".
func TestHubHostWithReusedCertDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e1, err := Start(t.Context(), &Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", CertDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	caBefore := e1.CACertPEM()
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := startEmu(t, &Options{CertDir: dir, HubHost: "vm"})
	if !bytes.Equal(caBefore, e2.CACertPEM()) {
		t.Fatal("the CA changed: devices would stop trusting the emulator")
	}
	key, err := e2.CreateDevice("vm-dev")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caBefore)
	// The certificate names vm...
	conn, err := tls.Dial("tcp", e2.MQTTAddr(), &tls.Config{RootCAs: pool, ServerName: "vm", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS to the emulator as vm: %v", err)
	}
	_ = conn.Close()
	// ...and a device connects to the hub "vm".
	cl, err := dial(t, e2, dialOpts{clientID: "vm-dev", serverName: "vm", username: hubUser(e2, "vm-dev", ""), password: hubSAS(t, e2, "vm-dev", key, time.Hour)})
	if err != nil {
		t.Fatalf("device connect to vm: %v", err)
	}
	cl.close()
	// The reissued certificate is kept for the next start.
	st, err := os.Stat(filepath.Join(dir, "server.pem"))
	if err != nil || st.Size() == 0 {
		t.Fatalf("server.pem: %v", err)
	}
}

// TestMQTTListenerDisabled: MQTTAddr "-" opens no MQTT/TLS listener while
// MQTT over WebSockets and AMQP keep working.
func TestMQTTListenerDisabled(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{MQTTAddr: "-", WebSocketAddr: "127.0.0.1:0", AMQPAddr: "127.0.0.1:0"})
	if e.MQTTAddr() != "" {
		t.Fatalf("MQTTAddr = %q, want none", e.MQTTAddr())
	}
	if e.WebSocketAddr() == "" || e.AMQPAddr() == "" {
		t.Fatalf("WebSocket %q AMQP %q", e.WebSocketAddr(), e.AMQPAddr())
	}
	key, err := e.CreateDevice("ws-only")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := dial(t, e, dialOpts{clientID: "ws-only", websocket: true, username: hubUser(e, "ws-only", ""), password: hubSAS(t, e, "ws-only", key, time.Hour)})
	if err != nil {
		t.Fatalf("MQTT over WebSockets with the MQTT listener off: %v", err)
	}
	d := subscribeAll(t, cl, "ws-only")
	if status, _, _ := d.twinRequest("$iothub/twin/GET/", nil); status != "200" {
		t.Fatalf("twin GET over WebSockets: %s", status)
	}
	cl.close()
}

// TestStartRefusesBadAddress: a listener address that cannot be bound is
// a clear start-up error, not a panic.
func TestStartRefusesBadAddress(t *testing.T) {
	t.Parallel()
	_, err := Start(t.Context(), &Options{MQTTAddr: "no-port", RESTAddr: "-", CertDir: t.TempDir()})
	if err == nil {
		t.Fatal("Start with MQTTAddr no-port succeeded")
	}
	if !strings.Contains(err.Error(), "MQTT listener") {
		t.Fatalf("error %q does not name the MQTT listener", err)
	}
}

// TestWaitSubscribedTopics: each sample topic stands for one feature on
// any protocol; a topic of none of them is refused, not waited for.
func TestWaitSubscribedTopics(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	d, _ := newHubDevice(t, e, "waiter")
	for _, topic := range []string{TopicMethods, TopicDesired, TopicTwinResponses, C2DTopic("waiter"), TopicMethods + "reboot/?$rid=1"} {
		if err := e.WaitSubscribed(ctxT(t), "waiter", topic); err != nil {
			t.Errorf("WaitSubscribed(%q) = %v", topic, err)
		}
	}
	if err := e.WaitSubscribed(ctxT(t), "waiter", "devices/other/messages/devicebound/"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("another device's C2D topic: %v, want ErrInvalid", err)
	}
	if err := e.WaitSubscribed(ctxT(t), "waiter", "$iothub/unknown/"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown topic: %v, want ErrInvalid", err)
	}
	d.close()
	waitOffline(t, e, "waiter")
}
