package core

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// StoreTelemetry records a device-to-cloud message (any protocol): the
// latest value of each field of a JSON object body, the message in the
// device's history, and a copy to every watcher. It takes ownership of
// msg's Body, Properties and System (the history keeps them, so a stored
// message costs no second copy): the caller must not change them after.
// With a store it returns once the message is durable, so the front-end
// acknowledges only what a restart keeps; errors wrap ErrStore (the
// front-end then refuses the message). A message of an unknown device is
// dropped without error.
func (c *Core) StoreTelemetry(msg Telemetry) error {
	fields := jsonFields(msg.Body)
	c.mu.Lock()
	var staged <-chan error
	if d, ok := c.devices[msg.DeviceID]; ok {
		d.lastActivity = c.now()
		if m := d.modules[msg.ModuleID]; m != nil {
			m.lastActivity = d.lastActivity // a module's message is its activity too
		}
		c.countTelemetry(msg.DeviceID)
		c.telemetrySeq++
		msg.Seq = c.telemetrySeq
		c.latestLocked(d, msg, fields)
		if c.observingLocked() {
			c.observeLocked(FeedEvent{Kind: FeedTelemetry, DeviceID: msg.DeviceID, Time: msg.Received, Telemetry: cloneTelemetry(msg)})
		}
		sunk := c.sinkLocked(d, msg)
		if n := c.cfg.TelemetryHistory; n <= 0 {
			staged = c.stageLocked(sunk...)
		} else {
			var changes []Change
			if c.durable() {
				changes = append(changes, telemetryChange(msg.Seq, msg))
			}
			if len(d.history) >= n {
				drop := len(d.history) - n + 1
				if c.durable() {
					for _, old := range d.history[:drop] {
						changes = append(changes, Change{Op: OpDelete, Record: Record{Kind: KindTelemetry, Device: old.DeviceID, Seq: old.Seq}})
					}
				}
				d.history = slices.Delete(d.history, 0, drop)
			}
			d.history = append(d.history, withMaps(msg))
			staged = c.stageLocked(append(changes, sunk...)...)
		}
	}
	for ch := range c.watchers[msg.DeviceID] {
		select {
		case ch <- cloneTelemetry(msg):
		default:
			c.log.Warn("telemetry watcher full, message dropped for it", "device_id", msg.DeviceID)
		}
	}
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return err
	}
	c.telemetryFault(msg)
	return nil
}

// jsonFields decodes a JSON object body; nil for any other body (stored
// as a message, with no latest values).
func jsonFields(body []byte) map[string]any {
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil
	}
	return fields
}

// latestLocked records fields (of msg's body) as the latest values of
// msg's component; c.mu held.
func (c *Core) latestLocked(d *device, msg Telemetry, fields map[string]any) {
	if len(fields) == 0 {
		return
	}
	vals := d.telemetry[msg.Component]
	if vals == nil {
		vals = map[string]TelemetryValue{}
		d.telemetry[msg.Component] = vals
	}
	for k, v := range fields {
		vals[k] = TelemetryValue{Value: v, Timestamp: msg.Received}
	}
}

// withMaps returns t with nil property maps made empty (they are shown as
// {} and never as null).
func withMaps(t Telemetry) Telemetry {
	if t.Properties == nil {
		t.Properties = map[string]string{}
	}
	if t.System == nil {
		t.System = map[string]string{}
	}
	return t
}

func cloneTelemetry(t Telemetry) Telemetry {
	out := t
	out.Body = slices.Clone(t.Body)
	out.Properties, out.System = maps.Clone(t.Properties), maps.Clone(t.System)
	if out.Properties == nil {
		out.Properties = map[string]string{}
	}
	if out.System == nil {
		out.System = map[string]string{}
	}
	return out
}

// LatestTelemetry returns the latest value of field name sent by the device
// in a JSON object body, for component ("" = root). It returns ErrNotFound
// for an unknown device or a name never sent.
func (c *Core) LatestTelemetry(id, component, name string) (TelemetryValue, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.lookup(id)
	if err != nil {
		return TelemetryValue{}, err
	}
	v, ok := d.telemetry[component][name]
	if !ok {
		return TelemetryValue{}, fmt.Errorf("%w: telemetry %q of device %q component %q", ErrNotFound, name, id, component)
	}
	return v, nil
}

// HistoryFilter selects messages of a device's telemetry history.
type HistoryFilter struct {
	// Since keeps messages received strictly after it (zero: all).
	Since time.Time
	// Component, when ByComponent is set, keeps only that component's
	// messages ("" is the root component).
	Component   string
	ByComponent bool
	// Limit keeps the newest Limit messages of the selection (0: all).
	Limit int
}

// TelemetryHistory returns the device's kept messages that match f, oldest
// first. It returns ErrNotFound for an unknown device.
func (c *Core) TelemetryHistory(id string, f HistoryFilter) ([]Telemetry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.lookup(id)
	if err != nil {
		return nil, err
	}
	out := []Telemetry{}
	for _, m := range d.history {
		if !f.Since.IsZero() && !m.Received.After(f.Since) {
			continue
		}
		if f.ByComponent && m.Component != f.Component {
			continue
		}
		out = append(out, cloneTelemetry(m))
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, nil
}

// NextTelemetry waits for the next telemetry message of device id that
// arrives after the call started (the device need not exist yet). It
// returns ctx.Err() or ErrClosed.
func (c *Core) NextTelemetry(ctx context.Context, id string) (Telemetry, error) {
	ch, stop := c.watch(id, 1)
	defer stop()
	select {
	case t := <-ch:
		return t, nil
	case <-ctx.Done():
		return Telemetry{}, ctx.Err()
	case <-c.done:
		return Telemetry{}, ErrClosed
	}
}

// WatchTelemetry streams every telemetry message of device id that arrives
// from now on, until stop is called (stop is idempotent). The channel
// holds TelemetryWatchBuffer messages and is never closed.
func (c *Core) WatchTelemetry(id string) (<-chan Telemetry, func()) {
	return c.watch(id, TelemetryWatchBuffer)
}

// Watchers is how many telemetry watchers are registered.
func (c *Core) Watchers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, w := range c.watchers {
		n += len(w)
	}
	return n
}

func (c *Core) watch(id string, buf int) (chan Telemetry, func()) {
	ch := make(chan Telemetry, buf)
	c.mu.Lock()
	if c.watchers[id] == nil {
		c.watchers[id] = map[chan Telemetry]struct{}{}
	}
	c.watchers[id][ch] = struct{}{}
	c.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.watchers[id], ch)
			if len(c.watchers[id]) == 0 {
				delete(c.watchers, id)
			}
			c.mu.Unlock()
		})
	}
}

// JSONField returns field name of a JSON object body, decoded as the
// latest values are (false for another body or a missing field).
func JSONField(body []byte, name string) (any, bool) {
	v, ok := jsonFields(body)[name]
	return v, ok
}
