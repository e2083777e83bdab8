// Package core is the emulator's model of IoT Central and its rules: the
// device registry and enrollment groups, DPS decisions, twins with versions
// and $metadata, command invocations with their timeouts, cloud-to-device
// queues with settlement, telemetry (latest values and history), and
// persistence in a data directory. It knows no protocol: the front-ends
// (MQTT, AMQP, WebSockets, REST) call it, and reach a device's live
// connection through the Link it attached. It imports no protocol library.
package core

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/twin"
)

// Errors of the model. Match them with errors.Is; returned errors wrap
// them with the device or group concerned.
var (
	// ErrNotFound reports an unknown device, group, component value or telemetry name.
	ErrNotFound = errors.New("emulator: not found")
	// ErrConflict reports a create of something that already exists.
	ErrConflict = errors.New("emulator: already exists")
	// ErrInvalid reports a bad argument: a malformed id, key, certificate or patch.
	ErrInvalid = errors.New("emulator: invalid argument")
	// ErrDeviceOffline reports a direct method to a device that is not
	// connected or not subscribed to methods (IoT Hub: 404103).
	ErrDeviceOffline = errors.New("emulator: device is not online")
	// ErrTimeout reports a direct method the device did not answer in time
	// (IoT Hub: 504101).
	ErrTimeout = errors.New("emulator: device did not respond in time")
	// ErrQueueFull reports a cloud-to-device message refused because the
	// device already has MaxC2DQueue messages pending (IoT Hub: 403004).
	ErrQueueFull = errors.New("emulator: device queue is full")
	// ErrTooLarge reports a cloud-to-device body over MaxC2DBody or a desired
	// patch that would make the section exceed MaxTwinSection.
	ErrTooLarge = errors.New("emulator: over a service size limit")
	// ErrDataFile reports a data directory state file that cannot be read
	// or is not a valid state file; the file is left as it was.
	ErrDataFile = errors.New("emulator: bad data directory state file")
	// ErrClosed reports a call on a closed emulator.
	ErrClosed = errors.New("emulator: closed")
	// ErrUnauthorized reports refused credentials (front-ends map it to
	// their protocol's refusal).
	ErrUnauthorized = errors.New("emulator: unauthorized")
	// ErrPreconditionFailed reports an If-Match etag that is not the
	// current one (IoT Hub: 412 PreconditionFailed).
	ErrPreconditionFailed = errors.New("emulator: etag does not match")
	// ErrForbidden reports valid credentials without the right the
	// operation needs (a registryRead policy writing; IoT Hub: 401).
	ErrForbidden = errors.New("emulator: the policy lacks the right")
)

// Service limits the model enforces, as IoT Hub does.
const (
	// MaxTelemetryBody is the largest device-to-cloud message body (256 KiB).
	MaxTelemetryBody = 256 << 10
	// MaxC2DBody is the largest cloud-to-device message body (64 KiB).
	MaxC2DBody = 64 << 10
	// MaxC2DQueue is how many cloud-to-device messages may wait for one
	// device (delivered but not yet settled ones included).
	MaxC2DQueue = 50
	// MaxTwinSection is the largest desired or reported section (32 KiB of JSON).
	MaxTwinSection = 32 << 10
	// DefaultCommandTimeout is the command timeout used when none is given.
	DefaultCommandTimeout = 30 * time.Second
	// MaxCommandTimeout caps a command timeout (IoT Hub: 300 s).
	MaxCommandTimeout = 300 * time.Second
	// DefaultTelemetryHistory is how many messages per device the history
	// keeps when Config.TelemetryHistory is zero.
	DefaultTelemetryHistory = 1000
	// TelemetryWatchBuffer is how many messages a watcher channel holds;
	// when it is full, newer messages are dropped for that watcher.
	TelemetryWatchBuffer = 256
)

// Attestation kinds reported in Device.Attestation.
const (
	AttestationSymmetricKey = "symmetricKey"
	AttestationX509         = "x509"
)

