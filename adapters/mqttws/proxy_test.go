package mqttws_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/iotc-go/iotc/adapters/mqttws"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

// The tests' CONNECT proxy (contract.StartProxy) asks for these.
const (
	proxyUser = "alice"
	proxyPass = "s3cret-proxy-pa55"
)

func TestContractThroughProxy(t *testing.T) {
	p := contract.StartProxy(t, proxyUser, proxyPass, nil)
	var wsAddr string
	logs := &lockedBuffer{}
	contract.RunTransport(t, func(e *emulator.Emulator) ports.Transport {
		_, port, _ := net.SplitHostPort(e.WebSocketAddr())
		wsAddr = net.JoinHostPort(contract.DPSHost, port)
		return mqttws.New(&mqttws.Options{
			Port: wsPort(t, e), RootCAs: e.CAPool(), Proxy: p.URL(proxyUser, proxyPass),
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
		if r.Method != http.MethodConnect || !r.AuthOK {
			t.Errorf("proxy saw %s %s with authorization ok=%v; want CONNECT with the Basic credentials", r.Method, r.Target, r.AuthOK)
		}
		if r.Target != wsAddr {
			t.Errorf("proxy asked to connect to %q, want the emulator's WebSocket address %q", r.Target, wsAddr)
		}
	}
}

func TestProxyRefusesCredentials(t *testing.T) {
	t.Parallel()
	s := contract.Start(t, newTransport(t))
	p := contract.StartProxy(t, proxyUser, proxyPass, nil)
	id, key := s.NewDevice(t)
	for _, tc := range []struct {
		name string
		url  *url.URL
	}{
		{"wrong password", p.URL(proxyUser, "wrong-pa55word")},
		{"no credentials", p.URL("", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := mqttws.New(&mqttws.Options{Port: wsPort(t, s.E), RootCAs: s.E.CAPool(), Proxy: tc.url})
			ctx, cancel := context.WithTimeout(context.Background(), contract.StepTimeout)
			defer cancel()
			sess, err := tr.Connect(ctx, ports.HubConnection{Host: s.E.HubHost(), DeviceID: id, Auth: ports.Auth{SASToken: s.HubSAS(t, id, key)}}, contract.NewRecorder())
			if err == nil {
				_ = sess.Close()
				t.Fatal("connected through a proxy that refused the credentials")
			}
			if !errors.Is(err, domain.ErrInvalidConfig) || domain.IsRetryable(err) {
				t.Fatalf("error %v: want a non-retryable domain.ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), "407") {
				t.Errorf("error %q does not say the proxy answered 407", err)
			}
			for _, secret := range []string{"wrong-pa55word", proxyPass} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q shows the proxy password", err)
				}
			}
		})
	}
	for _, r := range p.Seen() {
		if r.AuthOK {
			t.Errorf("proxy accepted credentials in %+v", r)
		}
	}
}

func TestProxyUnreachable(t *testing.T) {
	t.Parallel()
	s := contract.Start(t, newTransport(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	_ = ln.Close() // nothing listens there any more
	id, key := s.NewDevice(t)
	tr := mqttws.New(&mqttws.Options{Port: wsPort(t, s.E), RootCAs: s.E.CAPool(), Proxy: dead})
	ctx, cancel := context.WithTimeout(context.Background(), contract.StepTimeout)
	defer cancel()
	_, err = tr.Connect(ctx, ports.HubConnection{Host: s.E.HubHost(), DeviceID: id, Auth: ports.Auth{SASToken: s.HubSAS(t, id, key)}}, contract.NewRecorder())
	if err == nil || !domain.IsRetryable(err) {
		t.Fatalf("error %v: want a retryable network error", err)
	}
}

func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	proxy := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		opts mqttws.Options
	}{
		{"proxy and no proxy", mqttws.Options{Proxy: proxy, NoProxy: true}},
		{"socks proxy", mqttws.Options{Proxy: &url.URL{Scheme: "socks5", Host: "127.0.0.1:1080"}}},
		{"https proxy", mqttws.Options{Proxy: &url.URL{Scheme: "https", Host: "127.0.0.1:3129"}}},
		{"proxy without host", mqttws.Options{Proxy: &url.URL{Scheme: "http", User: url.UserPassword("u", "hidden-pw")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := mqttws.New(&tc.opts)
			ctx, cancel := context.WithTimeout(context.Background(), contract.StepTimeout)
			defer cancel()
			_, err := tr.Connect(ctx, ports.HubConnection{Host: "localhost", DeviceID: "d", Auth: ports.Auth{SASToken: "x"}}, contract.NewRecorder())
			if !errors.Is(err, domain.ErrInvalidConfig) {
				t.Fatalf("error %v, want domain.ErrInvalidConfig", err)
			}
			if strings.Contains(err.Error(), "hidden-pw") {
				t.Fatalf("error %q shows the proxy password", err)
			}
			_, err = tr.Provision(ctx, ports.ProvisioningRequest{Host: "localhost", IDScope: "0ne1", Registration: domain.RegistrationRequest{RegistrationID: "d"}, Auth: ports.Auth{SASToken: "x"}})
			if !errors.Is(err, domain.ErrInvalidConfig) {
				t.Fatalf("Provision error %v, want domain.ErrInvalidConfig", err)
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
