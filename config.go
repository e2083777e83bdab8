package iotc

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// Transport selects the protocol the device speaks to DPS and the hub.
type Transport int

// Transports. The zero value is MQTT.
const (
	// MQTT is MQTT 3.1.1 over TLS, port 8883 by default.
	MQTT Transport = iota
	// MQTTWebSockets is MQTT over secure WebSockets (port 443, path
	// /$iothub/websocket), through an HTTP proxy when Config.Proxy or the
	// environment (HTTPS_PROXY, NO_PROXY) names one.
	MQTTWebSockets
	// AMQP is AMQP 1.0 over TLS, port 5671 by default. One connection
	// carries telemetry, commands, properties and cloud-to-device
	// messages, and SAS tokens are renewed on the open connection (no
	// reconnect every TokenTTL as over MQTT).
	AMQP
	// AMQPWebSockets is AMQP 1.0 over secure WebSockets (port 443, path
	// /$iothub/websocket, subprotocol AMQPWSB10), through an HTTP proxy
	// when Config.Proxy or the environment (HTTPS_PROXY, NO_PROXY) names
	// one.
	AMQPWebSockets
)

// String is the transport's short name: mqtt, mqttws, amqp or amqpws.
func (t Transport) String() string {
	switch t {
	case MQTT:
		return "mqtt"
	case MQTTWebSockets:
		return "mqttws"
	case AMQP:
		return "amqp"
	case AMQPWebSockets:
		return "amqpws"
	}
	return fmt.Sprintf("Transport(%d)", int(t))
}

// Credential is what a device proves its identity with. Build one with
// GroupKey, DeviceKey, X509Files, X509PEM or ConnectionString. Printing a
// Credential never shows its secret.
type Credential struct {
	c domain.Credential
}

// String describes the credential without its secret.
func (c Credential) String() string { return c.c.String() }

// GoString keeps %#v from printing the secret.
func (c Credential) GoString() string { return c.c.String() }

// GroupKey is the base64 primary (or secondary) key of an IoT Central
// symmetric-key enrollment group (SAS-IoT-Devices). The device key is
// derived from it and the device id (HMAC-SHA256); the group key itself
// never leaves the process.
func GroupKey(key string) Credential {
	return Credential{domain.Credential{Kind: domain.KindGroupKey, Key: key}}
}

// DeviceKey is the base64 symmetric key of one device (the device's
// "Connect" page in IoT Central, or DeriveDeviceKey of a group key).
func DeviceKey(key string) Credential {
	return Credential{domain.Credential{Kind: domain.KindDeviceKey, Key: key}}
}

// X509Files is an X.509 client certificate and its private key as PEM
// files. passphrase decrypts an encrypted key: PKCS#8 "ENCRYPTED PRIVATE
// KEY" as OpenSSL 3 writes it by default (PBES2, PBKDF2, AES-CBC) or
// legacy PEM ("Proc-Type: 4,ENCRYPTED"); leave it empty for a plain key.
// A wrong or missing passphrase fails New with ErrInvalidConfig. The certificate's subject
// CN must be the device id; Config.DeviceID may be left empty.
func X509Files(certFile, keyFile, passphrase string) Credential {
	return Credential{domain.Credential{Kind: domain.KindX509, CertFile: certFile, KeyFile: keyFile, ReadFile: os.ReadFile, Passphrase: passphrase}}
}

// X509PEM is an X.509 client certificate and key given as PEM bytes, as
// X509Files.
func X509PEM(certPEM, keyPEM []byte, passphrase string) Credential {
	return Credential{domain.Credential{Kind: domain.KindX509, CertPEM: certPEM, KeyPEM: keyPEM, Passphrase: passphrase}}
}

// ConnectionString is an IoT Hub device connection string
// "HostName=...;DeviceId=...;SharedAccessKey=...". DPS is skipped; the
// IDScope is not needed.
func ConnectionString(s string) Credential {
	return Credential{domain.Credential{Kind: domain.KindConnectionString, ConnectionString: s}}
}

// X509ConnectionString is a hub connection string for an X.509 device,
// "HostName=...;DeviceId=...;x509=true", with its certificate and key
// given as X509Files or X509PEM (as the official SDKs' connection string
// plus certificate options). DPS is skipped; IDScope is not needed. An
// invalid pairing (cert not X.509, no x509=true) fails in New with
// ErrInvalidConfig.
func X509ConnectionString(s string, cert Credential) Credential {
	c := cert.c
	if c.Kind != domain.KindX509 {
		// Keep the kind wrong on purpose: Validate then refuses it.
		return Credential{domain.Credential{Kind: domain.KindConnectionString, ConnectionString: s + ";x509=true"}}
	}
	c.Kind, c.ConnectionString = domain.KindConnectionString, s
	return Credential{c}
}

