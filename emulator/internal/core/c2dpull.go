package core

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// This file holds the pull model of cloud-to-device messages (IoT Hub's
// device HTTPS API): a device that holds no connection asks for the next
// message, which is locked for it for a while under a lock token; it
// settles the message by that token before the lock expires, or the
// message becomes visible again. Pull receives share the device's queue
// with its MQTT or AMQP connection: a message locked by one is not handed
// to the other.

// Pull-model defaults (IoT Hub's).
const (
	// DefaultC2DLockTimeout is how long a pulled message stays locked
	// (IoT Hub: one minute).
	DefaultC2DLockTimeout = time.Minute
	// DefaultMaxDeliveryCount is how many times a message is handed out
	// before it is dead-lettered (IoT Hub's cloudToDevice.maxDeliveryCount
	// default, settable there from 1 to 100).
	DefaultMaxDeliveryCount = 10
)

// pullLink is what messages locked by a pull receive are in flight on; it
// is never a device's connection.
type pullLink struct{}

func (*pullLink) Protocol() string                { return "https" }
func (*pullLink) Subscribed(Feature) bool         { return false }
func (*pullLink) PushDesired([]byte, int64) error { return nil }
func (*pullLink) InvokeMethod(context.Context, string, []byte) (int, []byte, error) {
	return 0, nil, errors.New("emulator: a pull receiver takes no direct methods")
}
func (*pullLink) NotifyC2D() {}
func (*pullLink) Drop(error) {}

// pull is the one pullLink.
var pull Link = &pullLink{}

// ReceiveC2D hands out the device's oldest queued message that is neither
// in flight on a connection nor locked, locked for lock (DefaultC2DLockTimeout
// when <= 0) under a new lock token, which it returns. A message that was
// already handed out maxDeliveries times (DefaultMaxDeliveryCount when
// <= 0) is dead-lettered instead, with DeliveryCountExceeded feedback when
// the service asked for negative or full acks, and the next one is taken.
// ok is false when no message waits. Errors: ErrNotFound (unknown device),
// ErrStore (a dead-lettering could not be stored).
func (c *Core) ReceiveC2D(id string, lock time.Duration, maxDeliveries int) (msg C2DMessage, lockToken string, ok bool, err error) {
	if lock <= 0 {
		lock = DefaultC2DLockTimeout
	}
	if maxDeliveries <= 0 {
		maxDeliveries = DefaultMaxDeliveryCount
	}
	c.mu.Lock()
	d, err := c.lookup(id)
	if err != nil {
		c.mu.Unlock()
		return C2DMessage{}, "", false, err
	}
	c.releaseExpiredLocksLocked(d)
	changes := c.expireLocked(d)
	fb := false
	var found *c2dMsg
	for i := 0; i < len(d.c2d); {
		m := d.c2d[i]
		if m.on != nil {
			i++
			continue
		}
		if m.deliveries >= maxDeliveries {
			d.c2d = slices.Delete(d.c2d, i, i+1)
			changes = append(changes, Change{Op: OpDelete, Record: Record{Kind: KindC2D, Device: id, Key: m.id}})
			if m.ack == AckNegative || m.ack == AckFull {
				c.addFeedbackLocked(d, m, FeedbackDeliveryCountExceeded)
				fb = true
			}
			c.deadLetterLocked(d, m)
			c.log.Info("cloud-to-device message dead-lettered", "device_id", id, "message_id", m.id, "deliveries", m.deliveries)
			continue
		}
		found = m
		break
	}
	if fb {
		changes = append(changes, c.feedbackChangeLocked())
	}
	if found != nil {
		msg = found.public(id)
		found.on = pull
		found.deliveries++
		msg.DeliveryCount = found.deliveries
		found.lockToken = NewUUID()
		found.lockUntil = c.now().Add(lock)
		lockToken = found.lockToken
		found.lockTimer = time.AfterFunc(lock, func() { c.unlockC2D(id, lockToken) })
		changes = append(changes, c2dChange(id, found))
	}
	d.lastActivity = c.now()
	var staged <-chan error
	if len(changes) > 0 {
		staged = c.stageLocked(changes...)
		c.notifyLocked(id)
	}
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return C2DMessage{}, "", false, err
	}
	if found == nil {
		return C2DMessage{}, "", false, nil
	}
	return msg, lockToken, true, nil
}

// SettleC2DLock settles the message of device id locked by a ReceiveC2D
// under lockToken: Complete and Reject remove it (Reject dead-letters it),
// Abandon makes it visible again at once. It returns ErrNotFound for an
// unknown device, ErrPreconditionFailed, changing nothing, when no
// message holds that lock (unknown token, settled already, or lock
// expired: IoT Hub's DeviceMessageLockLost), and ErrStore.
func (c *Core) SettleC2DLock(id, lockToken string, o Outcome) error {
	c.mu.Lock()
	d, err := c.lookup(id)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.releaseExpiredLocksLocked(d)
	i := slices.IndexFunc(d.c2d, func(m *c2dMsg) bool { return m.on == pull && m.lockToken == lockToken })
	if i < 0 || lockToken == "" {
		c.mu.Unlock()
		return fmt.Errorf("%w: device %q holds no message locked by that lock token (unknown, settled or expired)", ErrPreconditionFailed, id)
	}
	msgID := d.c2d[i].id
	notify, staged := c.settleLocked(d, i, o)
	c.mu.Unlock()
	return c.settled(id, pull, msgID, o, notify, staged)
}

// unlockC2D makes the message locked under lockToken visible again when
// its lock expired unsettled, and offers it to the device's connection.
func (c *Core) unlockC2D(id, lockToken string) {
	select {
	case <-c.done:
		return
	default:
	}
	c.mu.Lock()
	d, ok := c.devices[id]
	var l Link
	if ok {
		// The timer runs on the monotonic clock and lockUntil is wall
		// time: release this lock by its token, whatever the wall clock says.
		for _, m := range d.c2d {
			if m.on == pull && m.lockToken == lockToken {
				m.lockUntil = time.Time{}
			}
		}
		if c.releaseExpiredLocksLocked(d) {
			l = d.link
		}
	}
	c.mu.Unlock()
	if l != nil {
		l.NotifyC2D()
	}
}

// releaseExpiredLocksLocked makes the device's pulled messages whose lock
// expired visible again and reports whether there was one; c.mu held.
func (c *Core) releaseExpiredLocksLocked(d *device) bool {
	now := c.now()
	released := false
	for _, m := range d.c2d {
		if m.on == pull && !now.Before(m.lockUntil) {
			m.on = nil
			m.unlockLocked()
			released = true
			c.log.Info("cloud-to-device message lock expired", "device_id", d.id, "message_id", m.id)
		}
	}
	if released {
		c.notifyLocked(d.id)
	}
	return released
}
