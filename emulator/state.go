package emulator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/wire"
)

// Attestation kinds reported in Device.Attestation.
const (
	AttestationSymmetricKey = core.AttestationSymmetricKey
	AttestationX509         = core.AttestationX509
)

// Device is a snapshot of one device the emulator knows.
type Device = core.Device

// TelemetryValue is the latest value of one telemetry field.
type TelemetryValue = core.TelemetryValue

// Telemetry is one device-to-cloud message.
type Telemetry = core.Telemetry

// CommandResult is a device's answer to a direct method.
type CommandResult = core.CommandResult

// CreateDevice creates device id with an individual enrollment and random
// symmetric keys, and returns its primary key. The device can then
// register with DPS (even when AutoApprove is off) or connect to the hub
// directly with that key. It returns ErrInvalid for a malformed id (see
// EnrollmentGroup.ID for the characters) and ErrConflict when it exists.
func (e *Emulator) CreateDevice(id string) (string, error) { return e.core.CreateDevice(id) }

// Devices lists every device, sorted by id.
func (e *Emulator) Devices() []Device { return e.core.Devices() }

// Device returns one device, or an error wrapping ErrNotFound.
func (e *Emulator) Device(id string) (Device, error) { return e.core.Device(id) }

// Twin returns copies of the device's desired and reported sections as
// IoT Hub shows them, with "$version" and "$metadata". It returns
// ErrNotFound for an unknown device.
func (e *Emulator) Twin(id string) (desired, reported map[string]any, err error) {
	return e.core.Twin(id)
}

// UpdateProperties applies patch to the device's desired properties (under
// component when not "", marked with "__t":"c" as IoT Central does; a nil
// value deletes), increments the desired $version and, when the device is
// connected and subscribed to desired patches, pushes the patch with
// "$version". It returns ErrNotFound, ErrInvalid for a bad patch (names
// with '.', '$' or space, more than 10 levels, a string over 4 KiB), or
// ErrTooLarge when the section would exceed MaxTwinSection.
func (e *Emulator) UpdateProperties(ctx context.Context, id, component string, patch map[string]any) error {
	return e.core.UpdateProperties(ctx, id, component, patch)
}

// LatestTelemetry returns the latest value of field name sent by the device
// in a JSON object body, for component ("" = root). It returns ErrNotFound
// for an unknown device or a name never sent.
func (e *Emulator) LatestTelemetry(id, component, name string) (TelemetryValue, error) {
	return e.core.LatestTelemetry(id, component, name)
}

// TelemetryFilter selects messages of TelemetryHistory.
type TelemetryFilter struct {
	// Since keeps only messages received strictly after it; zero keeps all.
	Since time.Time
	// Component keeps only messages of that component when ByComponent is
	// set ("" is the root component).
	Component string
	// ByComponent turns the Component filter on.
	ByComponent bool
	// Limit keeps only the newest Limit messages of the selection; 0 keeps all.
	Limit int
}

// TelemetryHistory returns the telemetry messages the emulator kept for
// the device (the last Options.TelemetryHistory, default
// DefaultTelemetryHistory), oldest first, that match f. It returns
// ErrNotFound for an unknown device.
func (e *Emulator) TelemetryHistory(id string, f TelemetryFilter) ([]Telemetry, error) {
	return e.core.TelemetryHistory(id, core.HistoryFilter{Since: f.Since, Component: f.Component, ByComponent: f.ByComponent, Limit: f.Limit})
}

// NextTelemetry waits for the next telemetry message of device id that
// arrives after the call started (the device need not exist yet). It
// returns ctx.Err() when ctx ends first and ErrClosed when the emulator closes.
func (e *Emulator) NextTelemetry(ctx context.Context, id string) (Telemetry, error) {
	return e.core.NextTelemetry(ctx, id)
}

// TelemetryWatchBuffer is how many messages a WatchTelemetry channel holds;
// when it is full, newer messages are dropped for that watcher.
const TelemetryWatchBuffer = core.TelemetryWatchBuffer

// WatchTelemetry streams every telemetry message of device id that arrives
// from now on, until stop is called (stop is idempotent; call it, or the
// watcher lives as long as the emulator). The channel is never closed.
func (e *Emulator) WatchTelemetry(id string) (messages <-chan Telemetry, stop func()) {
	return e.core.WatchTelemetry(id)
}

