package amqphub

import (
	"context"
	"crypto/x509"
	"errors"
	"time"
)

// Errors a Backend returns (wrapped, matched with errors.Is) to choose the
// AMQP error the device sees. Any other error becomes amqp:internal-error.
var (
	// ErrUnauthorized: bad, expired or missing credentials, or a disabled
	// device (amqp:unauthorized-access; CBS status-code 401).
	ErrUnauthorized = errors.New("amqphub: unauthorized")
	// ErrNotFound: unknown device or registration (amqp:not-found).
	ErrNotFound = errors.New("amqphub: not found")
	// ErrTooLarge: over a service size limit, e.g. telemetry over 256 KiB
	// (amqp:resource-limit-exceeded).
	ErrTooLarge = errors.New("amqphub: over a service size limit")
	// ErrThrottled: the backend refuses for now (com.microsoft:server-busy).
	ErrThrottled = errors.New("amqphub: throttled")
	// ErrInvalid: a malformed request (amqp:invalid-field).
	ErrInvalid = errors.New("amqphub: invalid request")
)

// Errors returned by the DeviceConn methods the backend calls.
var (
	// ErrNotSubscribed: the device has not attached the link (methods) or
	// sent the subscription (desired properties) the call needs.
	ErrNotSubscribed = errors.New("amqphub: device is not subscribed")
	// ErrDeviceGone: the device's AMQP session ended (connection closed,
	// token expired, replaced) before or during the call.
	ErrDeviceGone = errors.New("amqphub: device connection ended")
	// ErrBusy: too many messages wait on one link (more than OutboxSize).
	ErrBusy = errors.New("amqphub: link outbox full")
)

// Backend is what the AMQP application layer needs from the emulator's
// state. The emulator implements it with an adapter over the state it
// already keeps for MQTT (devices, keys, twins, C2D queues, DPS
// operations), so that both protocols share it.
//
// Methods are called from the connection goroutines of this package and
// must return promptly (no network I/O); they are never called while a lock
// of this package is held, so they may call DeviceConn methods.
type Backend interface {
	// AuthenticateDevice verifies a hub SAS token for deviceID (the token's
	// sr must name {hubHost}/devices/{deviceID}; signature and expiry are
	// checked against the device's keys) and returns the token's expiry.
	// Errors: ErrUnauthorized (bad signature, expired, wrong audience,
	// disabled), ErrNotFound (unknown device). The token is a secret: never
	// log it.
	AuthenticateDevice(ctx context.Context, deviceID, sasToken string) (expiry time.Time, err error)
	// AuthenticateDeviceX509 verifies a TLS client chain (leaf first) for
	// deviceID: the leaf CN must be the device id and the chain must verify
	// against the device's enrollment CA. Errors as AuthenticateDevice.
	AuthenticateDeviceX509(ctx context.Context, deviceID string, certs []*x509.Certificate) error
	// ConnectDevice makes dc the device's one live hub connection, across
	// protocols: a previous connection of the same device (MQTT or AMQP) is
	// closed by the backend (for AMQP with DeviceConn.Close). It returns the
	// session through which this package reports the device's traffic; the
	// package calls DeviceSession.Close exactly once when the session ends.
	// Errors: ErrNotFound, ErrUnauthorized (disabled device).
	ConnectDevice(ctx context.Context, deviceID string, dc DeviceConn) (DeviceSession, error)
	// AuthenticateDPS verifies a registration's credentials: a DPS SAS token
	// (sr {scope}/registrations/{regID}, signed with an individual key or a
	// key derived from a group key) or, when SASToken is empty, the TLS
	// client chain against the X.509 enrollment groups. It returns the
	// session that registers. Errors: ErrUnauthorized, ErrNotFound (unknown
	// ID scope).
	AuthenticateDPS(ctx context.Context, cred DPSCredentials) (DPSSession, error)
}

// DPSCredentials are what a registration presents to DPS over AMQP.
type DPSCredentials struct {
	// IDScope and RegistrationID come from the SASL PLAIN user name or the
	// link address ({scope}/registrations/{regID}).
	IDScope, RegistrationID string
	// SASToken is the SASL PLAIN password; "" for X.509. A secret: never log it.
	SASToken string
	// Certificates is the TLS client chain, leaf first; nil without one.
	Certificates []*x509.Certificate
}

// DPSSession registers one authenticated registration id.
type DPSSession interface {
	// Register runs a register request (body: {"registrationId":…,
	// "payload":…}; force is the iotdps-forceRegistration property) and
	// returns the answer DPS would give.
	Register(ctx context.Context, body []byte, force bool) DPSResponse
	// OperationStatus answers an operation-status poll for operationID.
	OperationStatus(ctx context.Context, operationID string) DPSResponse
}

// DPSResponse is a DPS answer, the same on every transport.
type DPSResponse struct {
	// Status is the HTTP-like status: 200 (final), 202 (assigning), 4xx/5xx
	// errors. Errors are sent as a rejected outcome of the request whose
	// error info carries status-code, retry-after and the body as description.
	Status int
	// RetryAfter is the retry-after in seconds; negative sends none.
	RetryAfter int
	// Body is the RegistrationOperationStatus (or error) JSON.
	Body []byte
}

