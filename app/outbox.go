package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// outboxBatch is how many entries the pump reads from the outbox at a time.
const outboxBatch = 32

// outboxSendTimeout bounds one attempt to deliver an outbox message: when
// the hub has not acknowledged it by then, it is sent again (same message
// id) after the backoff.
const outboxSendTimeout = time.Minute

// OutboxStats says what the outbox holds and what became of the messages
// it held since the client was built.
type OutboxStats struct {
	// Messages and Bytes are what waits for delivery (Bytes counted as
	// domain.Message.Size).
	Messages int
	Bytes    int64
	// Delivered counts messages the hub acknowledged.
	Delivered uint64
	// Expired counts messages dropped because they were older than
	// Options.OutboxMaxAge (each drop is also logged).
	Expired uint64
	// Rejected counts messages dropped because the hub refused them for
	// good (status 400 or 413: no retry could deliver them; each is also
	// logged).
	Rejected uint64
	// Lost counts messages the durable outbox had accepted and can no
	// longer deliver because their records were damaged on disk: found
	// when it was opened (counted by the gap in message numbers around the
	// damage) and since. Logged at Error level.
	Lost uint64
	// Torn counts message records found cut short at the end of the
	// durable outbox when it was opened: a write that a crash interrupted
	// (nothing accepted was lost if its EnqueueTelemetry had not returned)
	// or the end of the file lost with the power.
	Torn uint64
	// QuarantinedBytes is how many damaged bytes the durable outbox moved
	// out of its files when it was opened, into quarantine files beside
	// them (named in the log line), for inspection; nothing reads them
	// again.
	QuarantinedBytes int64
}

// outboxState is the client's side of the outbox: the pump's state and
// the counters. Only this file touches it.
type outboxState struct {
	// mu is held shared by EnqueueTelemetry while it appends, and
	// exclusively by Close to close the outbox.
	mu     sync.RWMutex
	closed bool

	pumpMu  sync.Mutex
	running bool // a pump goroutine exists
	dirty   bool // something changed since the pump last looked

	headMu   sync.Mutex // serialises removals from the head (delivery, expiry)
	inflight uint64     // seq the pump is delivering, 0 for none; guarded by headMu

	// done: entries up to it were delivered or dropped, even if removing
	// them failed. Only the pump (one at a time) touches it.
	done uint64

	delivered, expired, rejected atomic.Uint64
}

// EnqueueTelemetry validates m, gives it a random message id when it has
// none and its creation time (iothub-creation-time-utc, which IoT Central
// uses as the telemetry's timestamp) when it has none, stores it in the
// outbox and returns: the client's pump delivers the outbox in order, at
// least once and with the stored message id, whenever a session is open,
// also across reconnects and, with a durable outbox, across restarts of
// the process. It works before Connect (the messages wait) and ignores
// FailFast. Errors: domain.ErrMessageTooLarge over 256 KiB (IoT Hub's
// limit, creation time included), domain.ErrInvalidConfig for a reserved
// property name or when no Outbox is configured, domain.ErrOutboxFull when
// the outbox is at its limit (after dropping messages older than
// OutboxMaxAge, if set; nothing else is ever dropped to make room),
// domain.ErrClosed after Close or once the client gave up, ctx's error, or
// the outbox's I/O error.
func (c *Client) EnqueueTelemetry(ctx context.Context, m domain.Message) error {
	ob := c.opts.Outbox
	if ob == nil {
		return fmt.Errorf("iotc: enqueue telemetry: %w: no outbox configured", domain.ErrInvalidConfig)
	}
	now := time.Now()
	if m.MessageID == "" {
		m.MessageID = newMessageID()
	}
	if m.CreationTime.IsZero() {
		m.CreationTime = now
	}
	m, err := m.WithDefaults().Checked() // the transport does not check it again
	if err != nil {
		return fmt.Errorf("iotc: enqueue telemetry: %w", err)
	}
	if err := c.enqueue(ctx, m, now); err != nil {
		return fmt.Errorf("iotc: enqueue telemetry: %w", err)
	}
	c.log.Debug("telemetry enqueued", "message_id", m.MessageID, "component", m.Component, "bytes", len(m.Body))
	c.kickOutbox()
	return nil
}