// EnrollmentGroups lists the enrollment groups in creation order.
func (e *Emulator) EnrollmentGroups() []EnrollmentGroup { return e.core.EnrollmentGroups() }

// PutEnrollmentGroup creates or replaces the group with g.ID, generating
// missing symmetric keys, and returns what was stored. Devices already
// provisioned keep their keys. It returns ErrInvalid for a bad id, key or
// CA certificate.
func (e *Emulator) PutEnrollmentGroup(g EnrollmentGroup) (EnrollmentGroup, error) {
	return e.core.PutEnrollmentGroup(g)
}

// DisconnectDevice drops the device's hub connection without a DISCONNECT
// packet, as a network failure would (fault injection). It returns
// ErrNotFound for an unknown device and ErrDeviceOffline when it is not
// connected.
func (e *Emulator) DisconnectDevice(id string) error { return e.core.DisconnectDevice(id) }

// SendCloudToDevice queues a cloud-to-device message and delivers it at
// once when the device is connected and subscribed. props become
// application properties; "$.mid" and "$.to" are added. A message stays
// queued (and is delivered again on the next connection) until the device
// acknowledges it (MQTT PUBACK, AMQP accepted or rejected). It returns
// ErrNotFound, ErrTooLarge for a body over MaxC2DBody, ErrInvalid for an
// empty property name, and ErrQueueFull when MaxC2DQueue messages wait.
// Queued messages do not expire.
func (e *Emulator) SendCloudToDevice(ctx context.Context, id string, body []byte, props map[string]string) error {
	return e.core.SendCloudToDevice(ctx, id, body, props)
}

// QueueCommand queues a command for a device that may be offline, as IoT
// Central does: a cloud-to-device message whose "method-name" property is
// "component*name" (or "name" for the root component) and whose body is
// the JSON payload (nil sends "null"). Errors are those of
// SendCloudToDevice, plus ErrInvalid for an empty name or a payload that
// does not encode.
func (e *Emulator) QueueCommand(ctx context.Context, id, component, name string, payload any) error {
	return e.core.QueueCommand(ctx, id, component, name, payload)
}

// InvokeCommand calls a direct method on a connected device: over MQTT it
// publishes $iothub/methods/POST/{component*name|name}/?$rid={rid} with
// the JSON payload (nil sends "null") and waits for the device's answer.
// timeout <= 0 means DefaultCommandTimeout; it is capped at
// MaxCommandTimeout. It returns ErrNotFound for an unknown device,
// ErrInvalid for a bad name or payload, ErrDeviceOffline when the device
// is not connected or not subscribed to methods, ErrTimeout when no
// answer comes in time, ctx.Err() or ErrClosed.
func (e *Emulator) InvokeCommand(ctx context.Context, id, component, name string, payload any, timeout time.Duration) (CommandResult, error) {
	return e.core.InvokeCommand(ctx, id, component, name, payload, 0, timeout)
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

// WaitSubscribed waits until device id has a hub connection (any
// protocol) holding the subscription that topic stands for: TopicMethods,
// TopicDesired, TopicTwinResponses or C2DTopic(id) (a topic under one of
// them counts as it), so that a test can invoke a command or push a
// property without racing the device's SUBSCRIBE. It returns at once when
// that is already so; otherwise ctx.Err() or ErrClosed, and ErrInvalid for
// a topic of none of the four. The device need not exist yet.
func (e *Emulator) WaitSubscribed(ctx context.Context, id, topic string) error {
	var f core.Feature
	switch {
	case strings.HasPrefix(topic, TopicMethods):
		f = core.FeatureMethods
	case strings.HasPrefix(topic, TopicDesired):
		f = core.FeatureDesired
	case strings.HasPrefix(topic, TopicTwinResponses):
		f = core.FeatureTwin
	case strings.HasPrefix(topic, wire.C2DFilterPrefix(id)):
		f = core.FeatureC2D
	default:
		return fmt.Errorf("%w: WaitSubscribed topic %q", ErrInvalid, topic)
	}
	return e.core.WaitSubscribed(ctx, id, f)
}

// StoreStats counts the commits of the DataDir database: Units/Commits
// is the mean number of acknowledged changes one commit carried (group
// commit). It is zero without a DataDir.
type StoreStats = core.StoreStats

// StoreStats reports the DataDir database's commits so far (zero without
// a DataDir).
func (e *Emulator) StoreStats() StoreStats {
	if e.store == nil {
		return StoreStats{}
	}
	return e.store.Stats()
}
