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

// outboxPump is the client's side of the outbox, one job: it appends what
// EnqueueTelemetry accepts and delivers the outbox in order on the
// sessions the holder hands out, on a goroutine that exists only while
// there is something to deliver and a session open or coming. Its state
// and locks are its own; it reaches the rest of the client only through c
// (the session holder, goTracked, sessionFailed, the options, the log and
// the run context).
type outboxPump struct {
	c *Client

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
	if err := c.ob.enqueue(ctx, m, now); err != nil {
		return fmt.Errorf("iotc: enqueue telemetry: %w", err)
	}
	c.log.Debug("telemetry enqueued", "message_id", m.MessageID, "component", m.Component, "bytes", len(m.Body))
	c.ob.kick()
	return nil
}

func (p *outboxPump) enqueue(ctx context.Context, m domain.Message, now time.Time) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	p.c.hold.mu.Lock()
	ph, gaveUp := p.c.hold.phase, p.c.hold.gaveUp
	p.c.hold.mu.Unlock()
	switch {
	case p.closed || ph == phaseClosed:
		return domain.ErrClosed
	case ph == phaseGaveUp:
		return fmt.Errorf("%w: %w", domain.ErrClosed, gaveUp)
	}
	_, err := p.c.opts.Outbox.Append(ctx, m, now)
	if errors.Is(err, domain.ErrOutboxFull) && p.c.opts.OutboxMaxAge > 0 && p.expire(ctx) > 0 {
		_, err = p.c.opts.Outbox.Append(ctx, m, now)
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

// logDamage logs at Error level what the outbox found damaged when
// it was opened: without it a loss would be silent.
func (p *outboxPump) logDamage() {
	d, ok := p.c.opts.Outbox.(ports.OutboxDamageReporter)
	if !ok {
		return
	}
	dm := d.Damage()
	switch {
	case dm.Lost > 0 || dm.Torn > 0:
		p.c.log.Error("outbox: messages lost to damage on disk", "lost", dm.Lost, "torn", dm.Torn, "quarantined_bytes", dm.QuarantinedBytes, "quarantine", dm.Quarantine)
	case dm.QuarantinedBytes > 0:
		p.c.log.Warn("outbox: damaged bytes moved to quarantine, no message lost", "quarantined_bytes", dm.QuarantinedBytes, "quarantine", dm.Quarantine)
	}
}

// kick starts the pump when the outbox holds something and the
// client is connecting or connected, or tells the running pump to look
// again. No goroutine exists while there is nothing to deliver or nothing
// to deliver it on.
func (p *outboxPump) kick() {
	if p.c.opts.Outbox == nil {
		return
	}
	p.pumpMu.Lock()
	defer p.pumpMu.Unlock()
	if p.running {
		p.dirty = true
		return
	}
	p.c.hold.mu.Lock()
	ph := p.c.hold.phase
	p.c.hold.mu.Unlock()
	if ph != phaseConnecting && ph != phaseSupervising {
		return
	}
	p.mu.RLock()
	empty := p.closed
	if !empty {
		n, _ := p.c.opts.Outbox.Len()
		empty = n == 0
	}
	p.mu.RUnlock()
	if empty {
		return
	}
	p.running, p.dirty = true, false
	if !p.c.goTracked(p.run) {
		p.running = false
	}
}

// stopIfIdle ends the pump unless something changed since it last looked;
// it reports whether the pump must end.
func (p *outboxPump) stopIfIdle() bool {
	p.pumpMu.Lock()
	defer p.pumpMu.Unlock()
	if p.dirty {
		p.dirty = false
		return false
	}
	p.running = false
	return true
}

// end marks the pump ended whatever changed: the client is closing.
func (p *outboxPump) end() {
	p.pumpMu.Lock()
	p.running, p.dirty = false, false
	p.pumpMu.Unlock()
}

// run delivers the outbox in order, one message (or, on a session that
// batches, one run of messages: see deliverRun) at a time, each after the
// previous one was acknowledged. It ends when the outbox is empty,
// when no session is open or coming (the client is idle, closed or gave
// up: the next session starts it again), or at Close.
func (p *outboxPump) run() {
	var avoid *session // a session a send just found dead
	failures := 0      // consecutive failures, for the backoff
	stuck := false     // the head has expired but could not be removed
	for {
		if p.c.opts.OutboxMaxAge > 0 && p.expire(p.c.runCtx) == 0 && stuck {
			failures++
			if p.c.sleep(p.c.runCtx, p.c.opts.Backoff.Delay(failures-1, randFloat())) != nil {
				p.end()
				return
			}
		}
		stuck = false
		es, err := p.c.opts.Outbox.Peek(p.c.runCtx, outboxBatch)
		for len(es) > 0 && es[0].Seq <= p.done {
			es = es[1:]
		}
		switch {
		case p.c.runCtx.Err() != nil:
			p.end()
			return
		case err != nil:
			failures++
			p.c.log.Warn("outbox: cannot read; retrying", "err", err)
			if p.c.sleep(p.c.runCtx, p.c.opts.Backoff.Delay(failures-1, randFloat())) != nil {
				p.end()
				return
			}
			continue
		case len(es) == 0:
			if p.stopIfIdle() {
				return
			}
			continue
		}
	batch:
		for i := 0; i < len(es); {
			e := es[i]
			if p.isExpired(e) {
				stuck = true
				break batch // expire drops it and those before it
			}
			s, err := p.session(avoid)
			if err != nil {
				if errors.Is(err, domain.ErrClosed) {
					p.end()
					return
				}
				if p.stopIfIdle() {
					return // idle: the next session starts a pump
				}
				break batch
			}
			if !p.claim(e) {
				p.c.hold.release(s)
				stuck = true
				break batch // expired while waiting for the session
			}
			n, err := p.deliverRun(s, es[i:]) // batch.go: several at once when the session batches
			p.c.hold.release(s)
			if err != nil {
				p.setInflight(0)
			}
			switch {
			case err == nil:
				last := es[i+n-1]
				failures, avoid, p.done = 0, nil, last.Seq
				p.removeDelivered(last, &p.delivered)
				p.delivered.Add(uint64(n - 1))
				i += n
			case p.c.runCtx.Err() != nil:
				p.end()
				return
			case errors.Is(err, domain.ErrNotConnected):
				// Sent again, same message id, on the next session.
				p.c.sessionFailed(s, err)
				avoid = s
			case isRejected(err):
				p.c.log.Error("outbox: the hub refused a message for good; dropped", "message_id", e.Message.MessageID, "err", err)
				p.done = e.Seq
				p.removeDelivered(e, &p.rejected)
				i++
			default:
				failures++
				d := p.c.opts.Backoff.Delay(failures-1, randFloat())
				p.c.log.Warn("outbox: delivery failed; retrying", "message_id", e.Message.MessageID, "err", err, "retry_in", d)
				if p.c.sleep(p.c.runCtx, d) != nil {
					p.end()
					return
				}
			}
		}
	}
}

// deliver sends one outbox entry on s, bounded by outboxSendTimeout.
func (p *outboxPump) deliver(s *session, e ports.OutboxEntry) error {
	ctx, cancel := context.WithTimeout(p.c.runCtx, outboxSendTimeout)
	defer cancel()
	err := s.SendTelemetry(ctx, e.Message)
	if err == nil {
		p.c.log.Debug("outbox: telemetry delivered", "message_id", e.Message.MessageID)
	}
	return err
}

// claim records e as the entry the pump is delivering, so that expiry
// leaves it and those after it alone; it reports false when e has expired.
func (p *outboxPump) claim(e ports.OutboxEntry) bool {
	p.headMu.Lock()
	defer p.headMu.Unlock()
	if p.isExpired(e) {
		return false
	}
	p.inflight = e.Seq
	return true
}

func (p *outboxPump) setInflight(seq uint64) {
	p.headMu.Lock()
	p.inflight = seq
	p.headMu.Unlock()
}

// removeDelivered removes e (the head of the outbox) and counts it.
func (p *outboxPump) removeDelivered(e ports.OutboxEntry, counter *atomic.Uint64) {
	p.headMu.Lock()
	defer p.headMu.Unlock()
	p.inflight = 0
	// Not the run context: an acknowledged message is removed even when
	// Close is under way, so it is not delivered again.
	if err := p.c.opts.Outbox.Remove(context.WithoutCancel(p.c.runCtx), e.Seq); err != nil {
		p.c.log.Warn("outbox: cannot remove a delivered message; it may be delivered again", "message_id", e.Message.MessageID, "err", err)
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

func (p *outboxPump) isExpired(e ports.OutboxEntry) bool {
	return p.c.opts.OutboxMaxAge > 0 && time.Since(e.Enqueued) > p.c.opts.OutboxMaxAge
}

// expire drops the messages at the head of the outbox that are older
// than OutboxMaxAge, with one log line, and returns how many.
func (p *outboxPump) expire(ctx context.Context) int {
	p.headMu.Lock()
	defer p.headMu.Unlock()
	dropped := 0
	var first, last ports.OutboxEntry
	for {
		es, err := p.c.opts.Outbox.Peek(ctx, outboxBatch)
		if err != nil {
			break
		}
		n := 0
		for n < len(es) && p.isExpired(es[n]) && (p.inflight == 0 || es[n].Seq < p.inflight) {
			n++
		}
		if n == 0 {
			break
		}
		if err := p.c.opts.Outbox.Remove(context.WithoutCancel(ctx), es[n-1].Seq); err != nil {
			p.c.log.Warn("outbox: cannot remove expired messages", "err", err)
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
		p.expired.Add(uint64(dropped))
		p.c.log.Warn("outbox: dropped messages older than the maximum age", "count", dropped, "max_age", p.c.opts.OutboxMaxAge,
			"first_message_id", first.Message.MessageID, "last_message_id", last.Message.MessageID,
			"oldest_enqueued", first.Enqueued.UTC(), "newest_enqueued", last.Enqueued.UTC())
	}
	return dropped
}

// errPumpIdle: no session is open or coming; the pump waits for the next
// Connect.
var errPumpIdle = errors.New("outbox: not connected")

// session is holder.wait for the pump: it waits for the next session
// (other than avoid) whatever FailFast says, returns errPumpIdle when
// nothing is connecting and domain.ErrClosed after Close or giving up.
func (p *outboxPump) session(avoid *session) (*session, error) {
	s, err := p.c.hold.wait(p.c.runCtx, avoid, false)
	switch {
	case err == nil:
		return s, nil
	case errors.Is(err, errNobodyConnects):
		return nil, errPumpIdle
	case errors.Is(err, domain.ErrClosed), p.c.runCtx.Err() != nil:
		return nil, domain.ErrClosed
	}
	return nil, err
}

// close closes the outbox once the pump has ended (Close). What it
// holds stays stored in a durable outbox.
func (p *outboxPump) close() {
	if p.c.opts.Outbox == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if n, _ := p.c.opts.Outbox.Len(); n > 0 {
		p.c.log.Info("outbox: closing with messages not yet delivered", "messages", n)
	}
	if err := p.c.opts.Outbox.Close(); err != nil {
		p.c.log.Warn("outbox: close", "err", err)
	}
}

// validateOutbox checks the outbox options.
func (o Options) validateOutbox() error {
	if o.OutboxMaxAge < 0 {
		return fmt.Errorf("%w: negative OutboxMaxAge", domain.ErrInvalidConfig)
	}
	return nil
}
