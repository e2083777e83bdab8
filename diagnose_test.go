package iotc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc"
)

// longCtx is a context far longer than any permanent error may take to be
// reported: a Connect that returns a permanent error without ctx's error
// did not wait for ctx, so no clock is read.
func longCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// permanent connects with cfg and returns Connect's error, which must be
// reported at once: not after ctx ended.
func permanent(t *testing.T, cfg iotc.Config) (error, *iotc.Client) {
	t.Helper()
	cfg.Backoff = iotc.Backoff{Base: time.Millisecond, Cap: 5 * time.Millisecond}
	c, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	err = c.Connect(longCtx(t), nil)
	if err == nil {
		t.Fatal("Connect succeeded")
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, iotc.ErrNotConnected) {
		t.Fatalf("Connect waited for its context instead of reporting a permanent error: %v", err)
	}
	return err, c
}

// noGoType fails when an error text shows a Go type or repeats a prefix.
func checkText(t *testing.T, err error, wantHint string) {
	t.Helper()
	text := err.Error()
	for _, bad := range []string{"*domain.", "*x509.", "*tls.", "interface {}", "Go value"} {
		if strings.Contains(text, bad) {
			t.Errorf("error text shows a Go type (%q): %s", bad, text)
		}
	}
	if strings.Count(text, "iotc:") > 1 || strings.Count(text, "provision") > 1 {
		t.Errorf("error text repeats a prefix: %s", text)
	}
	if !strings.Contains(text, wantHint) {
		t.Errorf("error text %q does not say to check %q", text, wantHint)
	}
}

func TestConnectReportsUntrustedCAAtOnce(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	cfg := config(t, emu, "untrusted-ca")
	cfg.RootCAs = x509.NewCertPool() // trusts nothing, the emulator's CA least of all
	err, c := permanent(t, cfg)
	if !errors.Is(err, iotc.ErrUntrustedServer) {
		t.Fatalf("Connect = %v, want ErrUntrustedServer", err)
	}
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("the cause is not kept: %v", err)
	}
	checkText(t, err, "RootCAs")
	if st := c.Status(); st.Reason != iotc.ReasonUntrustedServer || !errors.Is(st.Err, iotc.ErrUntrustedServer) {
		t.Errorf("Status() = %v", st)
	}
	if !errors.Is(c.Err(), iotc.ErrUntrustedServer) {
		t.Errorf("Err() = %v", c.Err())
	}
}

// tlsServer accepts TLS connections with a certificate for another host
// name than 127.0.0.1, and returns its port and the pool that trusts it.
func tlsServer(t *testing.T) (int, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "other.example"},
		DNSNames:              []string{"other.example"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
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
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port, pool
}

func TestConnectReportsNameMismatchAtOnce(t *testing.T) {
	t.Parallel()
	port, pool := tlsServer(t)
	for _, tr := range []iotc.Transport{iotc.MQTT, iotc.MQTTWebSockets, iotc.AMQP} {
		t.Run(tr.String(), func(t *testing.T) {
			err, _ := permanent(t, iotc.Config{
				DeviceID:         "name-mismatch",
				IDScope:          "0ne00000001",
				Credential:       iotc.DeviceKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
				ProvisioningHost: "127.0.0.1",
				Port:             port,
				RootCAs:          pool,
				Transport:        tr,
			})
			if !errors.Is(err, iotc.ErrUntrustedServer) {
				t.Fatalf("Connect = %v, want ErrUntrustedServer", err)
			}
			checkText(t, err, "host name")
		})
	}
}

func TestConnectReportsRefusedCredentialsAtOnce(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	cases := []struct {
		name string
		mod  func(*iotc.Config)
		hint string
	}{
		{"wrong device key", func(c *iotc.Config) {
			c.Credential = iotc.DeviceKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
		}, "the key"},
		{"wrong group key", func(c *iotc.Config) {
			c.Credential = iotc.GroupKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
		}, "the key"},
		{"wrong ID scope", func(c *iotc.Config) { c.IDScope = "0ne00WRONG" }, "ID scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(t, emu, "refused-"+strings.ReplaceAll(tc.name, " ", "-"))
			tc.mod(&cfg)
			err, c := permanent(t, cfg)
			var pe *iotc.ProvisioningError
			if !errors.As(err, &pe) || !errors.Is(err, iotc.ErrUnauthorized) {
				t.Fatalf("Connect = %v, want a *ProvisioningError matching ErrUnauthorized", err)
			}
			checkText(t, err, tc.hint)
			if st := c.Status(); st.Reason != iotc.ReasonBadCredential || !errors.Is(c.Err(), iotc.ErrUnauthorized) {
				t.Errorf("Status() = %v, Err() = %v", st, c.Err())
			}
		})
	}
}

