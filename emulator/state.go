package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator/internal/amqphub"
	"github.com/iotc-go/iotc/emulator/internal/twin"
	"github.com/iotc-go/iotc/emulator/internal/wire"
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

// Telemetry is one device-to-cloud message.
type Telemetry struct {
	DeviceID string
	// Component is the $.sub system property, "" for the root component.
	Component string
	Body      []byte
	// Properties are the application properties of the property bag.
	Properties map[string]string
	// System are the system properties ($.ct, $.ce, $.mid, $.cid, $.sub, ...).
	System   map[string]string
	Received time.Time
}

// CommandResult is a device's answer to a direct method.
type CommandResult struct {
	// Status is the status code the device chose.
	Status int
	// Payload is the response body when it is JSON; other bodies are
	// wrapped in a JSON string; nil when empty.
	Payload json.RawMessage
}

type device struct {
	id, displayName, modelID string
	enabled, provisioned     bool
	groupID                  string
	x509                     bool
	indivKeys, groupKeys     [2]string
	created, lastActivity    time.Time
	desired, reported        *twin.Section
	telemetry                map[string]map[string]TelemetryValue
	c2d                      []*c2dMsg
	conn                     *conn
	amqp                     *amqpSession // live AMQP hub session (see amqp.go); nil when none
}

