// Package amqpcore is the AMQP 1.0 transport shared by adapters/amqp
// (over TLS) and adapters/amqpws (over WebSockets): it implements
// ports.Transport (DPS registration and IoT Hub sessions) with
// github.com/Azure/go-amqp, over TLS on port 5671 or, with
// Options.WebSockets, over secure WebSockets on port 443
// (wss://{host}/$iothub/websocket, subprotocol AMQPWSB10), directly or
// through an HTTP CONNECT proxy.
//
// One AMQP connection carries every link of a device session (CBS,
// telemetry, cloud-to-device, direct methods, twin), and a SAS token is
// renewed in place with a new CBS put-token: no reconnect, no send
// interrupted.
//
// It never reconnects on its own: when a session's connection drops, the
// session's Done channel closes and Err says why; the application decides
// when to connect again. No go-amqp type ever leaves the package: errors
// are classified into the domain sentinels and *domain.HubError.
package amqpcore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/adapters/internal/wsdial"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// Ports and the WebSocket binding.
const (
	// DefaultPort is the AMQP over TLS port of IoT Hub and DPS.
	DefaultPort = 5671
	// DefaultWebSocketPort is the HTTPS port IoT Hub and DPS serve
	// WebSockets on.
	DefaultWebSocketPort = wsdial.DefaultPort
	// WebSocketPath is the request path of AMQP over WebSockets.
	WebSocketPath = wsdial.Path
	// Subprotocol is the WebSocket subprotocol of AMQP (the AMQP WebSocket
	// binding).
	Subprotocol = "AMQPWSB10"
)

// Defaults of Options.
const (
	// DefaultIdleTimeout is the AMQP idle time-out the client announces:
	// 4 minutes, as the Azure IoT C SDK. The hub sends an empty frame at
	// half of it when it has nothing else to send, and the client sends
	// one at half of the hub's; a peer silent for longer ends the
	// connection.
	DefaultIdleTimeout = 4 * time.Minute
	// DefaultConnectTimeout (30 s) bounds TCP (or proxy and WebSocket),
	// TLS, the AMQP open, CBS authentication and the attach of every link
	// together.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultRequestTimeout (60 s) bounds one twin, CBS or DPS request
	// waiting for its answer.
	DefaultRequestTimeout = 60 * time.Second
	// DefaultCloudToDeviceCredit is how many cloud-to-device messages may
	// wait for their settlement at once (IoT Hub queues at most 50 per
	// device).
	DefaultCloudToDeviceCredit = 10
	// DefaultClientVersion is announced as com.microsoft:client-version.
	DefaultClientVersion = domain.ClientProduct
)

// Options configures the transport. The zero value (or nil) is AMQP over
// TLS on port 5671, TLS verified against the system roots.
type Options struct {
	// WebSockets carries AMQP in WebSocket binary messages on
	// wss://{host}/$iothub/websocket (subprotocol AMQPWSB10), port 443 by
	// default, through the proxy named by Proxy or the environment. Name
	// then returns "amqpws" instead of "amqp".
	WebSockets bool
	// Port is the TCP port of DPS and the hub; 0 means DefaultPort (5671),
	// or DefaultWebSocketPort (443) with WebSockets.
	Port int
	// RootCAs verifies the server certificate; nil means the system roots.
	// TLS is always verified (use the emulator's CA pool in tests). Over
	// a proxy the TLS session runs end to end: the proxy sees only the
	// host name and port.
	RootCAs *x509.CertPool
	// Proxy is the HTTP proxy ("http://[user:password@]host:port") that
	// WebSocket connections tunnel through with CONNECT; the password is
	// sent as Basic Proxy-Authorization and never logged. nil means the
	// proxy named by the environment (HTTPS_PROXY, NO_PROXY; loopback is
	// never proxied), unless NoProxy is set. Ignored without WebSockets:
	// AMQP over TLS always connects directly.
	Proxy *url.URL
	// NoProxy connects WebSockets directly even when the environment names
	// a proxy. It cannot be combined with Proxy.
	NoProxy bool
	// IdleTimeout is the AMQP idle time-out announced to the hub; 0 means
	// DefaultIdleTimeout (4 min), a negative value disables it.
	IdleTimeout time.Duration
	// ConnectTimeout bounds connecting, authenticating and attaching the
	// links of one session or registration; 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// RequestTimeout bounds each twin, CBS and DPS request; 0 means
	// DefaultRequestTimeout (60 s). The caller's context may end it sooner.
	RequestTimeout time.Duration
	// CloudToDeviceCredit is how many cloud-to-device messages may be
	// delivered and not yet settled at once; 0 means
	// DefaultCloudToDeviceCredit (10).
	CloudToDeviceCredit int
	// DialContext opens TCP connections (to the proxy, or to the server);
	// nil means a net.Dialer. Set it to map host names in tests.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
	// Logger receives debug and warning records; nil discards them. SAS
	// tokens, keys and proxy passwords are never logged.
	Logger *slog.Logger
	// ProductInfo is appended to the client version announced to DPS and
	// the hub (as the Azure SDKs' productInfo), for example
	// "contoso-thermostat/2.1". Default none.
	ProductInfo string
}

