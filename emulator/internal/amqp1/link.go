package amqp1

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrNotSender is returned by [Link.Send] on a link where the server is the receiver.
var ErrNotSender = errors.New("amqp1: the server is not the sender on this link")

// ErrMessageTooLarge is returned (wrapped) by [Link.Send] when the encoded
// message exceeds the max-message-size the peer announced in its attach.
var ErrMessageTooLarge = errors.New("amqp1: message larger than the peer's max-message-size")

// Delivery is one complete message received on a link where the server is
// the receiver, handed to [Handler.OnMessage].
type Delivery struct {
	// ID is the delivery-id (session scoped).
	ID uint32
	// Tag is the delivery-tag chosen by the peer.
	Tag []byte
	// Format is the message-format (0 for standard AMQP messages; the Azure
	// SDKs use 0x80013700 for batches).
	Format uint32
	// Settled is true when the peer sent the delivery pre-settled; the
	// handler's outcome is then not sent.
	Settled bool
	// Payload is the raw encoded message (all sections), reassembled from
	// every transfer frame of the delivery.
	Payload []byte
	// Message is Payload decoded; never nil inside OnMessage (deliveries that
	// fail to decode are rejected with amqp:decode-error before the handler).
	Message *Message

	chunks [][]byte // the transfer payloads of an unfinished delivery
	size   int      // their total length
}

// join returns the payload of a complete delivery: its only chunk, or
// every chunk copied once into a slice of the exact size.
func (d *Delivery) join() []byte {
	switch len(d.chunks) {
	case 0:
		return nil
	case 1:
		b := d.chunks[0]
		d.chunks = nil
		return b
	}
	b := make([]byte, 0, d.size)
	for _, c := range d.chunks {
		b = append(b, c...)
	}
	d.chunks = nil
	return b
}

// Link is one attached link as seen from the server. The server's role is
// the inverse of the peer's: for a peer sender (telemetry, requests) the
// server receives and [Handler.OnMessage] gets its messages; for a peer
// receiver (cloud-to-device, responses) the server sends with [Link.Send].
// Methods are safe for concurrent use.
type Link struct {
	c            *Conn
	s            *session
	attach       *Attach // the peer's
	role         Role    // the server's
	localHandle  uint32
	ctx          context.Context
	cancel       context.CancelFunc
	ownProps     map[string]any
	attached     bool
	detachSent   bool
	finished     bool
	err          error
	detachReason error

	deliveryCount uint32
	credit        uint32

	// server sender
	sendMu   chan struct{} // a one-slot semaphore serialising Send
	drainReq bool
	waiters  int
	nextTag  uint64

	// server receiver
	held     int // bytes of partial, queue and the delivery in OnMessage, counted in Conn.unsettled
	partial  *Delivery
	queue    []*Delivery
	pending  int
	draining bool // a receiveLoop runs; it runs only while deliveries wait
}

func newLink(s *session, a *Attach, local uint32) *Link {
	ctx, cancel := linkContext(s.c)
	l := &Link{
		c:           s.c,
		s:           s,
		attach:      a,
		role:        !a.Role,
		localHandle: local,
		ctx:         ctx,
		cancel:      cancel,
		sendMu:      make(chan struct{}, 1),
	}
	if a.InitialDeliveryCount != nil {
		l.deliveryCount = *a.InitialDeliveryCount
	}
	return l
}

// Name returns the link name chosen by the peer.
func (l *Link) Name() string { return l.attach.Name }

// Role returns the server's role on the link.
func (l *Link) Role() Role { return l.role }

// Address returns the address of the server's node: the target address when
// the server receives, the source address when it sends ("" when absent).
// It is returned as the peer sent it (e.g. with or without "amqps://host").
func (l *Link) Address() string {
	if l.role == RoleReceiver {
		if l.attach.Target != nil {
			return l.attach.Target.Address
		}
		return ""
	}
	if l.attach.Source != nil {
		return l.attach.Source.Address
	}
	return ""
}

// Source returns the peer's source terminus (nil when absent); do not modify it.
func (l *Link) Source() *Source { return l.attach.Source }

// Target returns the peer's target terminus (nil when absent); do not modify it.
func (l *Link) Target() *Target { return l.attach.Target }

// Properties returns the peer's attach properties (e.g.
// com.microsoft:channel-correlation-id); nil when absent; do not modify it.
func (l *Link) Properties() map[string]any { return l.attach.Properties }

// SndSettleMode returns the negotiated sender settle mode (the peer's
// request, echoed by the server).
func (l *Link) SndSettleMode() SenderSettleMode { return l.attach.SndSettleMode }