func (c *Client) enqueue(ctx context.Context, m domain.Message, now time.Time) error {
	c.ob.mu.RLock()
	defer c.ob.mu.RUnlock()
	c.hold.mu.Lock()
	ph, gaveUp := c.hold.phase, c.hold.gaveUp
	c.hold.mu.Unlock()
	switch {
	case c.ob.closed || ph == phaseClosed:
		return domain.ErrClosed
	case ph == phaseGaveUp:
		return fmt.Errorf("%w: %w", domain.ErrClosed, gaveUp)
	}
	_, err := c.opts.Outbox.Append(ctx, m, now)
	if errors.Is(err, domain.ErrOutboxFull) && c.opts.OutboxMaxAge > 0 && c.expireOutbox(ctx) > 0 {
		_, err = c.opts.Outbox.Append(ctx, m, now)
	}
	return err
}

// OutboxStats returns what the outbox holds and the delivery counters.
func (c *Client) OutboxStats() OutboxStats {
	st := OutboxStats{
		Delivered: c.ob.delivered.Load(),
		Expired:   c.ob.expired.Load(),
		Rejected:  c.ob.rejected.Load(),
	}
	if d, ok := c.opts.Outbox.(ports.OutboxDamageReporter); ok {
		dm := d.Damage()
		st.Lost, st.Torn, st.QuarantinedBytes = dm.Lost, dm.Torn, dm.QuarantinedBytes
	}
	c.ob.mu.RLock()
	defer c.ob.mu.RUnlock()
	if c.opts.Outbox != nil && !c.ob.closed {
		st.Messages, st.Bytes = c.opts.Outbox.Len()
	}
	return st
}

// logOutboxDamage logs at Error level what the outbox found damaged when
// it was opened: without it a loss would be silent.
func (c *Client) logOutboxDamage() {
	d, ok := c.opts.Outbox.(ports.OutboxDamageReporter)
	if !ok {
		return
	}
	dm := d.Damage()
	switch {
	case dm.Lost > 0 || dm.Torn > 0:
		c.log.Error("outbox: messages lost to damage on disk", "lost", dm.Lost, "torn", dm.Torn, "quarantined_bytes", dm.QuarantinedBytes, "quarantine", dm.Quarantine)
	case dm.QuarantinedBytes > 0:
		c.log.Warn("outbox: damaged bytes moved to quarantine, no message lost", "quarantined_bytes", dm.QuarantinedBytes, "quarantine", dm.Quarantine)
	}
}

// kickOutbox starts the pump when the outbox holds something and the
// client is connecting or connected, or tells the running pump to look
// again. No goroutine exists while there is nothing to deliver or nothing
// to deliver it on.
func (c *Client) kickOutbox() {
	if c.opts.Outbox == nil {
		return
	}
	c.ob.pumpMu.Lock()
	defer c.ob.pumpMu.Unlock()
	if c.ob.running {
		c.ob.dirty = true
		return
	}
	c.hold.mu.Lock()
	ph := c.hold.phase
	c.hold.mu.Unlock()
	if ph != phaseConnecting && ph != phaseSupervising {
		return
	}
	c.ob.mu.RLock()
	empty := c.ob.closed
	if !empty {
		n, _ := c.opts.Outbox.Len()
		empty = n == 0
	}
	c.ob.mu.RUnlock()
	if empty {
		return
	}
	c.ob.running, c.ob.dirty = true, false
	if !c.goTracked(c.pump) {
		c.ob.running = false
	}
}

// pumpStop ends the pump unless something changed since it last looked;
// it reports whether the pump must end.
func (c *Client) pumpStop() bool {
	c.ob.pumpMu.Lock()
	defer c.ob.pumpMu.Unlock()
	if c.ob.dirty {
		c.ob.dirty = false
		return false
	}
	c.ob.running = false
	return true
}

// pumpEnd marks the pump ended whatever changed: the client is closing.
func (c *Client) pumpEnd() {
	c.ob.pumpMu.Lock()
	c.ob.running, c.ob.dirty = false, false
	c.ob.pumpMu.Unlock()
}

