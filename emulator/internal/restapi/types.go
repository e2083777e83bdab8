package restapi

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// The errors a Backend returns (wrapped, matched with errors.Is) so that
// the handler answers with the matching HTTP status; any other error is
// answered 500 and logged. They are the emulator core's own errors (one
// vocabulary from the core to every front-end), but for ErrBadRequest,
// which only the HTTP layer makes.
var (
	// ErrNotFound reports an unknown device, enrollment group or telemetry
	// name; answered 404 NotFound.
	ErrNotFound = core.ErrNotFound
	// ErrDeviceOffline reports a command for a device that is not connected
	// (and did not connect within the connection timeout); answered 404
	// DeviceNotOnline, as IoT Hub's 404103.
	ErrDeviceOffline = core.ErrDeviceOffline
	// ErrTimeout reports a device that did not answer a command within the
	// response timeout; answered 504 GatewayTimeout.
	ErrTimeout = core.ErrTimeout
	// ErrBadRequest reports a request that cannot be read: malformed JSON,
	// a bad path or query parameter; answered 400 BadRequest.
	ErrBadRequest = errors.New("restapi: bad request")
	// ErrValidation reports a well-formed body or value the API refuses (a
	// missing required field, an id against the rules, an out-of-range
	// timeout, a twin patch nested too deep); answered 422
	// UnprocessableEntity, as IoT Central answers validation errors.
	ErrValidation = core.ErrInvalid
	// ErrConflict reports a change refused because of the current state
	// (a template still assigned to a device); answered 409 Conflict.
	ErrConflict = core.ErrConflict
	// ErrQueueFull reports a device whose cloud-to-device queue is full (IoT
	// Hub keeps at most 50 messages per device); answered 403
	// DeviceMaximumQueueDepthExceeded.
	ErrQueueFull = core.ErrQueueFull
	// ErrTooLarge reports a message or twin patch over an IoT Hub limit (64
	// KiB per cloud-to-device message, 32 KiB per twin section); answered 413
	// RequestEntityTooLarge.
	ErrTooLarge = core.ErrTooLarge
)