// RcvSettleMode returns the negotiated receiver settle mode.
func (l *Link) RcvSettleMode() ReceiverSettleMode { return l.attach.RcvSettleMode }

// PeerMaxMessageSize returns the max-message-size of the peer's attach (0 = no limit).
func (l *Link) PeerMaxMessageSize() uint64 { return l.attach.MaxMessageSize }

// Conn returns the connection of the link.
func (l *Link) Conn() *Conn { return l.c }

// Context returns a context that ends when the link is detached or the
// connection ends.
func (l *Link) Context() context.Context { return l.ctx }

// SetProperties sets the properties of the server's attach. It only has an
// effect when called from [Handler.OnAttach].
func (l *Link) SetProperties(props map[string]any) {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	l.ownProps = props
}

// Credit returns the current link credit: what the peer granted and the
// server has not used yet (server sender), or what the server granted and
// the peer has not used yet (server receiver).
func (l *Link) Credit() uint32 {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	return l.credit
}

// Err returns nil while the link is attached, then an error wrapping
// [ErrLinkDetached] or [ErrConnClosed] that says why it ended.
func (l *Link) Err() error {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	return l.err
}

// Detach detaches the link with err sent to the peer (nil for a clean
// detach; a non-*Error becomes amqp:internal-error), e.g. &Error{Condition:
// ErrCondUnauthorizedAccess} when a token expires. Handler.OnDetach is
// called with err. Detaching an ended link, or one whose OnAttach has not
// returned yet, is a no-op; after the connection ended it returns
// [ErrConnClosed].
func (l *Link) Detach(err error) error {
	c := l.c
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return ErrConnClosed
	}
	if l.finished || !l.attached {
		c.mu.Unlock()
		return nil
	}
	notify := l.detachLocked(asError(err))
	if len(notify) > 0 {
		l.detachReason = err
	}
	c.mu.Unlock()
	c.notifyDetached(notify)
	return nil
}

// detachLocked sends a closing detach with e and ends the link; the caller
// notifies the returned links after unlocking.
func (l *Link) detachLocked(e *Error) []*Link {
	if l.detachSent {
		return nil
	}
	l.detachSent = true
	_ = l.c.send(l.s.localCh, &Detach{Handle: l.localHandle, Closed: true, Error: e}, nil, nil)
	var cause error = ErrLinkDetached
	if e != nil {
		cause = fmt.Errorf("%w: by the server: %w", ErrLinkDetached, e)
	}
	if l.finishLocked(cause) {
		if e != nil {
			l.detachReason = e
		}
		return []*Link{l}
	}
	return nil
}

// finishLocked ends the link once; it reports whether Handler.OnDetach is due.
func (l *Link) finishLocked(cause error) bool {
	if l.finished {
		return false
	}
	l.finished = true
	l.err = cause
	l.detachReason = cause
	l.cancel()
	l.releaseLocked(l.held)
	l.partial, l.queue = nil, nil
	for id, od := range l.s.unsettledOut {
		if od.link == l {
			od.res <- sendResult{err: cause}
			delete(l.s.unsettledOut, id)
		}
	}
	l.c.broadcastLocked()
	return l.attached
}

// releaseLocked gives back n bytes of the link's unsettled messages; c.mu held.
func (l *Link) releaseLocked(n int) {
	l.held -= n
	l.c.unsettled -= n
}

// maybeDrainLocked completes a drain request once no Send is waiting.
func (l *Link) maybeDrainLocked() {
	if !l.drainReq || l.waiters > 0 {
		return
	}
	l.drainReq = false
	l.deliveryCount += l.credit
	l.credit = 0
	_ = l.c.send(l.s.localCh, l.s.flowLocked(l, true), nil, nil)
}

// waitLocked waits, with c.mu held on entry and exit, until the connection
// state changes, ctx ends or the link ends.
func (l *Link) waitLocked(ctx context.Context) error {
	ch := l.c.changed
	l.c.mu.Unlock()
	var err error
	select {
	case <-ch:
	case <-ctx.Done():
		err = ctx.Err()
	case <-l.ctx.Done():
	}
	l.c.mu.Lock()
	return err
}

func (l *Link) endedErrLocked() error {
	if l.c.ended {
		return ErrConnClosed
	}
	if l.finished {
		return l.err
	}
	return nil
}

