package emulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/iotc-go/iotc/emulator/internal/pki"
)

// Emulator is a running local IoT Central. Its methods are safe for
// concurrent use. Create it with Start; stop it with Close.
type Emulator struct {
	cfg     resolved
	log     *slog.Logger
	tempDir string // removed by Close when CertDir was defaulted
	bundle  *pki.Bundle
	caPool  *x509.CertPool

	srv     *mqtt.Server
	mqttLn  *connTracker
	restSrv *http.Server
	restURL string
	ws      *wsServer   // nil when disabled; see websocket.go
	amqp    *amqpServer // see amqp.go

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
	seq       atomic.Uint64

	mu       sync.Mutex
	groups   []EnrollmentGroup
	devices  map[string]*device
	conns    map[*mqtt.Client]*conn
	ops      map[string]*dpsOp
	methods  map[string]chan CommandResult // key: deviceID "\n" rid
	watchers map[string]map[chan Telemetry]struct{}
	changes  map[string]chan struct{} // see WaitSubscribed

	saveMu    sync.Mutex // serialises save (see datadir.go)
	persist   bool       // DataDir set and its state loaded; guarded by saveMu after Start
	lastSaved []byte     // guarded by saveMu
}

// Start runs an emulator: it loads or creates the certificates, binds the
// MQTT listener (and the REST listener unless disabled) and returns once
// they accept connections. With Options.DataDir it first loads the saved
// state (see DataDir). ctx bounds start-up only; stop the emulator
// with Close. It returns an error wrapping ErrInvalid for bad options,
// ErrDataFile for an unreadable or invalid DataDir state file, or the
// listen / certificate / state-writing error.
func Start(ctx context.Context, opts *Options) (*Emulator, error) {
	cfg, err := resolve(opts)
	if err != nil {
		return nil, err
	}
	e := &Emulator{
		cfg:      cfg,
		log:      cfg.log,
		done:     make(chan struct{}),
		groups:   cfg.groups,
		devices:  map[string]*device{},
		conns:    map[*mqtt.Client]*conn{},
		ops:      map[string]*dpsOp{},
		methods:  map[string]chan CommandResult{},
		watchers: map[string]map[chan Telemetry]struct{}{},
		changes:  map[string]chan struct{}{},
	}
	ok := false
	defer func() {
		if !ok {
			_ = e.Close()
		}
	}()
	if cfg.dataDir != "" {
		snap, err := loadDataDir(cfg.dataDir)
		if err != nil {
			return nil, err
		}
		if snap != nil {
			if err := e.restore(snap); err != nil {
				return nil, err
			}
		}
		if cfg.certDir == filepath.Join(cfg.dataDir, "certs") {
			// Private like the data directory: it holds the CA key.
			if err := os.MkdirAll(cfg.certDir, 0o700); err != nil {
				return nil, fmt.Errorf("emulator: cert dir: %w", err)
			}
		}
	}
	dir := cfg.certDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "iotc-emulator-*"); err != nil {
			return nil, fmt.Errorf("emulator: temp cert dir: %w", err)
		}
		e.tempDir = dir
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if cfg.hubHost != "localhost" {
		hosts = append(hosts, cfg.hubHost)
	}
	if e.bundle, err = pki.LoadOrCreate(dir, hosts); err != nil {
		return nil, fmt.Errorf("emulator: certificates: %w", err)
	}
	e.caPool = x509.NewCertPool()
	e.caPool.AddCert(e.bundle.CA.Cert)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := e.startMQTT(); err != nil {
		return nil, err
	}
	if err := e.startAMQP(); err != nil {
		return nil, err
	}
	if err := e.startWebSocket(); err != nil {
		return nil, err
	}
	if cfg.restAddr != "-" {
		if err := e.startREST(); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.dataDir != "" {
		e.saveMu.Lock()
		e.persist = true
		e.saveMu.Unlock()
		if err := e.save(); err != nil {
			return nil, err
		}
		e.wg.Add(1)
		go e.runSaver()
	}
	ok = true
	e.log.Info("emulator started", "mqtt", e.MQTTAddr(), "websocket", e.WebSocketAddr(), "amqp", e.AMQPAddr(), "rest", e.restURL, "id_scope", e.cfg.idScope, "data_dir", cfg.dataDir, "hub_host", cfg.hubHost, "ca_file", e.bundle.CAFile)
	return e, nil
}

func (e *Emulator) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{e.bundle.Server},
		// Client certificates are checked against enrollment group CAs in
		// the CONNECT hook, where the device id is known.
		ClientAuth: tls.RequestClientCert,
	}
}

