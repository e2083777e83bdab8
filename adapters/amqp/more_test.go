package amqp_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/adapters/amqp"
	"github.com/iotc-go/iotc/adapters/amqpws"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

const (
	proxyUser = "alice"
	proxyPass = "s3cret-proxy-pa55"
	wrongKey  = "d3JvbmcgZGV2aWNlIGtleSB3cm9uZyBkZXZpY2Uga2V5"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func stepCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), contract.StepTimeout)
	t.Cleanup(cancel)
	return ctx
}

// TestContractThroughProxy runs the whole contract over WebSockets
// tunnelled through an authenticating CONNECT proxy.
func TestContractThroughProxy(t *testing.T) {
	p := contract.StartProxy(t, proxyUser, proxyPass, nil)
	var wsAddr string
	logs := &syncBuffer{}
	contract.RunTransport(t, func(e *emulator.Emulator) ports.Transport {
		_, port, _ := net.SplitHostPort(e.WebSocketAddr())
		wsAddr = net.JoinHostPort(contract.DPSHost, port)
		return amqpws.New(&amqpws.Options{
			Port: portOf(t, e.WebSocketAddr()), RootCAs: e.CAPool(), Proxy: p.URL(proxyUser, proxyPass),
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
	})
	if t.Failed() {
		return
	}
	if text := logs.String(); !strings.Contains(text, p.Addr()) || strings.Contains(text, proxyPass) {
		t.Errorf("debug logs should name the proxy and never its password:\n%s", text)
	}
	seen := p.Seen()
	if len(seen) == 0 {
		t.Fatal("the proxy saw no request: the transport connected directly")
	}
	for _, r := range seen {
		if r.Method != http.MethodConnect || !r.AuthOK || r.Target != wsAddr {
			t.Errorf("proxy saw %s %s (auth ok %v); want CONNECT %s with the Basic credentials", r.Method, r.Target, r.AuthOK, wsAddr)
		}
	}
}

func TestProxyRefusesCredentials(t *testing.T) {
	t.Parallel()
	s := contract.Start(t, newWS(t))
	p := contract.StartProxy(t, proxyUser, proxyPass, nil)
	id, key := s.NewDevice(t)
	for name, u := range map[string]*url.URL{"wrong password": p.URL(proxyUser, "wrong-pa55word"), "no credentials": p.URL("", "")} {
		t.Run(name, func(t *testing.T) {
			tr := amqpws.New(&amqpws.Options{Port: portOf(t, s.E.WebSocketAddr()), RootCAs: s.E.CAPool(), Proxy: u})
			sess, err := tr.Connect(stepCtx(t), ports.HubConnection{Host: s.E.HubHost(), DeviceID: id, Auth: ports.Auth{SASToken: s.HubSAS(t, id, key)}}, contract.NewRecorder())
			if err == nil {
				_ = sess.Close()
				t.Fatal("connected through a proxy that refused the credentials")
			}
			if !errors.Is(err, domain.ErrInvalidConfig) || domain.IsRetryable(err) || !strings.Contains(err.Error(), "407") {
				t.Fatalf("error %v: want a non-retryable ErrInvalidConfig saying 407", err)
			}
			if strings.Contains(err.Error(), "pa55") || strings.Contains(err.Error(), p.Addr()) {
				t.Fatalf("error %q shows the proxy password or address", err)
			}
		})
	}
}

func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	for name, tr := range map[string]ports.Transport{
		"proxy and no proxy": amqpws.New(&amqpws.Options{Proxy: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}, NoProxy: true}),
		"socks proxy":        amqpws.New(&amqpws.Options{Proxy: &url.URL{Scheme: "socks5", Host: "127.0.0.1:1080"}}),
		"port":               amqp.New(&amqp.Options{Port: 70000}),
		"websocket port":     amqpws.New(&amqpws.Options{Port: 70000}),
		"credit":             amqp.New(&amqp.Options{CloudToDeviceCredit: -1}),
	} {
		t.Run(name, func(t *testing.T) {
			ctx := stepCtx(t)
			if _, err := tr.Connect(ctx, ports.HubConnection{Host: "localhost", DeviceID: "d", Auth: ports.Auth{SASToken: "SharedAccessSignature sr=a&sig=b&se=1"}}, contract.NewRecorder()); !errors.Is(err, domain.ErrInvalidConfig) {
				t.Errorf("Connect = %v, want ErrInvalidConfig", err)
			}
			if _, err := tr.Provision(ctx, ports.ProvisioningRequest{Host: "localhost", IDScope: "0ne1", Registration: domain.RegistrationRequest{RegistrationID: "d"}, Auth: ports.Auth{SASToken: "x"}}); !errors.Is(err, domain.ErrInvalidConfig) {
				t.Errorf("Provision = %v, want ErrInvalidConfig", err)
			}
		})
	}
	tr := amqp.New(nil)
	if tr.Name() != "amqp" || amqpws.New(nil).Name() != "amqpws" {
		t.Errorf("names %q and %q", tr.Name(), amqpws.New(nil).Name())
	}
	_, err := tr.Connect(stepCtx(t), ports.HubConnection{Host: "localhost", DeviceID: "d", Auth: ports.Auth{SASToken: "not a token"}}, contract.NewRecorder())
	if !errors.Is(err, domain.ErrInvalidConfig) || strings.Contains(err.Error(), "not a token") {
		t.Errorf("Connect with a malformed token = %v, want ErrInvalidConfig not quoting it", err)
	}
}