// Backend is the emulator state the REST API reads and changes. Every method
// may be called from many goroutines at once and must honour ctx. Errors wrap
// the sentinels above; an unknown device or group is ErrNotFound. The text of
// a sentinel-wrapping error is shown to the API caller, so it must never hold
// a key or token; other errors are only logged.
type Backend interface {
	// ListDevices returns every device known to the emulator, in any order.
	ListDevices(ctx context.Context) ([]Device, error)
	// GetDevice returns one device, or ErrNotFound.
	GetDevice(ctx context.Context, id string) (Device, error)
	// DeviceCredentials returns how a device authenticates, or ErrNotFound.
	DeviceCredentials(ctx context.Context, id string) (DeviceCredentials, error)
	// DeviceTwin returns the desired and reported sections of a device twin,
	// or ErrNotFound. The handler reads the maps after the call returns and
	// never changes them, so return copies (or maps never changed again).
	DeviceTwin(ctx context.Context, id string) (Twin, error)
	// PatchDesired merges patch into the desired section (a null value
	// deletes the property), bumps its $version and pushes the patch to the
	// device if connected. Components come as objects marked "__t":"c".
	// Errors: ErrNotFound, ErrBadRequest, ErrTooLarge (32 KiB section limit).
	PatchDesired(ctx context.Context, id string, patch map[string]any) error
	// InvokeCommand runs a direct method on the device: component may be
	// empty; req has been validated and its timeouts defaulted. It waits up
	// to req.ConnectionTimeout seconds for the device to connect
	// (ErrDeviceOffline otherwise) and req.ResponseTimeout seconds for its
	// answer (ErrTimeout otherwise).
	InvokeCommand(ctx context.Context, id, component, name string, req CommandRequest) (CommandResult, error)
	// QueueCommand queues the command as a cloud-to-device message with the
	// method-name application property, delivered when the device next
	// subscribes. Errors: ErrNotFound, ErrQueueFull, ErrTooLarge.
	QueueCommand(ctx context.Context, id, component, name string, request json.RawMessage) error
	// SendMessage queues a plain cloud-to-device message.
	// Errors: ErrNotFound, ErrQueueFull, ErrTooLarge.
	SendMessage(ctx context.Context, id string, msg CloudMessage) error
	// LatestTelemetry returns the newest value of one telemetry field of a
	// device (component empty for the root). ErrNotFound when the device is
	// unknown or has sent no such field yet.
	LatestTelemetry(ctx context.Context, id, component, name string) (TelemetryValue, error)
	// TelemetryHistory returns the device's kept telemetry messages that
	// match q, oldest first (emulator extension). ErrNotFound when the
	// device is unknown.
	TelemetryHistory(ctx context.Context, id string, q TelemetryQuery) ([]TelemetryMessage, error)
	// ListEnrollmentGroups returns every enrollment group, in any order.
	ListEnrollmentGroups(ctx context.Context) ([]EnrollmentGroup, error)
	// GetEnrollmentGroup returns one enrollment group, or ErrNotFound.
	GetEnrollmentGroup(ctx context.Context, id string) (EnrollmentGroup, error)
	// PutEnrollmentGroup creates or replaces a group and returns it as
	// stored. The handler has validated it and generated missing keys.
	PutEnrollmentGroup(ctx context.Context, g EnrollmentGroup) (EnrollmentGroup, error)
	// DeleteEnrollmentGroup removes a group, or ErrNotFound.
	DeleteEnrollmentGroup(ctx context.Context, id string) error
	// IssueVerificationCode returns a new proof-of-possession code for a
	// group's certificate entry ("primary" or "secondary"). ErrNotFound.
	IssueVerificationCode(ctx context.Context, group, entry string) (string, error)
	// ConsumeVerificationCode accepts a code issued for the entry (once)
	// and marks the certificate with thumbprint verified. ErrNotFound,
	// ErrValidation for a code not issued.
	ConsumeVerificationCode(ctx context.Context, group, entry, code, thumbprint string) error

	// PutDevice creates or updates a device with the fields of spec that
	// are set, and returns it. Disabling drops its connection. Errors:
	// ErrValidation for a malformed id.
	PutDevice(ctx context.Context, id string, spec DeviceSpec) (Device, error)
	// DeleteDevice removes a device and drops its connection. ErrNotFound.
	DeleteDevice(ctx context.Context, id string) error
	// SetDeviceKeys sets the device's individual symmetric keys (empty
	// ones are generated) and returns them. ErrNotFound, ErrValidation.
	SetDeviceKeys(ctx context.Context, id string, k SymmetricKey) (SymmetricKey, error)
	// RemoveDeviceKeys removes the device's individual keys. ErrNotFound.
	RemoveDeviceKeys(ctx context.Context, id string) error
	// DeviceComponents returns the component names of a device: those of
	// its template, else those its twin shows. ErrNotFound.
	DeviceComponents(ctx context.Context, id string) ([]string, error)
	// DeviceModel returns the capability model of the device's template,
	// nil when it has none. ErrNotFound for an unknown device.
	DeviceModel(ctx context.Context, id string) (*TemplateModel, error)
	// CommandHistory returns the kept invocations of a command, oldest
	// first. ErrNotFound for an unknown device.
	CommandHistory(ctx context.Context, id, component, name string) ([]CommandInvocation, error)

	// ListTemplates returns every device template document.
	ListTemplates(ctx context.Context) ([]map[string]any, error)
	// GetTemplate returns one template document, or ErrNotFound.
	GetTemplate(ctx context.Context, id string) (map[string]any, error)
	// PutTemplate stores a template document and returns it as stored.
	// ErrValidation for a document without a capability model.
	PutTemplate(ctx context.Context, id string, doc map[string]any) (map[string]any, error)
	// DeleteTemplate removes a template. ErrNotFound, ErrConflict while a
	// device is assigned to it.
	DeleteTemplate(ctx context.Context, id string) error
}

