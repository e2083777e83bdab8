package emulator

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/pki"
)

// Service limits the emulator enforces, as IoT Hub does.
const (
	// MaxTelemetryBody is the largest device-to-cloud message body (256 KiB);
	// a bigger one closes the device's connection.
	MaxTelemetryBody = core.MaxTelemetryBody
	// MaxC2DBody is the largest cloud-to-device message body (64 KiB).
	MaxC2DBody = core.MaxC2DBody
	// MaxC2DQueue is how many cloud-to-device messages may wait for one
	// device (delivered but not yet acknowledged ones included).
	MaxC2DQueue = core.MaxC2DQueue
	// MaxTwinSection is the largest desired or reported section (32 KiB of
	// JSON); a reported patch that would exceed it gets status 400.
	MaxTwinSection = core.MaxTwinSection
	// DefaultCommandTimeout is the InvokeCommand timeout used when none is
	// given (IoT Hub's default responseTimeoutInSeconds).
	DefaultCommandTimeout = core.DefaultCommandTimeout
	// MaxCommandTimeout caps the InvokeCommand timeout (IoT Hub: 300 s).
	MaxCommandTimeout = core.MaxCommandTimeout
	// DefaultTelemetryHistory is how many messages per device the telemetry
	// history keeps when Options.TelemetryHistory is zero.
	DefaultTelemetryHistory = core.DefaultTelemetryHistory
)

// DataDirDatabase is the SQLite database inside Options.DataDir that holds
// the emulator's state (open it with the sqlite3 shell; its tables are
// listed in emulator/README.md).
const DataDirDatabase = "emulator.db"

// DataDirLegacyFile is the JSON state file of data directories made by
// earlier versions: Start imports it into an empty database once and
// renames it with the suffix ".imported".
const DataDirLegacyFile = core.LegacyStateFile

// DataDirTokenFile is the file inside Options.DataDir that keeps the API
// token across restarts.
const DataDirTokenFile = "api-token"