// Telemetry is one device-to-cloud message as received over AMQP, with the
// AMQP properties mapped to the MQTT property-bag names (domain.Prop*), so
// the backend stores messages of both protocols alike.
type Telemetry struct {
	// Body is the concatenation of the message's data sections.
	Body []byte
	// Component is the dt-subject message annotation ("" = root component).
	Component string
	// System holds "$.mid", "$.cid", "$.ct", "$.ce", "$.to", "$.uid",
	// "$.exp", "$.sub" and "$.ifid" when present.
	System map[string]string
	// Properties are the application properties, values formatted as text.
	Properties map[string]string
}

// C2DMessage is a cloud-to-device message the backend hands out for delivery.
type C2DMessage struct {
	// LockToken identifies the delivery in SettleC2D; opaque to this package.
	LockToken string
	// MessageID is sent as the message-id property; CorrelationID, when not
	// "", as correlation-id.
	MessageID, CorrelationID string
	// Body is sent as one data section.
	Body []byte
	// Properties are sent as application properties (iothub-ack included
	// when the backend sets it).
	Properties map[string]string
	// ContentType and ContentEncoding are sent when not "".
	ContentType, ContentEncoding string
}

// C2DOutcome is how the device settled a cloud-to-device message.
type C2DOutcome int

// The cloud-to-device outcomes (IoT Hub's names for the AMQP ones).
const (
	// C2DComplete: accepted; remove the message from the queue.
	C2DComplete C2DOutcome = iota
	// C2DAbandon: released or modified (or the link ended before the device
	// settled); the message goes back to the queue for redelivery.
	C2DAbandon
	// C2DReject: rejected; the message is dead-lettered (removed).
	C2DReject
)

// String returns "complete", "abandon" or "reject".
func (o C2DOutcome) String() string {
	switch o {
	case C2DComplete:
		return "complete"
	case C2DAbandon:
		return "abandon"
	case C2DReject:
		return "reject"
	}
	return "unknown"
}

// DeviceSession is the backend's side of one authenticated AMQP device
// session, returned by Backend.ConnectDevice. Methods are called from this
// package's goroutines, never under its locks.
type DeviceSession interface {
	// Telemetry stores one device-to-cloud message. Errors: ErrTooLarge
	// (rejected with amqp:resource-limit-exceeded), ErrThrottled, others.
	Telemetry(ctx context.Context, t Telemetry) error
	// Twin returns the twin document {"desired":{…},"reported":{…}} with
	// status 200, or an error status (404, 500) and an error body.
	Twin(ctx context.Context) (status int, body []byte)
	// PatchReported applies a reported-properties patch and returns 204 and
	// the new reported $version, or an error status (400 for a bad or too
	// large patch, 404) with an error body.
	PatchReported(ctx context.Context, patch []byte) (status int, version int64, body []byte)
	// NextC2D hands out the oldest queued cloud-to-device message that is
	// not in flight, marking it in flight on this session; ok is false when
	// there is none. The package calls it again after DeviceConn.NotifyC2D.
	NextC2D(ctx context.Context) (msg C2DMessage, ok bool)
	// SettleC2D records the device's outcome for a message handed out by
	// NextC2D (C2DAbandon makes it available again).
	SettleC2D(ctx context.Context, lockToken string, outcome C2DOutcome) error
	// SubscriptionsChanged is called after the device attached or detached
	// a link, or subscribed or unsubscribed desired properties (see
	// DeviceConn.Subscribed), so the backend can wake waiters.
	SubscriptionsChanged()
	// Close ends the session: the device goes offline unless another
	// connection already replaced it; messages still in flight on it go
	// back to the queue. Called exactly once.
	Close()
}

// Feature is a device-side subscription the backend can ask about.
type Feature int

// Features of DeviceConn.Subscribed.
const (
	// FeatureMethods: a direct-method request link is attached.
	FeatureMethods Feature = iota
	// FeatureDesired: the device sent PUT /notifications/twin/properties/desired.
	FeatureDesired
	// FeatureTwin: a twin response link is attached.
	FeatureTwin
	// FeatureC2D: a cloud-to-device link is attached.
	FeatureC2D
)

// DeviceConn is this package's side of a device session, handed to
// Backend.ConnectDevice: the way the backend reaches an AMQP device. Its
// methods are safe for concurrent use; none of them calls the Backend
// synchronously, so the backend may call them while holding its own lock
// (except InvokeMethod, which waits for the device).
type DeviceConn interface {
	// Protocol returns "amqp".
	Protocol() string
	// Subscribed reports whether the device holds the subscription f.
	Subscribed(f Feature) bool
	// PushDesired queues a desired-properties patch (JSON with "$version")
	// for the device's twin link. Errors: ErrNotSubscribed, ErrDeviceGone,
	// ErrBusy.
	PushDesired(patch []byte) error
	// InvokeMethod sends a direct-method request (name is
	// "component*command" or "command"; payload is JSON) and waits for the
	// device's answer or ctx (the caller's response timeout). Errors:
	// ErrNotSubscribed, ErrDeviceGone, ErrBusy, ctx.Err(), or an error
	// saying the device rejected the request.
	InvokeMethod(ctx context.Context, name string, payload []byte) (status int, body []byte, err error)
	// NotifyC2D tells the session that a cloud-to-device message may be
	// waiting (it then calls DeviceSession.NextC2D). Never blocks.
	NotifyC2D()
	// Close ends the session because of reason (e.g. a newer connection of
	// the device): its links are detached (the connection closed when it
	// carries no other device) with amqp:connection:forced and
	// DeviceSession.Close follows. Never blocks; a no-op once ended.
	Close(reason error)
}
