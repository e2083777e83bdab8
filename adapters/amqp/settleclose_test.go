package amqp_test

import (
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
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/adapters/amqp"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

// AMQP performative codes (the descriptor of each frame's body).
const (
	perfDetach = 0x16
	perfClose  = 0x18
)

// relay stands between the device and the emulator, terminating the
// device's TLS with its own certificate, so that it sees the AMQP frames.
// While held, what the device sends is kept back (as a slow proxy keeps
// it) and the performatives in it are reported on seen; release forwards
// it, and the device's end of the connection after it.
type relay struct {
	dev, hub net.Conn

	mu      sync.Mutex
	held    bool
	pending []byte
	devEOF  bool // the device closed its side while held
	seen    chan byte
	hubGone chan struct{} // the emulator closed the connection
}

func (r *relay) run() {
	go func() {
		// Until the emulator ends the connection; what the device no
		// longer reads is dropped.
		_, _ = io.Copy(&writeOrDrop{w: r.dev}, r.hub)
		close(r.hubGone)
		_ = r.dev.Close()
	}()
	var stream []byte // what is not parsed into frames yet
	buf := make([]byte, 32<<10)
	for {
		n, err := r.dev.Read(buf)
		r.mu.Lock()
		if n > 0 {
			p := buf[:n]
			if r.held {
				r.pending = append(r.pending, p...)
			} else {
				_, _ = r.hub.Write(p)
			}
			stream = append(stream, p...)
			for {
				if len(stream) >= 8 && string(stream[:4]) == "AMQP" {
					stream = stream[8:] // a protocol header (SASL, then AMQP)
					continue
				}
				if len(stream) < 8 {
					break
				}
				size := int(binary.BigEndian.Uint32(stream))
				if size < 8 || len(stream) < size {
					break
				}
				body := stream[int(stream[4])*4 : size]
				if r.held && len(body) >= 3 && body[0] == 0 && body[1] == 0x53 {
					select {
					case r.seen <- body[2]:
					default:
					}
				}
				stream = stream[size:]
			}
		}
		if err != nil {
			if r.held {
				r.devEOF = true
			} else {
				_ = r.hub.Close()
			}
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
}

func (r *relay) hold() {
	r.mu.Lock()
	r.held = true
	r.mu.Unlock()
}

func (r *relay) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held = false
	_, _ = r.hub.Write(r.pending)
	r.pending = nil
	if r.devEOF {
		_ = r.hub.Close()
	}
}

// writeOrDrop writes to w until a write fails, then drops what follows.
type writeOrDrop struct{ w io.Writer }

func (d *writeOrDrop) Write(p []byte) (int, error) {
	if d.w != nil {
		if _, err := d.w.Write(p); err != nil {
			d.w = nil
		}
	}
	return len(p), nil
}

// relayCert is a certificate for host and a pool trusting it.
func relayCert(t *testing.T, host string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// TestSettledBeforeCloseNotRedelivered: a message completed before Close
// does not come again on the next connection, even when the old
// connection's last bytes are slow to reach the hub (a proxy): Close
// returns only once the hub answered the detach of the cloud-to-device
// link, sent after the disposition. A Close that closes without that
// answer lets the next connection reach the hub first; the hub drops the
// old connection before reading the disposition, and delivers the message
// again.
func TestSettledBeforeCloseNotRedelivered(t *testing.T) {
	var mu sync.Mutex
	var relays []*relay
	s := contract.Start(t, func(e *emulator.Emulator) ports.Transport {
		cert, pool := relayCert(t, e.HubHost())
		return amqp.New(&amqp.Options{Port: portOf(t, e.AMQPAddr()), RootCAs: pool,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				hub, err := (&tls.Dialer{Config: &tls.Config{RootCAs: e.CAPool(), ServerName: e.HubHost()}}).DialContext(ctx, "tcp", e.AMQPAddr())
				if err != nil {
					return nil, err
				}
				devSide, relaySide := net.Pipe()
				r := &relay{dev: tls.Server(relaySide, &tls.Config{Certificates: []tls.Certificate{cert}}), hub: hub, seen: make(chan byte, 64), hubGone: make(chan struct{})}
				go r.run()
				mu.Lock()
				relays = append(relays, r)
				mu.Unlock()
				return devSide, nil
			}})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, key := s.NewDevice(t)
	sess1, rec1 := s.Connect(t, ctx, id, key)
	if err := s.E.SendCloudToDevice(ctx, id, []byte("complete"), nil); err != nil {
		t.Fatal(err)
	}
	var ev contract.CloudEvent
	select {
	case ev = <-rec1.Cloud:
	case <-ctx.Done():
		t.Fatal("no cloud-to-device message")
	}
	mu.Lock()
	r1 := relays[len(relays)-1]
	mu.Unlock()
	r1.hold()
	ev.Settle(domain.Complete)
	closed := make(chan struct{})
	go func() { _ = sess1.Close(); close(closed) }()
	// What does the device send after the disposition: a detach it waits
	// the answer of, or the end of the connection?
	var rec2 *contract.Recorder
	for rec2 == nil {
		select {
		case p := <-r1.seen:
			switch p {
			case perfDetach:
				// It waits for the hub: its bytes go through, then the
				// next connection.
				r1.release()
				<-closed
				_, rec2 = s.Connect(t, ctx, id, key)
			case perfClose:
				// It closes without the hub's word. A slow proxy delivers
				// its last bytes after the next connection replaced it.
				<-closed
				_, rec2 = s.Connect(t, ctx, id, key)
				select {
				case <-r1.hubGone:
				case <-ctx.Done():
					t.Fatal("the hub never dropped the replaced connection")
				}
				r1.release()
			}
		case <-ctx.Done():
			t.Fatal("the device sent neither a detach nor a close")
		}
	}
	if err := s.E.SendCloudToDevice(ctx, id, []byte("end"), nil); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ev := <-rec2.Cloud:
			ev.Settle(domain.Complete)
			if string(ev.Msg.Body) == "end" {
				return
			}
			t.Fatalf("%q came back on the next connection after it was completed", ev.Msg.Body)
		case <-ctx.Done():
			t.Fatal("no message on the next connection")
		}
	}
}
