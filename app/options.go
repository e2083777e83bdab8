package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// DefaultQueueLimit is how many inbound events of one kind (desired
// patches, commands, cloud-to-device messages) wait for their handler
// before new ones are refused. A refused desired patch is picked up by a
// twin sync on the live session, a refused command is answered 503,
// and a refused cloud-to-device message is left unsettled so the hub
// delivers it again.
const DefaultQueueLimit = 1024

// renewFraction is the part of a SAS token's lifetime after which a new one
// is presented: 80 %, as the Azure IoT C SDK does.
const renewFraction = 0.8

// maxRenewCheck bounds how long the supervisor sleeps before it looks at
// the wall clock again, so that a token is still renewed in time after the
// host was suspended (monotonic timers stop while a machine sleeps).
const maxRenewCheck = time.Minute

// DefaultDrainTimeout bounds how long a planned token renewal (over a
// transport that renews by reconnecting) and Close wait for the
// acknowledgements of operations in flight before closing the session.
const DefaultDrainTimeout = 10 * time.Second

// DefaultStableAfter is how long a session must stay up for its loss to
// count as a single drop: the first reconnect is then immediate and the
// backoff starts again from its base. A session lost sooner is reconnected
// with the backoff, which keeps growing while connections keep dropping.
const DefaultStableAfter = time.Second

// minTokenTTL is the shortest SAS lifetime accepted: shorter tokens would
// expire while a connection is being set up.
const minTokenTTL = 10 * time.Second

// Options configures a Client. The zero value of every optional field
// selects the documented default.
type Options struct {
	// DeviceID is the device identity and the DPS registration id. It may
	// be empty for X.509 credentials (the certificate's subject CN is
	// used) and for connection strings (the string's DeviceId is used).
	DeviceID string
	// IDScope is the DPS ID scope of the IoT Central application
	// ("0ne..."). Required unless the credential is a connection string.
	IDScope string
	// ProvisioningHost is the DPS endpoint. Default
	// domain.DefaultProvisioningHost.
	ProvisioningHost string
	// Credential is the secret the device connects with. A group key is
	// kept as is: the device key is derived from it for every use, so
	// re-provisioning always derives from the group key.
	Credential domain.Credential
	// ModelID is the IoT Plug and Play model id, sent to DPS as
	// {"modelId": ...} and to the hub in the connect request. Optional.
	ModelID string
	// LegacyModelID also sends the model id to DPS as "iotcModelId", the
	// key older IoT Central applications read.
	LegacyModelID bool
	// Transports are tried in order when provisioning and connecting: when
	// one fails with a retryable error the next one is tried and the
	// status callback sees domain.ReasonTransportFallback. At least one is
	// required; nil entries are refused.
	Transports []ports.Transport
	// Store caches the provisioning result between runs. Optional: without
	// it every Connect provisions (DPS allows a limited number of
	// registrations per device per hour).
	Store ports.CredentialStore
	// TokenTTL is the lifetime of the SAS tokens the client mints. Default
	// domain.DefaultTokenTTL (one hour); at least 10 s. A token is renewed
	// at 80 % of its lifetime: in place where the transport can, else by
	// reconnecting.
	TokenTTL time.Duration
	// Backoff is the reconnect backoff (exponential, full jitter, capped).
	// Zero value: 1 s base, 2 min cap. The retry count resets once a
	// connection stayed up for domain.DefaultBackoffStable.
	Backoff domain.Backoff
	// MaxAttempts bounds consecutive failed connection attempts in one
	// Connect call or one reconnect: a successful connection starts the
	// count again. 0 retries forever. Errors that are not retryable
	// (refused credentials, disabled device) are never retried.
	MaxAttempts int
	// StableAfter is how long a session must have been up for the backoff
	// to start again from its base and the first reconnect to be
	// immediate. Default DefaultStableAfter (1 s).
	StableAfter time.Duration
	// DrainTimeout bounds how long a planned token renewal by reconnecting
	// and Close wait for the acknowledgements of sends in flight. Default
	// DefaultDrainTimeout (10 s).
	DrainTimeout time.Duration
	// FailFast makes SendTelemetry, ReportProperties, AckProperty and
	// FetchTwin fail at once with domain.ErrNotConnected while the client
	// is connecting or reconnecting, and not send again what a dying
	// session did not acknowledge. By default they wait for the next
	// session within their context and resend (at least once).
	FailFast bool
	// ProvisioningPayload is custom data sent to DPS with the registration
	// (merged with {"modelId": ...}), for custom allocation policies; the
	// answer is read with Client.ProvisioningPayload. Optional; it must
	// encode as JSON.
	ProvisioningPayload map[string]any
	// SyncAllDesired hands every desired property in the twin to the
	// property handler at the first twin sync, acknowledged ones too, for
	// devices that keep their settings in memory only. Only values not yet
	// acknowledged at their version are acknowledged again. Default false:
	// only pending values are handed over.
	SyncAllDesired bool
	// QueueLimit bounds each inbound event queue. Default DefaultQueueLimit.
	QueueLimit int
	// Logger receives the client's logs; nil discards them. Keys and SAS
	// tokens are never logged.
	Logger *slog.Logger
	// OnStatus is called with every connection state change, in order,
	// from a goroutine of its own: a slow callback delays later status
	// reports but never the client. A callback 64 changes behind loses the
	// oldest it has not seen yet (logged at Warn); the latest is always
	// delivered.
	OnStatus func(domain.Status)
	// Outbox stores what EnqueueTelemetry accepted until the hub
	// acknowledged it; the client's pump delivers it in order. The client
	// owns it once New succeeded: Close closes it (when New fails, the
	// caller still owns it). Optional: without it EnqueueTelemetry fails
	// with domain.ErrInvalidConfig.
	Outbox ports.Outbox
	// OutboxMaxAge drops outbox messages older than this, oldest first,
	// before delivering and when the outbox is full, with a log line and
	// OutboxStats.Expired. Default 0: messages never expire.
	OutboxMaxAge time.Duration
}