// DeriveDeviceKey derives a device's key from a group key, as IoT Central
// does: base64(HMAC-SHA256(base64-decode(groupKey), deviceID)). It returns
// an error wrapping ErrInvalidKey when groupKey is not base64.
func DeriveDeviceKey(groupKey, deviceID string) (string, error) {
	return domain.DeriveDeviceKey(groupKey, deviceID)
}

// DefaultConnectTimeout is Config.ConnectTimeout's default: 30 s for one
// attempt to connect to the hub or to provision with DPS.
const DefaultConnectTimeout = 30 * time.Second

// Backoff is the reconnect backoff: the wait before retry n is uniform in
// [0, min(Cap, Base*2^n)). Zero fields mean 1 s base and 2 min cap.
type Backoff = domain.Backoff

// Config configures a Client. Only IDScope, DeviceID and Credential are
// needed to reach IoT Central; every other zero field selects its default.
type Config struct {
	// DeviceID is the device id, also its DPS registration id. It may be
	// empty with X.509 credentials (the certificate CN is used) and with a
	// connection string.
	DeviceID string
	// IDScope is the application's DPS ID scope ("0ne..."), shown under
	// Permissions > Device connection groups.
	IDScope string
	// Credential is required.
	Credential Credential
	// ModelID is the IoT Plug and Play model id ("dtmi:...;1"), sent to
	// DPS and announced to the hub so IoT Central assigns the device
	// template. Optional.
	ModelID string
	// LegacyModelID also sends the model id to DPS as "iotcModelId" for
	// IoT Central applications that predate IoT Plug and Play.
	LegacyModelID bool
	// Transport is the protocol. Default MQTT.
	Transport Transport
	// Fallback lists transports tried, in order, after Transport when it
	// cannot connect with a retryable error (port blocked, host
	// unreachable); the one that worked is tried first on reconnects.
	// Each switch reaches OnStatus with ReasonTransportFallback. Example:
	// Transport MQTT with Fallback {MQTTWebSockets} tries 8883, then 443.
	// Default none; a transport may appear once.
	Fallback []Transport
	// ProvisioningHost is the DPS endpoint. Default
	// "global.azure-devices-provisioning.net".
	ProvisioningHost string
	// Port is the TCP port of DPS and the hub for Transport (Fallback
	// transports use their default port or WebSocketPort / AMQPPort).
	// Default: the transport's (8883 for MQTT, 443 for the WebSocket
	// transports, 5671 for AMQP).
	Port int
	// WebSocketPort is the TCP port of DPS and the hub for MQTTWebSockets
	// and AMQPWebSockets (IoT Hub serves both on one port), as Transport
	// or in Fallback. Default: Port when Transport is a WebSocket
	// transport, else 443.
	WebSocketPort int
	// AMQPPort is the TCP port of DPS and the hub for AMQP, as Transport
	// or in Fallback. Default: Port when Transport is AMQP, else 5671.
	AMQPPort int
	// Proxy is the HTTP CONNECT proxy of the WebSocket transports
	// ("http://host:port", with "user:password@" for Basic auth; the
	// password is never logged). nil uses HTTPS_PROXY and NO_PROXY from the
	// environment (localhost is never proxied). The TLS transports connect
	// directly.
	Proxy *url.URL
	// RootCAs verifies the servers; nil means the system roots. To use a
	// local emulator, trust its CA explicitly here.
	RootCAs *x509.CertPool
	// FileUploader replaces the file upload adapter of UploadFile (tests,
	// another HTTP stack). Default: adapters/fileupload over HTTPS.
	FileUploader ports.FileUploader
	// CredentialStore caches the provisioning result (hub and device id,
	// no secret), so that restarts skip DPS: CredentialsFile(path) keeps
	// it in a JSON file (mode 0600), or use a ports.CredentialStore of
	// your own. Default nil: every Connect provisions.
	CredentialStore ports.CredentialStore
	// TokenTTL is the lifetime of the SAS tokens the client mints; default
	// one hour, at least 10 s. Tokens are renewed at 80 % of it (over MQTT
	// by reconnecting).
	TokenTTL time.Duration
	// Backoff is the reconnect backoff; the zero value is 1 s doubling to
	// 2 min, with full jitter.
	Backoff Backoff
	// MaxAttempts bounds consecutive failed connection attempts (a
	// successful connection starts the count again); 0 (the default)
	// retries forever while the errors are retryable.
	MaxAttempts int
	// StableAfter is how long a connection must have stayed up for its
	// loss to be reconnected at once, with the backoff starting again from
	// its base; connections lost sooner are reconnected with a growing
	// backoff. Default 1 s.
	StableAfter time.Duration
	// DrainTimeout bounds how long a token renewal by reconnecting (MQTT)
	// and Close wait for the acknowledgements of sends in flight before
	// closing the connection. Default 10 s.
	DrainTimeout time.Duration
	// ConnectTimeout bounds one attempt to connect, of every transport:
	// dial, proxy, TLS, WebSocket upgrade and the MQTT CONNECT or AMQP
	// authentication and links, both for the hub and for each DPS
	// provisioning attempt. An attempt cut by it fails with an error
	// matching context.DeadlineExceeded and is retried with the backoff.
	// Raise it for slow links (a satellite or 2G link with seconds of
	// latency needs a minute or more). Default DefaultConnectTimeout
	// (30 s); negative values make New fail with ErrInvalidConfig.
	ConnectTimeout time.Duration
	// FailFast makes SendTelemetry, ReportProperties, AckProperty and
	// FetchTwin return ErrNotConnected at once while the client is
	// connecting or reconnecting, without resending what a lost connection
	// did not acknowledge. Default false: they wait for the next
	// connection within their context and resend (at least once).
	FailFast bool
	// ProvisioningPayload is custom data sent to DPS with the
	// registration, beside {"modelId": ...}, for custom allocation
	// policies; read DPS's answer with Client.ProvisioningPayload.
	// Optional; it must encode as JSON.
	ProvisioningPayload map[string]any
	// SyncAllDesired hands every desired property in the twin to the
	// property handler at the first twin sync after Connect, acknowledged
	// ones too, for devices that keep settings only in memory; only values
	// not yet acknowledged at their version are acknowledged. Default
	// false: only pending values are handed over.
	SyncAllDesired bool
	// Logger receives the client's logs; nil (the default) is silent.
	// Keys and SAS tokens are never logged.
	Logger *slog.Logger
	// LogLevel is the least level of the records the client gives Logger
	// (whose handler may drop more): slog.LevelInfo (the default, nil)
	// logs connection changes, provisioning, handled properties and
	// commands; slog.LevelDebug also every message sent and received;
	// slog.LevelWarn only what went wrong.
	LogLevel slog.Leveler
	// OnStatus is called with every connection state change, in order, on
	// a goroutine of its own (a slow callback never blocks the client). A
	// callback 64 changes behind loses the oldest it has not seen yet
	// (logged at Warn); the latest, Close's included, is always delivered.
	OnStatus func(Status)

	// Adapter builds the client on a ports.Transport of your own instead
	// of the ones Transport and Fallback select: iotctest's in-memory hub
	// or a gomock mock in unit tests, or an adapter you wrote. Port,
	// WebSocketPort, Proxy and RootCAs are then unused; Fallback must be
	// empty. Default nil.
	Adapter ports.Transport
	// ProductInfo is appended to the client version the device announces
	// to DPS and the hub (MQTT DeviceClientType, AMQP
	// com.microsoft:client-version), as the Azure SDKs' productInfo: for
	// example "contoso-thermostat/2.1". Default none.
	ProductInfo string
	// Outbox configures the outbox of EnqueueTelemetry. The zero value is
	// an in-memory outbox of 10,000 messages and 16 MiB.
	Outbox OutboxConfig
}

// logger applies LogLevel to Logger.
func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return nil
	}
	min := slog.LevelInfo
	if c.LogLevel != nil {
		min = c.LogLevel.Level()
	}
	return slog.New(levelHandler{min: min, h: c.Logger.Handler()})
}

// levelHandler drops records below min.
type levelHandler struct {
	min slog.Level
	h   slog.Handler
}

func (l levelHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= l.min && l.h.Enabled(ctx, level)
}

func (l levelHandler) Handle(ctx context.Context, r slog.Record) error { return l.h.Handle(ctx, r) }

func (l levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{min: l.min, h: l.h.WithAttrs(as)}
}

func (l levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{min: l.min, h: l.h.WithGroup(name)}
}