// TestX509 provisions and connects with a client certificate, over TLS
// and over WebSockets; a certificate of an unknown CA is refused.
func TestX509(t *testing.T) {
	t.Parallel()
	ca := contract.NewCA(t, "amqp-test-ca")
	e, err := emulator.Start(context.Background(), &emulator.Options{
		MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1, CertDir: t.TempDir(),
		Groups: []emulator.EnrollmentGroup{{ID: "x509-group", Enabled: true, CACertPEM: ca.PEM}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	for name, tr := range map[string]ports.Transport{"amqp": newTLS(t)(e), "amqpws": newWS(t)(e)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := stepCtx(t)
			id := "x509-" + name
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
			msgs, stop := e.WatchTelemetry(id)
			defer stop()
			if err := sess.SendTelemetry(ctx, domain.Message{Body: []byte(`{"x509":true}`)}); err != nil {
				t.Fatalf("SendTelemetry: %v", err)
			}
			select {
			case m := <-msgs:
				if string(m.Body) != `{"x509":true}` {
					t.Fatalf("body %q", m.Body)
				}
			case <-ctx.Done():
				t.Fatal("no telemetry")
			}
			if err := sess.RenewToken(ctx, "SharedAccessSignature sr=a&sig=b&se=1"); !errors.Is(err, domain.ErrNotSupported) {
				t.Fatalf("RenewToken on an X.509 session = %v, want ErrNotSupported", err)
			}
			other := contract.NewCA(t, "untrusted-ca").Device(t, id)
			_, err = tr.Connect(ctx, ports.HubConnection{Host: a.Hub, DeviceID: id, Auth: ports.Auth{Certificate: other}}, contract.NewRecorder())
			if !errors.Is(err, domain.ErrUnauthorized) {
				t.Fatalf("Connect with an untrusted certificate = %v, want ErrUnauthorized", err)
			}
		})
	}
}

// TestSettlementOutcomes: over AMQP abandon releases the message (the hub
// delivers it again on the same connection), reject and complete remove
// it; settling after Close does nothing.
func TestSettlementOutcomes(t *testing.T) {
	t.Parallel()
	for name, nt := range map[string]contract.NewTransport{"amqp": newTLS(t), "amqpws": newWS(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := contract.Start(t, nt)
			ctx := stepCtx(t)
			id, key := s.NewDevice(t)
			sess, rec := s.Connect(t, ctx, id, key)
			next := func(what string) contract.CloudEvent {
				t.Helper()
				select {
				case ev := <-rec.Cloud:
					return ev
				case <-ctx.Done():
					t.Fatalf("no %s", what)
				}
				return contract.CloudEvent{}
			}
			if err := s.E.SendCloudToDevice(ctx, id, []byte("one"), nil); err != nil {
				t.Fatal(err)
			}
			first := next("message")
			first.Settle(domain.Abandon)
			first.Settle(domain.Complete) // ignored: the first call settled it
			again := next("redelivery of the abandoned message")
			if string(again.Msg.Body) != "one" || again.Msg.MessageID() != first.Msg.MessageID() {
				t.Fatalf("after abandon got %q (mid %q), want one (mid %q)", again.Msg.Body, again.Msg.MessageID(), first.Msg.MessageID())
			}
			again.Settle(domain.Reject)
			if err := s.E.SendCloudToDevice(ctx, id, []byte("two"), nil); err != nil {
				t.Fatal(err)
			}
			two := next("second message")
			if string(two.Msg.Body) != "two" {
				t.Fatalf("after reject got %q, want two: the rejected message came again", two.Msg.Body)
			}
			two.Settle(domain.Complete)
			if err := sess.Close(); err != nil {
				t.Fatal(err)
			}
			// Both settled before Close: nothing is redelivered.
			_, rec2 := s.Connect(t, ctx, id, key)
			if err := s.E.SendCloudToDevice(ctx, id, []byte("three"), nil); err != nil {
				t.Fatal(err)
			}
			select {
			case ev := <-rec2.Cloud:
				if string(ev.Msg.Body) != "three" {
					t.Fatalf("after complete and reject the next session got %q first, want three", ev.Msg.Body)
				}
				ev.Settle(domain.Complete)
			case <-ctx.Done():
				t.Fatal("no third message")
			}
			first.Settle(domain.Complete) // on a closed session: nothing, no panic
		})
	}
}