func newDevice(id string, now time.Time) *device {
	return &device{
		id: id, displayName: id, enabled: true, created: now, lastActivity: now,
		desired:   twin.NewSection(true, wire.MaxTwinSectionLen, now),
		reported:  twin.NewSection(false, wire.MaxTwinSectionLen, now),
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
		Provisioned: d.provisioned, Connected: d.conn != nil || d.amqp != nil, GroupID: d.groupID,
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

// conn is the emulator's view of one MQTT connection.
type conn struct {
	cl      *mqtt.Client
	role    wire.Role
	id      string // device id (hub) or registration id (DPS)
	modelID string
	groupID string // DPS: matched group, "" for an individual enrollment
	x509    bool
	expiry  time.Time   // SAS expiry; zero for X.509
	expire  *time.Timer // drops the connection at expiry
	wmu     sync.Mutex  // serialises writes to cl

	// guarded by Emulator.mu
	nextPID  uint16
	inflight map[uint16]*c2dMsg
}

// subscribed reports whether the client holds a filter matching topic.
func (c *conn) subscribed(topic string) bool {
	for f := range c.cl.State.Subscriptions.GetAll() {
		if wire.MatchFilter(f, topic) {
			return true
		}
	}
	return false
}

type c2dMsg struct {
	id         string
	topic      string
	props      map[string]string // application properties (for AMQP)
	body       []byte
	sentOn     *conn
	amqpOn     *amqpSession // in flight on this AMQP session
	deliveries int
}

func (e *Emulator) now() time.Time { return time.Now().UTC() }

// newUUID returns a random RFC 4122 version 4 UUID string.
func newUUID() string {
	h := []byte(randomHex(16))
	h[12] = '4'
	h[16] = "89ab"[h[16]%4]
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}

func (e *Emulator) closed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// lookup returns the device or an error wrapping ErrNotFound; e.mu held.
func (e *Emulator) lookup(id string) (*device, error) {
	d, ok := e.devices[id]
	if !ok {
		return nil, fmt.Errorf("%w: device %q", ErrNotFound, id)
	}
	return d, nil
}

// CreateDevice creates device id with an individual enrollment and random
// symmetric keys, and returns its primary key. The device can then
// register with DPS (even when AutoApprove is off) or connect to the hub
// directly with that key. It returns ErrInvalid for a malformed id (see
// EnrollmentGroup.ID for the characters) and ErrConflict when it exists.
func (e *Emulator) CreateDevice(id string) (string, error) {
	if err := validID(id); err != nil {
		return "", fmt.Errorf("create device: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.devices[id]; ok {
		return "", fmt.Errorf("%w: device %q", ErrConflict, id)
	}
	d := newDevice(id, e.now())
	d.indivKeys = [2]string{randomKey(), randomKey()}
	e.devices[id] = d
	e.log.Info("device created", "device_id", id)
	return d.indivKeys[0], nil
}

// Devices lists every device, sorted by id.
func (e *Emulator) Devices() []Device {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Device, 0, len(e.devices))
	for _, d := range e.devices {
		out = append(out, d.public())
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Device returns one device, or an error wrapping ErrNotFound.
func (e *Emulator) Device(id string) (Device, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	d, err := e.lookup(id)
	if err != nil {
		return Device{}, err
	}
	return d.public(), nil
}

// Twin returns copies of the device's desired and reported sections as
// IoT Hub shows them, with "$version" and "$metadata". It returns
// ErrNotFound for an unknown device.
func (e *Emulator) Twin(id string) (desired, reported map[string]any, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	d, err := e.lookup(id)
	if err != nil {
		return nil, nil, err
	}
	return d.desired.Document(), d.reported.Document(), nil
}

// UpdateProperties applies patch to the device's desired properties (under
// component when not "", marked with "__t":"c" as IoT Central does; a nil
// value deletes), increments the desired $version and, when the device is
// connected and subscribed to desired patches, pushes the patch with
// "$version". It returns ErrNotFound, ErrInvalid for a bad patch (names
// with '.', '$' or space, more than 10 levels, a string over 4 KiB), or
// ErrTooLarge when the section would exceed MaxTwinSection.
func (e *Emulator) UpdateProperties(ctx context.Context, id, component string, patch map[string]any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if component != "" {
		inner := map[string]any{"__t": "c"}
		for k, v := range patch {
			inner[k] = v
		}
		patch = map[string]any{component: inner}
	}
	p, err := wire.NormalizePatch(patch)
	if err != nil {
		return fmt.Errorf("%w: desired patch: %v", ErrInvalid, err)
	}
	e.mu.Lock()
	d, err := e.lookup(id)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	v, err := d.desired.Apply(p, e.now())
	if err != nil {
		e.mu.Unlock()
		if errors.Is(err, twin.ErrTooLarge) {
			return fmt.Errorf("%w: desired patch: %v", ErrTooLarge, err)
		}
		return fmt.Errorf("%w: desired patch: %v", ErrInvalid, err)
	}
	c, s := d.conn, d.amqp
	e.mu.Unlock()
	e.log.Info("desired properties updated", "device_id", id, "version", v)
	if c == nil && s == nil {
		return nil
	}
	body, err := json.Marshal(twin.WithVersion(p, v))
	if err != nil {
		return fmt.Errorf("emulator: encode desired patch: %w", err)
	}
	if s != nil {
		if err := s.dc.PushDesired(body); err != nil && !errors.Is(err, amqphub.ErrNotSubscribed) {
			e.log.Warn("desired patch not delivered", "device_id", id, "error", err)
		}
		return nil
	}
	topic := fmt.Sprintf("$iothub/twin/PATCH/properties/desired/?$version=%d", v)
	if !c.subscribed(topic) {
		return nil
	}
	if err := e.send(c, topic, body); err != nil {
		e.log.Warn("desired patch not delivered", "device_id", id, "error", err)
	}
	return nil
}

// LatestTelemetry returns the latest value of field name sent by the device
// in a JSON object body, for component ("" = root). It returns ErrNotFound
// for an unknown device or a name never sent.
func (e *Emulator) LatestTelemetry(id, component, name string) (TelemetryValue, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	d, err := e.lookup(id)
	if err != nil {
		return TelemetryValue{}, err
	}
	v, ok := d.telemetry[component][name]
	if !ok {
		return TelemetryValue{}, fmt.Errorf("%w: telemetry %q of device %q component %q", ErrNotFound, name, id, component)
	}
	return v, nil
}

// NextTelemetry waits for the next telemetry message of device id that
// arrives after the call started (the device need not exist yet). It
// returns ctx.Err() when ctx ends first and ErrClosed when the emulator closes.
func (e *Emulator) NextTelemetry(ctx context.Context, id string) (Telemetry, error) {
	ch, stop := e.watch(id, 1)
	defer stop()
	select {
	case t := <-ch:
		return t, nil
	case <-ctx.Done():
		return Telemetry{}, ctx.Err()
	case <-e.done:
		return Telemetry{}, ErrClosed
	}
}

// TelemetryWatchBuffer is how many messages a WatchTelemetry channel holds;
// when it is full, newer messages are dropped for that watcher.
const TelemetryWatchBuffer = 256

// WatchTelemetry streams every telemetry message of device id that arrives
// from now on, until stop is called (stop is idempotent; call it, or the
// watcher lives as long as the emulator). The channel is never closed.
func (e *Emulator) WatchTelemetry(id string) (messages <-chan Telemetry, stop func()) {
	return e.watch(id, TelemetryWatchBuffer)
}

func (e *Emulator) watch(id string, buf int) (chan Telemetry, func()) {
	ch := make(chan Telemetry, buf)
	e.mu.Lock()
	if e.watchers[id] == nil {
		e.watchers[id] = map[chan Telemetry]struct{}{}
	}
	e.watchers[id][ch] = struct{}{}
	e.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			e.mu.Lock()
			delete(e.watchers[id], ch)
			if len(e.watchers[id]) == 0 {
				delete(e.watchers, id)
			}
			e.mu.Unlock()
		})
	}
}

// EnrollmentGroups lists the enrollment groups in creation order.
func (e *Emulator) EnrollmentGroups() []EnrollmentGroup {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]EnrollmentGroup, len(e.groups))
	for i, g := range e.groups {
		g.CACertPEM = append([]byte(nil), g.CACertPEM...)
		out[i] = g
	}
	return out
}

