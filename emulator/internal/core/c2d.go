package core

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Outcome is how a device settles a cloud-to-device message.
type Outcome int

// The three settlements of IoT Hub.
const (
	// Complete removes the message from the queue.
	Complete Outcome = iota
	// Abandon puts the message back for redelivery.
	Abandon
	// Reject removes the message and dead-letters it.
	Reject
)

// String names the outcome.
func (o Outcome) String() string {
	switch o {
	case Complete:
		return "complete"
	case Abandon:
		return "abandon"
	case Reject:
		return "reject"
	}
	return "unknown"
}

// MaxDeadLetters is how many rejected messages are kept per device.
const MaxDeadLetters = 50

type c2dMsg struct {
	id         string
	props      map[string]string // application properties
	body       []byte
	on         Link // in flight on this link; nil when waiting
	seq        int64
	deliveries int
	ack        string    // feedback asked by the service: "", "positive", "negative", "full"
	enqueued   time.Time // when it was queued (feedback records)
	expiry     time.Time // absolute-expiry-time; zero: none
	cid, uid   string    // the service's correlation-id and user-id
	lockToken  string    // the lock of a pull receive (on == pull); see c2dpull.go
	lockUntil  time.Time // when that lock expires
	lockTimer  *time.Timer
}

// unlockLocked drops m's pull lock, if any, and stops its timer; c.mu held.
func (m *c2dMsg) unlockLocked() {
	if m.lockTimer != nil {
		m.lockTimer.Stop()
		m.lockTimer = nil
	}
	m.lockToken, m.lockUntil = "", time.Time{}
}

// C2DMessage is a cloud-to-device message handed to a front-end.
type C2DMessage struct {
	// MessageID is the message id ($.mid), also its lock token.
	MessageID string
	// To is the message's address: "/devices/{id}/messages/devicebound".
	To string
	// Properties are the application properties.
	Properties map[string]string
	// Body is the message body.
	Body []byte
	// Redelivered is set when the message was handed out before.
	Redelivered bool
	// CorrelationID and UserID are the service's correlation-id and
	// user-id, "" when it set none.
	CorrelationID, UserID string
	// SequenceNumber numbers the device's messages from 1 in queue order.
	SequenceNumber int64
	// EnqueuedTime is when the message was queued.
	EnqueuedTime time.Time
	// Expiry is the message's absolute-expiry-time; zero when none.
	Expiry time.Time
	// DeliveryCount is how many times the message was handed out,
	// this delivery included.
	DeliveryCount int
}

// SendCloudToDevice queues a cloud-to-device message and offers it to the
// device's connection. It stays queued until settled (Complete or
// Reject); abandoned or unsettled messages come again. It returns
// ErrNotFound, ErrTooLarge for a body over MaxC2DBody, ErrInvalid for an
// empty property name, and ErrQueueFull when MaxC2DQueue messages wait.
func (c *Core) SendCloudToDevice(ctx context.Context, id string, body []byte, props map[string]string) error {
	_, err := c.QueueC2D(ctx, id, body, props)
	return err
}

// QueueC2D is SendCloudToDevice returning the queued message's id (its
// lock token, C2DMessage.MessageID), so that the caller can follow its
// settlement. Errors are those of SendCloudToDevice.
func (c *Core) QueueC2D(ctx context.Context, id string, body []byte, props map[string]string) (string, error) {
	return c.queueC2D(ctx, id, ServiceC2D{Body: body, Properties: props})
}

// queueC2D queues sm for device id; sm.Ack is already normalized.
func (c *Core) queueC2D(ctx context.Context, id string, sm ServiceC2D) (string, error) {
	body, props, msgID := sm.Body, sm.Properties, sm.MessageID
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if len(body) > MaxC2DBody {
		return "", fmt.Errorf("%w: cloud-to-device body of %d bytes exceeds %d", ErrTooLarge, len(body), MaxC2DBody)
	}
	for k := range props {
		if k == "" {
			return "", fmt.Errorf("%w: empty property name", ErrInvalid)
		}
	}
	if msgID == "" {
		msgID = NewUUID()
	}
	m := &c2dMsg{id: msgID, body: slices.Clone(body), props: maps.Clone(props), ack: sm.Ack, enqueued: c.now(), expiry: sm.Expiry, cid: sm.CorrelationID, uid: sm.UserID}
	if m.props == nil {
		m.props = map[string]string{}
	}
	c.mu.Lock()
	d, err := c.lookup(id)
	if err != nil {
		c.mu.Unlock()
		return "", err
	}
	c.releaseExpiredLocksLocked(d)
	expired := c.expireLocked(d) // expired messages make room, as in IoT Hub
	if slices.ContainsFunc(d.c2d, func(x *c2dMsg) bool { return x.id == m.id }) {
		c.stageLocked(expired...)
		c.mu.Unlock()
		return "", fmt.Errorf("%w: device %q already has a queued message %q", ErrConflict, id, m.id)
	}
	if len(d.c2d) >= MaxC2DQueue {
		c.stageLocked(expired...)
		c.mu.Unlock()
		return "", fmt.Errorf("%w: device %q has %d messages pending", ErrQueueFull, id, MaxC2DQueue)
	}
	d.c2dSeq++
	m.seq = d.c2dSeq
	d.c2d = append(d.c2d, m)
	l := d.link
	var staged <-chan error
	if c.durable() {
		staged = c.stageLocked(append(expired, c2dChange(id, m))...)
	}
	c.mu.Unlock()
	if err := await(ctx, staged); err != nil {
		return "", err
	}
	c.log.Info("cloud-to-device message queued", "device_id", id, "message_id", m.id)
	if l != nil {
		l.NotifyC2D()
	}
	return m.id, nil
}

