package amqphub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
	"github.com/iotc-go/iotc/emulator/internal/pki"
	esas "github.com/iotc-go/iotc/emulator/internal/sas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testHost  = "myhub.azure-devices.net"
	testScope = "0ne00000001"
	// testKey is a base64 device key.
	testKey = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
)

// harness runs a Server on a loopback listener.
type harness struct {
	m    *testModel
	srv  *Server
	addr string
	errs chan error
	ca   *pki.Issuer
	tls  *tls.Config // server TLS when started with TLS
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func startHarness(t *testing.T, withTLS bool) *harness {
	t.Helper()
	h := &harness{m: newTestModel(t), errs: make(chan error, 16)}
	var err error
	h.srv, err = NewServer(h.m, Options{HubHost: testHost, Engine: amqp1.Config{IdleTimeout: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if withTLS {
		ca, err := pki.NewCA("test CA")
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := ca.IssueServer([]string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		h.ca = ca
		h.addX509Group(t)
		h.tls = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if h.tls != nil {
				nc = tls.Server(nc, h.tls)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := h.srv.ServeConn(ctx, nc, nil)
				select {
				case h.errs <- err:
				default:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		cancel()
		wg.Wait()
	})
	return h
}

func (h *harness) dial(t *testing.T, opts *amqp.ConnOptions) *amqp.Conn {
	t.Helper()
	scheme := "amqp://"
	if h.tls != nil {
		scheme = "amqps://"
	}
	c, err := amqp.Dial(testCtx(t), scheme+h.addr, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func session(t *testing.T, c *amqp.Conn) *amqp.Session {
	t.Helper()
	s, err := c.NewSession(testCtx(t), nil)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	return s
}

func sas(t *testing.T, resource string, expiry time.Time) string {
	t.Helper()
	tok, err := esas.Build(testKey, resource, expiry, "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func hubToken(t *testing.T, id string, ttl time.Duration) string {
	return sas(t, esas.HubResource(testHost, id), time.Now().Add(ttl))
}

// cbsClient holds the $cbs links of a connection, as the SDKs keep them.
type cbsClient struct {
	snd   *amqp.Sender
	rcv   *amqp.Receiver
	msgID uint64
}

func newCBS(t *testing.T, s *amqp.Session) *cbsClient {
	t.Helper()
	snd, err := s.NewSender(testCtx(t), "$cbs", &amqp.SenderOptions{Name: "cbs-sender"})
	if err != nil {
		t.Fatalf("cbs sender: %v", err)
	}
	rcv, err := s.NewReceiver(testCtx(t), "$cbs", &amqp.ReceiverOptions{Name: "cbs-receiver", TargetAddress: "cbs", Credit: 10})
	if err != nil {
		t.Fatalf("cbs receiver: %v", err)
	}
	return &cbsClient{snd: snd, rcv: rcv}
}

// putToken sends a put-token and returns the reply's status-code and
// description, checking correlation-id = message-id.
func (c *cbsClient) putToken(t *testing.T, audience, token string) (int32, string) {
	t.Helper()
	c.msgID++
	replyTo := "cbs"
	to := "$cbs"
	m := &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: c.msgID, ReplyTo: &replyTo, To: &to},
		ApplicationProperties: map[string]any{
			"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience,
		},
		Value: token,
	}
	if err := c.snd.Send(testCtx(t), m, nil); err != nil {
		t.Fatalf("put-token send: %v", err)
	}
	r, err := c.rcv.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatalf("put-token reply: %v", err)
	}
	if err := c.rcv.AcceptMessage(testCtx(t), r); err != nil {
		t.Fatalf("accept reply: %v", err)
	}
	if r.Properties == nil || r.Properties.CorrelationID != c.msgID {
		t.Fatalf("reply correlation-id %#v, want %d", r.Properties, c.msgID)
	}
	code, ok := r.ApplicationProperties["status-code"].(int32)
	if !ok {
		t.Fatalf("status-code %#v is not an int", r.ApplicationProperties["status-code"])
	}
	desc, _ := r.ApplicationProperties["status-description"].(string)
	return code, desc
}

// connectDevice dials without SASL (like the Node SDK), puts a token for
// id and returns the session.
func (h *harness) connectDevice(t *testing.T, id string) (*amqp.Conn, *amqp.Session, *cbsClient) {
	t.Helper()
	c := h.dial(t, nil)
	s := session(t, c)
	cbs := newCBS(t, s)
	if code, desc := cbs.putToken(t, testHost+"/devices/"+id, hubToken(t, id, time.Hour)); code != 200 {
		t.Fatalf("put-token: %d %s", code, desc)
	}
	return c, s, cbs
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting on channel")
		panic("unreachable")
	}
}

// condition returns the AMQP error condition of a go-amqp error, "" if none.
func condition(err error) amqp.ErrCond {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return ae.Condition
	}
	return ""
}

func poolOf(ca *pki.Issuer) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}