// Options configure Start. The zero value (or nil) is a working emulator on
// the standard loopback ports.
type Options struct {
	// MQTTAddr is the MQTT/TLS listener (DPS and hub). Default
	// "127.0.0.1:8883"; "127.0.0.1:0" picks a free port (see MQTTAddr());
	// "-" disables it (MQTT over WebSockets and AMQP keep working), to
	// stage a network where only 443 is open.
	MQTTAddr string
	// WebSocketAddr is the WebSocket/TLS listener (path /$iothub/websocket,
	// subprotocol "mqtt") for DPS and the hub. Default "127.0.0.1:443",
	// except when MQTTAddr has port 0: then port 0 on MQTTAddr's host, so
	// tests never collide on 443. Port 0 picks a free port (see
	// WebSocketAddr()); "-" disables it.
	WebSocketAddr string
	// AMQPAddr is the AMQP 1.0/TLS listener (DPS and hub). Default
	// "127.0.0.1:5671", except when MQTTAddr has port 0: then port 0 on
	// MQTTAddr's host. Port 0 picks a free port (see AMQPAddr()); "-"
	// disables it (AMQP over WebSockets stays on WebSocketAddr).
	AMQPAddr string
	// RESTAddr is the HTTPS operator API listener. Default
	// "127.0.0.1:8443"; port 0 picks a free port; "-" disables it.
	RESTAddr string
	// HubHost is the host name DPS assigns and SAS audiences name. Default
	// "localhost". It is added to the server certificate when generated.
	HubHost string
	// IDScope is the DPS ID scope. Default: "0ne" + 8 random uppercase hex digits.
	IDScope string
	// Groups are the enrollment groups. Default: one enabled symmetric-key
	// group "default" with random keys. A group with CACertPEM is an X.509
	// group; otherwise empty keys are generated.
	Groups []EnrollmentGroup
	// AutoApprove, when true (the default when nil), lets any registration
	// id under an enabled group be assigned. When false only devices made
	// with CreateDevice register; others get status "failed".
	AutoApprove *bool
	// TrustedCAs are the hub's verified CA certificates (PEM, one or more
	// per entry), as an IoT hub's "Certificates" page holds them: a
	// device created through the IoT Hub service API with authentication
	// type certificateAuthority connects with a client certificate chain
	// ending in one of them whose leaf CN is its id. Default: none (such
	// devices cannot connect). Start returns ErrInvalid for an entry that
	// holds no certificate.
	TrustedCAs [][]byte
	// CertDir holds ca.pem, ca-key.pem, server.pem and server-key.pem; they
	// are read when present and generated (and written) when not. Default:
	// DataDir/certs when DataDir is set, else a temporary directory removed
	// by Close.
	CertDir string
	// DataDir, when set, makes the emulator's state survive a restart, a
	// crash and kill -9: Start creates the directory (mode 0700) when
	// missing and opens DataDirDatabase in it (SQLite, WAL mode, mode
	// 0600). Every change is committed there before the emulator
	// acknowledges it (an MQTT PUBACK, an AMQP accepted disposition, a 2xx
	// answer); concurrent changes share one commit. It keeps the ID scope,
	// the enrollment groups, device templates, proven group certificates,
	// and every device with its keys, model id, group, attestation,
	// enabled/provisioned flags, REST settings, twin (desired and reported
	// with $version and $metadata), queued cloud-to-device messages, its
	// telemetry history (TelemetryHistory messages) and its command
	// history. It does not keep connections, pending commands or dead
	// letters. Unless APIToken is given, the API token is kept too, in
	// DataDirTokenFile (mode 0600), so scripts keep working across
	// restarts. The files hold the group and device keys and the token in
	// clear: the directory is the emulator's own secret store, readable
	// only by its owner.
	//
	// When both are given, an explicit IDScope or Groups option replaces
	// the stored ID scope or enrollment groups (devices keep the keys they
	// were given); devices, twins and queues always come from the database.
	// A database that cannot be opened, or is of a newer schema, makes
	// Start fail with an error wrapping ErrDataFile and is left untouched.
	// Default "": state is in memory only.
	DataDir string
	// APIToken guards the REST API (header "Authorization: <token>").
	// Default: the token kept in DataDir when there is one, else a new
	// random token (see APIToken()).
	APIToken string
	// RESTAllowBearer also accepts "Authorization: Bearer <API token>".
	// Default false: IoT Central takes API tokens bare and Bearer only for
	// Microsoft Entra tokens, so such a request is refused 401, as a real
	// application refuses it.
	RESTAllowBearer bool
	// RESTPageSize is how many items a REST list answer holds before it
	// ends with a nextLink; 0 means restapi.DefaultPageSize (100). A small
	// value exercises a backend's paging.
	RESTPageSize int
	// RetryAfter is the retry-after DPS sends with 202 answers, written in
	// whole seconds, rounded down (so anything under a second, or a negative
	// value, sends retry-after=0). Default (zero) 1s.
	RetryAfter time.Duration
	// TelemetryHistory is how many telemetry messages per device the
	// emulator keeps (see TelemetryHistory and GET
	// /api/emulator/devices/{id}/telemetry): 0 means DefaultTelemetryHistory, a
	// negative value keeps none. The oldest message goes first.
	TelemetryHistory int
	// Logger receives one Info line per refused connection, dropped
	// connection and rejected request (client-chosen text quoted and cut
	// to 64 bytes), and at most one Warn line per
	// Limits.LogSummaryInterval counting the refusals and limit hits of
	// the interval. nil discards. Secrets are never logged.
	Logger *slog.Logger
	// EventHubs configures the Event Hubs-compatible endpoint (see
	// EventHubsOptions); the zero value serves the built-in endpoint with
	// every default.
	EventHubs EventHubsOptions
	// BlobAddr is the embedded Azure Blob endpoint's TLS listener, where
	// devices upload files unless StorageConnectionString is set (see
	// BlobURL and StorageConnectionString). Default "127.0.0.1:10000",
	// except when MQTTAddr or WebSocketAddr has port 0: then port 0 on
	// its host;
	// "-" disables it (file uploads then fail unless
	// StorageConnectionString is set).
	BlobAddr string
	// StorageConnectionString names a storage account (Azurite or Azure
	// Storage: AccountName, AccountKey, BlobEndpoint) that receives file
	// uploads instead of the embedded blob endpoint; the emulator makes
	// the container and signs SAS tokens with its key, and trusts the
	// system roots and its own CA for its HTTPS. A secret: never logged.
	// Default "": the embedded endpoint. Start returns ErrInvalid when it
	// lacks AccountName or AccountKey.
	StorageConnectionString string
	// Limits bound what clients can make the emulator hold (AMQP before
	// login, HTTP timeouts and connection caps, failed-authentication rate,
	// MQTT idle time and pre-login buffering). The zero value applies
	// every default; see Limits.
	Limits Limits
	// C2DLockTimeout is how long a cloud-to-device message received over
	// the device HTTPS API (GET /devices/{id}/messages/devicebound) stays
	// locked before it becomes visible again, unsettled. Default (zero)
	// one minute, as IoT Hub.
	C2DLockTimeout time.Duration
	// C2DMaxDeliveryCount is how many times a cloud-to-device message is
	// handed out over HTTPS before it is dead-lettered (feedback
	// DeliveryCountExceeded). Default (zero) 10, IoT Hub's default.
	C2DMaxDeliveryCount int
	// DataExport configures IoT Central data export (see DataExportOptions).
	// The zero value runs it with no definitions (add them through the
	// REST API's dataExport routes).
	DataExport DataExportOptions
}

// EnrollmentGroup is a DPS enrollment group: symmetric keys (devices
// derive their key from the group key and their registration id) or, when
// CACertPEM is set, an X.509 CA whose leaf certificates' CN is the device id.
type EnrollmentGroup = core.EnrollmentGroup