// Device is a snapshot of one device the emulator knows.
type Device struct {
	// ID is the device id (= DPS registration id).
	ID string
	// DisplayName defaults to ID.
	DisplayName string
	// ModelID is the IoT Plug and Play model: the DPS payload's modelId
	// (or iotcModelId), replaced by the hub CONNECT model-id when sent.
	ModelID string
	// Enabled devices may register and connect.
	Enabled bool
	// Provisioned is set once DPS assigned the device.
	Provisioned bool
	// Connected reports a live hub connection.
	Connected bool
	// GroupID is the enrollment group that provisioned the device, "" for
	// a device that only has an individual enrollment (CreateDevice).
	GroupID string
	// Attestation is AttestationSymmetricKey or AttestationX509.
	Attestation string
	// PrimaryKey and SecondaryKey are the device's symmetric keys: its
	// individual keys when created with CreateDevice, else the keys derived
	// from its group's keys. Empty for X.509 devices.
	PrimaryKey, SecondaryKey string
	// Created is when the device was first known; LastActivity is the last
	// connect, message or request.
	Created, LastActivity time.Time
}

// TelemetryValue is the latest value of one telemetry field.
type TelemetryValue struct {
	// Value is the JSON-decoded field value (float64, string, bool, map, slice).
	Value any
	// Timestamp is when the message carrying it arrived.
	Timestamp time.Time
}

// Telemetry is one device-to-cloud message, whatever protocol carried it.
type Telemetry struct {
	// DeviceID is the sending device (iothub-connection-device-id).
	DeviceID string
	// ModuleID is the sending module, "" for a device
	// (iothub-connection-module-id).
	ModuleID string
	// Component is the IoT Plug and Play component ("dt-subject"; MQTT
	// $.sub), "" for the root component.
	Component string
	// MessageID, CorrelationID, ContentType and ContentEncoding are the
	// message's own system properties, "" when the device did not set them.
	MessageID, CorrelationID, ContentType, ContentEncoding string
	// Body is the message body as sent.
	Body []byte
	// Properties are the application (user) properties.
	Properties map[string]string
	// System holds the other system properties the device set, by their
	// IoT Hub names ("user-id", "to", "absolute-expiry-time",
	// "iothub-creation-time-utc", "iothub-interface-id",
	// "dt-dataschema"; an unknown one keeps the name it was sent with).
	System map[string]string
	// AuthMethod is how the connection authenticated
	// (iothub-connection-auth-method), set by Session.Telemetry.
	AuthMethod string
	// Received is when the emulator got the message (iothub-enqueuedtime).
	Received time.Time
	// Seq numbers the messages from 1 in the order the emulator stored
	// them, one sequence across devices (set by StoreTelemetry).
	Seq int64
}

// IoT Hub names of the system properties the built-in endpoint's readers see.
const (
	PropMessageID       = "message-id"
	PropCorrelationID   = "correlation-id"
	PropContentType     = "content-type"
	PropContentEncoding = "content-encoding"
	PropDeviceID        = "iothub-connection-device-id"
	PropModuleID        = "iothub-connection-module-id"
	PropAuthMethod      = "iothub-connection-auth-method"
	PropEnqueuedTime    = "iothub-enqueuedtime"
	PropComponent       = "dt-subject"
	PropUserID          = "user-id"
	PropTo              = "to"
	PropExpiry          = "absolute-expiry-time"
	PropCreationTime    = "iothub-creation-time-utc"
	PropInterfaceID     = "iothub-interface-id"
	PropDataSchema      = "dt-dataschema"
)