func (m *c2dMsg) public(deviceID string) C2DMessage {
	return C2DMessage{
		MessageID: m.id, To: "/devices/" + deviceID + "/messages/devicebound",
		Properties: maps.Clone(m.props), Body: m.body, Redelivered: m.deliveries > 0,
		CorrelationID: m.cid, UserID: m.uid, SequenceNumber: m.seq, EnqueuedTime: m.enqueued, Expiry: m.expiry,
		DeliveryCount: m.deliveries,
	}
}

// NextC2D hands l the oldest queued message not in flight, marking it in
// flight on l, when l is the device's connection; ok is false when there
// is none.
func (c *Core) NextC2D(id string, l Link) (C2DMessage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.devices[id]
	if !ok || d.link != l {
		return C2DMessage{}, false
	}
	c.releaseExpiredLocksLocked(d)
	if expired := c.expireLocked(d); len(expired) > 0 {
		c.stageLocked(expired...) // not waited for: nobody is answered
		c.notifyLocked(id)
	}
	for _, m := range d.c2d {
		if m.on != nil {
			continue
		}
		out := m.public(id)
		m.on = l
		m.deliveries++
		out.DeliveryCount = m.deliveries
		if c.durable() {
			// Not waited for: a delivery count lost in a crash only
			// makes a redelivered message look new.
			c.stageLocked(c2dChange(id, m))
		}
		return out, true
	}
	return C2DMessage{}, false
}

// SettleC2D settles message msgID of the device, in flight on link l.
// Complete and Reject remove it (a Reject keeps it among the device's
// dead letters); Abandon releases it for redelivery and offers it again.
// It returns ErrNotFound, changing nothing, for an unknown device or a
// message not in flight on l (unknown, settled already, or delivered on a
// connection that has ended: IoT Hub refuses such a lock token), and
// ErrStore when the removal could not be stored.
func (c *Core) SettleC2D(id string, l Link, msgID string, o Outcome) error {
	c.mu.Lock()
	d, ok := c.devices[id]
	if !ok {
		c.mu.Unlock()
		return errNoDevice(id)
	}
	i := slices.IndexFunc(d.c2d, func(m *c2dMsg) bool { return m.id == msgID })
	if i < 0 || d.c2d[i].on != l || l == nil {
		// A lock token IoT Hub no longer honours: unknown, settled, or
		// delivered on another (dead or replaced) connection.
		c.mu.Unlock()
		return fmt.Errorf("%w: device %q has no message %q in flight on this connection", ErrNotFound, id, msgID)
	}
	notify, staged := c.settleLocked(d, i, o)
	c.mu.Unlock()
	return c.settled(id, l, msgID, o, notify, staged)
}

// settleLocked settles d.c2d[i] with o and returns the link to offer an
// abandoned message to and the staged removal; c.mu held.
func (c *Core) settleLocked(d *device, i int, o Outcome) (notify Link, staged <-chan error) {
	m := d.c2d[i]
	id := d.id
	switch o {
	case Abandon:
		m.on = nil
		m.unlockLocked()
		notify = d.link
	default:
		m.unlockLocked()
		d.c2d = slices.Delete(d.c2d, i, i+1)
		changes := []Change{{Op: OpDelete, Record: Record{Kind: KindC2D, Device: id, Key: m.id}}}
		if fb, ok := c.feedbackLocked(d, m, o); ok {
			changes = append(changes, fb)
		}
		staged = c.stageLocked(changes...)
		d.lastActivity = c.now()
		c.notifyLocked(id)
		if o == Reject {
			c.deadLetterLocked(d, m)
		}
	}
	return notify, staged
}

// deadLetterLocked keeps m among the device's dead letters; c.mu held.
func (c *Core) deadLetterLocked(d *device, m *c2dMsg) {
	d.deadLetters = append(d.deadLetters, m)
	if len(d.deadLetters) > MaxDeadLetters {
		d.deadLetters = slices.Delete(d.deadLetters, 0, 1)
	}
}

// settled ends a settlement made by settleLocked on link l, once c.mu is
// released: it waits for the removal to be stored and offers an abandoned
// message to the device's connection (when that is not l).
func (c *Core) settled(id string, l Link, msgID string, o Outcome, notify Link, staged <-chan error) error {
	if err := awaitNow(staged); err != nil {
		return err
	}
	c.log.Info("cloud-to-device message settled", "device_id", id, "message_id", msgID, "outcome", o.String())
	if notify != nil && notify != l {
		notify.NotifyC2D()
	}
	return nil
}

// releaseLocked puts the messages in flight on l back in the queue; c.mu held.
func (c *Core) releaseLocked(d *device, l Link) {
	for _, m := range d.c2d {
		if m.on == l {
			m.on = nil
		}
	}
}

// PendingC2D is how many cloud-to-device messages wait for the device
// (in flight ones included); 0 for an unknown device.
func (c *Core) PendingC2D(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.devices[id]; ok {
		return len(d.c2d)
	}
	return 0
}

// WaitPendingC2D waits until at most n cloud-to-device messages wait for
// the device (an unknown device has none); ctx.Err() or ErrClosed otherwise.
func (c *Core) WaitPendingC2D(ctx context.Context, id string, n int) error {
	for {
		c.mu.Lock()
		pending := 0
		if d, ok := c.devices[id]; ok {
			pending = len(d.c2d)
		}
		ch := c.changeChanLocked(id)
		c.mu.Unlock()
		if pending <= n {
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

// DeadLetters returns the messages the device rejected, oldest first
// (at most MaxDeadLetters).
func (c *Core) DeadLetters(id string) []C2DMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.devices[id]
	if !ok {
		return nil
	}
	out := make([]C2DMessage, len(d.deadLetters))
	for i, m := range d.deadLetters {
		out[i] = m.public(id)
	}
	return out
}
