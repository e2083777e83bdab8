package emulator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator/internal/pki"
)

// Service limits the emulator enforces, as IoT Hub does.
const (
	// MaxTelemetryBody is the largest device-to-cloud message body (256 KiB);
	// a bigger one closes the device's connection.
	MaxTelemetryBody = 256 << 10
	// MaxC2DBody is the largest cloud-to-device message body (64 KiB).
	MaxC2DBody = 64 << 10
	// MaxC2DQueue is how many cloud-to-device messages may wait for one
	// device (delivered but not yet acknowledged ones included).
	MaxC2DQueue = 50
	// MaxTwinSection is the largest desired or reported section (32 KiB of
	// JSON); a reported patch that would exceed it gets status 400.
	MaxTwinSection = 32 << 10
	// DefaultCommandTimeout is the InvokeCommand timeout used when none is
	// given (IoT Hub's default responseTimeoutInSeconds).
	DefaultCommandTimeout = 30 * time.Second
	// MaxCommandTimeout caps the InvokeCommand timeout (IoT Hub: 300 s).
	MaxCommandTimeout = 300 * time.Second
)

// Options configure Start. The zero value (or nil) is a working emulator on
// the standard loopback ports.
type Options struct {
	// MQTTAddr is the MQTT/TLS listener (DPS and hub). Default
	// "127.0.0.1:8883"; "127.0.0.1:0" picks a free port (see MQTTAddr()).
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
	// CertDir holds ca.pem, ca-key.pem, server.pem and server-key.pem; they
	// are read when present and generated (and written) when not. Default:
	// DataDir/certs when DataDir is set, else a temporary directory removed
	// by Close.
	CertDir string
	// DataDir, when set, makes the emulator's state survive a restart: Start
	// creates the directory (mode 0700) when missing, loads DataDirFile from
	// it when present and writes it at once; the running emulator rewrites
	// it (atomically, mode 0600) at most once every DataDirSaveInterval
	// while something changed, and Close writes it a last time. It keeps the
	// ID scope, the enrollment groups, and every device with its keys,
	// model id, group, attestation, enabled/provisioned flags, twin (desired
	// and reported with $version and $metadata) and queued cloud-to-device
	// messages. It does not keep connections, pending commands, telemetry
	// or the API token. The file holds the group and device keys in clear:
	// it is the emulator's own secret store, readable only by its owner.
	//
	// When both are given, an explicit IDScope or Groups option replaces
	// the file's ID scope or enrollment groups (devices keep the keys they
	// were given); devices, twins and queues always come from the file.
	// A file that cannot be read or decoded makes Start fail with
	// ErrDataFile and is left untouched. Default "": state is in memory only.
	DataDir string
	// APIToken guards the REST API (header "Authorization: <token>").
	// Default: a random token (see APIToken()).
	APIToken string
	// RetryAfter is the retry-after DPS sends with 202 answers, written in
	// whole seconds, rounded down (so anything under a second, or a negative
	// value, sends retry-after=0). Default (zero) 1s.
	RetryAfter time.Duration
	// Logger receives one line per refused connection, dropped connection
	// and rejected request. nil discards. Secrets are never logged.
	Logger *slog.Logger
}

// EnrollmentGroup is a DPS enrollment group: symmetric keys (devices
// derive their key from the group key and their registration id) or, when
// CACertPEM is set, an X.509 CA whose leaf certificates' CN is the device id.
type EnrollmentGroup struct {
	// ID names the group (letters, digits, '-', '.', '_', ':'; at most 128).
	ID string
	// DisplayName is shown by the REST API; default ID.
	DisplayName string
	// Enabled groups can register devices; devices of a disabled group get
	// DPS status "disabled".
	Enabled bool
	// PrimaryKey and SecondaryKey are base64 symmetric keys (generated when
	// empty for a symmetric-key group; ignored for an X.509 group).
	PrimaryKey, SecondaryKey string
	// CACertPEM holds the trusted CA certificate(s) of an X.509 group.
	CACertPEM []byte
}

// IsX509 reports whether the group authenticates with certificates.
func (g EnrollmentGroup) IsX509() bool { return len(g.CACertPEM) > 0 }

func randomKey() string {
	b := make([]byte, 64)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validID checks an IoT Hub device id (also used for groups): 1..128 ASCII
// letters, digits and - . % _ * ? ! ( ) , : = @ $ ' (no '/', '+' or '#',
// which would break MQTT topics).
func validID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: id must be 1..128 characters", ErrInvalid)
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-.%_*?!(),:=@$'", r):
		default:
			return fmt.Errorf("%w: id %q has character %q", ErrInvalid, id, r)
		}
	}
	return nil
}

// normalizeGroup validates g and fills its defaults.
func normalizeGroup(g EnrollmentGroup) (EnrollmentGroup, error) {
	if err := validID(g.ID); err != nil {
		return g, fmt.Errorf("enrollment group: %w", err)
	}
	if g.DisplayName == "" {
		g.DisplayName = g.ID
	}
	if g.IsX509() {
		if _, err := pki.ParseCertificates(g.CACertPEM); err != nil {
			return g, fmt.Errorf("%w: enrollment group %s: %v", ErrInvalid, g.ID, err)
		}
		g.CACertPEM = append([]byte(nil), g.CACertPEM...)
		g.PrimaryKey, g.SecondaryKey = "", ""
		return g, nil
	}
	if g.PrimaryKey == "" {
		g.PrimaryKey = randomKey()
	}
	if g.SecondaryKey == "" {
		g.SecondaryKey = randomKey()
	}
	for _, k := range []string{g.PrimaryKey, g.SecondaryKey} {
		if err := domain.ValidateKey(k); err != nil {
			return g, fmt.Errorf("%w: enrollment group %s: key is not base64", ErrInvalid, g.ID)
		}
	}
	return g, nil
}

// resolved is Options with every default applied.
type resolved struct {
	mqttAddr, restAddr, wsAddr, amqpAddr, hubHost, idScope, certDir, apiToken string
	dataDir                                                                   string
	groups                                                                    []EnrollmentGroup
	autoApprove                                                               bool
	explicitScope, explicitGroups                                             bool // set in Options, so they win over DataDir's file
	retryAfter                                                                int
	log                                                                       *slog.Logger
}

func resolve(o *Options) (resolved, error) {
	if o == nil {
		o = &Options{}
	}
	r := resolved{
		mqttAddr: o.MQTTAddr, restAddr: o.RESTAddr, wsAddr: o.WebSocketAddr, amqpAddr: o.AMQPAddr, hubHost: o.HubHost, idScope: o.IDScope,
		certDir: o.CertDir, apiToken: o.APIToken, autoApprove: o.AutoApprove == nil || *o.AutoApprove,
		log: o.Logger, dataDir: o.DataDir, explicitScope: o.IDScope != "", explicitGroups: len(o.Groups) > 0,
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
		r.idScope = "0ne" + strings.ToUpper(randomHex(4))
	}
	if strings.ContainsAny(r.idScope, "/?#+& ") {
		return r, fmt.Errorf("%w: ID scope %q", ErrInvalid, r.idScope)
	}
	if r.apiToken == "" {
		r.apiToken = "SharedAccessSignature sr=emulator&sig=" + randomHex(24)
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
	groups := o.Groups
	if len(groups) == 0 {
		groups = []EnrollmentGroup{{ID: "default", DisplayName: "SAS-IoT-Devices", Enabled: true}}
	}
	seen := map[string]bool{}
	for _, g := range groups {
		ng, err := normalizeGroup(g)
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