// refusedPort is a TCP port that refuses connections: a privileged port
// (tests do not run as root with a service on port 1), outside the
// ephemeral range where other tests' listeners come and go.
func refusedPort(t *testing.T) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:1", 5*time.Second)
	if err == nil {
		_ = conn.Close()
		t.Fatal("something listens on 127.0.0.1:1: this test needs a port that refuses connections")
	}
	return 1
}

func TestConnectRetriesARefusedPortWithTheCause(t *testing.T) {
	t.Parallel()
	refused := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := iotc.Config{
		DeviceID:         "refused-port",
		IDScope:          "0ne00000001",
		Credential:       iotc.DeviceKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
		ProvisioningHost: "127.0.0.1",
		Port:             refusedPort(t),
		Backoff:          iotc.Backoff{Base: time.Millisecond, Cap: 5 * time.Millisecond},
		OnStatus: func(s iotc.Status) {
			if s.State == iotc.StateConnecting && errors.Is(s.Err, iotc.ErrConnectionRefused) {
				select {
				case refused <- struct{}{}:
				default:
				}
			}
		},
	}
	c, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	result := make(chan error, 1)
	go func() { result <- c.Connect(ctx, nil) }()
	// Two refusals reported: the refused port is retried, not given up.
	<-refused
	<-refused
	if err := c.Err(); !errors.Is(err, iotc.ErrConnectionRefused) || !strings.Contains(err.Error(), "port") {
		t.Errorf("Err() while retrying = %v, want the refusal naming the port to check", err)
	}
	if st := c.Status(); st.State != iotc.StateConnecting || st.Reason != iotc.ReasonNoNetwork || !errors.Is(st.Err, iotc.ErrConnectionRefused) {
		t.Errorf("Status() while retrying = %v", st)
	}
	cancel()
	err = <-result
	for _, want := range []error{iotc.ErrNotConnected, context.Canceled, iotc.ErrConnectionRefused} {
		if !errors.Is(err, want) {
			t.Errorf("Connect after ctx ended = %v; does not match %v", err, want)
		}
	}
	checkText(t, err, "port")
	if !errors.Is(c.Err(), iotc.ErrConnectionRefused) {
		t.Errorf("Err() after Connect failed = %v", c.Err())
	}
}

// deadlineCtx is a context whose deadline passes when the test says so
// (end), so that no clock decides when an attempt has failed.
type deadlineCtx struct {
	context.Context
	done chan struct{}
}

func (c *deadlineCtx) Done() <-chan struct{} { return c.done }
func (c *deadlineCtx) end()                  { close(c.done) }
func (c *deadlineCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func TestConnectDeadlineWrapsTheLastCause(t *testing.T) {
	t.Parallel()
	refused := make(chan struct{}, 100)
	c, err := iotc.New(iotc.Config{
		DeviceID:         "deadline",
		IDScope:          "0ne00000001",
		Credential:       iotc.DeviceKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
		ProvisioningHost: "127.0.0.1",
		Port:             refusedPort(t),
		Transport:        iotc.AMQP,
		Backoff:          iotc.Backoff{Base: time.Millisecond, Cap: 5 * time.Millisecond},
		OnStatus: func(s iotc.Status) {
			if errors.Is(s.Err, iotc.ErrConnectionRefused) {
				select {
				case refused <- struct{}{}:
				default:
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ctx := &deadlineCtx{Context: context.Background(), done: make(chan struct{})}
	result := make(chan error, 1)
	go func() { result <- c.Connect(ctx, nil) }()
	<-refused // an attempt failed: its cause must be in Connect's error
	ctx.end()
	err = <-result
	for _, want := range []error{iotc.ErrNotConnected, context.DeadlineExceeded, iotc.ErrConnectionRefused} {
		if !errors.Is(err, want) {
			t.Errorf("Connect = %v; does not match %v", err, want)
		}
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Connect's text does not name the cause: %v", err)
	}
}