// resolved is Options with every default applied.
type resolved struct {
	mqttAddr, restAddr, wsAddr, amqpAddr, hubHost, idScope, certDir, apiToken string
	dataDir                                                                   string
	blobAddr, storageCS                                                       string
	groups                                                                    []EnrollmentGroup
	autoApprove                                                               bool
	explicitScope, explicitGroups, explicitToken                              bool // set in Options, so they win over DataDir's file
	retryAfter, history                                                       int
	log                                                                       *slog.Logger
	restBearer                                                                bool
	restPageSize                                                              int
	limits                                                                    Limits
	trustedCAs                                                                []*x509.Certificate
	dataExport                                                                DataExportOptions
	eventHubs                                                                 EventHubsOptions

	c2dLock       time.Duration // device HTTPS: Options.C2DLockTimeout
	c2dDeliveries int           // Options.C2DMaxDeliveryCount
}

func resolve(o *Options) (resolved, error) {
	if o == nil {
		o = &Options{}
	}
	r := resolved{
		mqttAddr: o.MQTTAddr, restAddr: o.RESTAddr, wsAddr: o.WebSocketAddr, amqpAddr: o.AMQPAddr, hubHost: o.HubHost, idScope: o.IDScope,
		certDir: o.CertDir, apiToken: o.APIToken, autoApprove: o.AutoApprove == nil || *o.AutoApprove,
		log: o.Logger, dataDir: o.DataDir, history: o.TelemetryHistory, explicitScope: o.IDScope != "", explicitGroups: len(o.Groups) > 0, explicitToken: o.APIToken != "",
		blobAddr: o.BlobAddr, storageCS: o.StorageConnectionString,
		restBearer: o.RESTAllowBearer, restPageSize: o.RESTPageSize, limits: o.Limits.withDefaults(),
		dataExport: o.DataExport,
		eventHubs:  o.EventHubs,
		c2dLock:    o.C2DLockTimeout, c2dDeliveries: o.C2DMaxDeliveryCount,
	}
	if r.certDir == "" && r.dataDir != "" {
		r.certDir = filepath.Join(r.dataDir, "certs")
	}
	if r.mqttAddr == "" {
		r.mqttAddr = "127.0.0.1:8883"
	}
	if r.wsAddr == "" {
		r.wsAddr = "127.0.0.1:443"
		if host, port, err := net.SplitHostPort(r.mqttAddr); err == nil && port == "0" {
			r.wsAddr = net.JoinHostPort(host, "0")
		}
	}
	if r.amqpAddr == "" {
		r.amqpAddr = "127.0.0.1:5671"
		if host, port, err := net.SplitHostPort(r.mqttAddr); err == nil && port == "0" {
			r.amqpAddr = net.JoinHostPort(host, "0")
		}
	}
	if r.blobAddr == "" {
		r.blobAddr = "127.0.0.1:10000"
		for _, a := range []string{r.mqttAddr, r.wsAddr} {
			if host, port, err := net.SplitHostPort(a); err == nil && port == "0" {
				r.blobAddr = net.JoinHostPort(host, "0")
				break
			}
		}
	}
	if r.restAddr == "" {
		r.restAddr = "127.0.0.1:8443"
	}
	if r.hubHost == "" {
		r.hubHost = "localhost"
	}
	if strings.ContainsAny(r.hubHost, "/?#@ ") {
		return r, fmt.Errorf("%w: hub host %q", ErrInvalid, r.hubHost)
	}
	if r.idScope == "" {
		r.idScope = "0ne" + strings.ToUpper(core.RandomHex(4))
	}
	if strings.ContainsAny(r.idScope, "/?#+& ") {
		return r, fmt.Errorf("%w: ID scope %q", ErrInvalid, r.idScope)
	}
	if r.apiToken == "" {
		r.apiToken = "SharedAccessSignature sr=emulator&sig=" + core.RandomHex(24)
	}
	switch {
	case o.RetryAfter < 0:
		r.retryAfter = 0
	case o.RetryAfter == 0:
		r.retryAfter = 1
	default:
		r.retryAfter = int(o.RetryAfter / time.Second)
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	for i, b := range o.TrustedCAs {
		cas, err := pki.ParseCertificates(b)
		if err != nil || len(cas) == 0 {
			return r, fmt.Errorf("%w: trusted CA %d holds no PEM certificate: %v", ErrInvalid, i+1, err)
		}
		r.trustedCAs = append(r.trustedCAs, cas...)
	}
	groups := o.Groups
	if len(groups) == 0 {
		groups = []EnrollmentGroup{{ID: "default", DisplayName: "SAS-IoT-Devices", Enabled: true}}
	}
	seen := map[string]bool{}
	for _, g := range groups {
		ng, err := core.NormalizeGroup(g)
		if err != nil {
			return r, err
		}
		if seen[ng.ID] {
			return r, fmt.Errorf("%w: enrollment group %s listed twice", ErrConflict, ng.ID)
		}
		seen[ng.ID] = true
		r.groups = append(r.groups, ng)
	}
	return r, nil
}