// SystemProperties returns every system property of the message by its
// IoT Hub name, as a reader of the built-in endpoint sees them: the
// message's own, the other ones the device set, and those IoT Hub adds
// (device and module id, auth method, enqueued time).
func (t Telemetry) SystemProperties() map[string]string {
	out := make(map[string]string, len(t.System)+8)
	for k, v := range t.System {
		out[k] = v
	}
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	set(PropMessageID, t.MessageID)
	set(PropCorrelationID, t.CorrelationID)
	set(PropContentType, t.ContentType)
	set(PropContentEncoding, t.ContentEncoding)
	set(PropComponent, t.Component)
	set(PropDeviceID, t.DeviceID)
	set(PropModuleID, t.ModuleID)
	set(PropAuthMethod, t.AuthMethod)
	if !t.Received.IsZero() {
		out[PropEnqueuedTime] = t.Received.UTC().Format(time.RFC3339Nano)
	}
	return out
}

// AuthMethod values (the JSON IoT Hub puts in iothub-connection-auth-method).
const (
	AuthMethodSAS  = `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`
	AuthMethodX509 = `{"scope":"device","type":"x509Certificate","issuer":"iothub","acceptingIpFilterRule":null}`
	// AuthMethodPolicy is a message sent with a shared access policy's
	// token (DeviceConnect) on the device's behalf.
	AuthMethodPolicy = `{"scope":"hub","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`
)

// CommandResult is a device's answer to a direct method.
type CommandResult struct {
	// RequestID identifies the invocation in the command history.
	RequestID string
	// Status is the status code the device chose.
	Status int
	// Payload is the response body when it is JSON; other bodies are
	// wrapped in a JSON string; nil when empty.
	Payload json.RawMessage
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
	// Type is the kind of device the group enrolls, as IoT Central names
	// it: GroupTypeIoT (also what "" means) or GroupTypeIoTEdge. The
	// emulator registers both kinds alike; the type is stored and shown.
	Type string
	// DPS are the group's DPS service settings (initial twin, policies).
	// PutEnrollmentGroup keeps the stored ones when it is nil.
	DPS *DPSSettings
	// ETag changes with every change of the group (set by the model).
	ETag string
}

// Enrollment group types (EnrollmentGroup.Type); NormalizeGroup refuses
// any other with ErrInvalid.
const (
	// GroupTypeIoT enrolls IoT devices; the default.
	GroupTypeIoT = "iot"
	// GroupTypeIoTEdge enrolls IoT Edge devices.
	GroupTypeIoTEdge = "iotEdge"
)

// IsX509 reports whether the group authenticates with certificates.
func (g EnrollmentGroup) IsX509() bool { return len(g.CACertPEM) > 0 }

// Config is what New needs; Groups must be normalized (NormalizeGroup).
type Config struct {
	// IDScope is the DPS ID scope; HubHost the host name DPS assigns.
	IDScope, HubHost string
	// Groups are the enrollment groups.
	Groups []EnrollmentGroup
	// AutoApprove lets any registration id under an enabled group be assigned.
	AutoApprove bool
	// RetryAfter is the retry-after, in seconds, of DPS 202 answers.
	RetryAfter int
	// TelemetryHistory is how many messages per device are kept; 0 means
	// DefaultTelemetryHistory, a negative value keeps none.
	TelemetryHistory int
	// Store, when set, keeps the state durable: Load reads it and every
	// change is committed through it before the use case returns. Nil
	// keeps the state in memory only (nothing survives the process).
	Store Store
	// LegacyStateFile is a JSON state file of an older data directory,
	// imported by Load into an empty Store ("" for none).
	LegacyStateFile string
	// ExplicitScope and ExplicitGroups say IDScope and Groups were chosen by
	// the user, so they win over the stored ones.
	ExplicitScope, ExplicitGroups bool
	// TrustedCAs are the hub's verified CA certificates: a
	// certificateAuthority device (one outside enrollment groups) connects
	// with a chain ending in one of them whose leaf CN is its id. Nil
	// trusts none.
	TrustedCAs []*x509.Certificate
	// Log receives the model's log lines; nil discards.
	Log *slog.Logger
}