// DeviceSpec is the settable part of a device; nil fields stay as they are.
type DeviceSpec struct {
	DisplayName   *string
	Template      *string
	Enabled       *bool
	Simulated     *bool
	Organizations *[]string
}

// TemplateModel is what the handler checks names against: the root
// interface and the components of a device template.
type TemplateModel struct {
	// Root is the root interface.
	Root TemplateInterface
	// Components maps component names to their interfaces.
	Components map[string]TemplateInterface
}

// TemplateInterface lists the names of one interface. Open means its
// contents are unknown (a component given by DTMI only): any name passes.
type TemplateInterface struct {
	// Properties maps property names to whether they are writable.
	Properties map[string]bool
	// Commands holds the command names.
	Commands map[string]bool
	// Open accepts every name.
	Open bool
}

// Device is a device of the application, shaped like IoT Central's device.
type Device struct {
	// ID is the device ID (the DPS registration ID).
	ID string `json:"id"`
	// DisplayName defaults to the ID in IoT Central.
	DisplayName string `json:"displayName,omitempty"`
	// Template is the id of the device template the device uses: the one
	// assigned to it, else the one whose capability model id is the model
	// id the device announced; empty when none (an unassigned device).
	Template string `json:"template,omitempty"`
	// Enabled is false for a blocked device.
	Enabled bool `json:"enabled"`
	// Provisioned is true once the device registered through DPS.
	Provisioned bool `json:"provisioned"`
	// Simulated is as set by PUT/PATCH (the emulator simulates nothing).
	Simulated bool `json:"simulated"`
	// Organizations are as set by PUT/PATCH; omitted when none.
	Organizations []string `json:"organizations,omitempty"`
	// Etag changes whenever the device's fields change (set by the handler).
	Etag string `json:"etag,omitempty"`
	// Connected tells whether the device holds a hub connection now. Not
	// in the device's JSON (IoT Central's device has no such field); the
	// extension GET /api/emulator/devices/{id}/connection shows it.
	Connected bool `json:"-"`
	// IndividualKeys is set when the device has its own symmetric keys;
	// not in the JSON.
	IndividualKeys bool `json:"-"`
}

// SymmetricKey is a pair of base64 keys (IoT Central generates 64-byte keys).
type SymmetricKey struct {
	// PrimaryKey is a base64 key.
	PrimaryKey string `json:"primaryKey"`
	// SecondaryKey is a base64 key, equally valid.
	SecondaryKey string `json:"secondaryKey"`
}

// DeviceCredentials is how a device authenticates. In JSON the symmetric key
// is omitted when both keys are empty, and X509 shows as
// "x509":{"clientCertificates":{}} (the emulator does not keep device
// certificates: the device's own certificate, chained to a group CA, is its
// credential).
type DeviceCredentials struct {
	// IDScope is the DPS ID scope of the application.
	IDScope string
	// SymmetricKey is the device key (derived from its group key).
	SymmetricKey SymmetricKey
	// X509 is true for a device that authenticates with a certificate.
	X509 bool
}

type x509CredentialsWire struct {
	ClientCertificates struct{} `json:"clientCertificates"`
}

type deviceCredentialsWire struct {
	IDScope      string               `json:"idScope"`
	SymmetricKey *SymmetricKey        `json:"symmetricKey,omitempty"`
	X509         *x509CredentialsWire `json:"x509,omitempty"`
}

