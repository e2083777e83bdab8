package wslistener_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"nhooyr.io/websocket"

	"github.com/iotc-go/iotc/emulator/internal/wslistener"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// seen is what a callback observed about its connection.
type seen struct {
	proto  string
	certs  []*x509.Certificate
	remote net.Addr
	state  tls.ConnectionState
}

// echoUpper serves one connection: it reports what it saw on ch, then
// echoes every byte upper-cased until the connection ends.
func echoUpper(ch chan<- seen) wslistener.ConnFunc {
	return func(conn net.Conn, certs []*x509.Certificate) {
		c := conn.(*wslistener.Conn)
		ch <- seen{proto: c.Subprotocol(), certs: certs, remote: conn.RemoteAddr(), state: c.ConnectionState()}
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if _, err := conn.Write(bytes.ToUpper(buf[:n])); err != nil {
				return
			}
		}
	}
}

// server starts a TLS server (client certificates requested) running h.
func server(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// clientCert makes a self-signed client certificate with the given CN.
func clientCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// httpClient trusts srv and presents certs.
func httpClient(srv *httptest.Server, certs ...tls.Certificate) *http.Client {
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = certs
	return &http.Client{Transport: tr}
}

func wsURL(srv *httptest.Server, path string) string {
	return "wss://" + strings.TrimPrefix(srv.URL, "https://") + path
}

func dial(ctx context.Context, t *testing.T, srv *httptest.Server, client *http.Client, path string, protos ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, wsURL(srv, path), &websocket.DialOptions{HTTPClient: client, Subprotocols: protos})
	if c != nil {
		t.Cleanup(func() { _ = c.CloseNow() })
	}
	return c, resp, err
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func recvSeen(ctx context.Context, t *testing.T, ch <-chan seen) seen {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-ctx.Done():
		t.Fatal("callback never called")
		return seen{}
	}
}

func TestMQTTUpgradeEchoesOfferedSpellingAndPassesCertificates(t *testing.T) {
	t.Parallel()
	for _, offered := range []string{"MQTT", "mqtt", "Mqtt"} {
		t.Run(offered, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			ch := make(chan seen, 1)
			h := wslistener.New(wslistener.Handlers{MQTT: echoUpper(ch), AMQP: func(net.Conn, []*x509.Certificate) { t.Error("AMQP callback for an MQTT client") }})
			t.Cleanup(func() { _ = h.Close() })
			srv := server(t, h)
			c, _, err := dial(ctx, t, srv, httpClient(srv, clientCert(t, "device-1")), wslistener.Path, offered)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			if c.Subprotocol() != offered {
				t.Fatalf("negotiated %q, want the offered %q", c.Subprotocol(), offered)
			}
			s := recvSeen(ctx, t, ch)
			if s.proto != offered {
				t.Errorf("server side subprotocol %q, want %q", s.proto, offered)
			}
			if len(s.certs) != 1 || s.certs[0].Subject.CommonName != "device-1" {
				t.Errorf("peer certificates %v, want one with CN device-1", s.certs)
			}
			if len(s.state.PeerCertificates) != 1 || !s.state.HandshakeComplete {
				t.Errorf("ConnectionState = %+v, want the TLS state with the client certificate", s.state)
			}
			if tcp, ok := s.remote.(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
				t.Errorf("RemoteAddr = %v, want the client's loopback TCP address", s.remote)
			}
			nc := websocket.NetConn(ctx, c, websocket.MessageBinary)
			// One "packet" split over three messages comes back whole.
			for _, part := range []string{"conn", "ect-", "packet"} {
				if _, err := nc.Write([]byte(part)); err != nil {
					t.Fatal(err)
				}
			}
			got := make([]byte, len("connect-packet"))
			if _, err := io.ReadFull(nc, got); err != nil {
				t.Fatal(err)
			}
			if string(got) != "CONNECT-PACKET" {
				t.Fatalf("echo = %q", got)
			}
		})
	}
}

func TestNoClientCertificate(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ch := make(chan seen, 1)
	h := wslistener.New(wslistener.Handlers{MQTT: echoUpper(ch)})
	t.Cleanup(func() { _ = h.Close() })
	srv := server(t, h)
	if _, _, err := dial(ctx, t, srv, httpClient(srv), wslistener.Path, "mqtt"); err != nil {
		t.Fatal(err)
	}
	if s := recvSeen(ctx, t, ch); s.certs != nil {
		t.Fatalf("peer certificates %v, want none", s.certs)
	}
}