// pump delivers the outbox in order, one message at a time, each after
// the previous one was acknowledged. It ends when the outbox is empty,
// when no session is open or coming (the client is idle, closed or gave
// up: the next session starts it again), or at Close.
func (c *Client) pump() {
	var avoid *session // a session a send just found dead
	failures := 0      // consecutive failures, for the backoff
	stuck := false     // the head has expired but could not be removed
	for {
		if c.opts.OutboxMaxAge > 0 && c.expireOutbox(c.runCtx) == 0 && stuck {
			failures++
			if c.sleep(c.runCtx, c.opts.Backoff.Delay(failures-1, randFloat())) != nil {
				c.pumpEnd()
				return
			}
		}
		stuck = false
		es, err := c.opts.Outbox.Peek(c.runCtx, outboxBatch)
		for len(es) > 0 && es[0].Seq <= c.ob.done {
			es = es[1:]
		}
		switch {
		case c.runCtx.Err() != nil:
			c.pumpEnd()
			return
		case err != nil:
			failures++
			c.log.Warn("outbox: cannot read; retrying", "err", err)
			if c.sleep(c.runCtx, c.opts.Backoff.Delay(failures-1, randFloat())) != nil {
				c.pumpEnd()
				return
			}
			continue
		case len(es) == 0:
			if c.pumpStop() {
				return
			}
			continue
		}
	batch:
		for i := 0; i < len(es); {
			e := es[i]
			if c.isExpired(e) {
				stuck = true
				break batch // expireOutbox drops it and those before it
			}
			s, err := c.pumpSession(avoid)
			if err != nil {
				if errors.Is(err, domain.ErrClosed) {
					c.pumpEnd()
					return
				}
				if c.pumpStop() {
					return // idle: the next session starts a pump
				}
				break batch
			}
			if !c.claim(e) {
				c.hold.release(s)
				stuck = true
				break batch // expired while waiting for the session
			}
			err = c.deliver(s, e)
			c.hold.release(s)
			if err != nil {
				c.setInflight(0)
			}
			switch {
			case err == nil:
				failures, avoid, c.ob.done = 0, nil, e.Seq
				c.removeDelivered(e, &c.ob.delivered)
				i++
			case c.runCtx.Err() != nil:
				c.pumpEnd()
				return
			case errors.Is(err, domain.ErrNotConnected):
				// Sent again, same message id, on the next session.
				c.sessionFailed(s, err)
				avoid = s
			case isRejected(err):
				c.log.Error("outbox: the hub refused a message for good; dropped", "message_id", e.Message.MessageID, "err", err)
				c.ob.done = e.Seq
				c.removeDelivered(e, &c.ob.rejected)
				i++
			default:
				failures++
				d := c.opts.Backoff.Delay(failures-1, randFloat())
				c.log.Warn("outbox: delivery failed; retrying", "message_id", e.Message.MessageID, "err", err, "retry_in", d)
				if c.sleep(c.runCtx, d) != nil {
					c.pumpEnd()
					return
				}
			}
		}
	}
}

// deliver sends one outbox entry on s, bounded by outboxSendTimeout.
func (c *Client) deliver(s *session, e ports.OutboxEntry) error {
	ctx, cancel := context.WithTimeout(c.runCtx, outboxSendTimeout)
	defer cancel()
	err := s.SendTelemetry(ctx, e.Message)
	if err == nil {
		c.log.Debug("outbox: telemetry delivered", "message_id", e.Message.MessageID)
	}
	return err
}

// claim records e as the entry the pump is delivering, so that expiry
// leaves it and those after it alone; it reports false when e has expired.
func (c *Client) claim(e ports.OutboxEntry) bool {
	c.ob.headMu.Lock()
	defer c.ob.headMu.Unlock()
	if c.isExpired(e) {
		return false
	}
	c.ob.inflight = e.Seq
	return true
}

func (c *Client) setInflight(seq uint64) {
	c.ob.headMu.Lock()
	c.ob.inflight = seq
	c.ob.headMu.Unlock()
}

