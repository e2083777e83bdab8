// Package mqttws is the MQTT over WebSockets transport of the device SDK:
// the same MQTT 3.1.1 conversation as adapters/mqtt (DPS registration and
// IoT Hub sessions, shared through adapters/internal/mqttcore), carried in
// binary WebSocket messages on wss://{host}:443/$iothub/websocket with the
// subprotocol "mqtt". Port 443 passes most firewalls that block 8883, and
// the connection can go through an HTTP CONNECT proxy.
//
// It never reconnects on its own: when a session's connection drops, the
// session's Done channel closes and Err says why; the application decides
// when to connect again.
package mqttws

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/iotc-go/iotc/adapters/internal/mqttcore"
	"github.com/iotc-go/iotc/adapters/internal/wsdial"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// DefaultPort is the HTTPS port IoT Hub and DPS serve WebSockets on.
const DefaultPort = wsdial.DefaultPort

// Path is the request path of MQTT over WebSockets on IoT Hub and DPS.
const Path = wsdial.Path

// Subprotocol is the WebSocket subprotocol offered to the server.
const Subprotocol = "mqtt"

// Defaults re-exported from the shared MQTT engine.
const (
	// DefaultKeepAlive is 4 minutes, as the Azure IoT C SDK; IoT Hub drops
	// a connection idle for 1.5 × keep-alive and caps it at 1767 s.
	DefaultKeepAlive = mqttcore.DefaultKeepAlive
	// DefaultConnectTimeout (30 s) bounds the proxy CONNECT, TLS, the
	// WebSocket upgrade and MQTT CONNECT/CONNACK together.
	DefaultConnectTimeout = mqttcore.DefaultConnectTimeout
	// DefaultRequestTimeout (60 s) bounds one twin or DPS request.
	DefaultRequestTimeout = mqttcore.DefaultRequestTimeout
)

// Options configures the transport. The zero value (or nil) connects to
// port 443 with TLS verified against the system roots, through the proxy
// named by the environment, if any.
type Options struct {
	// Port is the TCP port of DPS and the hub; 0 means DefaultPort (443).
	Port int
	// RootCAs verifies the server certificate; nil means the system roots.
	// TLS is always verified (use the emulator's CA pool in tests). The
	// TLS session runs end to end through a proxy: the proxy sees only
	// the host name and port.
	RootCAs *x509.CertPool
	// Proxy is an HTTP proxy ("http://host:port") that every connection
	// tunnels through with CONNECT; user information in the URL
	// ("http://user:password@host:port") is sent as Basic
	// Proxy-Authorization and never logged. Only the http scheme is
	// supported. nil means the proxy named by the environment
	// (HTTPS_PROXY or https_proxy, with NO_PROXY exceptions, read once per
	// process by net/http; localhost and loopback addresses are never
	// proxied), unless NoProxy is set.
	Proxy *url.URL
	// NoProxy connects directly even when the environment names a proxy.
	// It cannot be combined with Proxy.
	NoProxy bool
	// KeepAlive is the MQTT keep-alive; 0 means DefaultKeepAlive (4 min).
	// Values above IoT Hub's 1767 s are capped.
	KeepAlive time.Duration
	// ConnectTimeout bounds proxy CONNECT, TLS, WebSocket upgrade and MQTT
	// CONNECT/CONNACK; 0 means DefaultConnectTimeout (30 s).
	ConnectTimeout time.Duration
	// RequestTimeout bounds each twin request and each DPS request; 0
	// means DefaultRequestTimeout (60 s). The caller's context may end a
	// request sooner.
	RequestTimeout time.Duration
	// DialContext opens the TCP connection to the proxy or, without one,
	// to the server; nil means a net.Dialer. Set it to map host names in
	// tests.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
	// Logger receives debug and warning records; nil discards them. SAS
	// tokens, keys and proxy passwords are never logged.
	Logger *slog.Logger
	// ProductInfo is appended to the client version announced to DPS and
	// the hub (as the Azure SDKs' productInfo), for example
	// "contoso-thermostat/2.1". Default none.
	ProductInfo string
}