// MarshalJSON writes the IoT Central credentials shape.
func (c DeviceCredentials) MarshalJSON() ([]byte, error) {
	w := deviceCredentialsWire{IDScope: c.IDScope}
	if c.SymmetricKey != (SymmetricKey{}) {
		k := c.SymmetricKey
		w.SymmetricKey = &k
	}
	if c.X509 {
		w.X509 = &x509CredentialsWire{}
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the IoT Central credentials shape; it returns the
// decoder's error on malformed JSON.
func (c *DeviceCredentials) UnmarshalJSON(b []byte) error {
	var w deviceCredentialsWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*c = DeviceCredentials{IDScope: w.IDScope, X509: w.X509 != nil}
	if w.SymmetricKey != nil {
		c.SymmetricKey = *w.SymmetricKey
	}
	return nil
}

// Twin holds the two property sections of a device twin as IoT Hub writes
// them: property names to values, plus optional "$version" and "$metadata"
// (with "$lastUpdated" per property) entries. Reported writable properties
// are acknowledgements {"value","ac","av","ad"}.
type Twin struct {
	Desired  map[string]any
	Reported map[string]any
}

// CommandRequest is the body of a command POST (required, "{}" at least).
// Defaults: ConnectionTimeout 0 (the device must be online), ResponseTimeout
// 30; both in seconds: ConnectionTimeout 0..30, ResponseTimeout 5..30 (the
// IoT Central 2022-07-31 bounds).
type CommandRequest struct {
	// Request is the command payload, passed to the device as JSON; empty
	// means none.
	Request json.RawMessage `json:"request,omitempty"`
	// ConnectionTimeout is how long to wait for an offline device, seconds.
	ConnectionTimeout int `json:"connectionTimeout"`
	// ResponseTimeout is how long to wait for the device's answer, seconds.
	ResponseTimeout int `json:"responseTimeout"`
}

// CommandResult is the device's answer to a command.
type CommandResult struct {
	// RequestID is the id under which the backend recorded the invocation
	// in the command history.
	RequestID string
	// ResponseCode is the status the device answered with.
	ResponseCode int
	// Response is the device's JSON payload; empty means none (null).
	Response json.RawMessage
}

// CommandInvocation is the 201 answer to a command POST, as IoT Central
// returns it, and an entry of the command history. Response is null when
// the device sent no payload.
type CommandInvocation struct {
	// ID is the request id of the invocation.
	ID string `json:"id"`
	// Request is the payload sent to the device (omitted when none).
	Request json.RawMessage `json:"request,omitempty"`
	// Response is the device's payload; a non-JSON one shows as a string.
	Response json.RawMessage `json:"response"`
	// ResponseCode is the status the device answered with.
	ResponseCode int `json:"responseCode"`
	// ConnectionTimeout is the timeout applied, seconds.
	ConnectionTimeout int `json:"connectionTimeout"`
	// ResponseTimeout is the timeout applied, seconds.
	ResponseTimeout int `json:"responseTimeout"`
}

// CloudMessage is a cloud-to-device message to queue for a device.
type CloudMessage struct {
	// Data is the message body.
	Data []byte
	// Properties are the application properties.
	Properties map[string]string
}

// TelemetryValue is the latest value of one telemetry field.
type TelemetryValue struct {
	// Timestamp is when the hub received the message (RFC 3339 in JSON).
	Timestamp time.Time `json:"timestamp"`
	// Value is the field's value as decoded from the message JSON.
	Value any `json:"value"`
}

// TelemetryQuery selects messages of a device's telemetry history.
type TelemetryQuery struct {
	// Since keeps messages received strictly after it; zero keeps all.
	Since time.Time
	// Component keeps only that component's messages when ByComponent is
	// set ("" is the root component).
	Component   string
	ByComponent bool
	// Limit keeps the newest Limit messages of the selection; 0 keeps all.
	Limit int
}

// TelemetryMessage is one kept device-to-cloud message (emulator extension).
type TelemetryMessage struct {
	// Timestamp is when the hub received the message (RFC 3339 in JSON).
	Timestamp time.Time `json:"timestamp"`
	// Component is the component the message was sent for, "" for the root.
	Component string `json:"component"`
	// MessageID, CorrelationID, ContentType and ContentEncoding are the
	// system properties of those names, "" when not sent.
	MessageID       string `json:"messageId,omitempty"`
	CorrelationID   string `json:"correlationId,omitempty"`
	ContentType     string `json:"contentType,omitempty"`
	ContentEncoding string `json:"contentEncoding,omitempty"`
	// Properties are the application properties.
	Properties map[string]string `json:"properties"`
	// SystemProperties are every system property by its IoT Hub name
	// ("message-id", "iothub-connection-device-id", "iothub-enqueuedtime", ...).
	SystemProperties map[string]string `json:"systemProperties"`
	// Data is the body when it is JSON; otherwise DataBase64 holds it.
	Data json.RawMessage `json:"data,omitempty"`
	// DataBase64 is the base64 body when it is not JSON.
	DataBase64 []byte `json:"dataBase64,omitempty"`
}

// MaxTelemetryLimit is the largest limit a telemetry history request may ask.
const MaxTelemetryLimit = 100000

// Attestation types of an enrollment group; any other is answered 400.
const (
	// AttestationSymmetricKey: devices sign SAS tokens with a key derived
	// from the group key.
	AttestationSymmetricKey = "symmetricKey"
	// AttestationX509: devices present certificates chained to a group CA.
	AttestationX509 = "x509"
)

// EnrollmentGroup is a DPS enrollment group as IoT Central shows it.
// PUT requires displayName, type and attestation; Enabled defaults to
// true and symmetric keys are generated when absent.
type EnrollmentGroup struct {
	// ID is the group id, 1..255 characters of [A-Za-z0-9-].
	ID string `json:"id"`
	// DisplayName is a human-readable name.
	DisplayName string `json:"displayName"`
	// Type is "iot" (the default) or "iotEdge"; stored and shown, both
	// enroll alike. Any other is answered 422.
	Type string `json:"type"`
	// Enabled false makes DPS refuse the group's devices.
	Enabled bool `json:"enabled"`
	// Attestation is how the group's devices prove who they are.
	Attestation Attestation `json:"attestation"`
	// Etag changes whenever the group changes (set by the handler).
	Etag string `json:"etag,omitempty"`
}

// Attestation is the attestation mechanism of an enrollment group.
type Attestation struct {
	// Type is AttestationSymmetricKey or AttestationX509.
	Type string `json:"type"`
	// SymmetricKey holds the group keys (symmetricKey type only).
	SymmetricKey SymmetricKey `json:"symmetricKey,omitzero"`
	// X509 holds the group's signing CA certificates (x509 type only).
	X509 X509Attestation `json:"x509,omitzero"`
}

// X509Attestation holds the signing CA certificates of an X.509 group.
type X509Attestation struct {
	// SigningCertificates are the group's CA certificates.
	SigningCertificates SigningCertificates `json:"signingCertificates"`
}

// SigningCertificates are the primary (required) and secondary (optional)
// CA certificates of an X.509 enrollment group.
type SigningCertificates struct {
	// Primary is required for an x509 group.
	Primary X509Certificate `json:"primary,omitzero"`
	// Secondary is optional (omitted when zero).
	Secondary X509Certificate `json:"secondary,omitzero"`
}

// X509Certificate is one CA certificate in PEM, with its SHA-1 thumbprint
// (filled by the handler) and whether its possession was proven.
type X509Certificate struct {
	// Verified is set once proof of possession succeeded (verify).
	Verified bool `json:"verified"`
	// Certificate is the PEM text; it must be a CA (basicConstraints CA:TRUE).
	Certificate string `json:"certificate"`
	// Info is computed by the handler on PUT; any value sent is replaced.
	Info X509CertificateInfo `json:"info,omitzero"`
}

// X509CertificateInfo describes a certificate.
type X509CertificateInfo struct {
	// SHA1Thumbprint is the upper-case hex SHA-1 of the DER certificate.
	SHA1Thumbprint string `json:"sha1Thumbprint"`
}

// msTime formats t as IoT Central writes times: UTC, milliseconds.
func msTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// MarshalJSON writes the timestamp with milliseconds, as IoT Central does.
func (v TelemetryValue) MarshalJSON() ([]byte, error) {
	type plain TelemetryValue
	return json.Marshal(struct {
		plain
		Timestamp string `json:"timestamp"`
	}{plain(v), msTime(v.Timestamp)})
}

// MarshalJSON writes the timestamp with milliseconds, as IoT Central does.
func (m TelemetryMessage) MarshalJSON() ([]byte, error) {
	type plain TelemetryMessage
	return json.Marshal(struct {
		plain
		Timestamp string `json:"timestamp"`
	}{plain(m), msTime(m.Timestamp)})
}