// Core is the model. Its methods are safe for concurrent use.
type Core struct {
	cfg     Config
	log     *slog.Logger
	done    chan struct{}
	closing sync.Once
	wg      sync.WaitGroup

	mu       sync.Mutex
	groups   []EnrollmentGroup
	devices  map[string]*device
	ops      map[string]*dpsOp
	opsOrder []opRef // the operations in the order they were made, for their expiry
	watchers map[string]map[chan Telemetry]struct{}
	changes  map[string]chan struct{} // see WaitSubscribed
	events   eventHub                 // see events.go
	feed     feed                     // observers of the model (feed.go)
	faults   faultState               // see faults.go
	ext      extState                 // templates, device settings, command history (ext.go); guarded by mu

	store Store // nil: memory only

	policies []SharedAccessPolicy      // IoT Hub's shared access policies; guarded by mu
	feedback feedbackState             // cloud-to-device feedback for the service; guarded by mu
	jobs     map[string]*jobState      // IoT Hub jobs (v2); guarded by mu
	jobSeq   int64                     // creation order of jobs; guarded by mu
	configs  map[string]*Configuration // IoT Hub configurations; guarded by mu
	uploads  fileUploadState           // file uploads (fileupload.go); guarded by mu
	dpsSvc   *dpsState                 // the DPS service's state (enrollments.go); guarded by mu

	telemetrySeq int64            // the last Telemetry.Seq given; guarded by mu
	sink         TelemetrySink    // see eventlog.go; guarded by mu
	loadedEvents []Record         // KindEvent records Load found, until StoredEvents; guarded by mu
	notifySink   NotificationSink // see eventlog.go; guarded by mu
	sunk         []Change         // notifySink's changes for the next staged device change; guarded by mu
	pendingLoad  []Change         // deletes Load found due (a shorter history); committed by Load
}

// New returns a model with cfg's groups and no devices. With
// cfg.Store, call Load before any front-end serves.
func New(cfg Config) *Core {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.TelemetryHistory == 0 {
		cfg.TelemetryHistory = DefaultTelemetryHistory
	}
	return &Core{
		cfg: cfg, log: cfg.Log, done: make(chan struct{}), store: cfg.Store,
		groups:   slices.Clone(cfg.Groups),
		devices:  map[string]*device{},
		ops:      map[string]*dpsOp{},
		watchers: map[string]map[chan Telemetry]struct{}{},
		changes:  map[string]chan struct{}{},
		policies: newPolicies(),
		feedback: feedbackState{wake: make(chan struct{}, 1)},
		uploads:  fileUploadState{wake: make(chan struct{}, 1)},
	}
}

// Close ends waits (WaitSubscribed, NextTelemetry, InvokeCommand) with
// ErrClosed. It does not close Config.Store (its owner does, after the
// front-ends stopped). It is safe to call more than once.
func (c *Core) Close() {
	c.closing.Do(func() { close(c.done) })
	c.wg.Wait()
}

// Done is closed by Close.
func (c *Core) Done() <-chan struct{} { return c.done }

// IDScope is the DPS ID scope (the data directory's unless given).
func (c *Core) IDScope() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.IDScope
}

// HubHost is the host name DPS assigns and hub tokens name.
func (c *Core) HubHost() string { return c.cfg.HubHost }

func (c *Core) now() time.Time { return time.Now().UTC() }

type device struct {
	id, displayName, modelID string
	enabled, provisioned     bool
	groupID                  string
	x509                     bool
	indivKeys, groupKeys     [2]string
	created, lastActivity    time.Time
	desired, reported        *twin.Section
	telemetry                map[string]map[string]TelemetryValue
	history                  []Telemetry // oldest first, at most cfg.TelemetryHistory
	c2dSeq                   int64       // the last number given to a message
	c2d                      []*c2dMsg
	deadLetters              []*c2dMsg      // rejected, oldest first
	link                     Link           // live hub connection; nil when offline
	version                  int64          // registry generation: grows with each identity change (device etag)
	tags                     map[string]any // twin tags (IoT Hub service API); nil when none
	tagsVersion              int64          // grows with each tags change (part of the twin etag)
	statusReason             string         // why the device is disabled, as the registry shows it
	thumbprints              []string       // selfSigned X.509 device: accepted leaf thumbprints (upper-case hex)
	edge                     bool           // capabilities.iotEdge
	deviceScope              string         // IoT Edge device scope, as the service set it
	parentScopes             []string       // IoT Edge parent scopes, as the service set them
}

