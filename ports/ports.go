// Package ports declares what the device application (package app) needs
// from the outside world: a provisioning service, a hub to open sessions
// with, a store for the credentials cache and an outbox of telemetry not
// yet delivered. Transport adapters (adapters/mqtt, adapters/mqttws,
// adapters/amqp) and storage adapters (adapters/filestore,
// adapters/memoutbox, adapters/fileoutbox) implement them; package mocks
// holds generated mocks.
//
// Every interface is small and non-generic. Errors follow one contract:
// adapters wrap the domain sentinels (domain.ErrUnauthorized,
// domain.ErrDeviceNotFound, domain.ErrMessageTooLarge, domain.ErrTimeout,
// domain.ErrNotConnected, ...) or return a *domain.HubError /
// *domain.ProvisioningError carrying the service status, so that app can
// decide with domain.IsRetryable and never looks at protocol types.
// Every error that means "the session died" (connection lost, reset,
// closed while a request was in flight, written to a dead connection)
// wraps domain.ErrNotConnected, and no error text carries a network
// address, a key or a token. Every call returns within about 100 ms of
// its context ending.
// Adapters never reconnect on their own: app owns the single retry loop.
package ports

//go:generate go run github.com/golang/mock/mockgen@v1.6.0 -source=ports.go -destination=../mocks/ports.go -package=mocks
//go:generate go run github.com/golang/mock/mockgen@v1.6.0 -source=batch.go -destination=../mocks/batch.go -package=mocks
//go:generate go run github.com/golang/mock/mockgen@v1.6.0 -source=fileupload.go -destination=../mocks/fileupload.go -package=mocks

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"github.com/iotc-go/iotc/domain"
)

// ErrNoCredentials is returned by CredentialStore.Load when nothing usable
// is stored (absent, unreadable or corrupt).
var ErrNoCredentials = errors.New("no cached credentials")

// Auth is how a device authenticates one connection.
type Auth struct {
	// SASToken is the password for symmetric-key devices; empty for X.509.
	SASToken string
	// Certificate is the TLS client certificate of X.509 devices.
	Certificate *tls.Certificate
}

// ProvisioningRequest is one registration with the Device Provisioning
// Service.
type ProvisioningRequest struct {
	// Host is the DPS host name (domain.DefaultProvisioningHost in Azure).
	Host string
	// IDScope is the DPS ID scope ("0ne...").
	IDScope string
	// Registration is the request body.
	Registration domain.RegistrationRequest
	// Auth signs the request (SAS resource domain.DPSResource, key name
	// domain.DPSKeyName) or carries the X.509 certificate.
	Auth Auth
}

// Provisioner registers a device with DPS.
type Provisioner interface {
	// Provision registers and polls until DPS gives a final answer,
	// honouring retry-after. It returns the assignment, a
	// *domain.ProvisioningError for a failed or disabled registration,
	// an error wrapping domain.ErrUnauthorized when DPS refuses the
	// credentials, or a retryable network error. It stops when ctx ends.
	Provision(ctx context.Context, req ProvisioningRequest) (domain.Assignment, error)
}

// HubConnection says which hub to open a session with, as whom.
type HubConnection struct {
	// Host is the IoT hub host name.
	Host string
	// DeviceID is the device identity on the hub.
	DeviceID string
	// ModelID is the IoT Plug and Play model id announced on connect.
	ModelID string
	// Auth authenticates the session; a SAS token's expiry bounds it.
	Auth Auth
}

// MethodRequest is a direct-method invocation as the transport received it.
type MethodRequest struct {
	// Method is the raw method name ("component*command" or "command").
	Method string
	// RequestID correlates the response.
	RequestID string
	// Payload is the request body (may be empty).
	Payload []byte
}

// EventHandler receives what the hub pushes to the device. Adapters call
// it from their own goroutines; implementations must return quickly and
// must be safe for concurrent use.
type EventHandler interface {
	// OnDesiredPatch receives a desired-properties patch (JSON with $version).
	OnDesiredPatch(patch []byte)
	// OnMethod receives a direct-method request with its reply: respond
	// sends the response (any status, a JSON payload of at most
	// domain.MaxMethodPayloadSize, 128 KiB) on the session the request
	// came on and returns when it was sent. It fails with
	// domain.ErrMessageTooLarge before sending an oversized payload, with
	// an error wrapping domain.ErrNotConnected once that session has died
	// (a request id means nothing on another connection). It may be
	// called from any goroutine; the hub answers the caller with 504 when
	// the response comes after its timeout.
	OnMethod(req MethodRequest, respond func(ctx context.Context, status int, payload []byte) error)
	// OnCloudMessage receives a cloud-to-device message. The message is
	// settled with the hub only when settle is called, with the outcome
	// the application chose (domain.Complete, domain.Abandon,
	// domain.Reject); calls after the first are ignored. A message never
	// settled is delivered again on a later connection. settle never
	// blocks for long and may be called from any goroutine, also after the
	// session died (it then does nothing: the hub delivers the message
	// again). A settlement made before HubSession.Close is sent before the
	// session disconnects.
	OnCloudMessage(msg domain.CloudMessage, settle func(domain.Outcome))
}

// HubConnector opens sessions with an IoT hub.
type HubConnector interface {
	// Connect opens one authenticated session and subscribes to desired
	// patches, methods and cloud-to-device messages, delivering them to
	// events. It fails with an error wrapping domain.ErrUnauthorized when
	// the hub refuses the credentials, domain.ErrDeviceNotFound for an
	// unknown device, or a retryable network error.
	Connect(ctx context.Context, conn HubConnection, events EventHandler) (HubSession, error)
}

