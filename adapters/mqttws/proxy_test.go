package mqttws_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/adapters/mqttws"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

// connectProxy is a small HTTP CONNECT proxy with optional Basic auth. It
// records every CONNECT it sees and tunnels the accepted ones to the
// address route gives for the requested host:port.
type connectProxy struct {
	ln         net.Listener
	user, pass string
	route      func(hostport string) string

	mu       sync.Mutex
	requests []proxyRequest
	conns    map[net.Conn]struct{}
	closed   bool
	wg       sync.WaitGroup
}

// proxyRequest is one request the proxy saw.
type proxyRequest struct {
	method, target string
	authOK         bool
}

// startProxy starts a proxy on 127.0.0.1:0; it stops when t ends. An
// empty user means no authentication is required.
func startProxy(t testing.TB, user, pass string, route func(string) string) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if route == nil {
		route = func(hp string) string { return hp }
	}
	p := &connectProxy{ln: ln, user: user, pass: pass, route: route, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		if !p.close(time.Minute) {
			t.Error("the CONNECT proxy's goroutines did not end within a minute of closing it")
		}
	})
	return p
}

// url is the proxy URL with the given credentials ("" for none).
func (p *connectProxy) url(user, pass string) *url.URL {
	u := &url.URL{Scheme: "http", Host: p.ln.Addr().String()}
	if user != "" {
		u.User = url.UserPassword(user, pass)
	}
	return u
}

func (p *connectProxy) seen() []proxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxyRequest(nil), p.requests...)
}

func (p *connectProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *connectProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// close closes the listener and every tunnel and reports whether all of
// the proxy's goroutines ended within limit.
func (p *connectProxy) close(limit time.Duration) bool {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(limit):
		return false
	}
}

func (p *connectProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			_ = c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			defer c.Close()
			p.handle(c)
		}()
	}
}

func (p *connectProxy) authorized(r *http.Request) bool {
	if p.user == "" {
		return true
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
	return r.Header.Get("Proxy-Authorization") == want
}

func (p *connectProxy) handle(c net.Conn) {
	br := bufio.NewReader(c)
	r, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	ok := p.authorized(r)
	p.mu.Lock()
	p.requests = append(p.requests, proxyRequest{method: r.Method, target: r.Host, authOK: ok})
	p.mu.Unlock()
	switch {
	case r.Method != http.MethodConnect:
		_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	case !ok:
		_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", p.route(r.Host))
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	if !p.track(up) {
		_ = up.Close()
		return
	}
	defer p.untrack(up)
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, br) // br holds anything already buffered
		_ = up.Close()
	}()
	_, _ = io.Copy(c, up)
	_ = c.Close()
	<-done
}

const (
	proxyUser = "alice"
	proxyPass = "s3cret-proxy-pa55"
)

func TestContractThroughProxy(t *testing.T) {
	p := startProxy(t, proxyUser, proxyPass, nil)
	var wsAddr string
	logs := &lockedBuffer{}
	contract.RunTransport(t, func(e *emulator.Emulator) ports.Transport {
		_, port, _ := net.SplitHostPort(e.WebSocketAddr())
		wsAddr = net.JoinHostPort(contract.DPSHost, port)
		return mqttws.New(&mqttws.Options{
			Port: wsPort(t, e), RootCAs: e.CAPool(), Proxy: p.url(proxyUser, proxyPass),
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
	})
	if t.Failed() {
		return
	}
	if text := logs.String(); !strings.Contains(text, p.ln.Addr().String()) || strings.Contains(text, proxyPass) {
		t.Errorf("debug logs should name the proxy and never its password:\n%s", text)
	}
	seen := p.seen()
	if len(seen) == 0 {
		t.Fatal("the proxy saw no request: the transport connected directly")
	}
	for _, r := range seen {
		if r.method != http.MethodConnect || !r.authOK {
			t.Errorf("proxy saw %s %s with authorization ok=%v; want CONNECT with the Basic credentials", r.method, r.target, r.authOK)
		}
		if r.target != wsAddr {
			t.Errorf("proxy asked to connect to %q, want the emulator's WebSocket address %q", r.target, wsAddr)
		}
	}
}

func TestProxyRefusesCredentials(t *testing.T) {
	t.Parallel()
	s := contract.Start(t, newTransport(t))
	p := startProxy(t, proxyUser, proxyPass, nil)
	id, key := s.NewDevice(t)
	for _, tc := range []struct {
		name string
		url  *url.URL
	}{
		{"wrong password", p.url(proxyUser, "wrong-pa55word")},
		{"no credentials", p.url("", "")},
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
	for _, r := range p.seen() {
		if r.authOK {
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