func newDevice(id string, now time.Time) *device {
	return &device{
		id: id, displayName: id, enabled: true, created: now, lastActivity: now, version: 1,
		desired:   twin.NewSection(true, twin.MaxTwinSectionLen, now),
		reported:  twin.NewSection(false, twin.MaxTwinSectionLen, now),
		telemetry: map[string]map[string]TelemetryValue{},
	}
}

// keys are the symmetric keys a hub SAS token of the device may be signed with.
func (d *device) keys() []string {
	var out []string
	for _, k := range append(d.indivKeys[:], d.groupKeys[:]...) {
		if k != "" {
			out = append(out, k)
		}
	}
	return out
}

func (d *device) public() Device {
	p := Device{
		ID: d.id, DisplayName: d.displayName, ModelID: d.modelID, Enabled: d.enabled,
		Provisioned: d.provisioned, Connected: d.link != nil, GroupID: d.groupID,
		Attestation: AttestationSymmetricKey, Created: d.created, LastActivity: d.lastActivity,
	}
	if d.x509 {
		p.Attestation = AttestationX509
	}
	keys := d.indivKeys
	if keys[0] == "" {
		keys = d.groupKeys
	}
	p.PrimaryKey, p.SecondaryKey = keys[0], keys[1]
	return p
}

// lookup returns the device or an error wrapping ErrNotFound; c.mu held.
func (c *Core) lookup(id string) (*device, error) {
	d, ok := c.devices[id]
	if !ok {
		return nil, fmt.Errorf("%w: device %q", ErrNotFound, id)
	}
	return d, nil
}

// CreateDevice creates device id with an individual enrollment and random
// symmetric keys, and returns its primary key. It returns ErrInvalid for a
// malformed id and ErrConflict when it exists.
func (c *Core) CreateDevice(id string) (string, error) {
	if err := ValidID(id); err != nil {
		return "", fmt.Errorf("create device: %w", err)
	}
	c.mu.Lock()
	if _, ok := c.devices[id]; ok {
		c.mu.Unlock()
		return "", fmt.Errorf("%w: device %q", ErrConflict, id)
	}
	d := newDevice(id, c.now())
	d.indivKeys = [2]string{RandomKey(), RandomKey()}
	c.devices[id] = d
	c.sinkNotificationLocked(d, DeviceNotification{Op: OpCreateDeviceIdentity})
	ch := c.stageDeviceLocked(d)
	c.observeLocked(FeedEvent{Kind: FeedRegistered, DeviceID: id})
	key := d.indivKeys[0]
	c.mu.Unlock()
	if err := awaitNow(ch); err != nil {
		return "", err
	}
	c.log.Info("device created", "device_id", id)
	return key, nil
}

// Devices lists every device, sorted by id.
func (c *Core) Devices() []Device {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Device, 0, len(c.devices))
	for _, d := range c.devices {
		out = append(out, d.public())
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Device returns one device, or an error wrapping ErrNotFound.
func (c *Core) Device(id string) (Device, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.lookup(id)
	if err != nil {
		return Device{}, err
	}
	return d.public(), nil
}

// Touch records activity of device id.
func (c *Core) Touch(id string) {
	c.mu.Lock()
	if d, ok := c.devices[id]; ok {
		d.lastActivity = c.now()
	}
	c.mu.Unlock()
}

// GroupKey is the primary key of the first symmetric-key group, "" when none.
func (c *Core) GroupKey() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.groups {
		if !g.IsX509() {
			return g.PrimaryKey
		}
	}
	return ""
}

