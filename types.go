package iotc

import (
	"maps"
	"time"

	"github.com/iotc-go/iotc/app"
	"github.com/iotc-go/iotc/domain"
)

// Version is this SDK's version (see CHANGELOG.md). The client announces
// "iotc-go/<Version>" to DPS and the hub, followed by Config.ProductInfo.
const Version = domain.Version

// Errors the client returns; match them with errors.Is.
var (
	// ErrNotConnected: the client is not connected: Connect was not called
	// or failed, or (with Config.FailFast) it is reconnecting; also joined
	// to ctx's error when a send's context ended while offline.
	ErrNotConnected = domain.ErrNotConnected
	// ErrSuperseded: AckProperty for a version older than one already
	// handed to the property handler; it is not reported.
	ErrSuperseded = domain.ErrSuperseded
	// ErrClosed: Close was called, or the client gave up (see Client.Err).
	ErrClosed = domain.ErrClosed
	// ErrMessageTooLarge: over 256 KiB telemetry, 32 KiB reported
	// properties or 128 KiB command payloads (IoT Hub limits), checked
	// before sending.
	ErrMessageTooLarge = domain.ErrMessageTooLarge
	// ErrUnauthorized: DPS or the hub refused the credentials. Never retried.
	ErrUnauthorized = domain.ErrUnauthorized
	// ErrDeviceNotFound: the hub does not know the device.
	ErrDeviceNotFound = domain.ErrDeviceNotFound
	// ErrThrottled: IoT Hub or DPS throttled the request (429).
	ErrThrottled = domain.ErrThrottled
	// ErrTimeout: the service did not answer in time.
	ErrTimeout = domain.ErrTimeout
	// ErrInvalidConfig: the configuration cannot work.
	ErrInvalidConfig = domain.ErrInvalidConfig
	// ErrInvalidKey: a symmetric key is not base64.
	ErrInvalidKey = domain.ErrInvalidKey
	// ErrUntrustedServer: the server's certificate failed TLS
	// verification (Config.RootCAs lacks its CA, another host name,
	// expired). Never retried: Connect returns it at once.
	ErrUntrustedServer = domain.ErrUntrustedServer
	// ErrConnectionRefused: nothing accepted the TCP connection (wrong
	// port, service down). Retried with the backoff; Client.Err and
	// Client.Status carry it meanwhile.
	ErrConnectionRefused = domain.ErrConnectionRefused
	// ErrHostNotFound: DNS does not know the host name. Retried with the
	// backoff; Client.Err and Client.Status carry it meanwhile.
	ErrHostNotFound = domain.ErrHostNotFound
	// ErrOutboxFull: EnqueueTelemetry found the outbox at Config.Outbox.Limit.
	// The message was not stored and nothing stored was dropped; retry once
	// the outbox drained (see Client.OutboxStats).
	ErrOutboxFull = domain.ErrOutboxFull
	// ErrOutboxDamaged: New found damaged records in Config.Outbox.Dir and
	// could not move them aside to a quarantine file (the error names the
	// segment and the quarantine file), so opening the outbox could destroy
	// messages it still holds. Damage that was moved aside is not an error:
	// New succeeds, the loss is logged at Error level and counted in
	// OutboxStats (Lost, Torn, QuarantinedBytes).
	ErrOutboxDamaged = domain.ErrOutboxDamaged
)

// Outcome is how a cloud-to-device message or queued command is settled
// with IoT Hub.
type Outcome = domain.Outcome

// Settlement outcomes. Over MQTT, Abandon leaves the message
// unacknowledged until the next connection and Reject acknowledges it
// (MQTT cannot dead-letter); over AMQP they are released and rejected.
const (
	// Complete: handled; the hub deletes the message. The zero value.
	Complete = domain.Complete
	// Abandon: not now; the hub delivers it again (at most 10 times).
	Abandon = domain.Abandon
	// Reject: never; the hub dead-letters it.
	Reject = domain.Reject
)

// HubError is a refused hub or DPS request carrying the service status.
type HubError = domain.HubError

// ProvisioningError is a final DPS answer other than "assigned" (failed,
// disabled, blacklisted).
type ProvisioningError = domain.ProvisioningError

// Status is one connection state change: State, Reason, Err, Transport.
type Status = domain.Status

// State is a connection state.
type State = domain.State

// Connection states.
const (
	StateDisconnected = domain.StateDisconnected
	StateConnecting   = domain.StateConnecting
	StateConnected    = domain.StateConnected
	StateReconnecting = domain.StateReconnecting
	StateClosed       = domain.StateClosed
)

// Reason says why the state changed; the values of the Python iotc
// IOTCConnectionState are kept.
type Reason = domain.Reason

