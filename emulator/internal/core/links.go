package core

import (
	"context"
	"errors"
)

// Feature is a device subscription a front-end reports through Link.Subscribed.
type Feature int

// The subscriptions a device makes.
const (
	// FeatureMethods is direct methods.
	FeatureMethods Feature = iota
	// FeatureDesired is desired-property patches.
	FeatureDesired
	// FeatureTwin is twin responses (GET and reported PATCH).
	FeatureTwin
	// FeatureC2D is cloud-to-device messages.
	FeatureC2D
)

// Link is a device's live hub connection as a front-end holds it. The model
// calls it without holding its lock; implementations must not block for
// long except in InvokeMethod, which is bounded by its context.
type Link interface {
	// Protocol names the transport, for logs ("mqtt", "amqp").
	Protocol() string
	// Subscribed reports whether the device subscribed to f.
	Subscribed(f Feature) bool
	// PushDesired sends a desired patch (JSON with "$version") when the
	// device is subscribed to desired patches; it returns nil otherwise.
	PushDesired(body []byte, version int64) error
	// InvokeMethod sends a direct method and waits for the answer until
	// ctx ends (returning ctx.Err()); other errors mean the device cannot
	// be reached (not subscribed, connection lost).
	InvokeMethod(ctx context.Context, method string, payload []byte) (status int, body []byte, err error)
	// NotifyC2D tells the front-end that the device's queue may hold a
	// message to deliver (fetch it with NextC2D); it must not block.
	NotifyC2D()
	// Drop closes the connection with reason, as a network failure would;
	// it must not block.
	Drop(reason error)
}

// Attach makes l the device's one hub connection and returns the one it
// replaces (nil when none); the caller drops that one as its protocol
// requires. Messages in flight on the replaced link are released for l
// when that link detaches, after its pending settlements.
// It returns ErrNotFound for an unknown device and ErrUnauthorized for a
// disabled one. modelID, when not "", becomes the device's model id.
func (c *Core) Attach(id string, l Link, modelID string) (Link, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.entityLocked(id)
	if err != nil {
		return nil, err
	}
	if !c.enabledLocked(d) {
		return nil, errors.Join(ErrUnauthorized, errDisabled(id))
	}
	// Messages in flight on prev stay with it until it detaches: its
	// device may have settled them a moment ago, and releasing them now
	// would deliver a completed message again on l. Detach releases what
	// prev leaves unsettled and tells l to deliver it.
	prev := d.link
	d.link = l
	d.lastActivity = c.now()
	if modelID != "" && modelID != d.modelID {
		d.modelID = modelID
		c.stageDeviceLocked(d) // ordered before later changes; not waited for
	}
	c.notifyLocked(id)
	c.emit(Event{DeviceID: id, Kind: EventConnected, Protocol: l.Protocol(), Replaced: prev != nil, Time: d.lastActivity})
	return prev, nil
}

func errDisabled(id string) error { return errors.New("device " + id + " is disabled") }

// Detach forgets l when it is still the device's connection, releases the
// messages in flight on it and, when a newer connection holds the device,
// tells that one to deliver them.
func (c *Core) Detach(id string, l Link) {
	c.mu.Lock()
	d, ok := c.entityOK(id)
	var cur Link
	if ok {
		if d.link == l && l != nil {
			d.link = nil
			c.emit(Event{DeviceID: id, Kind: EventDisconnected, Protocol: l.Protocol(), Time: c.now()})
		}
		c.releaseLocked(d, l)
		c.notifyLocked(id)
		cur = d.link
	}
	c.mu.Unlock()
	if cur != nil {
		cur.NotifyC2D()
	}
}

// Current reports whether l is the device's connection.
func (c *Core) Current(id string, l Link) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.entityOK(id)
	return ok && d.link == l
}

// SubscriptionsChanged wakes WaitSubscribed callers of the device.
func (c *Core) SubscriptionsChanged(id string) {
	c.mu.Lock()
	c.notifyLocked(id)
	c.mu.Unlock()
}

// WaitSubscribed waits until device id has a hub connection subscribed to
// f. It returns at once when that is already so; otherwise ctx.Err() or
// ErrClosed. The device need not exist yet.
func (c *Core) WaitSubscribed(ctx context.Context, id string, f Feature) error {
	for {
		c.mu.Lock()
		d, ok := c.entityOK(id)
		var l Link
		if ok {
			l = d.link
		}
		ch := c.changeChanLocked(id)
		c.mu.Unlock()
		if l != nil && l.Subscribed(f) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return ErrClosed
		}
	}
}

// WaitOffline waits until device id has no hub connection; ctx.Err() or
// ErrClosed otherwise.
func (c *Core) WaitOffline(ctx context.Context, id string) error {
	for {
		c.mu.Lock()
		d, ok := c.entityOK(id)
		online := ok && d.link != nil
		ch := c.changeChanLocked(id)
		c.mu.Unlock()
		if !online {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return ErrClosed
		}
	}
}

// changeChanLocked returns a channel closed at the device's next
// connection change (connect, disconnect, subscribe) or settlement; c.mu held.
func (c *Core) changeChanLocked(id string) chan struct{} {
	ch, ok := c.changes[id]
	if !ok {
		ch = make(chan struct{})
		c.changes[id] = ch
	}
	return ch
}

// notifyLocked wakes WaitSubscribed callers of device id; c.mu held.
func (c *Core) notifyLocked(id string) {
	if ch, ok := c.changes[id]; ok {
		close(ch)
		delete(c.changes, id)
	}
}
