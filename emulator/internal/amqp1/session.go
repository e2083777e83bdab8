package amqp1

import (
	"context"
	"errors"
	"fmt"
)

// session is one begun session. All fields are guarded by Conn.mu.
type session struct {
	c                 *Conn
	localCh, remoteCh uint16
	nextIncomingID    uint32
	incomingWindow    uint32
	nextOutgoingID    uint32
	remoteIncomingWin uint32
	remoteOutgoingWin uint32
	nextDeliveryID    uint32
	links             map[uint32]*Link // by the peer's handle
	localHandles      map[uint32]*Link
	unsettledOut      map[uint32]*outDelivery // by delivery-id
	endSent           bool
	initialOutgoingID uint32
	peerHandleMax     uint32
}

type outDelivery struct {
	link *Link
	res  chan sendResult
}

type sendResult struct {
	out Outcome
	err error
}

// ErrLinkDetached is wrapped by the errors of [Link.Send] and [Link.Err] once
// the link has been detached (by either side) or its session has ended.
var ErrLinkDetached = errors.New("amqp1: link detached")

func (c *Conn) onBegin(channel uint16, b *Begin) *Error {
	if b.RemoteChannel != nil {
		return &Error{Condition: ErrCondIllegalState, Description: "begin answering a session the server never began"}
	}
	if channel > c.cfg.ChannelMax {
		return &Error{Condition: ErrCondFramingError, Description: fmt.Sprintf("channel %d above channel-max %d", channel, c.cfg.ChannelMax)}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessions[channel] != nil {
		return &Error{Condition: ErrCondIllegalState, Description: fmt.Sprintf("channel %d already has a session", channel)}
	}
	if maxSessions, _, _ := c.limitsLocked(); len(c.sessions) >= maxSessions {
		return c.limitLocked(ErrTooManySessions, "more than %d sessions%s", maxSessions, c.loginNoteLocked())
	}
	local := -1
	for ch := 0; ch <= int(c.cfg.ChannelMax); ch++ {
		if c.localChannels[uint16(ch)] == nil {
			local = ch
			break
		}
	}
	if local < 0 {
		return &Error{Condition: ErrCondResourceLimitExceeded, Description: "no free channel"}
	}
	w := c.cfg.SessionWindow
	s := &session{
		c:                 c,
		localCh:           uint16(local),
		remoteCh:          channel,
		nextIncomingID:    b.NextOutgoingID,
		incomingWindow:    w,
		remoteIncomingWin: b.IncomingWindow,
		remoteOutgoingWin: b.OutgoingWindow,
		links:             map[uint32]*Link{},
		localHandles:      map[uint32]*Link{},
		unsettledOut:      map[uint32]*outDelivery{},
		peerHandleMax:     b.HandleMax,
	}
	c.sessions[channel] = s
	c.localChannels[s.localCh] = s
	rc := channel
	_ = c.send(s.localCh, &Begin{
		RemoteChannel:  &rc,
		NextOutgoingID: s.nextOutgoingID,
		IncomingWindow: w,
		OutgoingWindow: w,
		HandleMax:      c.cfg.HandleMax,
	}, nil, nil)
	return nil
}

func (s *session) dispatch(p Performative) *Error {
	c := s.c
	c.mu.Lock()
	if s.endSent {
		if _, ok := p.(*End); !ok {
			c.mu.Unlock()
			return nil // ignore frames until the peer's end
		}
	}
	c.mu.Unlock()
	switch p := p.(type) {
	case *Attach:
		return s.onAttach(p)
	case *Flow:
		s.onFlow(p)
	case *Transfer:
		return s.onTransfer(p)
	case *Disposition:
		s.onDisposition(p)
	case *Detach:
		s.onDetach(p)
	case *End:
		s.onEnd(p)
	default:
		return &Error{Condition: ErrCondIllegalState, Description: fmt.Sprintf("unexpected %T on an AMQP channel", p)}
	}
	return nil
}

// flowLocked builds a flow frame with the session fields and, for l, the link fields.
func (s *session) flowLocked(l *Link, drain bool) *Flow {
	nid := s.nextIncomingID
	f := &Flow{
		NextIncomingID: &nid,
		IncomingWindow: s.incomingWindow,
		NextOutgoingID: s.nextOutgoingID,
		OutgoingWindow: s.c.cfg.SessionWindow,
		Drain:          drain,
	}
	if l != nil {
		h, dc, lc := l.localHandle, l.deliveryCount, l.credit
		f.Handle, f.DeliveryCount, f.LinkCredit = &h, &dc, &lc
	}
	return f
}

// endLocked sends end with e (once) and ends every link of the session. The
// caller must notify the returned links after unlocking.
func (s *session) endLocked(e *Error) []*Link {
	if s.endSent {
		return nil
	}
	s.endSent = true
	_ = s.c.send(s.localCh, &End{Error: e}, nil, nil)
	var cause error = ErrLinkDetached
	if e != nil {
		cause = fmt.Errorf("%w: session ended: %w", ErrLinkDetached, e)
	}
	return s.endAllLinksLocked(cause)
}

func (s *session) endAllLinksLocked(cause error) []*Link {
	var notify []*Link
	for _, l := range s.links {
		if l.finishLocked(cause) {
			notify = append(notify, l)
		}
	}
	for id, d := range s.unsettledOut {
		d.res <- sendResult{err: cause}
		delete(s.unsettledOut, id)
	}
	return notify
}

// notifyDetached calls Handler.OnDetach for links that ended; never with c.mu held.
func (c *Conn) notifyDetached(links []*Link) {
	for _, l := range links {
		c.cfg.Handler.OnDetach(l, l.detachReason)
	}
}

func (s *session) failLocked(cond Symbol, format string, args ...any) []*Link {
	return s.endLocked(&Error{Condition: cond, Description: fmt.Sprintf(format, args...)})
}

func (s *session) onEnd(e *End) {
	c := s.c
	c.mu.Lock()
	if !s.endSent {
		s.endSent = true
		_ = c.send(s.localCh, &End{}, nil, nil)
	}
	var cause error = ErrLinkDetached
	if e.Error != nil {
		cause = fmt.Errorf("%w: peer ended the session: %w", ErrLinkDetached, e.Error)
	}
	notify := s.endAllLinksLocked(cause)
	delete(c.sessions, s.remoteCh)
	delete(c.localChannels, s.localCh)
	c.broadcastLocked()
	c.mu.Unlock()
	c.notifyDetached(notify)
}

// loginNoteLocked says, in a limit's description, that the lower limits
// before login applied; c.mu held.
func (c *Conn) loginNoteLocked() string {
	if c.loggedIn {
		return ""
	}
	return " before a valid token"
}

func (s *session) onAttach(a *Attach) *Error {
	c := s.c
	c.mu.Lock()
	if a.Handle > c.cfg.HandleMax {
		notify := s.failLocked(ErrCondResourceLimitExceeded, "handle %d above handle-max %d", a.Handle, c.cfg.HandleMax)
		c.mu.Unlock()
		c.notifyDetached(notify)
		return nil
	}
	if s.links[a.Handle] != nil {
		notify := s.failLocked(ErrCondHandleInUse, "handle %d is in use", a.Handle)
		c.mu.Unlock()
		c.notifyDetached(notify)
		return nil
	}
	if _, maxLinks, _ := c.limitsLocked(); c.linksLocked() >= maxLinks {
		e := c.limitLocked(ErrTooManyLinks, "more than %d links%s", maxLinks, c.loginNoteLocked())
		c.mu.Unlock()
		return e
	}
	loggedIn := c.loggedIn
	local := uint32(0)
	for s.localHandles[local] != nil {
		local++ // at most HandleMax+1 links exist, so this ends within range
	}
	l := newLink(s, a, local)
	s.links[a.Handle] = l
	s.localHandles[local] = l
	c.mu.Unlock()

	var refusal *Error
	if !loggedIn && (c.cfg.Login.Allow == nil || !c.cfg.Login.Allow(l)) {
		refusal = &Error{Condition: ErrCondUnauthorizedAccess, Description: "only $cbs links may be attached before a valid token"}
	} else {
		refusal = asError(c.cfg.Handler.OnAttach(l.ctx, l))
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if s.endSent || c.ended {
		return nil
	}
	reply := &Attach{
		Name:          a.Name,
		Handle:        local,
		Role:          l.role,
		SndSettleMode: a.SndSettleMode,
		RcvSettleMode: a.RcvSettleMode,
		Source:        a.Source,
		Target:        a.Target,
		Properties:    l.ownProps,
	}
	if l.role == RoleSender {
		zero := uint32(0)
		reply.InitialDeliveryCount = &zero
	} else {
		reply.MaxMessageSize = c.cfg.MaxMessageSize
	}
	if refusal != nil {
		if l.role == RoleSender {
			reply.Source = nil
		} else {
			reply.Target = nil
		}
		_ = c.send(s.localCh, reply, nil, nil)
		_ = c.send(s.localCh, &Detach{Handle: local, Closed: true, Error: refusal}, nil, nil)
		l.detachSent = true
		l.finishLocked(fmt.Errorf("%w: refused: %w", ErrLinkDetached, refusal))
		return nil
	}
	_ = c.send(s.localCh, reply, nil, nil)
	l.attached = true
	if l.role == RoleReceiver {
		l.credit = c.cfg.LinkCredit
		_ = c.send(s.localCh, s.flowLocked(l, false), nil, nil)
	}
	return nil
}

func (s *session) onFlow(f *Flow) {
	c := s.c
	c.mu.Lock()
	var notify []*Link
	defer func() {
		c.broadcastLocked()
		c.mu.Unlock()
		c.notifyDetached(notify)
	}()
	next := s.initialOutgoingID
	if f.NextIncomingID != nil {
		next = *f.NextIncomingID
	}
	s.remoteIncomingWin = next + f.IncomingWindow - s.nextOutgoingID
	s.remoteOutgoingWin = f.OutgoingWindow
	if f.Handle == nil {
		if f.Echo {
			_ = c.send(s.localCh, s.flowLocked(nil, false), nil, nil)
		}
		return
	}
	l := s.links[*f.Handle]
	if l == nil {
		notify = s.failLocked(ErrCondUnattachedHandle, "flow for unattached handle %d", *f.Handle)
		return
	}
	if l.finished {
		return
	}
	if l.role == RoleSender {
		dc := l.deliveryCount
		if f.DeliveryCount != nil {
			dc = *f.DeliveryCount
		}
		var lc uint32
		if f.LinkCredit != nil {
			lc = *f.LinkCredit
		}
		credit := dc + lc - l.deliveryCount
		if credit > lc { // the peer counted deliveries we never sent
			credit = lc
		}
		l.credit = credit
		l.drainReq = f.Drain
		l.maybeDrainLocked()
	}
	if f.Echo {
		_ = c.send(s.localCh, s.flowLocked(l, false), nil, nil)
	}
}

func (s *session) onTransfer(t *Transfer) (connErr *Error) {
	c := s.c
	c.mu.Lock()
	var notify []*Link
	defer func() {
		c.mu.Unlock()
		c.notifyDetached(notify)
	}()
	if s.incomingWindow == 0 {
		notify = s.failLocked(ErrCondWindowViolation, "transfer beyond the incoming window")
		return nil
	}
	s.incomingWindow--
	s.nextIncomingID++
	if s.incomingWindow <= c.cfg.SessionWindow/2 {
		s.incomingWindow = c.cfg.SessionWindow
		_ = c.send(s.localCh, s.flowLocked(nil, false), nil, nil)
	}
	l := s.links[t.Handle]
	if l == nil {
		notify = s.failLocked(ErrCondUnattachedHandle, "transfer for unattached handle %d", t.Handle)
		return nil
	}
	if l.finished || !l.attached {
		return nil // detached by the server: drop until the peer's detach
	}
	if l.role == RoleSender {
		notify = l.detachLocked(&Error{Condition: ErrCondNotAllowed, Description: "transfer on a link where the server is the sender"})
		return nil
	}
	if l.partial == nil {
		if t.DeliveryID == nil {
			notify = l.detachLocked(&Error{Condition: ErrCondInvalidField, Description: "first transfer of a delivery without delivery-id"})
			return nil
		}
		if l.credit == 0 {
			notify = l.detachLocked(&Error{Condition: ErrCondTransferLimitExceeded, Description: "transfer without link credit"})
			return nil
		}
		l.credit--
		l.deliveryCount++
		var format uint32
		if t.MessageFormat != nil {
			format = *t.MessageFormat
		}
		l.partial = &Delivery{ID: *t.DeliveryID, Tag: t.DeliveryTag, Format: format}
	} else if t.DeliveryID != nil && *t.DeliveryID != l.partial.ID {
		notify = l.detachLocked(&Error{Condition: ErrCondInvalidField, Description: "delivery-id changed inside a multi-frame delivery"})
		return nil
	}
	d := l.partial
	d.Settled = d.Settled || t.Settled
	if t.Aborted {
		l.partial = nil
		l.releaseLocked(d.size)
		return nil
	}
	if uint64(d.size)+uint64(len(t.Payload)) > c.cfg.MaxMessageSize {
		l.partial = nil
		l.releaseLocked(d.size)
		notify = l.detachLocked(&Error{Condition: ErrCondMessageSizeExceeded,
			Description: fmt.Sprintf("message larger than max-message-size %d", c.cfg.MaxMessageSize)})
		return nil
	}
	if _, _, maxBytes := c.limitsLocked(); c.unsettled+len(t.Payload) > maxBytes {
		return c.limitLocked(ErrTooManyUnsettledBytes, "more than %d bytes of unsettled messages%s", maxBytes, c.loginNoteLocked())
	}
	// Each frame's payload is kept as it was read (a slice of its own
	// frame buffer) and joined once, at the exact size, when the delivery
	// is complete: no growth by append, so what a peer makes the server
	// hold is what it sent, counted in c.unsettled.
	if len(t.Payload) > 0 {
		d.chunks = append(d.chunks, t.Payload)
		d.size += len(t.Payload)
		l.held += len(t.Payload)
		c.unsettled += len(t.Payload)
	}
	if t.More {
		return nil
	}
	l.partial = nil
	d.Payload = d.join()
	l.queueLocked(d)
	return nil
}

func (s *session) onDisposition(d *Disposition) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if d.Role != RoleReceiver {
		return // settlement of deliveries the server received: nothing kept
	}
	last := d.First
	if d.Last != nil {
		last = *d.Last
	}
	if last < d.First {
		return
	}
	out, _ := d.State.(Outcome)
	if out == nil && !d.Settled {
		return // a non-terminal state such as received
	}
	settle := func(id uint32, od *outDelivery) {
		delete(s.unsettledOut, id)
		if !d.Settled {
			// rcv-settle-mode second: the sender settles after the receiver's outcome.
			_ = c.send(s.localCh, &Disposition{Role: RoleSender, First: id, Settled: true, State: out}, nil, nil)
		}
		od.res <- sendResult{out: out}
	}
	if uint64(last-d.First) < uint64(len(s.unsettledOut)) {
		for id := d.First; ; id++ {
			if od := s.unsettledOut[id]; od != nil {
				settle(id, od)
			}
			if id == last {
				break
			}
		}
		return
	}
	for id, od := range s.unsettledOut {
		if id >= d.First && id <= last {
			settle(id, od)
		}
	}
}

func (s *session) onDetach(d *Detach) {
	c := s.c
	c.mu.Lock()
	l := s.links[d.Handle]
	if l == nil {
		notify := s.failLocked(ErrCondUnattachedHandle, "detach for unattached handle %d", d.Handle)
		c.mu.Unlock()
		c.notifyDetached(notify)
		return
	}
	delete(s.links, d.Handle)
	delete(s.localHandles, l.localHandle)
	if !l.detachSent {
		l.detachSent = true
		// Echo the peer's closed flag; the link is not kept for resumption either way.
		_ = c.send(s.localCh, &Detach{Handle: l.localHandle, Closed: d.Closed}, nil, nil)
	}
	var cause error = ErrLinkDetached
	var reason error
	if d.Error != nil {
		cause = fmt.Errorf("%w: by the peer: %w", ErrLinkDetached, d.Error)
		reason = d.Error
	}
	notify := l.finishLocked(cause)
	if notify {
		l.detachReason = reason
	}
	c.mu.Unlock()
	if notify {
		c.notifyDetached([]*Link{l})
	}
}

// linkContext derives the context of a link from the connection's.
func linkContext(c *Conn) (context.Context, context.CancelFunc) {
	return context.WithCancel(c.ctx)
}