// Transport is the MQTT over WebSockets transport; it implements
// ports.Transport. It is safe for concurrent use and holds no connection
// itself: every Provision call and every session has its own.
type Transport struct {
	core *mqttcore.Core
}

var _ ports.Transport = (*Transport)(nil)

// New returns a transport configured by o (nil means all defaults).
// Invalid options (a proxy URL that is not http://host:port, Proxy with
// NoProxy) are reported by every Provision and Connect as an error
// wrapping domain.ErrInvalidConfig.
func New(o *Options) *Transport {
	if o == nil {
		o = &Options{}
	}
	port := o.Port
	if port <= 0 {
		port = DefaultPort
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &dialer{port: strconv.Itoa(port), dial: o.DialContext, log: log.With("transport", "mqttws")}
	if d.dial == nil {
		d.dial = defaultDial
	}
	d.proxy, d.proxyDesc, d.err = wsdial.Proxy("mqttws", o.Proxy, o.NoProxy)
	return &Transport{core: mqttcore.New(mqttcore.Config{
		Name:           "mqttws",
		Dial:           d.Dial,
		RootCAs:        o.RootCAs,
		KeepAlive:      o.KeepAlive,
		ConnectTimeout: o.ConnectTimeout,
		RequestTimeout: o.RequestTimeout,
		ClientVersion:  mqttcore.ClientVersion(o.ProductInfo),
		Logger:         o.Logger,
	})}
}

// Name returns "mqttws".
func (t *Transport) Name() string { return t.core.Name() }

// Provision registers a device with DPS over MQTT over WebSockets and
// polls until a final answer, honouring retry-after. Errors:
// domain.ErrInvalidConfig for an incomplete request, bad proxy options or
// a proxy refusing its credentials (407); domain.ErrUnauthorized (wrapped)
// for refused device credentials; *domain.HubError for a DPS error
// status; *domain.ProvisioningError for a failed or disabled
// registration; domain.ErrTimeout when DPS stays silent; ctx's error;
// otherwise a retryable network error.
func (t *Transport) Provision(ctx context.Context, req ports.ProvisioningRequest) (domain.Assignment, error) {
	return t.core.Provision(ctx, req)
}

// Connect opens one IoT Hub session with a persistent MQTT session over a
// WebSocket and delivers desired patches, direct methods and
// cloud-to-device messages to events, in order, from a goroutine the
// session owns. Errors: domain.ErrInvalidConfig (bad options, proxy
// refusing its credentials); domain.ErrUnauthorized (wrapped) for CONNACK
// 4/5 or a refused subscription; ctx's error; otherwise a retryable
// network error (proxy unreachable, upgrade refused, connection lost).
func (t *Transport) Connect(ctx context.Context, conn ports.HubConnection, events ports.EventHandler) (ports.HubSession, error) {
	return t.core.Connect(ctx, conn, events)
}

// dialer opens WebSocket connections for the MQTT engine.
type dialer struct {
	port      string
	dial      func(ctx context.Context, network, address string) (net.Conn, error)
	proxy     wsdial.ProxyFunc
	proxyDesc string
	err       error
	log       *slog.Logger
}

// Dial implements mqttcore.Dialer.
func (d *dialer) Dial(ctx context.Context, host string, tc *tls.Config) (net.Conn, error) {
	if d.err != nil {
		return nil, d.err
	}
	u := url.URL{Scheme: "wss", Host: host, Path: Path}
	if d.port != strconv.Itoa(DefaultPort) {
		u.Host = net.JoinHostPort(host, d.port)
	}
	d.log.Debug("websocket dial", "url", u.String(), "proxy", d.proxyDesc)
	return wsdial.Dial(ctx, wsdial.Options{Who: "mqttws", URL: u.String(), Subprotocol: Subprotocol, TLS: tc, Proxy: d.proxy, Dial: d.dial})
}

// defaultDial opens TCP connections when Options.DialContext is nil. A
// net.Dialer holds no state, so every transport shares one.
var defaultDial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