// TelemetrySender sends device-to-cloud messages.
type TelemetrySender interface {
	// SendTelemetry sends m at least once and returns when the hub
	// acknowledged it. It fails with domain.ErrMessageTooLarge before
	// sending an oversized message and with domain.ErrNotConnected when
	// the session has died (the message may or may not have arrived).
	SendTelemetry(ctx context.Context, m domain.Message) error
}

// TwinClient reads the twin and reports properties.
type TwinClient interface {
	// GetTwin returns the twin document {"desired":...,"reported":...}.
	// A refusal carries the status as *domain.HubError.
	GetTwin(ctx context.Context) ([]byte, error)
	// PatchReported applies a reported-properties patch and returns the
	// new reported version. A refusal carries the status as
	// *domain.HubError (400 for bad JSON, 413/ErrMessageTooLarge over
	// 32 KiB, 429 throttled).
	PatchReported(ctx context.Context, patch []byte) (version int64, err error)
}

// SessionLifecycle is the life of one session.
type SessionLifecycle interface {
	// Done is closed when the session has ended, by Close or by failure.
	Done() <-chan struct{}
	// Err says why the session ended: nil after Close, otherwise the
	// failure (wrapping domain.ErrUnauthorized when the hub dropped the
	// session for an expired token, if the transport can tell).
	Err() error
	// RenewToken presents a new SAS token on the open session. Transports
	// that cannot (MQTT) return domain.ErrNotSupported; app then reconnects.
	RenewToken(ctx context.Context, sasToken string) error
	// Close ends the session and waits for its goroutines. It is
	// idempotent.
	Close() error
}

// DoneNotifier is implemented by sessions that can call a function when
// they end, so that the client watches a connected session without a
// goroutine of its own (an idle device then costs only its transport's
// goroutines). It is optional: app waits on Done for sessions without it.
type DoneNotifier interface {
	// AfterDone arranges for f to run on a goroutine of its own once the
	// session has ended (at once when it already has). stop cancels that:
	// it reports false when f was already started or stopped before.
	AfterDone(f func()) (stop func() bool)
}

// HubSession is one open, authenticated session with an IoT hub.
type HubSession interface {
	TelemetrySender
	TwinClient
	SessionLifecycle
}

// Transport is what a transport adapter provides: provisioning and hub
// sessions over one protocol. Choosing a transport is choosing a value.
type Transport interface {
	Provisioner
	HubConnector
	// Name is a short name for logs and status reports ("mqtt", "mqttws",
	// "amqp", "amqpws").
	Name() string
}

// CredentialStore keeps the provisioning result between runs.
type CredentialStore interface {
	// Load returns the stored record, or an error wrapping
	// ErrNoCredentials when there is none usable. A corrupt record is
	// reported as ErrNoCredentials, never as a crash.
	Load(ctx context.Context) (domain.CachedCredentials, error)
	// Save stores the record atomically.
	Save(ctx context.Context, c domain.CachedCredentials) error
}

// OutboxDamageReporter is implemented by a durable outbox that can find
// damaged records on disk. The client reads it for OutboxStats and logs
// what it reports when it is built. Damage returns what was found when the
// outbox was opened plus what was lost since; it never fails.
type OutboxDamageReporter interface {
	Damage() domain.OutboxDamage
}

// OutboxEntry is one message stored in an Outbox.
type OutboxEntry struct {
	// Seq is the entry's place in the outbox, given by Append: it grows
	// with every append, also across restarts of a durable outbox, and is
	// never 0.
	Seq uint64
	// Enqueued is when the message was accepted (wall clock), for the
	// maximum age.
	Enqueued time.Time
	// Message is the telemetry, with its message id set.
	Message domain.Message
}

// Outbox is a bounded FIFO of telemetry not yet acknowledged by the hub,
// drained in order by the client's pump: Peek the oldest entries, send
// them, Remove what was acknowledged. A durable outbox keeps its entries
// across restarts of the process. Implementations are safe for concurrent
// use; the client has at most one reader (Peek/Remove) and any number of
// writers (Append).
//
// Error contract: Append fails with an error wrapping domain.ErrOutboxFull
// when the message would exceed the outbox's domain.OutboxLimit (nothing
// stored is dropped to make room), with domain.ErrClosed after Close, with
// ctx's error when ctx has ended before anything was stored, and with a
// wrapped I/O error when the store cannot write (the message may then be
// stored or not: it is never half stored). Peek and Remove fail with
// domain.ErrClosed after Close or a wrapped I/O error. A corrupt durable
// store is reported when it is opened (its adapter documents what it
// recovers), never by a panic.
type Outbox interface {
	// Append stores m (its MessageID already set) at the tail and returns
	// its Seq once it is stored as durably as the adapter promises.
	Append(ctx context.Context, m domain.Message, enqueued time.Time) (seq uint64, err error)
	// Peek returns up to max of the oldest entries, in Seq order, without
	// removing them; none when the outbox is empty. The caller must not
	// modify what it returns.
	Peek(ctx context.Context, max int) ([]OutboxEntry, error)
	// Remove deletes every entry whose Seq is at most through (delivered
	// or expired). Removing what is already gone is not an error. A
	// removal may be lost in a crash (the entries are then delivered
	// again, with the same message id): only Append is made durable.
	Remove(ctx context.Context, through uint64) error
	// Len returns how many messages are stored and their bytes, counted
	// as domain.Message.Size.
	Len() (messages int, bytes int64)
	// Close releases the store; the entries stay on disk in a durable
	// outbox. It is idempotent.
	Close() error
}
