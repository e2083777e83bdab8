package core

import (
	"fmt"
	"strconv"
	"time"
)

// TelemetrySink sees every device-to-cloud message the model stores (the
// Event Hubs-compatible endpoint's built-in entity is one). It is called
// with the model's lock held, after msg's Seq and Received are set, so it
// sees messages in the order the model stores them; it must not call the
// model. generationID identifies the device's incarnation
// (iothub-connection-auth-generation-id). The changes it returns, of
// KindEvent only, are committed in the same unit as the message, so a
// message a device saw acknowledged is in the sink's durable log too.
type TelemetrySink func(msg Telemetry, generationID string) []Change

// SetTelemetrySink installs s (nil removes it). Install it before a
// front-end serves: messages stored before are not replayed.
func (c *Core) SetTelemetrySink(s TelemetrySink) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sink = s
}

// sinkLocked asks the sink for the changes of msg; c.mu held.
func (c *Core) sinkLocked(d *device, msg Telemetry) []Change {
	if c.sink == nil {
		return nil
	}
	changes := c.sink(msg, generationID(d))
	if !c.durable() {
		return nil
	}
	return changes
}

// generationID is the device's incarnation: its creation time, as the
// feedback records give it.
func generationID(d *device) string { return strconv.FormatInt(d.created.UnixNano(), 10) }

// Operations of a DeviceNotification, as IoT Hub names them (opType).
const (
	OpUpdateTwin           = "updateTwin"
	OpCreateDeviceIdentity = "createDeviceIdentity"
	OpDeleteDeviceIdentity = "deleteDeviceIdentity"
)

// DeviceNotification is a change IoT Hub can route to its built-in
// endpoint besides telemetry: a change of a device's desired or reported
// properties (OpUpdateTwin: twin change events) or its creation or
// deletion (OpCreateDeviceIdentity, OpDeleteDeviceIdentity: device
// lifecycle events).
type DeviceNotification struct {
	// Op is OpUpdateTwin, OpCreateDeviceIdentity or OpDeleteDeviceIdentity.
	Op string
	// DeviceID is the device concerned.
	DeviceID string
	// Section ("desired" or "reported"), Patch (as applied: a JSON merge
	// patch) and Version (the section's new $version): OpUpdateTwin only.
	Section string
	Patch   map[string]any
	Version int64
	// TwinVersion is the twin's version after the change.
	TwinVersion int64
	// Twin is the device's twin after a creation or before a deletion
	// (deviceId, etag, version, properties.desired, properties.reported),
	// for the lifecycle operations.
	Twin map[string]any
	// GenerationID identifies the device's incarnation.
	GenerationID string
	// Time is when it happened.
	Time time.Time
}

// NotificationSink sees every DeviceNotification, called like a
// TelemetrySink: with the model's lock held, its KindEvent changes
// committed with the device's change.
type NotificationSink func(DeviceNotification) []Change

// SetNotificationSink installs s (nil removes it).
func (c *Core) SetNotificationSink(s NotificationSink) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.notifySink = s
}

// sinkNotificationLocked hands n (DeviceID, GenerationID, TwinVersion and Time
// filled from d) to the sink and keeps its changes for the next
// stageDeviceLocked or stageDeleteLocked; c.mu held.
func (c *Core) sinkNotificationLocked(d *device, n DeviceNotification) {
	if c.notifySink == nil {
		return
	}
	n.DeviceID, n.GenerationID, n.TwinVersion, n.Time = d.id, generationID(d), twinVersion(d), c.now()
	if n.Op != OpUpdateTwin {
		n.Twin = map[string]any{
			"deviceId": d.id, "etag": ETagOf(d.version), "version": twinVersion(d),
			"properties": map[string]any{"desired": d.desired.Document(), "reported": d.reported.Document()},
		}
	}
	changes := c.notifySink(n)
	if c.durable() {
		c.sunk = append(c.sunk, changes...)
	}
}

// twinChangedLocked notifies a change of a twin section; c.mu held.
func (c *Core) twinChangedLocked(d *device, section string, patch map[string]any, v int64) {
	c.sinkNotificationLocked(d, DeviceNotification{Op: OpUpdateTwin, Section: section, Patch: patch, Version: v})
}

// takeSunkLocked returns and forgets the sink's pending changes; c.mu held.
func (c *Core) takeSunkLocked() []Change {
	out := c.sunk
	c.sunk = nil
	return out
}

// StageEvents commits changes of KindEvent (an Event Hubs entity's events
// and settings) after every change the model staged before, and returns
// once they are durable (at once without a store). It returns an error
// wrapping ErrInvalid for a change of another kind and ErrStore when the
// commit failed.
func (c *Core) StageEvents(changes []Change) error {
	for _, ch := range changes {
		if ch.Record.Kind != KindEvent {
			return fmt.Errorf("%w: StageEvents takes %s records only, not %s", ErrInvalid, KindEvent, ch.Record.Kind)
		}
	}
	c.mu.Lock()
	staged := c.stageLocked(changes...)
	c.mu.Unlock()
	return awaitNow(staged)
}

// StoredEvents returns the KindEvent records Load found, in the store's
// order (by stream, then sequence number), and forgets them: the
// Event Hubs endpoint that owns them calls it once, at its start.
func (c *Core) StoredEvents() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.loadedEvents
	c.loadedEvents = nil
	return out
}
