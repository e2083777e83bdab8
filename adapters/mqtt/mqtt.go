// Package mqtt is the MQTT 3.1.1 over TLS transport of the device SDK: it
// implements ports.Transport (DPS registration and IoT Hub sessions) with
// github.com/eclipse/paho.mqtt.golang on port 8883.
//
// It never reconnects on its own: when a session's connection drops, the
// session's Done channel closes and Err says why; the application decides
// when to connect again.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/iotc-go/iotc/adapters/internal/mqttcore"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// DefaultPort is the MQTT over TLS port of IoT Hub and DPS.
const DefaultPort = 8883

// Defaults re-exported from the shared MQTT engine.
const (
	// DefaultKeepAlive is 4 minutes, as the Azure IoT C SDK; IoT Hub drops
	// a connection idle for 1.5 × keep-alive and caps it at 1767 s.
	DefaultKeepAlive = mqttcore.DefaultKeepAlive
	// DefaultConnectTimeout (30 s) bounds dial, TLS and CONNECT/CONNACK.
	DefaultConnectTimeout = mqttcore.DefaultConnectTimeout
	// DefaultRequestTimeout (60 s) bounds one twin or DPS request.
	DefaultRequestTimeout = mqttcore.DefaultRequestTimeout
)

// Options configures the transport. The zero value (or nil) connects to
// port 8883 with TLS verified against the system roots.
type Options struct {
	// Port is the TCP port of DPS and the hub; 0 means DefaultPort (8883).
	Port int
	// RootCAs verifies the server certificate; nil means the system roots.
	// TLS is always verified (use the emulator's CA pool in tests).
	RootCAs *x509.CertPool
	// KeepAlive is the MQTT keep-alive; 0 means DefaultKeepAlive (4 min).
	// Values above IoT Hub's 1767 s are capped.
	KeepAlive time.Duration
	// ConnectTimeout bounds dial, TLS handshake and CONNECT/CONNACK; 0
	// means DefaultConnectTimeout (30 s).
	ConnectTimeout time.Duration
	// RequestTimeout bounds each twin request and each DPS request; 0
	// means DefaultRequestTimeout (60 s). The caller's context may end a
	// request sooner.
	RequestTimeout time.Duration
	// DialContext opens the TCP connection; nil means a net.Dialer. Set it
	// to go through a proxy or to map host names in tests.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
	// ProductInfo is appended to the client version announced to DPS and
	// the hub (as the Azure SDKs' productInfo), for example
	// "contoso-thermostat/2.1". Default none.
	ProductInfo string
	// Logger receives debug and warning records; nil discards them. SAS
	// tokens and keys are never logged.
	Logger *slog.Logger
}

// Transport is the MQTT over TLS transport; it implements ports.Transport.
// It is safe for concurrent use and holds no connection itself: every
// Provision call and every session has its own.
type Transport struct {
	core *mqttcore.Core
}

var _ ports.Transport = (*Transport)(nil)

// New returns a transport configured by o (nil means all defaults).
func New(o *Options) *Transport {
	if o == nil {
		o = &Options{}
	}
	port := o.Port
	if port <= 0 {
		port = DefaultPort
	}
	dial := o.DialContext
	if dial == nil {
		dial = defaultDial
	}
	portText := strconv.Itoa(port)
	return &Transport{core: mqttcore.New(mqttcore.Config{
		Name:           "mqtt",
		RootCAs:        o.RootCAs,
		KeepAlive:      o.KeepAlive,
		ConnectTimeout: o.ConnectTimeout,
		RequestTimeout: o.RequestTimeout,
		ClientVersion:  mqttcore.ClientVersion(o.ProductInfo),
		Logger:         o.Logger,
		Dial: func(ctx context.Context, host string, tc *tls.Config) (net.Conn, error) {
			raw, err := dial(ctx, "tcp", net.JoinHostPort(host, portText))
			if err != nil {
				return nil, err
			}
			conn := tls.Client(raw, tc)
			if err := conn.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, fmt.Errorf("tls handshake: %w", err)
			}
			return conn, nil
		},
	})}
}

// Name returns "mqtt".
func (t *Transport) Name() string { return t.core.Name() }

// Provision registers a device with DPS over MQTT and polls until a final
// answer, honouring retry-after. Errors: domain.ErrInvalidConfig for an
// incomplete request; domain.ErrUnauthorized (wrapped) for refused
// credentials; *domain.HubError for a DPS error status;
// *domain.ProvisioningError for a failed or disabled registration;
// domain.ErrTimeout when DPS stays silent; ctx's error; otherwise a
// retryable network error.
func (t *Transport) Provision(ctx context.Context, req ports.ProvisioningRequest) (domain.Assignment, error) {
	return t.core.Provision(ctx, req)
}

// Connect opens one IoT Hub session with a persistent MQTT session and
// delivers desired patches, direct methods and cloud-to-device messages
// to events, in order, from a goroutine the session owns. Errors:
// domain.ErrInvalidConfig; domain.ErrUnauthorized (wrapped) for CONNACK
// 4/5 or a refused subscription; ctx's error; otherwise a retryable
// network error. See mqttcore.Session for the session's methods.
func (t *Transport) Connect(ctx context.Context, conn ports.HubConnection, events ports.EventHandler) (ports.HubSession, error) {
	return t.core.Connect(ctx, conn, events)
}

// defaultDial opens TCP connections when Options.DialContext is nil. A
// net.Dialer holds no state, so every transport shares one.
var defaultDial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
