package mqttcore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// Defaults of Config.
const (
	// DefaultKeepAlive is the MQTT keep-alive: 4 minutes, as the Azure IoT
	// C SDK. IoT Hub drops a connection idle for 1.5 × keep-alive and caps
	// keep-alive at 1767 s.
	DefaultKeepAlive = 4 * time.Minute
	// DefaultConnectTimeout bounds dialing plus the CONNECT/CONNACK
	// handshake: 30 s, as the C SDK waits for CONNACK.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultRequestTimeout bounds a twin or DPS request waiting for its
	// response when the caller's context has no earlier deadline: 60 s,
	// as the C SDK's twin GET.
	DefaultRequestTimeout = 60 * time.Second
	// DefaultWriteTimeout bounds one write to the connection: a write
	// blocked that long means the connection is dead, and it is closed.
	DefaultWriteTimeout = 30 * time.Second
	// publishHandoff bounds how long one paho Publish waits to hand its
	// packet to paho's writer. A publish that times out was not written
	// and is handed over again while the session lives; one caught by the
	// loss of the connection ends within this time, which bounds how long
	// Close waits for it.
	publishHandoff = time.Second
	// DefaultClientVersion is announced as DeviceClientType (hub) and
	// ClientVersion (DPS).
	DefaultClientVersion = domain.ClientProduct
	// maxKeepAlive is IoT Hub's cap on the keep-alive.
	maxKeepAlive = 1767 * time.Second
	// maxDPSPolls bounds the polls of one registration.
	maxDPSPolls = 100
	// disconnectQuiesce bounds how long Close waits for paho to send
	// DISCONNECT and stop its goroutines.
	disconnectQuiesce = 5000 // milliseconds
)

// Dialer opens the byte stream one MQTT connection runs over, to host
// (a DPS or IoT hub host name, no port), using tlsConfig (server name,
// roots and any client certificate already filled in; TLS is always
// verified). adapters/mqtt dials TCP and runs TLS; adapters/mqttws dials
// a WebSocket. It must honour ctx; the returned conn must support
// deadlines.
type Dialer func(ctx context.Context, host string, tlsConfig *tls.Config) (net.Conn, error)

// Config configures a Core.
type Config struct {
	// Name is the transport name reported by ports.Transport.Name ("mqtt",
	// "mqttws").
	Name string
	// Dial opens connections. Required.
	Dial Dialer
	// RootCAs verifies the server; nil means the system roots.
	RootCAs *x509.CertPool
	// KeepAlive is the MQTT keep-alive; 0 means DefaultKeepAlive. It is
	// capped at IoT Hub's 1767 s.
	KeepAlive time.Duration
	// ConnectTimeout bounds dial plus CONNECT/CONNACK; 0 means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// RequestTimeout bounds each twin or DPS request; 0 means
	// DefaultRequestTimeout. The caller's context may end it sooner.
	RequestTimeout time.Duration
	// WriteTimeout bounds one write to the connection (a write blocked
	// longer closes it); 0 means DefaultWriteTimeout. Calls still return
	// when their context ends: a publish caught in a stalled write is left
	// to finish in the background (one whose handoff the stall began
	// during returns within publishHandoff, a second, of the context's
	// end). Writes go behind: packets written while a write is in progress
	// go out together in the next one, up to 64 KiB waiting.
	WriteTimeout time.Duration
	// ClientVersion is announced to the hub and DPS; "" means
	// DefaultClientVersion.
	ClientVersion string
	// Logger receives debug and warning records; nil discards them. No
	// secret (SAS token, key) is ever logged.
	Logger *slog.Logger
}

// ClientVersion is DefaultClientVersion followed by productInfo, when
// there is one.
func ClientVersion(productInfo string) string {
	if productInfo == "" {
		return DefaultClientVersion
	}
	return DefaultClientVersion + " " + productInfo
}

// Core implements ports.Transport over MQTT 3.1.1 with a pluggable Dialer.
// It is safe for concurrent use; it holds no connection itself.
type Core struct {
	cfg Config
	log *slog.Logger
}

var _ ports.Transport = (*Core)(nil)

