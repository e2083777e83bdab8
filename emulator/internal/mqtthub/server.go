// Package mqtthub is the emulator's MQTT front-end: DPS and IoT Hub over
// MQTT 3.1.1 on an embedded mochi-mqtt broker, for the TLS listener and for
// MQTT connections that arrived over WebSockets. It holds no state of the
// model: it authenticates, checks topics and sizes, and turns packets into
// calls on the Model (the emulator's core) and the core's calls on a
// device's Link into packets.
package mqtthub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Model is what the MQTT front-end needs of the emulator's core: the
// device-side use cases every device front-end calls (authentication,
// DPS, and a core.Session per hub connection).
type Model interface {
	AuthenticateHub(id, token string, certs []*x509.Certificate) (core.HubAuth, error)
	AuthenticateDPS(idScope, regID, token string, certs []*x509.Certificate) (core.DPSAuth, error)
	AdmitConnection(id string) error
	Connect(id string, auth core.HubAuth, l core.Link, modelID string) (*core.Session, core.Link, error)
	Register(a core.DPSAuth, body []byte) core.DPSResponse
	PollOperation(a core.DPSAuth, operationID string) core.DPSResponse
}

var _ Model = (*core.Core)(nil)

// Config configures New.
type Config struct {
	// Addr is the MQTT/TLS listener address; "-" serves WebSocket
	// connections (ServeConn) only.
	Addr string
	// TLS is the server TLS configuration of the listener.
	TLS *tls.Config
	// Model is the emulator's core.
	Model Model
	// MaxTelemetryBody is the largest telemetry body; a bigger one drops
	// the connection.
	MaxTelemetryBody int
	// Logger receives the front-end's lines; nil discards.
	Logger *slog.Logger
}

// Server is the MQTT front-end.
type Server struct {
	cfg Config
	log *slog.Logger
	srv *mqtt.Server
	ln  *connTracker // nil when the listener is disabled
	seq atomic.Uint64

	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	conns   map[*mqtt.Client]*conn
	methods map[string]chan methodAnswer // key: deviceID "\n" rid
}

type methodAnswer struct {
	status int
	body   []byte
}

// sessionExpiry caps how long mochi keeps a disconnected persistent
// session (its subscriptions); queued cloud-to-device messages are kept by
// the core regardless.
const sessionExpiry = time.Hour

// clientWritesPending is the capacity of the queue mochi allocates for
// every client (a buffered channel; mochi's default of 8192 pointers is 64
// KiB per connection). Only packets mochi routes between clients go
// through it, and the emulator routes none: every packet to a device is
// written directly by the front-end (conn.send, NotifyC2D) or by mochi's
// acknowledgements, so a short queue costs nothing.
const clientWritesPending = 8

// clientReadBuffer is the size of mochi's per-client read buffer (its
// default is 2 KiB per connection).
const clientReadBuffer = 512

// wsListenerID names, in mochi's client table, the connections that
// arrived over WebSockets.
const wsListenerID = "wss"

// New binds the listener (unless disabled) and starts the broker.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, conns: map[*mqtt.Client]*conn{}, methods: map[string]chan methodAnswer{}}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MinimumProtocolVersion = 4
	caps.RetainAvailable = 0
	caps.SharedSubAvailable = 0
	caps.MaximumSessionExpiryInterval = uint32(sessionExpiry / time.Second)
	caps.MaximumPacketSize = uint32(cfg.MaxTelemetryBody + 64<<10)
	caps.MaximumClientWritesPending = clientWritesPending
	s.srv = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slog.New(redactHandler{s.log.Handler()}).With("component", "mochi"),
		SysTopicResendInterval: 1 << 30,
		// mochi's per-client bufio.Reader sits on the tls.Conn, whose Read
		// returns at most one TLS record; a device sends one packet per
		// record, a few hundred bytes for telemetry, and longer packets are
		// read past the buffer straight into the packet's own slice.
		ClientNetReadBufferSize: clientReadBuffer,
	})
	if err := s.srv.AddHook(&hook{s: s}, nil); err != nil {
		return nil, fmt.Errorf("MQTT hook: %w", err)
	}
	if cfg.Addr != "-" {
		ln, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("MQTT listener: %w", err)
		}
		s.ln = newConnTracker(ln, cfg.TLS)
		if err := s.srv.AddListener(listeners.NewNet("mqtts", s.ln)); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("MQTT listener: %w", err)
		}
	}
	if err := s.srv.Serve(); err != nil {
		s.Close()
		return nil, fmt.Errorf("MQTT serve: %w", err)
	}
	return s, nil
}

// Addr is the bound listener address, "" when disabled.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// ServeConn runs one MQTT connection that arrived over a WebSocket until
// it ends. Client certificates reach the CONNECT hook through the
// connection's ConnectionState method.
func (s *Server) ServeConn(c net.Conn, _ []*x509.Certificate) {
	// As on the TLS listener: CONNECT must come in time; mochi then
	// applies the keep-alive deadline.
	_ = c.SetDeadline(time.Now().Add(connectTimeout))
	if err := s.srv.EstablishConnection(wsListenerID, c); err != nil {
		s.log.Debug("WebSocket MQTT connection ended", "remote", c.RemoteAddr().String(), "error", err)
	}
}

// Close drops every connection and stops the broker. Connections served
// by ServeConn must have been closed first (mochi waits for them). Close
// is idempotent: later calls return the first one's error.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		// Close every connection and wait for mochi to finish with each
		// client before mochi's own Close: its Clients.GetByListener takes
		// the read lock twice, so a client deleting itself meanwhile would
		// deadlock.
		if s.ln != nil {
			_ = s.ln.Close()
		}
		s.srv.Listeners.ClientsWg.Wait()
		s.closeErr = s.srv.Close()
	})
	return s.closeErr
}

// connectTimeout bounds TLS handshake plus CONNECT; mochi then applies the
// keep-alive deadline.
const connectTimeout = 30 * time.Second

// connTracker is the MQTT listener: it terminates TLS, bounds the time a
// new connection has to finish its handshake and CONNECT, and closes every
// connection it accepted when it is closed (mochi only closes clients that
// got past CONNECT).
type connTracker struct {
	net.Listener
	cfg    *tls.Config
	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
}

func newConnTracker(ln net.Listener, cfg *tls.Config) *connTracker {
	return &connTracker{Listener: ln, cfg: cfg, conns: map[*trackedConn]struct{}{}}
}

func (t *connTracker) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: tls.Server(c, t.cfg), t: t}
	_ = tc.SetDeadline(time.Now().Add(connectTimeout))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	t.conns[tc] = struct{}{}
	return tc, nil
}

func (t *connTracker) Close() error {
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns = map[*trackedConn]struct{}{}
	t.mu.Unlock()
	err := t.Listener.Close()
	for c := range conns {
		_ = c.Conn.Close()
	}
	return err
}

type trackedConn struct {
	*tls.Conn
	t    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// redactHandler keeps packet dumps (which can hold passwords and payloads)
// out of mochi's log lines and drops mochi's Info chatter.
type redactHandler struct{ slog.Handler }

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" {
		return nil // mochi's per-connection end, already logged by the emulator
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "pk", "packet", "will":
			out.AddAttrs(slog.String(a.Key, "<redacted>"))
		default:
			out.AddAttrs(a)
		}
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return redactHandler{h.Handler.WithAttrs(as)}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.Handler.WithGroup(name)}
}

var errReplaced = fmt.Errorf("%w over MQTT", core.ErrReplaced)
