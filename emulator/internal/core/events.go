package core

import (
	"slices"
	"sync"
	"time"
)

// EventKind says what happened to a device in an Event.
type EventKind int

// The kinds of Event.
const (
	// EventConnected: a hub connection attached (Event.Replaced when it
	// took over an older connection of the same device).
	EventConnected EventKind = iota + 1
	// EventDisconnected: the device's hub connection went away.
	EventDisconnected
	// EventDesired: the operator changed desired properties (Event.Version
	// is the new desired $version).
	EventDesired
	// EventReported: the device patched its reported properties
	// (Event.Version is the new reported $version).
	EventReported
)

// String names the kind ("connected", "disconnected", "desired", "reported").
func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventDisconnected:
		return "disconnected"
	case EventDesired:
		return "desired"
	case EventReported:
		return "reported"
	default:
		return "unknown"
	}
}

// Event is a change of a device's connection or twin, for observers such
// as the dashboard. Telemetry is not an Event: see WatchTelemetry and
// MessageCount.
type Event struct {
	// DeviceID is the device concerned.
	DeviceID string
	// Kind says what happened.
	Kind EventKind
	// Protocol is the transport of the connection (EventConnected and
	// EventDisconnected), as Link.Protocol names it.
	Protocol string
	// Replaced is set on an EventConnected that took over a live connection.
	Replaced bool
	// Version is the twin section's new $version (EventDesired, EventReported).
	Version int64
	// Time is when it happened (UTC).
	Time time.Time
}

const (
	// MaxRecentEvents is how many events per device RecentEvents keeps.
	MaxRecentEvents = 50
	// EventWatchBuffer is how many events a WatchEvents channel holds;
	// when it is full, newer events are dropped for that watcher.
	EventWatchBuffer = 64
)

// eventHub is the observer side of the model: recent events and message
// counts per device, and event watchers. Its zero value is ready; its lock
// is taken after (inside) c.mu and nothing is called while holding it.
type eventHub struct {
	mu     sync.Mutex
	recent map[string][]Event
	counts map[string]uint64
	subs   map[string]map[chan Event]struct{} // "" watches every device
}

// emit records ev and hands it to the watchers of its device and of all
// devices, without blocking. Callers may hold c.mu.
func (c *Core) emit(ev Event) {
	switch ev.Kind {
	case EventConnected:
		c.observeLocked(FeedEvent{Kind: FeedConnected, DeviceID: ev.DeviceID, Time: ev.Time})
	case EventDisconnected:
		c.observeLocked(FeedEvent{Kind: FeedDisconnected, DeviceID: ev.DeviceID, Time: ev.Time})
	}
	h := &c.events
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.recent == nil {
		h.recent = map[string][]Event{}
	}
	r := h.recent[ev.DeviceID]
	if len(r) >= MaxRecentEvents {
		r = slices.Delete(r, 0, len(r)-MaxRecentEvents+1)
	}
	h.recent[ev.DeviceID] = append(r, ev)
	for _, key := range []string{ev.DeviceID, ""} {
		for ch := range h.subs[key] {
			select {
			case ch <- ev:
			default: // a slow watcher loses events, never the model
			}
		}
	}
}

// countTelemetry adds one to the device's received-message count.
func (c *Core) countTelemetry(id string) {
	h := &c.events
	h.mu.Lock()
	if h.counts == nil {
		h.counts = map[string]uint64{}
	}
	h.counts[id]++
	h.mu.Unlock()
}

// MessageCount is how many telemetry messages device id sent since the
// emulator started (0 for an unknown device).
func (c *Core) MessageCount(id string) uint64 {
	h := &c.events
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[id]
}

// RecentEvents returns the device's last MaxRecentEvents events, oldest
// first (none for an unknown device).
func (c *Core) RecentEvents(id string) []Event {
	h := &c.events
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.recent[id])
}

// WatchEvents streams the events of device id ("" for every device) that
// happen from now on, until stop is called (stop is idempotent; call it,
// or the watcher lives as long as the model). The channel holds
// EventWatchBuffer events and is never closed.
func (c *Core) WatchEvents(id string) (<-chan Event, func()) {
	ch := make(chan Event, EventWatchBuffer)
	h := &c.events
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[string]map[chan Event]struct{}{}
	}
	if h.subs[id] == nil {
		h.subs[id] = map[chan Event]struct{}{}
	}
	h.subs[id][ch] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs[id], ch)
			if len(h.subs[id]) == 0 {
				delete(h.subs, id)
			}
			h.mu.Unlock()
		})
	}
}