func (e *Emulator) startMQTT() error {
	ln, err := net.Listen("tcp", e.cfg.mqttAddr)
	if err != nil {
		return fmt.Errorf("emulator: MQTT listener: %w", err)
	}
	e.mqttLn = newConnTracker(ln, e.serverTLS())
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MinimumProtocolVersion = 4
	caps.RetainAvailable = 0
	caps.SharedSubAvailable = 0
	caps.MaximumSessionExpiryInterval = uint32(sessionExpiry / time.Second)
	caps.MaximumPacketSize = MaxTelemetryBody + 64<<10
	e.srv = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slog.New(redactHandler{e.log.Handler()}).With("component", "mochi"),
		SysTopicResendInterval: 1 << 30,
	})
	if err := e.srv.AddHook(&hook{e: e}, nil); err != nil {
		return fmt.Errorf("emulator: MQTT hook: %w", err)
	}
	if err := e.srv.AddListener(listeners.NewNet("mqtts", e.mqttLn)); err != nil {
		return fmt.Errorf("emulator: MQTT listener: %w", err)
	}
	if err := e.srv.Serve(); err != nil {
		return fmt.Errorf("emulator: MQTT serve: %w", err)
	}
	return nil
}

// sessionExpiry caps how long mochi keeps a disconnected persistent
// session (its subscriptions); queued cloud-to-device messages are kept by
// the emulator regardless.
const sessionExpiry = time.Hour

// Close stops the listeners, drops every connection, ends every goroutine
// the emulator started, fails pending InvokeCommand calls with ErrClosed,
// writes the DataDir state file a last time (returning its error) and
// removes the temporary certificate directory. It is safe to call
// more than once; later calls return the first result.
func (e *Emulator) Close() error {
	e.closeOnce.Do(func() {
		close(e.done)
		var errs []error
		if e.restSrv != nil {
			if err := e.restSrv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, err)
			}
		}
		errs = append(errs, e.closeAMQP())      // AMQP connections, TLS and WebSocket alike, get a close
		errs = append(errs, e.closeWebSocket()) // before mochi's Close, which waits for its clients
		// Close every MQTT connection and wait for mochi to finish with each
		// client before mochi's own Close: its Clients.GetByListener takes
		// the read lock twice, so a client deleting itself meanwhile would
		// deadlock the two.
		if e.mqttLn != nil {
			_ = e.mqttLn.Close()
		}
		if e.srv != nil {
			e.srv.Listeners.ClientsWg.Wait()
			errs = append(errs, e.srv.Close())
		}
		e.wg.Wait()
		errs = append(errs, e.save()) // the final state, once every connection is gone
		if e.tempDir != "" {
			errs = append(errs, os.RemoveAll(e.tempDir))
		}
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}

// MQTTAddr is the bound host:port of the MQTT/TLS listener.
func (e *Emulator) MQTTAddr() string {
	if e.mqttLn == nil {
		return ""
	}
	return e.mqttLn.Addr().String()
}

// RESTURL is the base URL of the REST API ("https://127.0.0.1:port"), or
// "" when it is disabled.
func (e *Emulator) RESTURL() string { return e.restURL }

// APIToken is the value the REST API expects in the Authorization header.
func (e *Emulator) APIToken() string { return e.cfg.apiToken }

// IDScope is the DPS ID scope devices must use.
func (e *Emulator) IDScope() string { return e.cfg.idScope }

// HubHost is the hub host name DPS assigns and hub SAS tokens must name.
func (e *Emulator) HubHost() string { return e.cfg.hubHost }

// GroupKey is the primary key of the first symmetric-key enrollment group,
// "" when there is none.
func (e *Emulator) GroupKey() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, g := range e.groups {
		if !g.IsX509() {
			return g.PrimaryKey
		}
	}
	return ""
}

// CAFile is the path of the PEM file of the CA that signed the server
// certificate; devices trust it.
func (e *Emulator) CAFile() string { return e.bundle.CAFile }

// CAPool is a pool holding the emulator's CA, for a tls.Config RootCAs.
func (e *Emulator) CAPool() *x509.CertPool { return e.caPool.Clone() }

// CACertPEM is the emulator's CA certificate in PEM.
func (e *Emulator) CACertPEM() []byte { return append([]byte(nil), e.bundle.CA.CertPEM...) }

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

// connectTimeout bounds TLS handshake plus CONNECT; mochi then applies the
// keep-alive deadline.
const connectTimeout = 30 * time.Second

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