// EnrollmentGroups lists the enrollment groups in creation order.
func (c *Core) EnrollmentGroups() []EnrollmentGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]EnrollmentGroup, len(c.groups))
	for i, g := range c.groups {
		g.CACertPEM = slices.Clone(g.CACertPEM)
		out[i] = g
	}
	return out
}

// PutEnrollmentGroup creates or replaces the group with g.ID, generating
// missing symmetric keys, and returns what was stored. A nil g.DPS keeps
// the stored group's DPS settings. It returns ErrInvalid for a bad id,
// key, CA certificate or DPS setting.
func (c *Core) PutEnrollmentGroup(g EnrollmentGroup) (EnrollmentGroup, error) {
	return c.putEnrollmentGroup(g, false, "")
}

// putEnrollmentGroup is PutEnrollmentGroup; with check, the group must
// still exist with etag (else ErrPreconditionFailed).
func (c *Core) putEnrollmentGroup(g EnrollmentGroup, check bool, etag string) (EnrollmentGroup, error) {
	ng, err := NormalizeGroup(g)
	if err != nil {
		return EnrollmentGroup{}, err
	}
	c.mu.Lock()
	i := slices.IndexFunc(c.groups, func(x EnrollmentGroup) bool { return x.ID == ng.ID })
	if check && (i < 0 || c.groups[i].ETag != etag) {
		c.mu.Unlock()
		return EnrollmentGroup{}, fmt.Errorf("%w: enrollment group %q changed meanwhile", ErrPreconditionFailed, ng.ID)
	}
	var created time.Time
	if i >= 0 && c.groups[i].DPS != nil {
		created = c.groups[i].DPS.Created
	}
	switch {
	case ng.DPS != nil:
		s, err := normalizeSettings(*ng.DPS, "enrollment group "+ng.ID, created, c.now())
		if err != nil {
			c.mu.Unlock()
			return EnrollmentGroup{}, err
		}
		ng.DPS = &s
	case i >= 0 && c.groups[i].DPS != nil:
		s := *c.groups[i].DPS
		s.Updated = c.now()
		ng.DPS = &s
	}
	ng.ETag = newETag()
	if i >= 0 {
		c.groups[i] = ng
	} else {
		i = len(c.groups)
		c.groups = append(c.groups, ng)
	}
	ch := c.stageLocked(groupChange(ng, int64(i)))
	c.mu.Unlock()
	if err := awaitNow(ch); err != nil {
		return EnrollmentGroup{}, err
	}
	c.log.Info("enrollment group stored", "group_id", ng.ID, "enabled", ng.Enabled, "x509", ng.IsX509())
	out := ng
	out.CACertPEM = slices.Clone(ng.CACertPEM)
	return out, nil
}

// group returns the group with id; c.mu held.
func (c *Core) group(id string) (EnrollmentGroup, bool) {
	for _, g := range c.groups {
		if g.ID == id {
			return g, true
		}
	}
	return EnrollmentGroup{}, false
}

// errDroppedByOperator is the reason given to a link dropped by DisconnectDevice.
var errDroppedByOperator = errors.New("emulator: connection dropped by operator")

// DisconnectDevice drops the device's hub connection as a network failure
// would. It returns ErrNotFound and ErrDeviceOffline.
func (c *Core) DisconnectDevice(id string) error {
	c.mu.Lock()
	d, err := c.lookup(id)
	var l Link
	if err == nil {
		l = d.link
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("%w: device %q", ErrDeviceOffline, id)
	}
	c.log.Info("dropping device connection on request", "device_id", id, "protocol", l.Protocol())
	l.Drop(errDroppedByOperator)
	return nil
}

// closed reports whether Close was called.
func (c *Core) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// bound returns a context that ends with ctx or at Close.
func (c *Core) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-cctx.Done():
		}
	}()
	return cctx, cancel
}