// Send sends msg on a link where the server is the sender. It waits for
// link credit (the peer's flow), splits the message into transfer frames of
// at most the peer's max-frame-size, and respects the session window.
//
// On a link whose snd-settle-mode is settled, the delivery is sent
// pre-settled and Send returns (nil, nil) once it is written. Otherwise Send
// waits for the peer's disposition and returns its outcome (*Accepted,
// *Rejected, *Released or *Modified; nil if the peer settled without one).
// Send is [Link.SendAsync] followed by its wait.
//
// Errors: [ErrNotSender]; [ErrMessageTooLarge] against the peer's
// max-message-size; ctx.Err() when ctx ends first (if the transfer was
// already written the delivery stays with the peer, its outcome unknown);
// an error wrapping [ErrLinkDetached] or [ErrConnClosed] when the link or
// connection ends; encoding errors from msg.MarshalBinary.
func (l *Link) Send(ctx context.Context, msg *Message) (Outcome, error) {
	wait, err := l.SendAsync(ctx, msg)
	if err != nil {
		return nil, err
	}
	return wait(ctx)
}

// SendAsync sends msg like [Link.Send] but returns as soon as its transfer
// frames are written, so that several deliveries of the link can wait for
// their dispositions at once (calls are served in order, one transfer at a
// time). wait returns the peer's outcome: at once (nil, nil) on a settled
// link; otherwise when the peer settles, the link or connection ends
// (error wrapping [ErrLinkDetached] or [ErrConnClosed]), or wait's ctx
// ends (ctx.Err(); the outcome is then never reported). wait may be called
// more than once and returns the same result after the first return.
// Errors of SendAsync itself are those of Send before the transfer.
func (l *Link) SendAsync(ctx context.Context, msg *Message) (wait func(context.Context) (Outcome, error), err error) {
	return l.sendAsync(ctx, msg, false)
}

// ErrSettleMode is returned by [Link.SendSettled] on a link whose peer
// asked for unsettled deliveries (snd-settle-mode unsettled).
var ErrSettleMode = errors.New("amqp1: the peer asked for unsettled deliveries on this link")

// SendSettled sends msg pre-settled on a link whose snd-settle-mode is
// mixed (the default) or settled, as Event Hubs sends events: the peer
// owes no disposition and the server keeps no state for it. It returns
// once the transfer is written. Errors are those of [Link.Send], and
// [ErrSettleMode] on a link whose snd-settle-mode is unsettled.
func (l *Link) SendSettled(ctx context.Context, msg *Message) error {
	if l.attach.SndSettleMode == SenderSettleModeUnsettled {
		return ErrSettleMode
	}
	_, err := l.sendAsync(ctx, msg, true)
	return err
}