// Transport is the AMQP transport; it implements ports.Transport. It is
// safe for concurrent use and holds no connection itself: every Provision
// call and every session opens its own.
type Transport struct {
	name        string
	version     string // announced as com.microsoft:client-version
	ws          bool
	port        string
	roots       *x509.CertPool
	proxy       wsdial.ProxyFunc
	proxyDesc   string
	optErr      error
	idle        time.Duration
	connTimeout time.Duration
	reqTimeout  time.Duration
	c2dCredit   uint32
	dial        func(ctx context.Context, network, address string) (net.Conn, error)
	log         *slog.Logger
}

var _ ports.Transport = (*Transport)(nil)

// New returns a transport configured by o (nil means all defaults).
// Invalid options (negative credit, a proxy URL that is not
// http://host:port, Proxy with NoProxy) are reported by every Provision
// and Connect as an error wrapping domain.ErrInvalidConfig.
func New(o *Options) *Transport {
	if o == nil {
		o = &Options{}
	}
	t := &Transport{name: "amqp", ws: o.WebSockets, roots: o.RootCAs, dial: o.DialContext, version: DefaultClientVersion}
	if o.ProductInfo != "" {
		t.version += " " + o.ProductInfo
	}
	port := o.Port
	if t.ws {
		t.name = "amqpws"
		if port <= 0 {
			port = DefaultWebSocketPort
		}
		t.proxy, t.proxyDesc, t.optErr = wsdial.Proxy(t.name, o.Proxy, o.NoProxy)
	} else if port <= 0 {
		port = DefaultPort
	}
	if port > 65535 {
		t.optErr = fmt.Errorf("%w: %s: port %d", domain.ErrInvalidConfig, t.name, port)
	}
	t.port = strconv.Itoa(port)
	t.idle = o.IdleTimeout
	if t.idle == 0 {
		t.idle = DefaultIdleTimeout
	}
	t.connTimeout = o.ConnectTimeout
	if t.connTimeout <= 0 {
		t.connTimeout = DefaultConnectTimeout
	}
	t.reqTimeout = o.RequestTimeout
	if t.reqTimeout <= 0 {
		t.reqTimeout = DefaultRequestTimeout
	}
	switch {
	case o.CloudToDeviceCredit == 0:
		t.c2dCredit = DefaultCloudToDeviceCredit
	case o.CloudToDeviceCredit < 0 || o.CloudToDeviceCredit > 1000:
		t.optErr = fmt.Errorf("%w: %s: cloud-to-device credit %d (want 1..1000)", domain.ErrInvalidConfig, t.name, o.CloudToDeviceCredit)
	default:
		t.c2dCredit = uint32(o.CloudToDeviceCredit)
	}
	if t.dial == nil {
		t.dial = defaultDial
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t.log = log.With("transport", t.name)
	return t
}

// Name returns "amqp", or "amqpws" with Options.WebSockets.
func (t *Transport) Name() string { return t.name }

// tlsConfig is the client TLS configuration for host: always verified.
func (t *Transport) tlsConfig(host string, cert *tls.Certificate) *tls.Config {
	tc := &tls.Config{ServerName: host, RootCAs: t.roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return tc
}

// open dials host and opens an AMQP connection on it, authenticating with
// sasl (nil: no SASL layer). ctx bounds the whole opening.
func (t *Transport) open(ctx context.Context, host string, cert *tls.Certificate, sasl goamqp.SASLType) (*goamqp.Conn, error) {
	if t.optErr != nil {
		return nil, t.optErr
	}
	tc := t.tlsConfig(host, cert)
	var nc net.Conn
	if t.ws {
		u := url.URL{Scheme: "wss", Host: host, Path: WebSocketPath}
		if t.port != strconv.Itoa(DefaultWebSocketPort) {
			u.Host = net.JoinHostPort(host, t.port)
		}
		t.log.Debug("websocket dial", "url", u.String(), "proxy", t.proxyDesc)
		c, err := wsdial.Dial(ctx, wsdial.Options{Who: t.name, URL: u.String(), Subprotocol: Subprotocol, TLS: tc, Proxy: t.proxy, Dial: t.dial})
		if err != nil {
			return nil, err
		}
		nc = c
	} else {
		raw, err := t.dial(ctx, "tcp", net.JoinHostPort(host, t.port))
		if err != nil {
			return nil, dialError(ctx, t.name, err)
		}
		tlsConn := tls.Client(raw, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, dialError(ctx, t.name+": tls handshake", err)
		}
		nc = tlsConn
	}
	conn, err := goamqp.NewConn(ctx, nc, &goamqp.ConnOptions{
		HostName:    host,
		IdleTimeout: t.idle,
		SASLType:    sasl,
		Properties:  map[string]any{propClientVersion: t.version},
	})
	if err != nil {
		_ = nc.Close()
		return nil, openError(ctx, t.name, err)
	}
	return conn, nil
}

// defaultDial opens TCP connections when Options.DialContext is nil. A
// net.Dialer holds no state, so every transport shares one.
var defaultDial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
