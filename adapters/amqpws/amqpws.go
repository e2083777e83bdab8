// Package amqpws is the AMQP 1.0 transport of the device SDK over secure
// WebSockets (wss://{host}/$iothub/websocket, subprotocol AMQPWSB10, port
// 443), directly or through an HTTP CONNECT proxy: the same transport as
// package amqp, as mqttws is mqtt's.
//
// One AMQP connection carries every link of a device session (CBS,
// telemetry, cloud-to-device, direct methods, twin), and a SAS token is
// renewed in place with a new CBS put-token: no reconnect, no send
// interrupted. It never reconnects on its own: when a session's connection
// drops, the session's Done channel closes and Err says why. No go-amqp
// type ever leaves the package: errors are classified into the domain
// sentinels and *domain.HubError.
package amqpws

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/iotc-go/iotc/adapters/internal/amqpcore"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// The WebSocket binding.
const (
	// DefaultPort is the HTTPS port IoT Hub and DPS serve WebSockets on.
	DefaultPort = amqpcore.DefaultWebSocketPort
	// Path is the request path of AMQP over WebSockets.
	Path = amqpcore.WebSocketPath
	// Subprotocol is the WebSocket subprotocol of AMQP.
	Subprotocol = amqpcore.Subprotocol
)

// Defaults of Options.
const (
	// DefaultIdleTimeout is the AMQP idle time-out the client announces:
	// 4 minutes, as the Azure IoT C SDK. A peer silent for longer ends the
	// connection.
	DefaultIdleTimeout = amqpcore.DefaultIdleTimeout
	// DefaultConnectTimeout (30 s) bounds TCP, TLS, the AMQP open, CBS
	// authentication and the attach of every link together.
	DefaultConnectTimeout = amqpcore.DefaultConnectTimeout
	// DefaultRequestTimeout (60 s) bounds one twin, CBS or DPS request
	// waiting for its answer.
	DefaultRequestTimeout = amqpcore.DefaultRequestTimeout
	// DefaultCloudToDeviceCredit is how many cloud-to-device messages may
	// wait for their settlement at once (IoT Hub queues at most 50 per
	// device).
	DefaultCloudToDeviceCredit = amqpcore.DefaultCloudToDeviceCredit
)

// Options configures the transport. The zero value (or nil) is port 443,
// TLS verified against the system roots, the proxy the environment names.
type Options struct {
	// Port is the TCP port of DPS and the hub; 0 means DefaultPort.
	Port int
	// RootCAs verifies the server certificate; nil means the system roots.
	// TLS is always verified (use the emulator's CA pool in tests). Over a
	// proxy the TLS session runs end to end: the proxy sees only the host
	// name and port.
	RootCAs *x509.CertPool
	// Proxy is the HTTP proxy ("http://[user:password@]host:port") that
	// connections tunnel through with CONNECT; the password is sent as
	// Basic Proxy-Authorization and never logged. nil means the proxy
	// named by the environment (HTTPS_PROXY, NO_PROXY; loopback is never
	// proxied), unless NoProxy is set.
	Proxy *url.URL
	// NoProxy connects directly even when the environment names a proxy.
	// It cannot be combined with Proxy.
	NoProxy bool
	// IdleTimeout is the AMQP idle time-out announced to the hub; 0 means
	// DefaultIdleTimeout, a negative value disables it.
	IdleTimeout time.Duration
	// ConnectTimeout bounds connecting, authenticating and attaching the
	// links of one session or registration; 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// RequestTimeout bounds each twin, CBS and DPS request; 0 means
	// DefaultRequestTimeout. The caller's context may end it sooner.
	RequestTimeout time.Duration
	// CloudToDeviceCredit is how many cloud-to-device messages may be
	// delivered and not yet settled at once; 0 means
	// DefaultCloudToDeviceCredit.
	CloudToDeviceCredit int
	// DialContext opens TCP connections (to the proxy, or to the server);
	// nil means a net.Dialer. Set it to
	// map host names in tests.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
	// Logger receives debug and warning records; nil discards them. SAS
	// tokens and keys are never logged.
	Logger *slog.Logger
	// ProductInfo is appended to the client version announced as
	// com.microsoft:client-version. Default none.
	ProductInfo string
}

// Transport is the AMQP over WebSockets transport; build it with New. It is safe
// for concurrent use.
type Transport struct {
	core *amqpcore.Transport
}

var _ ports.Transport = (*Transport)(nil)

// New returns the transport; it starts nothing. An invalid option is
// reported by Provision and Connect.
func New(o *Options) *Transport {
	if o == nil {
		o = &Options{}
	}
	return &Transport{core: amqpcore.New(&amqpcore.Options{
		WebSockets: true, Port: o.Port, RootCAs: o.RootCAs, Proxy: o.Proxy, NoProxy: o.NoProxy, IdleTimeout: o.IdleTimeout, ConnectTimeout: o.ConnectTimeout,
		RequestTimeout: o.RequestTimeout, CloudToDeviceCredit: o.CloudToDeviceCredit,
		DialContext: o.DialContext, Logger: o.Logger, ProductInfo: o.ProductInfo,
	})}
}

// Name returns "amqpws".
func (t *Transport) Name() string { return t.core.Name() }

// Provision implements ports.Provisioner: it registers with DPS over AMQP.
func (t *Transport) Provision(ctx context.Context, req ports.ProvisioningRequest) (domain.Assignment, error) {
	return t.core.Provision(ctx, req)
}

// Connect implements ports.HubConnector: it opens one AMQP connection with
// every link of the session and authenticates it with CBS.
func (t *Transport) Connect(ctx context.Context, conn ports.HubConnection, events ports.EventHandler) (ports.HubSession, error) {
	return t.core.Connect(ctx, conn, events)
}