// removeDelivered removes e (the head of the outbox) and counts it.
func (c *Client) removeDelivered(e ports.OutboxEntry, counter *atomic.Uint64) {
	c.ob.headMu.Lock()
	defer c.ob.headMu.Unlock()
	c.ob.inflight = 0
	// Not the run context: an acknowledged message is removed even when
	// Close is under way, so it is not delivered again.
	if err := c.opts.Outbox.Remove(context.WithoutCancel(c.runCtx), e.Seq); err != nil {
		c.log.Warn("outbox: cannot remove a delivered message; it may be delivered again", "message_id", e.Message.MessageID, "err", err)
	}
	counter.Add(1)
}

// isRejected reports a refusal no retry can change: the message itself is
// wrong for the hub.
func isRejected(err error) bool {
	if errors.Is(err, domain.ErrMessageTooLarge) || errors.Is(err, domain.ErrInvalidConfig) || errors.Is(err, domain.ErrMalformed) {
		return true
	}
	var he *domain.HubError
	return errors.As(err, &he) && (he.Status == 400 || he.Status == 413)
}

func (c *Client) isExpired(e ports.OutboxEntry) bool {
	return c.opts.OutboxMaxAge > 0 && time.Since(e.Enqueued) > c.opts.OutboxMaxAge
}

// expireOutbox drops the messages at the head of the outbox that are older
// than OutboxMaxAge, with one log line, and returns how many.
func (c *Client) expireOutbox(ctx context.Context) int {
	c.ob.headMu.Lock()
	defer c.ob.headMu.Unlock()
	dropped := 0
	var first, last ports.OutboxEntry
	for {
		es, err := c.opts.Outbox.Peek(ctx, outboxBatch)
		if err != nil {
			break
		}
		n := 0
		for n < len(es) && c.isExpired(es[n]) && (c.ob.inflight == 0 || es[n].Seq < c.ob.inflight) {
			n++
		}
		if n == 0 {
			break
		}
		if err := c.opts.Outbox.Remove(context.WithoutCancel(ctx), es[n-1].Seq); err != nil {
			c.log.Warn("outbox: cannot remove expired messages", "err", err)
			break
		}
		if dropped == 0 {
			first = es[0]
		}
		last = es[n-1]
		dropped += n
		if n < len(es) {
			break
		}
	}
	if dropped > 0 {
		c.ob.expired.Add(uint64(dropped))
		c.log.Warn("outbox: dropped messages older than the maximum age", "count", dropped, "max_age", c.opts.OutboxMaxAge,
			"first_message_id", first.Message.MessageID, "last_message_id", last.Message.MessageID,
			"oldest_enqueued", first.Enqueued.UTC(), "newest_enqueued", last.Enqueued.UTC())
	}
	return dropped
}

// errPumpIdle: no session is open or coming; the pump waits for the next
// Connect.
var errPumpIdle = errors.New("outbox: not connected")

// pumpSession is holder.wait for the pump: it waits for the next session
// (other than avoid) whatever FailFast says, returns errPumpIdle when
// nothing is connecting and domain.ErrClosed after Close or giving up.
func (c *Client) pumpSession(avoid *session) (*session, error) {
	s, err := c.hold.wait(c.runCtx, avoid, false)
	switch {
	case err == nil:
		return s, nil
	case errors.Is(err, errNobodyConnects):
		return nil, errPumpIdle
	case errors.Is(err, domain.ErrClosed), c.runCtx.Err() != nil:
		return nil, domain.ErrClosed
	}
	return nil, err
}

// closeOutbox closes the outbox once the pump has ended (Close). What it
// holds stays stored in a durable outbox.
func (c *Client) closeOutbox() {
	if c.opts.Outbox == nil {
		return
	}
	c.ob.mu.Lock()
	defer c.ob.mu.Unlock()
	if c.ob.closed {
		return
	}
	c.ob.closed = true
	if n, _ := c.opts.Outbox.Len(); n > 0 {
		c.log.Info("outbox: closing with messages not yet delivered", "messages", n)
	}
	if err := c.opts.Outbox.Close(); err != nil {
		c.log.Warn("outbox: close", "err", err)
	}
}

// validateOutbox checks the outbox options.
func (o Options) validateOutbox() error {
	if o.OutboxMaxAge < 0 {
		return fmt.Errorf("%w: negative OutboxMaxAge", domain.ErrInvalidConfig)
	}
	return nil
}