func TestLargeMessage(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ch := make(chan seen, 1)
	h := wslistener.New(wslistener.Handlers{MQTT: echoUpper(ch)})
	t.Cleanup(func() { _ = h.Close() })
	srv := server(t, h)
	c, _, err := dial(ctx, t, srv, httpClient(srv), wslistener.Path, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(-1)
	// 300 KiB: above the library's default 32 KiB read limit and IoT
	// Hub's 256 KiB message size.
	msg := bytes.Repeat([]byte("a"), 300<<10)
	if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for len(got) < len(msg) {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		if typ != websocket.MessageBinary {
			t.Fatalf("message type %v", typ)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, bytes.ToUpper(msg)) {
		t.Fatal("echo differs")
	}
}

func TestAMQPUpgrade(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ch := make(chan seen, 1)
	h := wslistener.New(wslistener.Handlers{MQTT: func(net.Conn, []*x509.Certificate) { t.Error("MQTT callback for an AMQP client") }, AMQP: echoUpper(ch)})
	t.Cleanup(func() { _ = h.Close() })
	srv := server(t, h)
	c, _, err := dial(ctx, t, srv, httpClient(srv), wslistener.Path, "amqpwsb10")
	if err != nil {
		t.Fatal(err)
	}
	if c.Subprotocol() != "amqpwsb10" {
		t.Fatalf("negotiated %q", c.Subprotocol())
	}
	if s := recvSeen(ctx, t, ch); s.proto != "amqpwsb10" {
		t.Fatalf("server side subprotocol %q", s.proto)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	mqttOnly := wslistener.New(wslistener.Handlers{MQTT: func(net.Conn, []*x509.Certificate) { t.Error("callback called") }})
	t.Cleanup(func() { _ = mqttOnly.Close() })
	srv := server(t, mqttOnly)
	fallback := wslistener.New(wslistener.Handlers{
		MQTT: func(net.Conn, []*x509.Certificate) { t.Error("callback called") },
		Fallback: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTeapot)
		}),
	})
	t.Cleanup(func() { _ = fallback.Close() })
	fsrv := server(t, fallback)

	for _, tc := range []struct {
		name   string
		srv    *httptest.Server
		path   string
		protos []string
		want   int
	}{
		{"unknown subprotocol", srv, wslistener.Path, []string{"stomp"}, http.StatusBadRequest},
		{"no subprotocol", srv, wslistener.Path, nil, http.StatusBadRequest},
		{"AMQP without an AMQP callback", srv, wslistener.Path, []string{"AMQPWSB10"}, http.StatusBadRequest},
		{"other path", srv, "/mqtt", []string{"mqtt"}, http.StatusNotFound},
		{"path differs in case", srv, "/$IOTHUB/websocket", []string{"mqtt"}, http.StatusNotFound},
		{"other path with fallback", fsrv, "/api/devices", []string{"mqtt"}, http.StatusTeapot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, resp, err := dial(testContext(t), t, tc.srv, httpClient(tc.srv), tc.path, tc.protos...)
			if err == nil {
				t.Fatal("upgrade accepted")
			}
			if resp == nil || resp.StatusCode != tc.want {
				t.Fatalf("response %v (error %v), want status %d", resp, err, tc.want)
			}
		})
	}
	t.Run("plain GET on the WebSocket path", func(t *testing.T) {
		t.Parallel()
		resp, err := httpClient(srv).Get(srv.URL + wslistener.Path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
			t.Fatalf("status %d, Upgrade %q; want 426 and Upgrade: websocket", resp.StatusCode, resp.Header.Get("Upgrade"))
		}
	})
}

func TestCloseEndsConnectionsAndRefusesNewOnes(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ch := make(chan seen, 1)
	returned := make(chan struct{})
	h := wslistener.New(wslistener.Handlers{MQTT: func(conn net.Conn, certs []*x509.Certificate) {
		defer close(returned)
		echoUpper(ch)(conn, certs)
	}})
	srv := server(t, h)
	c, _, err := dial(ctx, t, srv, httpClient(srv), wslistener.Path, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	recvSeen(ctx, t, ch)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	default:
		t.Fatal("Close returned before the callback did")
	}
	if _, _, err := c.Read(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("client read after Close: %v, want the connection closed", err)
	}
	_, resp, err := dial(ctx, t, srv, httpClient(srv), wslistener.Path, "mqtt")
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade after Close: response %v, error %v; want 503", resp, err)
	}
}

func TestConnCloseIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	errs := make(chan error, 2)
	h := wslistener.New(wslistener.Handlers{MQTT: func(conn net.Conn, _ []*x509.Certificate) {
		errs <- conn.Close()
		errs <- conn.Close()
	}})
	t.Cleanup(func() { _ = h.Close() })
	srv := server(t, h)
	c, _, err := dial(ctx, t, srv, httpClient(srv), wslistener.Path, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	// The server's close frame reaches the client as a normal closure.
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("client read: %v, want close status 1000", err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

// TestServeHTTPReturnsWhileTheConnectionLives: once upgraded, the
// callback runs on its own goroutine and ServeHTTP returns, so that
// net/http's goroutine for the connection (and what it holds) goes away.
func TestServeHTTPReturnsWhileTheConnectionLives(t *testing.T) {
	ctx := testContext(t)
	started, release := make(chan struct{}), make(chan struct{})
	h := wslistener.New(wslistener.Handlers{MQTT: func(conn net.Conn, _ []*x509.Certificate) {
		close(started)
		<-release
		_, _ = conn.Write([]byte("still here"))
	}})
	t.Cleanup(func() { _ = h.Close() })
	returned := make(chan struct{})
	srv := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		close(returned)
	}))
	c, _, err := dial(ctx, t, srv, srv.Client(), wslistener.Path, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan struct{}{started, returned} {
		select {
		case <-ch:
		case <-ctx.Done():
			close(release)
			t.Fatal("ServeHTTP did not return while the callback was running")
		}
	}
	close(release) // the connection still works after ServeHTTP returned
	_, msg, err := c.Read(ctx)
	if err != nil || string(msg) != "still here" {
		t.Fatalf("read %q, %v", msg, err)
	}
}