func (l *Link) sendAsync(ctx context.Context, msg *Message, presettle bool) (wait func(context.Context) (Outcome, error), err error) {
	if l.role != RoleSender {
		return nil, ErrNotSender
	}
	if msg == nil {
		return nil, errors.New("amqp1: nil message")
	}
	payload, err := msg.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("amqp1: encode message: %w", err)
	}
	if lim := l.attach.MaxMessageSize; lim != 0 && uint64(len(payload)) > lim {
		return nil, fmt.Errorf("%w: %d bytes, peer accepts %d", ErrMessageTooLarge, len(payload), lim)
	}
	select {
	case l.sendMu <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.ctx.Done():
		return nil, l.Err()
	}
	defer func() { <-l.sendMu }()

	c, s := l.c, l.s
	c.mu.Lock()
	l.waiters++
	for l.credit == 0 && l.endedErrLocked() == nil {
		if err := l.waitLocked(ctx); err != nil {
			l.waiters--
			l.maybeDrainLocked()
			c.mu.Unlock()
			return nil, err
		}
	}
	l.waiters--
	if err := l.endedErrLocked(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	l.credit--
	l.deliveryCount++
	id := s.nextDeliveryID
	s.nextDeliveryID++
	tag := binary.BigEndian.AppendUint64(nil, l.nextTag)
	l.nextTag++
	settled := presettle || l.attach.SndSettleMode == SenderSettleModeSettled
	var res chan sendResult
	if !settled {
		res = make(chan sendResult, 1)
		s.unsettledOut[id] = &outDelivery{link: l, res: res}
	}
	l.maybeDrainLocked()
	format := msg.Format
	written := make(chan struct{})
	first := true
	off := 0
	for {
		// The session window is waited for without ctx: abandoning a
		// delivery half-sent would need an aborted transfer.
		for s.remoteIncomingWin == 0 && l.endedErrLocked() == nil {
			_ = l.waitLocked(context.Background())
		}
		if err := l.endedErrLocked(); err != nil {
			c.mu.Unlock()
			return nil, err
		}
		t := &Transfer{Handle: l.localHandle, More: true}
		if first {
			t.DeliveryID, t.DeliveryTag, t.MessageFormat, t.Settled = &id, tag, &format, settled
		}
		hdr, err := Encode(t)
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		room := int(min(uint64(c.peerMaxFrame), uint64(c.cfg.MaxOutgoingQueue))) - FrameHeaderSize - len(hdr)
		if room <= 0 {
			c.mu.Unlock()
			return nil, fmt.Errorf("amqp1: peer max-frame-size %d too small for a transfer", c.peerMaxFrame)
		}
		end := min(off+room, len(payload))
		t.More = end < len(payload)
		var w chan struct{}
		if !t.More {
			w = written
		}
		s.nextOutgoingID++
		s.remoteIncomingWin--
		if err := c.send(s.localCh, t, payload[off:end], w); err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: %w", ErrConnClosed, err)
		}
		first = false
		off = end
		if !t.More {
			break
		}
	}
	c.mu.Unlock()

	select {
	case <-written:
	case <-time.After(c.cfg.WriteTimeout):
	}
	if err := c.writeErr(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConnClosed, err)
	}
	if settled {
		return func(context.Context) (Outcome, error) { return nil, nil }, nil
	}
	var (
		once sync.Once
		done = make(chan struct{})
		out  Outcome
		werr error
	)
	return func(wctx context.Context) (Outcome, error) {
		select {
		case r := <-res:
			once.Do(func() { out, werr = r.out, r.err; close(done) })
		case <-done:
		case <-wctx.Done():
			// A disposition that arrived wins over the end of wctx (often
			// the link's own context, ended right after the device settled
			// and detached): a settled message is not abandoned.
			c.mu.Lock()
			delete(s.unsettledOut, id)
			c.mu.Unlock()
			// A disposition (or the link's end) that arrived before the
			// context ended wins: select picks at random among ready
			// cases, and a settled message must not count as abandoned.
			select {
			case r := <-res:
				once.Do(func() { out, werr = r.out, r.err; close(done) })
			default:
				once.Do(func() { werr = wctx.Err(); close(done) })
			}
		}
		<-done
		return out, werr
	}, nil
}

// queueLocked queues a complete delivery for Handler.OnMessage and starts
// the link's receiveLoop unless it runs; c.mu is held.
func (l *Link) queueLocked(d *Delivery) {
	l.queue = append(l.queue, d)
	l.pending++
	if !l.draining {
		l.draining = true
		l.c.wg.Add(1)
		go l.receiveLoop()
	}
}

// receiveLoop hands the link's deliveries to Handler.OnMessage in order,
// settles them and tops up the link credit. It runs only while deliveries
// wait (queueLocked starts it), so an idle link costs no goroutine.
func (l *Link) receiveLoop() {
	c := l.c
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(l.queue) == 0 || l.finished {
			l.draining = false
			c.mu.Unlock()
			return
		}
		d := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		c.mu.Unlock()

		var out Outcome
		msg, err := decodeMessage(d.Payload)
		if err != nil {
			out = &Rejected{Error: &Error{Condition: ErrCondDecodeError, Description: err.Error()}}
		} else {
			d.Message = msg
			msg.DeliveryTag = d.Tag
			msg.Format = d.Format
			out = c.cfg.Handler.OnMessage(l.ctx, l, d)
			if out == nil {
				out = &Accepted{}
			}
		}

		c.mu.Lock()
		if l.finished {
			c.mu.Unlock()
			return
		}
		l.pending--
		l.releaseLocked(d.size)
		if !d.Settled {
			settled := l.attach.RcvSettleMode == ReceiverSettleModeFirst
			_ = c.send(l.s.localCh, &Disposition{Role: RoleReceiver, First: d.ID, Settled: settled, State: out}, nil, nil)
		}
		target := c.cfg.LinkCredit - uint32(min(l.pending, int(c.cfg.LinkCredit)))
		if l.credit <= c.cfg.LinkCredit/2 && target > l.credit {
			l.credit = target
			_ = c.send(l.s.localCh, l.s.flowLocked(l, false), nil, nil)
		}
		c.mu.Unlock()
	}
}

// decodeMessage decodes message sections with go-amqp, turning any panic of
// the third-party decoder on hostile input into an error.
func decodeMessage(b []byte) (m *Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("%w: message sections: %v", ErrDecode, r)
		}
	}()
	m = new(Message)
	if err := m.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("%w: message sections: %w", ErrDecode, err)
	}
	return m, nil
}