// PutEnrollmentGroup creates or replaces the group with g.ID, generating
// missing symmetric keys, and returns what was stored. Devices already
// provisioned keep their keys. It returns ErrInvalid for a bad id, key or
// CA certificate.
func (e *Emulator) PutEnrollmentGroup(g EnrollmentGroup) (EnrollmentGroup, error) {
	ng, err := normalizeGroup(g)
	if err != nil {
		return EnrollmentGroup{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if i := slices.IndexFunc(e.groups, func(x EnrollmentGroup) bool { return x.ID == ng.ID }); i >= 0 {
		e.groups[i] = ng
	} else {
		e.groups = append(e.groups, ng)
	}
	e.log.Info("enrollment group stored", "group_id", ng.ID, "enabled", ng.Enabled, "x509", ng.IsX509())
	out := ng
	out.CACertPEM = append([]byte(nil), ng.CACertPEM...)
	return out, nil
}

// group returns the group with id; e.mu held.
func (e *Emulator) group(id string) (EnrollmentGroup, bool) {
	for _, g := range e.groups {
		if g.ID == id {
			return g, true
		}
	}
	return EnrollmentGroup{}, false
}

// DisconnectDevice drops the device's hub connection without a DISCONNECT
// packet, as a network failure would (fault injection). It returns
// ErrNotFound for an unknown device and ErrDeviceOffline when it is not
// connected.
func (e *Emulator) DisconnectDevice(id string) error {
	e.mu.Lock()
	d, err := e.lookup(id)
	var c *conn
	var s *amqpSession
	if err == nil {
		c, s = d.conn, d.amqp
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	if s != nil {
		e.log.Info("dropping device connection on request", "device_id", id, "protocol", amqphub.Protocol)
		s.dc.Close(errDroppedByOperator)
		return nil
	}
	if c == nil {
		return fmt.Errorf("%w: device %q", ErrDeviceOffline, id)
	}
	e.log.Info("dropping device connection on request", "device_id", id)
	c.cl.Stop(errDroppedByOperator)
	return nil
}

// SendCloudToDevice queues a cloud-to-device message and delivers it at
// once when the device is connected and subscribed. props become
// application properties; "$.mid" and "$.to" are added. A message stays
// queued (and is delivered again on the next connection) until the device
// acknowledges it with PUBACK. It returns ErrNotFound, ErrTooLarge for a
// body over MaxC2DBody, ErrInvalid for an empty property name, and
// ErrQueueFull when MaxC2DQueue messages wait.
// Queued messages do not expire.
func (e *Emulator) SendCloudToDevice(ctx context.Context, id string, body []byte, props map[string]string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(body) > MaxC2DBody {
		return fmt.Errorf("%w: cloud-to-device body of %d bytes exceeds %d", ErrTooLarge, len(body), MaxC2DBody)
	}
	mid := newUUID()
	bag := domain.PropertyBag{
		{Key: domain.PropMessageID, Value: mid},
		{Key: domain.PropTo, Value: "/devices/" + id + "/messages/devicebound"},
	}
	keys := make([]string, 0, len(props))
	for k := range props {
		if k == "" {
			return fmt.Errorf("%w: empty property name", ErrInvalid)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		bag = append(bag, domain.Property{Key: k, Value: props[k]})
	}
	m := &c2dMsg{id: mid, topic: wire.C2DFilterPrefix(id) + bag.Encode(), body: append([]byte(nil), body...), props: map[string]string{}}
	for k, v := range props {
		m.props[k] = v
	}
	e.mu.Lock()
	d, err := e.lookup(id)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	if len(d.c2d) >= MaxC2DQueue {
		e.mu.Unlock()
		return fmt.Errorf("%w: device %q has %d messages pending", ErrQueueFull, id, MaxC2DQueue)
	}
	d.c2d = append(d.c2d, m)
	e.mu.Unlock()
	e.log.Info("cloud-to-device message queued", "device_id", id, "message_id", mid)
	e.deliverC2D(id)
	return nil
}

// QueueCommand queues a command for a device that may be offline, as IoT
// Central does: a cloud-to-device message whose "method-name" property is
// "component*name" (or "name" for the root component) and whose body is
// the JSON payload (nil sends "null"). Errors are those of
// SendCloudToDevice, plus ErrInvalid for an empty name or a payload that
// does not encode.
func (e *Emulator) QueueCommand(ctx context.Context, id, component, name string, payload any) error {
	method, err := methodName(component, name)
	if err != nil {
		return err
	}
	body, err := encodePayload(payload)
	if err != nil {
		return err
	}
	return e.SendCloudToDevice(ctx, id, body, map[string]string{domain.PropMethodName: method})
}

func methodName(component, name string) (string, error) {
	if name == "" || strings.ContainsAny(name+component, "/+#?*&=") {
		return "", fmt.Errorf("%w: command name %q (component %q)", ErrInvalid, name, component)
	}
	if component != "" {
		return component + "*" + name, nil
	}
	return name, nil
}

func encodePayload(payload any) ([]byte, error) {
	if raw, ok := payload.(json.RawMessage); ok {
		if !json.Valid(raw) {
			return nil, fmt.Errorf("%w: payload is not valid JSON", ErrInvalid)
		}
		return raw, nil
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrInvalid, err)
	}
	return b, nil
}

// Sample topics for WaitSubscribed: each matches the subscription a device
// makes for that feature.
const (
	TopicMethods       = "$iothub/methods/POST/"
	TopicDesired       = "$iothub/twin/PATCH/properties/desired/"
	TopicTwinResponses = "$iothub/twin/res/"
)

// C2DTopic is a sample cloud-to-device topic of device id, for WaitSubscribed.
func C2DTopic(id string) string { return wire.C2DFilterPrefix(id) }

// WaitSubscribed waits until device id has a hub connection holding a
// subscription that matches topic (for example TopicMethods), so that a
// test can invoke a command or push a property without racing the device's
// SUBSCRIBE. It returns at once when that is already so; otherwise
// ctx.Err() or ErrClosed. The device need not exist yet.
func (e *Emulator) WaitSubscribed(ctx context.Context, id, topic string) error {
	for {
		e.mu.Lock()
		d, ok := e.devices[id]
		ready := ok && (d.conn != nil && d.conn.subscribed(topic) || d.amqp != nil && amqpSubscribed(d.amqp, id, topic))
		ch := e.changeChanLocked(id)
		e.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-e.done:
			return ErrClosed
		}
	}
}

// changeChanLocked returns a channel closed at the device's next connection
// change (connect, disconnect, subscribe); e.mu held.
func (e *Emulator) changeChanLocked(id string) chan struct{} {
	ch, ok := e.changes[id]
	if !ok {
		ch = make(chan struct{})
		e.changes[id] = ch
	}
	return ch
}

// notifyLocked wakes WaitSubscribed callers of device id; e.mu held.
func (e *Emulator) notifyLocked(id string) {
	if ch, ok := e.changes[id]; ok {
		close(ch)
		delete(e.changes, id)
	}
}
