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

// TwinChange is a change of a device's desired or reported properties,
// for a TwinChangeSink.
type TwinChange struct {
	// DeviceID is the device whose twin changed.
	DeviceID string
	// Section is "desired" or "reported".
	Section string
	// Patch is the change as applied (a JSON merge patch: null removes).
	Patch map[string]any
	// Version is the section's new $version; TwinVersion the twin's.
	Version, TwinVersion int64
	// GenerationID identifies the device's incarnation.
	GenerationID string
	// Time is when it was applied.
	Time time.Time
}

// TwinChangeSink sees every change of desired or reported properties
// (IoT Hub's twin change events), called like a TelemetrySink: with the
// model's lock held, its KindEvent changes committed with the twin.
type TwinChangeSink func(TwinChange) []Change

// SetTwinChangeSink installs s (nil removes it).
func (c *Core) SetTwinChangeSink(s TwinChangeSink) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.twinSink = s
}

// twinChangedLocked hands a twin change to the sink and keeps its changes
// for the device's next stageDeviceLocked; c.mu held.
func (c *Core) twinChangedLocked(d *device, section string, patch map[string]any, v int64) {
	if c.twinSink == nil {
		return
	}
	changes := c.twinSink(TwinChange{DeviceID: d.id, Section: section, Patch: patch, Version: v,
		TwinVersion: twinVersion(d), GenerationID: generationID(d), Time: c.now()})
	if c.durable() {
		c.sunk = append(c.sunk, changes...)
	}
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
