package mqtt_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/adapters/mqtt"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

// selfSigned returns a TLS certificate for host and a pool trusting it.
func selfSigned(t *testing.T, host string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// wireBroker is the least of an MQTT 3.1.1 server, on the far end of a
// pipe: it accepts CONNECT and SUBSCRIBE, acknowledges QoS 1 PUBLISHes
// and reports the QoS of every PUBLISH on a telemetry topic.
type wireBroker struct {
	telemetryQoS chan byte
	done         chan struct{}
}

func (b *wireBroker) serve(t *testing.T, conn net.Conn, cert tls.Certificate) {
	defer close(b.done)
	tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}})
	defer tc.Close()
	r := bufio.NewReader(tc)
	var wmu sync.Mutex
	write := func(p ...byte) {
		wmu.Lock()
		defer wmu.Unlock()
		_, _ = tc.Write(p)
	}
	for {
		h, err := r.ReadByte()
		if err != nil {
			return
		}
		n, err := binary.ReadUvarint(r) // MQTT's remaining length is the same varint
		if err != nil {
			return
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		switch h >> 4 {
		case 1: // CONNECT
			write(0x20, 2, 0, 0)
		case 8: // SUBSCRIBE: packet id, then (topic, qos) pairs
			id, rest := body[:2], body[2:]
			var granted []byte
			for len(rest) >= 3 {
				l := int(binary.BigEndian.Uint16(rest))
				if len(rest) < 2+l+1 {
					break
				}
				granted = append(granted, rest[2+l])
				rest = rest[2+l+1:]
			}
			write(append([]byte{0x90, byte(2 + len(granted)), id[0], id[1]}, granted...)...)
		case 3: // PUBLISH
			qos := (h >> 1) & 3
			l := int(binary.BigEndian.Uint16(body))
			topic := string(body[2 : 2+l])
			if strings.Contains(topic, "/messages/events/") {
				b.telemetryQoS <- qos
			}
			if qos == 1 {
				id := body[2+l : 2+l+2]
				write(0x40, 2, id[0], id[1])
			}
		case 10: // UNSUBSCRIBE
			write(0xb0, 2, body[0], body[1])
		case 12: // PINGREQ
			write(0xd0, 0)
		case 14: // DISCONNECT
			return
		default:
			t.Errorf("wire broker: unexpected packet type %d", h>>4)
			return
		}
	}
}

// Telemetry goes at QoS 1 (SendTelemetry returns once the hub sent
// PUBACK), as read off the wire: at QoS 0 a message written just before
// a connection drops is lost without an error.
func TestTelemetryIsPublishedAtQoS1(t *testing.T) {
	cert, pool := selfSigned(t, "hub.test")
	b := &wireBroker{telemetryQoS: make(chan byte, 4), done: make(chan struct{})}
	var once sync.Once
	tr := mqtt.New(&mqtt.Options{RootCAs: pool, DialContext: func(context.Context, string, string) (net.Conn, error) {
		client, server := net.Pipe()
		started := false
		once.Do(func() { started = true; go b.serve(t, server, cert) })
		if !started {
			_ = server.Close()
		}
		return client, nil
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := tr.Connect(ctx, ports.HubConnection{Host: "hub.test", DeviceID: "qos-device", Auth: ports.Auth{SASToken: "SharedAccessSignature sr=hub.test%2Fdevices%2Fqos-device&sig=x&se=1"}}, contract.NewRecorder())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	err = sess.SendTelemetry(ctx, domain.Message{Body: []byte(`{"t":1}`), MessageID: "m1", ContentType: domain.DefaultContentType, ContentEncoding: domain.DefaultContentEncoding})
	if err != nil {
		t.Fatalf("SendTelemetry: %v", err)
	}
	if qos := <-b.telemetryQoS; qos != 1 {
		t.Fatalf("telemetry published at QoS %d, want 1", qos)
	}
	_ = sess.Close()
	<-b.done
}