// New returns a Core with the defaults of Config applied. A nil Dial is
// reported by Provision and Connect as domain.ErrInvalidConfig.
func New(cfg Config) *Core {
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	cfg.KeepAlive = min(cfg.KeepAlive, maxKeepAlive)
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.ClientVersion == "" {
		cfg.ClientVersion = DefaultClientVersion
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Name == "" {
		cfg.Name = "mqtt"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Core{cfg: cfg, log: log.With("transport", cfg.Name)}
}

// Name returns Config.Name ("mqtt" by default).
func (c *Core) Name() string { return c.cfg.Name }

// tlsConfig is the client TLS configuration for host: always verified.
func (c *Core) tlsConfig(host string, cert *tls.Certificate) *tls.Config {
	tc := &tls.Config{
		ServerName: host,
		RootCAs:    c.cfg.RootCAs,
		MinVersion: tls.VersionTLS12,
	}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return tc
}

// connParams is one paho connection to open.
type connParams struct {
	host, clientID, username, password string
	cert                               *tls.Certificate
	clean                              bool
	// onLost is called (on a paho goroutine) when an established
	// connection drops; nil for none.
	onLost func(error)
	// routes are installed before CONNECT, so that messages a persistent
	// session delivers right after CONNACK (queued cloud-to-device
	// messages) find their handler instead of being dropped by paho.
	routes map[string]paho.MessageHandler
}

// connect dials and performs CONNECT/CONNACK, honouring ctx. On success
// it returns a connected paho client and the raw connection.
func (c *Core) connect(ctx context.Context, p connParams) (paho.Client, *gracefulConn, error) {
	if c.cfg.Dial == nil {
		return nil, nil, fmt.Errorf("%w: mqtt transport without a dialer", domain.ErrInvalidConfig)
	}
	if p.host == "" || p.clientID == "" {
		return nil, nil, fmt.Errorf("%w: mqtt connect needs a host and a client id", domain.ErrInvalidConfig)
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	raw, err := c.cfg.Dial(dctx, p.host, c.tlsConfig(p.host, p.cert))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("mqtt: dial %s: %w", p.host, ctx.Err())
		}
		if dctx.Err() != nil {
			return nil, nil, fmt.Errorf("%w: mqtt: dial %s: %w", domain.ErrTimeout, p.host, scrub(err))
		}
		if d := domain.DiagnoseNetwork(err); d != err {
			return nil, nil, fmt.Errorf("mqtt: %s: %w", p.host, d)
		}
		return nil, nil, fmt.Errorf("mqtt: dial %s: %w", p.host, scrub(err))
	}
	// paho and the session close the connection gracefully; the abort
	// paths below close raw at once.
	polite := newGracefulConn(raw, c.cfg.WriteTimeout)
	var once sync.Once
	opts := paho.NewClientOptions().
		AddBroker("tcp://mqtt-broker:8883"). // the Dialer decides where to connect
		SetClientID(p.clientID).
		SetUsername(p.username).
		SetPassword(p.password).
		SetProtocolVersion(4).
		SetCleanSession(p.clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true). // our handlers never block: they queue
		SetAutoAckDisabled(true).
		SetKeepAlive(c.cfg.KeepAlive).
		SetWriteTimeout(publishHandoff).
		SetStore(noStore{}).
		SetConnectTimeout(c.cfg.ConnectTimeout).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			var conn net.Conn
			once.Do(func() { conn = polite })
			if conn == nil {
				return nil, errors.New("mqtt: connection already used")
			}
			return conn, nil
		})
	if p.onLost != nil {
		onLost := p.onLost
		opts.SetConnectionLostHandler(func(_ paho.Client, err error) { onLost(err) })
	}
	cl := paho.NewClient(opts)
	for f, h := range p.routes {
		cl.AddRoute(f, h)
	}
	tok := cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		_ = raw.Close() // unblocks the handshake; the token then completes
		<-tok.Done()
		if tok.Error() == nil {
			cl.Disconnect(disconnectQuiesce)
		}
		return nil, nil, fmt.Errorf("mqtt: connect to %s: %w", p.host, ctx.Err())
	}
	if err := tok.Error(); err != nil {
		_ = raw.Close()
		ct, _ := tok.(*paho.ConnectToken)
		if ct != nil {
			switch ct.ReturnCode() {
			case 4, 5:
				return nil, nil, fmt.Errorf("%w (%s CONNACK %d)", domain.ErrUnauthorized, c.cfg.Name, ct.ReturnCode())
			case 2:
				return nil, nil, fmt.Errorf("%w: %s: the service rejected client id %q (CONNACK 2)", domain.ErrInvalidConfig, c.cfg.Name, p.clientID)
			}
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("mqtt: connect to %s: %w", p.host, ctx.Err())
		}
		return nil, nil, fmt.Errorf("mqtt: connect to %s: %w", p.host, scrub(err))
	}
	return cl, polite, nil
}

// wait waits for tok, ctx or (when not nil) done, whichever comes first.
// It returns tok's error, ctx's error, or errDone.
func wait(ctx context.Context, tok paho.Token, done <-chan struct{}, errDone error) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return errDone
	}
}

// checkSubAck returns an error when the broker refused a subscription
// (SUBACK 0x80: paho reports it with a nil error).
func checkSubAck(tok paho.Token, filters map[string]byte) error {
	st, ok := tok.(*paho.SubscribeToken)
	if !ok {
		return nil
	}
	res := st.Result()
	for f := range filters {
		if code, ok := res[f]; !ok || code == 0x80 {
			return fmt.Errorf("%w: subscription to %q refused", domain.ErrUnauthorized, f)
		}
	}
	return nil
}

// serviceError is the usual IoT Hub / DPS error body.
type serviceError struct {
	ErrorCode int    `json:"errorCode"`
	Message   string `json:"message"`
}

// hubError builds a *domain.HubError from a status and an optional body.
func hubError(op string, status int, body []byte) *domain.HubError {
	he := &domain.HubError{Op: op, Status: status}
	var se serviceError
	if len(body) > 0 && json.Unmarshal(body, &se) == nil {
		he.Code = se.ErrorCode
		if len(se.Message) > 512 {
			se.Message = se.Message[:512]
		}
		he.Message = se.Message
	}
	return he
}