// Reasons of state changes.
const (
	ReasonNone                  = domain.ReasonNone
	ReasonExpiredToken          = domain.ReasonExpiredToken
	ReasonDeviceDisabled        = domain.ReasonDeviceDisabled
	ReasonBadCredential         = domain.ReasonBadCredential
	ReasonRetryExpired          = domain.ReasonRetryExpired
	ReasonNoNetwork             = domain.ReasonNoNetwork
	ReasonCommunicationError    = domain.ReasonCommunicationError
	ReasonConnectionOK          = domain.ReasonConnectionOK
	ReasonClientClose           = domain.ReasonClientClose
	ReasonTransportFallback     = domain.ReasonTransportFallback
	ReasonReprovisioned         = domain.ReasonReprovisioned
	ReasonDesiredChangedOffline = domain.ReasonDesiredChangedOffline
	ReasonUntrustedServer       = domain.ReasonUntrustedServer
)

// Twin is the device twin: desired and reported properties with their
// $version.
type Twin = domain.Twin

// PropertyAck is a property handler's answer, reported as the IoT Plug and
// Play acknowledgement {"value", "ac", "av", "ad"}: Status 200 (or 0)
// applied, 202 in progress (call Client.AckProperty later), 4xx/5xx
// refused; Description is optional; Value nil reports the desired value.
type PropertyAck = domain.PropertyAck

// CommandResponse is a command handler's answer: any Status (0 means 200)
// and a Payload encoded as JSON (nil sends {}), at most 128 KiB.
type CommandResponse = domain.CommandResponse

// CloudMessage is a cloud-to-device message: Body and every property
// (system ones under "$." names).
type CloudMessage = domain.CloudMessage

// Property is a writable property the operator set: Component (empty for
// the root), Name, Value (the desired JSON; decode it with Unmarshal) and
// Version (the desired $version the acknowledgement refers to).
type Property = domain.Property

// Command is a command sent to the device: a direct method, or (Queued) a
// command IoT Central kept while the device was offline (no RequestID, no
// response). Component is empty for the root; Payload is the request body,
// normally JSON (decode it with Unmarshal), nil when empty.
type Command = domain.Command

// PropertyHandler applies one writable property and returns its
// acknowledgement (see OnProperty).
type PropertyHandler = app.PropertyHandler

// CommandHandler runs one command and returns its response (see
// OnCommand).
type CommandHandler = app.CommandHandler

// QueuedCommandHandler runs a command queued while the device was offline
// and returns how to settle it (see OnQueuedCommand).
type QueuedCommandHandler = app.QueuedCommandHandler

// CloudMessageHandler receives a cloud-to-device message and returns how to
// settle it (see OnCloudMessage).
type CloudMessageHandler = app.CloudMessageHandler

// TelemetryOptions are the optional parts of one telemetry message
// (SendTelemetry, EnqueueTelemetry); nil, or a zero field, selects the
// default given with each field. The options are copied: the caller may
// change them (and Properties) once the call returned.
type TelemetryOptions struct {
	// Component sends the message as the IoT Plug and Play component's
	// ($.sub). Default: the root.
	Component string
	// Properties are application properties. Keys starting with "$." or
	// "iothub-" are reserved (ErrInvalidConfig). Default: none.
	Properties map[string]string
	// MessageID is the message id ($.mid). Default: a random UUID.
	MessageID string
	// CorrelationID is the correlation id ($.cid). Default: none.
	CorrelationID string
	// CreationTime is iothub-creation-time-utc, the time the reading was
	// taken, which IoT Central uses as the telemetry timestamp. Default:
	// none for SendTelemetry (IoT Central then uses the time the hub
	// received it), the time of the call for EnqueueTelemetry.
	CreationTime time.Time
	// ContentType is $.ct. Default "application/json"; IoT Central only
	// decodes JSON telemetry.
	ContentType string
	// ContentEncoding is $.ce. Default "utf-8".
	ContentEncoding string
}

// ReportOptions are the optional parts of a reported-properties patch
// (ReportProperties); nil selects the defaults.
type ReportOptions struct {
	// Component reports the properties inside {"name": {"__t": "c",
	// ...}}, as the IoT Plug and Play component's. Default: the root.
	Component string
}

// withTelemetryOptions returns m with o applied (nil leaves m as is).
func withTelemetryOptions(m domain.Message, o *TelemetryOptions) domain.Message {
	if o == nil {
		return m
	}
	if o.Component != "" {
		m.Component = o.Component
	}
	if len(o.Properties) > 0 {
		m.Properties = maps.Clone(o.Properties)
	}
	if o.MessageID != "" {
		m.MessageID = o.MessageID
	}
	if o.CorrelationID != "" {
		m.CorrelationID = o.CorrelationID
	}
	if !o.CreationTime.IsZero() {
		m.CreationTime = o.CreationTime
	}
	if o.ContentType != "" {
		m.ContentType = o.ContentType
	}
	if o.ContentEncoding != "" {
		m.ContentEncoding = o.ContentEncoding
	}
	return m
}