func (o Options) withDefaults() Options {
	if o.ProvisioningHost == "" {
		o.ProvisioningHost = domain.DefaultProvisioningHost
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = domain.DefaultTokenTTL
	}
	if o.QueueLimit == 0 {
		o.QueueLimit = DefaultQueueLimit
	}
	if o.StableAfter == 0 {
		o.StableAfter = DefaultStableAfter
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	return o
}

// validate checks the options and returns the registration id.
func (o Options) validate() (regID string, err error) {
	bad := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w: "+format, append([]any{domain.ErrInvalidConfig}, args...)...)
	}
	if len(o.Transports) == 0 {
		return bad("no transport")
	}
	for i, t := range o.Transports {
		if t == nil {
			return bad("transport %d is nil", i)
		}
	}
	if err := o.Credential.Validate(); err != nil {
		return "", err
	}
	if o.TokenTTL < minTokenTTL {
		return bad("token TTL %v is below %v", o.TokenTTL, minTokenTTL)
	}
	if err := o.Backoff.Validate(); err != nil {
		return "", err
	}
	if o.MaxAttempts < 0 {
		return bad("negative MaxAttempts")
	}
	if o.QueueLimit < 0 {
		return bad("negative QueueLimit")
	}
	if o.StableAfter < 0 || o.DrainTimeout < 0 {
		return bad("negative StableAfter or DrainTimeout")
	}
	if err := o.validateOutbox(); err != nil {
		return "", err
	}
	if o.ProvisioningPayload != nil {
		if _, err := json.Marshal(o.ProvisioningPayload); err != nil {
			return bad("ProvisioningPayload does not encode as JSON: %v", err)
		}
	}
	switch o.Credential.Kind {
	case domain.KindConnectionString:
		cs, err := domain.ParseConnectionString(o.Credential.ConnectionString)
		if err != nil {
			return "", err
		}
		if cs.X509 {
			if _, err := o.Credential.TLSCertificate(); err != nil {
				return "", err
			}
		}
		if cs.ModuleID != "" {
			return bad("module identities are not supported")
		}
		if o.DeviceID != "" && o.DeviceID != cs.DeviceID {
			return bad("DeviceID %q differs from the connection string's %q", o.DeviceID, cs.DeviceID)
		}
		return cs.DeviceID, nil
	case domain.KindX509:
		cn, err := o.Credential.X509CommonName()
		if err != nil {
			return "", err
		}
		if o.DeviceID == "" {
			o.DeviceID = cn
		}
	}
	if o.IDScope == "" {
		return bad("IDScope is required")
	}
	if o.DeviceID == "" {
		return bad("DeviceID is required")
	}
	return o.DeviceID, nil
}

// errGaveUp marks the error that ended the supervisor.
var errGaveUp = errors.New("iotc: gave up reconnecting")