// TestErrorsNameNoAddressOrSecret: failures to connect and lost sessions
// say what happened without the network address, and the debug log never
// shows a key or token.
func TestErrorsNameNoAddressOrSecret(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := contract.Start(t, func(e *emulator.Emulator) ports.Transport {
		return amqp.New(&amqp.Options{Port: portOf(t, e.AMQPAddr()), RootCAs: e.CAPool(), Logger: logger})
	})
	ctx := stepCtx(t)
	id, key := s.NewDevice(t)
	dpsSAS, err := domain.BuildSAS(key, domain.DPSResource(s.E.IDScope(), id), time.Now().Add(time.Hour), domain.DPSKeyName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tr.Provision(ctx, ports.ProvisioningRequest{Host: contract.DPSHost, IDScope: s.E.IDScope(),
		Registration: domain.RegistrationRequest{RegistrationID: id}, Auth: ports.Auth{SASToken: dpsSAS}}); err != nil {
		t.Fatal(err)
	}
	sess, _ := s.Connect(t, ctx, id, key)
	if err := s.E.DisconnectDevice(id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Done():
	case <-ctx.Done():
		t.Fatal("the dropped session did not end")
	}
	wrong := s.HubSAS(t, id, wrongKey)
	_, wrongErr := s.Tr.Connect(ctx, ports.HubConnection{Host: s.E.HubHost(), DeviceID: id, Auth: ports.Auth{SASToken: wrong}}, contract.NewRecorder())
	if !errors.Is(wrongErr, domain.ErrUnauthorized) {
		t.Fatalf("Connect with a wrong key = %v", wrongErr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	_ = ln.Close()
	_, closedPort, _ := net.SplitHostPort(closedAddr)
	var refused []error
	for _, ws := range []bool{false, true} {
		tr := both(ws, portOf(t, closedAddr), s.E.CAPool(), 0)
		_, err := tr.Connect(ctx, ports.HubConnection{Host: "127.0.0.1", DeviceID: id, Auth: ports.Auth{SASToken: s.HubSAS(t, id, key)}}, contract.NewRecorder())
		if err == nil || !domain.IsRetryable(err) || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("Connect to a closed port (websockets %v) = %v, want a retryable error saying refused", ws, err)
		}
		refused = append(refused, err)
	}
	texts := []string{wrongErr.Error(), sess.Err().Error(), logs.String()}
	for _, err := range refused {
		texts = append(texts, err.Error())
		if strings.Contains(err.Error(), "127.0.0.1") || strings.Contains(err.Error(), closedPort) {
			t.Errorf("error %q names the network address", err)
		}
	}
	if strings.Contains(sess.Err().Error(), s.E.AMQPAddr()) {
		t.Errorf("session error %q names the network address", sess.Err())
	}
	for _, text := range texts {
		for _, secret := range []string{key, dpsSAS, wrong, "sig="} {
			if strings.Contains(text, secret) {
				t.Fatalf("secret %q leaked into %q", secret, text)
			}
		}
	}
	if !strings.Contains(logs.String(), "hub: connection lost") {
		t.Fatalf("debug log lacks the connection loss; log:\n%s", logs.String())
	}
}

// TestCancelledCalls: a call whose context ends returns promptly with the
// context's error, without ending the session.
func TestCancelledCalls(t *testing.T) {
	t.Parallel()
	s := contract.Start(t, newTLS(t))
	ctx := stepCtx(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := sess.SendTelemetry(cctx, domain.Message{Body: []byte(`{}`)}); !errors.Is(err, context.Canceled) {
		t.Errorf("SendTelemetry with a cancelled context = %v", err)
	}
	if _, err := sess.GetTwin(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("GetTwin with a cancelled context = %v", err)
	}
	if err := sess.RenewToken(cctx, s.HubSAS(t, id, key)); !errors.Is(err, context.Canceled) {
		t.Errorf("RenewToken with a cancelled context = %v", err)
	}
	if _, err := sess.GetTwin(ctx); err != nil {
		t.Fatalf("session unusable after cancelled calls: %v", err)
	}
}

// silentListener accepts TCP connections and never answers; it stops when
// t ends.
func silentListener(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return portOf(t, ln.Addr().String())
}

// TestConnectTimeoutAndCancel: against a server that never answers, the
// connect time-out gives a retryable domain.ErrTimeout and the caller's
// cancellation gives context.Canceled, for Connect and Provision.
func TestConnectTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	port := silentListener(t)
	conn := ports.HubConnection{Host: "localhost", DeviceID: "d", Auth: ports.Auth{SASToken: "SharedAccessSignature sr=localhost%2Fdevices%2Fd&sig=x&se=9999999999"}}
	prov := ports.ProvisioningRequest{Host: "localhost", IDScope: "0ne1", Registration: domain.RegistrationRequest{RegistrationID: "d"}, Auth: ports.Auth{SASToken: "x"}}
	for _, ws := range []bool{false, true} {
		tr := both(ws, port, nil, 300*time.Millisecond)
		ctx := stepCtx(t)
		if _, err := tr.Connect(ctx, conn, contract.NewRecorder()); !errors.Is(err, domain.ErrTimeout) || !domain.IsRetryable(err) {
			t.Errorf("websockets %v: Connect to a silent server = %v, want a retryable ErrTimeout", ws, err)
		}
		if _, err := tr.Provision(ctx, prov); !errors.Is(err, domain.ErrTimeout) {
			t.Errorf("websockets %v: Provision from a silent server = %v, want ErrTimeout", ws, err)
		}
		slow := both(ws, port, nil, 0)
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(100*time.Millisecond, cancel)
		if _, err := slow.Connect(cctx, conn, contract.NewRecorder()); !errors.Is(err, context.Canceled) {
			t.Errorf("websockets %v: cancelled Connect = %v, want context.Canceled", ws, err)
		}
	}
}

// TestProvisionPayload: the model id and a custom payload travel in the
// DPS register request; the emulator records the model id.
func TestProvisionPayload(t *testing.T) {
	t.Parallel()
	s := contract.Start(t, newTLS(t))
	ctx := stepCtx(t)
	reg := s.DeviceID("payload")
	key, err := domain.DeriveDeviceKey(s.E.GroupKey(), reg)
	if err != nil {
		t.Fatal(err)
	}
	sas, err := domain.BuildSAS(key, domain.DPSResource(s.E.IDScope(), reg), time.Now().Add(time.Hour), domain.DPSKeyName)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Tr.Provision(ctx, ports.ProvisioningRequest{Host: contract.DPSHost, IDScope: s.E.IDScope(), Auth: ports.Auth{SASToken: sas},
		Registration: domain.RegistrationRequest{RegistrationID: reg, ModelID: "dtmi:com:example:Payload;2", Payload: map[string]any{"site": "lab-7"}}})
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	d, err := s.E.Device(a.DeviceID)
	if err != nil || d.ModelID != "dtmi:com:example:Payload;2" || !d.Provisioned {
		t.Fatalf("device %+v (%v): want model dtmi:com:example:Payload;2, provisioned", d, err)
	}
}

// both builds the AMQP transport over TLS or over WebSockets (without a
// proxy) with the same settings.
func both(ws bool, port int, roots *x509.CertPool, connectTimeout time.Duration) ports.Transport {
	if ws {
		return amqpws.New(&amqpws.Options{Port: port, RootCAs: roots, ConnectTimeout: connectTimeout, NoProxy: true})
	}
	return amqp.New(&amqp.Options{Port: port, RootCAs: roots, ConnectTimeout: connectTimeout})
}
