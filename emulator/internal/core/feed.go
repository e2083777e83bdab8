package core

import (
	"slices"
	"sync"
	"time"
)

// FeedKind says what changed in a FeedEvent.
type FeedKind int

// The kinds of FeedEvent.
const (
	// FeedTelemetry: a device-to-cloud message was stored
	// (FeedEvent.Telemetry).
	FeedTelemetry FeedKind = iota + 1
	// FeedReported: the device patched its reported properties
	// (FeedEvent.Patch, FeedEvent.Version).
	FeedReported
	// FeedDesired: the operator or a service changed desired properties
	// (FeedEvent.Patch, FeedEvent.Version).
	FeedDesired
	// FeedConnected: a hub connection attached.
	FeedConnected
	// FeedDisconnected: the device's hub connection went away.
	FeedDisconnected
	// FeedRegistered: a device was created (operator, service API or a
	// DPS registration of an unknown device).
	FeedRegistered
	// FeedDeleted: a device was deleted.
	FeedDeleted
	// FeedProvisioned: DPS assigned the device to the hub.
	FeedProvisioned
	// FeedEnabled and FeedDisabled: the operator changed the device's
	// enabled state.
	FeedEnabled
	FeedDisabled
	// FeedDisplayNameChanged: the operator renamed the device.
	FeedDisplayNameChanged
	// FeedTemplateAssigned: the operator changed the device's template.
	FeedTemplateAssigned
	// FeedTemplateCreated, FeedTemplateUpdated and FeedTemplateDeleted:
	// a device template changed (FeedEvent.TemplateID; DeviceID is "").
	FeedTemplateCreated
	FeedTemplateUpdated
	FeedTemplateDeleted
)

// String names the kind ("telemetry", "reported", ...).
func (k FeedKind) String() string {
	names := [...]string{"unknown", "telemetry", "reported", "desired", "connected", "disconnected",
		"registered", "deleted", "provisioned", "enabled", "disabled", "displayNameChanged",
		"templateAssigned", "templateCreated", "templateUpdated", "templateDeleted"}
	if k < 0 || int(k) >= len(names) {
		return "unknown"
	}
	return names[k]
}

// FeedEvent is one change of the model, as observers outside it (the data
// export) follow it. The observer owns every map and slice in it.
type FeedEvent struct {
	// Kind says what happened.
	Kind FeedKind
	// DeviceID is the device concerned ("" for a template event).
	DeviceID string
	// Time is when the core made the change (UTC); for telemetry it is
	// the message's Received time.
	Time time.Time
	// Telemetry is the message (FeedTelemetry), with its Seq set.
	Telemetry Telemetry
	// Patch is the twin patch as applied (FeedReported, FeedDesired): a
	// component's section is an object holding "__t": "c"; a nil value
	// removed the property.
	Patch map[string]any
	// Version is the twin section's new $version (FeedReported, FeedDesired).
	Version int64
	// TemplateID is the device template (template events).
	TemplateID string
}

// Observer follows the model's changes (the observer port). Observe is
// called for every change in the order the core made them, while the core
// holds its lock: it must return at once, must not block and must not call
// the Core (queue the event and handle it on another goroutine). An event
// is observed once the change is made; a change that the store then fails
// to make durable has been observed nonetheless (its caller gets the error
// and usually retries), so observers see changes at least once.
type Observer interface {
	Observe(ev FeedEvent)
}

// feed holds the observers; its zero value is ready. Its lock is taken
// inside c.mu.
type feed struct {
	mu  sync.Mutex
	obs []*observerEntry
}

type observerEntry struct{ o Observer }

// AddObserver makes o follow the model from now on, until remove is called
// (remove is idempotent).
func (c *Core) AddObserver(o Observer) (remove func()) {
	e := &observerEntry{o}
	c.feed.mu.Lock()
	c.feed.obs = append(c.feed.obs, e)
	c.feed.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.feed.mu.Lock()
			c.feed.obs = slices.DeleteFunc(c.feed.obs, func(x *observerEntry) bool { return x == e })
			c.feed.mu.Unlock()
		})
	}
}

// observeLocked hands ev to every observer; c.mu held (so observers see
// changes in the order they were made).
func (c *Core) observeLocked(ev FeedEvent) {
	c.feed.mu.Lock()
	obs := c.feed.obs
	c.feed.mu.Unlock()
	if len(obs) == 0 {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = c.now()
	}
	for i, e := range obs {
		if i > 0 { // each observer owns its copy
			ev = cloneFeedEvent(ev)
		}
		e.o.Observe(ev)
	}
}

// observingLocked reports whether anyone observes (to skip copies); c.mu held.
func (c *Core) observingLocked() bool {
	c.feed.mu.Lock()
	defer c.feed.mu.Unlock()
	return len(c.feed.obs) > 0
}

func cloneFeedEvent(ev FeedEvent) FeedEvent {
	ev.Telemetry = cloneTelemetry(ev.Telemetry)
	if ev.Patch != nil {
		ev.Patch = cloneJSON(ev.Patch).(map[string]any)
	}
	return ev
}

// observePatchLocked reports a twin patch; c.mu held.
func (c *Core) observePatchLocked(kind FeedKind, id string, patch map[string]any, v int64) {
	if !c.observingLocked() {
		return
	}
	p, _ := cloneJSON(patch).(map[string]any)
	c.observeLocked(FeedEvent{Kind: kind, DeviceID: id, Patch: p, Version: v})
}
