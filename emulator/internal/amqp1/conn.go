package amqp1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Protocol headers (Part 2 §2.2, Part 5 §5.1).
var (
	headerAMQP = [8]byte{'A', 'M', 'Q', 'P', 0, 1, 0, 0}
	headerSASL = [8]byte{'A', 'M', 'Q', 'P', 3, 1, 0, 0}
)

// ErrProtocolHeader is returned (wrapped) by [Serve] when the peer's protocol
// header is not AMQP 1.0.0 with id 0 or 3 (or id 0 when SASL is required).
// The server answers with the header it supports before closing.
var ErrProtocolHeader = errors.New("amqp1: unsupported protocol header")

// ErrSASLFailed is returned (wrapped) by [Serve] when SASL authentication
// fails (unknown mechanism, bad PLAIN credentials, no client certificate for
// EXTERNAL). The peer has been sent sasl-outcome with code auth.
var ErrSASLFailed = errors.New("amqp1: SASL authentication failed")

// ErrIdleTimeout is returned (wrapped) by [Serve] when the peer sent nothing
// for twice Config.IdleTimeout.
var ErrIdleTimeout = errors.New("amqp1: peer idle timeout")

// ErrLoginTimeout is returned (wrapped) by [Serve] when Config.Login
// required a login and the connection did not log in within
// LoginPolicy.Deadline; the peer was sent close with
// amqp:unauthorized-access.
var ErrLoginTimeout = errors.New("amqp1: no login before the deadline")

// ErrLimitExceeded is wrapped by the errors of [Serve] when the peer broke
// a connection limit (sessions, links, unsettled bytes); the peer was sent
// close with amqp:resource-limit-exceeded. The limit's own sentinel
// (ErrTooManySessions, ErrTooManyLinks, ErrTooManyUnsettledBytes) is
// wrapped too.
var ErrLimitExceeded = errors.New("amqp1: connection limit exceeded")

// Sentinels of the connection limits, each wrapping [ErrLimitExceeded].
var (
	// ErrTooManySessions: Config.MaxSessions (or LoginPolicy.MaxSessions) was exceeded.
	ErrTooManySessions = fmt.Errorf("%w: too many sessions", ErrLimitExceeded)
	// ErrTooManyLinks: Config.MaxLinks (or LoginPolicy.MaxLinks) was exceeded.
	ErrTooManyLinks = fmt.Errorf("%w: too many links", ErrLimitExceeded)
	// ErrTooManyUnsettledBytes: Config.MaxUnsettledBytes (or LoginPolicy.MaxUnsettledBytes) was exceeded.
	ErrTooManyUnsettledBytes = fmt.Errorf("%w: too many unsettled bytes", ErrLimitExceeded)
)

// ErrConnClosed is returned by [Link.Send] and [Link.Detach] once the
// connection has ended.
var ErrConnClosed = errors.New("amqp1: connection closed")

// Conn is the server side of one AMQP connection, handed to
// [Handler.OnOpen] and reachable from every [Link]. Its accessors are safe
// for concurrent use.
type Conn struct {
	cfg    Config
	nc     net.Conn
	br     *bufio.Reader
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelCauseFunc

	// Set during the handshake; read-only afterwards.
	peerOpen     *Open
	saslMech     Symbol
	saslIdentity string
	peerCerts    []*x509.Certificate
	peerMaxFrame uint32
	peerIdle     time.Duration

	mu            sync.Mutex
	sessions      map[uint16]*session // by the peer's channel
	localChannels map[uint16]*session
	closeSent     bool
	ended         bool
	changed       chan struct{}
	loggedIn      bool
	loggedInA     atomic.Bool // loggedIn, readable under wmu
	loginTimer    *time.Timer
	unsettled     int   // bytes received and not yet settled, over every link
	closeCause    error // why the server closed for a limit; Serve returns it

	wmu       sync.Mutex
	wq        []outFrame
	wqBytes   int
	wstop     bool
	werr      error
	wnotify   chan struct{}
	wdone     chan struct{}
	lastWrite atomic.Int64

	wg sync.WaitGroup
}

type outFrame struct {
	b       []byte
	written chan struct{} // closed once written or failed; may be nil
}

// ContainerID returns the container-id of the peer's open.
func (c *Conn) ContainerID() string { return c.peerOpen.ContainerID }

// Hostname returns the hostname of the peer's open ("" when absent).
func (c *Conn) Hostname() string { return c.peerOpen.Hostname }

// OpenProperties returns the properties of the peer's open (nil when absent);
// the map must not be modified.
func (c *Conn) OpenProperties() map[string]any { return c.peerOpen.Properties }

// SASLMechanism returns the SASL mechanism the peer authenticated with, or ""
// when it skipped SASL (protocol id 0).
func (c *Conn) SASLMechanism() Symbol { return c.saslMech }

// SASLIdentity returns the PLAIN user name (authentication identity); "" for
// other mechanisms and without SASL.
func (c *Conn) SASLIdentity() string { return c.saslIdentity }

// PeerCertificates returns the TLS client certificates (Config.PeerCertificates,
// or those of a *tls.Conn); nil without client authentication.
func (c *Conn) PeerCertificates() []*x509.Certificate { return c.peerCerts }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetLoggedIn marks the connection as logged in (for IoT Hub: it holds a
// valid token): Config.Login no longer applies and Config's own limits do.
// It is safe to call more than once and from any goroutine.
func (c *Conn) SetLoggedIn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loggedIn = true
	c.loggedInA.Store(true)
	if c.loginTimer != nil {
		c.loginTimer.Stop()
	}
}

// LoggedIn reports whether the connection is logged in: always true
// unless Config.Login.Required, then once [Conn.SetLoggedIn] was called.
func (c *Conn) LoggedIn() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loggedIn
}

// limitsLocked returns the session, link and unsettled-byte limits that
// apply now; c.mu held.
func (c *Conn) limitsLocked() (sessions, links, unsettled int) {
	if c.loggedIn {
		return c.cfg.MaxSessions, c.cfg.MaxLinks, c.cfg.MaxUnsettledBytes
	}
	l := c.cfg.Login
	return l.MaxSessions, l.MaxLinks, l.MaxUnsettledBytes
}

// linksLocked counts the links of every session; c.mu held.
func (c *Conn) linksLocked() int {
	n := 0
	for _, s := range c.sessions {
		n += len(s.links)
	}
	return n
}

// limitLocked records why the connection is being closed for a limit and
// returns the close error; c.mu held.
func (c *Conn) limitLocked(sentinel error, format string, args ...any) *Error {
	desc := fmt.Sprintf(format, args...)
	if c.closeCause == nil {
		c.closeCause = fmt.Errorf("%w: %s", sentinel, desc)
	}
	return &Error{Condition: ErrCondResourceLimitExceeded, Description: desc}
}

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.ctx.Done() }

// Close closes the connection with err (nil for a clean close; a non-*Error
// becomes amqp:internal-error): the server sends close and waits up to
// Config.CloseTimeout for the peer's close before dropping the socket.
// Closing twice is a no-op.
func (c *Conn) Close(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sendCloseLocked(asError(err))
}

// asError converts an application error to the *Error sent on the wire.
func asError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Condition: ErrCondInternalError, Description: err.Error()}
}

// Serve runs the server side of one AMQP 1.0 connection on nc until the
// connection ends, then closes nc. It negotiates the protocol header (id 3
// SASL then id 0, or id 0 directly unless Config.SASL.Required), exchanges
// open, and serves sessions and links through Config.Handler.
//
// It returns nil when the peer closed without an error; the peer's *Error
// (wrapped) when it closed with one; ctx.Err() when ctx ended (the peer is
// sent close with amqp:connection:forced); otherwise an error wrapping
// [ErrProtocolHeader], [ErrSASLFailed], [ErrIdleTimeout], [ErrFraming],
// [ErrDecode] or the network error. Every goroutine Serve starts has ended
// when it returns (handlers included, which see their ctx cancelled).
func Serve(ctx context.Context, nc net.Conn, cfg Config) (err error) {
	cfg = cfg.withDefaults()
	cctx, cancel := context.WithCancelCause(ctx)
	c := &Conn{
		cfg:           cfg,
		nc:            nc,
		br:            bufio.NewReaderSize(nc, 32<<10),
		log:           cfg.Logger.With(slog.String("remote", addrString(nc.RemoteAddr()))),
		ctx:           cctx,
		cancel:        cancel,
		sessions:      map[uint16]*session{},
		localChannels: map[uint16]*session{},
		changed:       make(chan struct{}),
		wnotify:       make(chan struct{}, 1),
		wdone:         make(chan struct{}),
		peerOpen:      &Open{},
		loggedIn:      !cfg.Login.Required,
	}
	c.loggedInA.Store(c.loggedIn)
	defer func() {
		cancel(err)
		_ = nc.Close()
	}()

	// The handshake runs before the writer goroutine exists and writes directly.
	if deadlineErr := nc.SetDeadline(time.Now().Add(cfg.HandshakeTimeout)); deadlineErr != nil {
		return fmt.Errorf("amqp1: set handshake deadline: %w", deadlineErr)
	}
	stopWatch := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	err = c.handshake(ctx)
	stopWatch()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	_ = nc.SetDeadline(time.Time{})
	c.lastWrite.Store(time.Now().UnixNano())

	go c.writeLoop()
	c.mu.Lock()
	if !c.loggedIn {
		c.loginTimer = time.AfterFunc(cfg.Login.Deadline, c.loginExpired)
	}
	c.mu.Unlock()
	if c.peerIdle > 0 {
		c.wg.Add(1)
		go c.heartbeatLoop()
	}
	stopWatch = context.AfterFunc(ctx, func() {
		c.Close(&Error{Condition: ErrCondConnectionForced, Description: "server shutting down"})
	})

	err = c.readLoop()
	stopWatch()
	c.mu.Lock()
	if c.loginTimer != nil {
		c.loginTimer.Stop()
	}
	if c.closeCause != nil {
		err = c.closeCause
	}
	c.mu.Unlock()
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	c.shutdown(err)
	return err
}

// loginExpired closes a connection that has not logged in by the deadline.
func (c *Conn) loginExpired() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loggedIn || c.closeSent || c.ended {
		return
	}
	c.closeCause = fmt.Errorf("%w: %v", ErrLoginTimeout, c.cfg.Login.Deadline)
	c.log.Debug("amqp1: closing connection: no login before the deadline", slog.Duration("deadline", c.cfg.Login.Deadline))
	c.sendCloseLocked(&Error{Condition: ErrCondUnauthorizedAccess,
		Description: fmt.Sprintf("no valid token within %v of open", c.cfg.Login.Deadline)})
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// shutdown ends every link and session, flushes the writer and waits for the
// goroutines of the connection.
func (c *Conn) shutdown(cause error) {
	if cause == nil {
		cause = ErrConnClosed
	}
	c.mu.Lock()
	c.ended = true
	var ended []*Link
	for _, s := range c.localChannels {
		ended = append(ended, s.endAllLinksLocked(fmt.Errorf("%w: %w", ErrConnClosed, cause))...)
	}
	c.broadcastLocked()
	c.mu.Unlock()
	c.cancel(cause)
	c.notifyDetached(ended)

	c.wmu.Lock()
	c.wstop = true
	c.wmu.Unlock()
	c.signalWriter()
	select {
	case <-c.wdone:
	case <-time.After(c.cfg.WriteTimeout):
	}
	_ = c.nc.Close()
	<-c.wdone
	c.wg.Wait()
}

// ---- handshake ----

func (c *Conn) readHeader() ([8]byte, error) {
	var h [8]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return h, fmt.Errorf("amqp1: read protocol header: %w", err)
	}
	return h, nil
}

func (c *Conn) writeDirect(b []byte) error {
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("amqp1: write: %w", err)
	}
	return nil
}

func (c *Conn) writePerformativeDirect(typ uint8, p Performative) error {
	body, err := Encode(p)
	if err != nil {
		return err
	}
	f, err := AppendFrame(nil, typ, 0, body)
	if err != nil {
		return err
	}
	return c.writeDirect(f)
}

func (c *Conn) handshake(ctx context.Context) error {
	h, err := c.readHeader()
	if err != nil {
		return err
	}
	preferred := headerAMQP
	if c.cfg.SASL.Required {
		preferred = headerSASL
	}
	if !bytes.Equal(h[:4], []byte("AMQP")) || h[5] != 1 || h[6] != 0 || h[7] != 0 || (h[4] != 0 && h[4] != 3) {
		_ = c.writeDirect(preferred[:])
		return fmt.Errorf("%w: % x", ErrProtocolHeader, h[:])
	}
	if h[4] == 0 && c.cfg.SASL.Required {
		_ = c.writeDirect(headerSASL[:])
		return fmt.Errorf("%w: SASL is required", ErrProtocolHeader)
	}
	c.peerCerts = c.cfg.PeerCertificates
	if c.peerCerts == nil {
		if tc, ok := c.nc.(*tls.Conn); ok {
			if err := tc.HandshakeContext(ctx); err != nil {
				return fmt.Errorf("amqp1: TLS handshake: %w", err)
			}
			c.peerCerts = tc.ConnectionState().PeerCertificates
		}
	}
	if h[4] == 3 {
		if err := c.writeDirect(headerSASL[:]); err != nil {
			return err
		}
		if err := c.sasl(ctx); err != nil {
			return err
		}
		h, err = c.readHeader()
		if err != nil {
			return err
		}
		if h != headerAMQP {
			_ = c.writeDirect(headerAMQP[:])
			return fmt.Errorf("%w: % x after SASL", ErrProtocolHeader, h[:])
		}
	}
	if err := c.writeDirect(headerAMQP[:]); err != nil {
		return err
	}
	return c.openExchange(ctx)
}

func (c *Conn) readPerformative(wantType uint8) (Performative, error) {
	for {
		f, err := ReadFrame(c.br, c.cfg.MaxFrameSize)
		if err != nil {
			return nil, fmt.Errorf("amqp1: read frame: %w", err)
		}
		if len(f.Body) == 0 {
			continue // heartbeat
		}
		if f.Type != wantType {
			return nil, fmt.Errorf("%w: frame type %d, want %d", ErrFraming, f.Type, wantType)
		}
		return DecodePerformative(f.Body)
	}
}

func (c *Conn) sasl(ctx context.Context) error {
	if err := c.writePerformativeDirect(FrameTypeSASL, &SASLMechanisms{Mechanisms: c.cfg.SASL.Mechanisms}); err != nil {
		return err
	}
	p, err := c.readPerformative(FrameTypeSASL)
	if err != nil {
		return err
	}
	init, ok := p.(*SASLInit)
	if !ok {
		return fmt.Errorf("%w: got %T, want sasl-init", ErrDecode, p)
	}
	authErr := c.authenticate(ctx, init)
	code := SASLCodeOK
	if authErr != nil {
		code = SASLCodeAuth
	}
	if err := c.writePerformativeDirect(FrameTypeSASL, &SASLOutcome{Code: code}); err != nil {
		return err
	}
	if authErr != nil {
		c.log.Info("amqp1: SASL authentication failed", slog.String("mechanism", string(init.Mechanism)), slog.String("error", authErr.Error()))
		return fmt.Errorf("%w: %s: %w", ErrSASLFailed, init.Mechanism, authErr)
	}
	c.saslMech = init.Mechanism
	return nil
}

func (c *Conn) authenticate(ctx context.Context, init *SASLInit) error {
	offered := false
	for _, m := range c.cfg.SASL.Mechanisms {
		offered = offered || m == init.Mechanism
	}
	if !offered {
		return fmt.Errorf("mechanism %q not offered", init.Mechanism)
	}
	switch init.Mechanism {
	case SASLMSSBCBS, SASLAnonymous:
		return nil
	case SASLPlain:
		parts := bytes.Split(init.InitialResponse, []byte{0})
		if len(parts) != 3 {
			return errors.New("malformed PLAIN response")
		}
		cred := PlainCredentials{AuthzID: string(parts[0]), Username: string(parts[1]), Password: string(parts[2]), Hostname: init.Hostname}
		if c.cfg.SASL.CheckPlain == nil {
			return errors.New("PLAIN is not configured")
		}
		if err := c.cfg.SASL.CheckPlain(ctx, cred); err != nil {
			return err
		}
		c.saslIdentity = cred.Username
		return nil
	case SASLExternal:
		if len(c.peerCerts) == 0 {
			return errors.New("no TLS client certificate")
		}
		if c.cfg.SASL.CheckExternal != nil {
			return c.cfg.SASL.CheckExternal(ctx, c.peerCerts)
		}
		return nil
	}
	return fmt.Errorf("mechanism %q not implemented", init.Mechanism)
}

func (c *Conn) openExchange(ctx context.Context) error {
	p, err := c.readPerformative(FrameTypeAMQP)
	if err != nil {
		return err
	}
	open, ok := p.(*Open)
	if !ok {
		return fmt.Errorf("%w: got %T, want open", ErrDecode, p)
	}
	c.peerOpen = open
	c.peerMaxFrame = max(open.MaxFrameSize, MinMaxFrameSize)
	c.peerIdle = time.Duration(open.IdleTimeout) * time.Millisecond
	c.log = c.log.With(slog.String("container_id", open.ContainerID))

	refusal := asError(c.cfg.Handler.OnOpen(ctx, c))
	reply := &Open{
		ContainerID:  c.cfg.ContainerID,
		MaxFrameSize: c.cfg.MaxFrameSize,
		ChannelMax:   c.cfg.ChannelMax,
		IdleTimeout:  uint32(c.cfg.IdleTimeout / time.Millisecond),
		Properties:   c.cfg.Properties,
	}
	if err := c.writePerformativeDirect(FrameTypeAMQP, reply); err != nil {
		return err
	}
	if refusal != nil {
		_ = c.writePerformativeDirect(FrameTypeAMQP, &Close{Error: refusal})
		return fmt.Errorf("amqp1: connection refused: %w", refusal)
	}
	return nil
}

// ---- writer ----

func (c *Conn) signalWriter() {
	select {
	case c.wnotify <- struct{}{}:
	default:
	}
}

// enqueue queues one encoded frame; written (if non-nil) is closed once it
// has been written or the writer has failed.
func (c *Conn) enqueue(b []byte, written chan struct{}) error {
	c.wmu.Lock()
	if c.werr != nil || c.wstop {
		err := c.werr
		c.wmu.Unlock()
		if written != nil {
			close(written)
		}
		if err == nil {
			err = ErrConnClosed
		}
		return err
	}
	limit := c.cfg.MaxOutgoingQueue
	if !c.loggedInA.Load() {
		limit = c.cfg.Login.MaxOutgoingQueue
	}
	if c.wqBytes+len(b) > limit {
		c.werr = fmt.Errorf("amqp1: more than %d bytes queued for a peer that does not read", limit)
		err := c.werr
		c.wmu.Unlock()
		if written != nil {
			close(written)
		}
		_ = c.nc.Close()
		return err
	}
	c.wq = append(c.wq, outFrame{b: b, written: written})
	c.wqBytes += len(b)
	c.wmu.Unlock()
	c.signalWriter()
	return nil
}

func (c *Conn) writeErr() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.werr
}

func (c *Conn) writeLoop() {
	defer close(c.wdone)
	for {
		c.wmu.Lock()
		q, stop, failed := c.wq, c.wstop, c.werr != nil
		c.wq, c.wqBytes = nil, 0
		c.wmu.Unlock()
		if len(q) == 0 {
			if stop || failed {
				return
			}
			<-c.wnotify
			continue
		}
		for _, f := range q {
			if !failed {
				_ = c.nc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
				if _, err := c.nc.Write(f.b); err != nil {
					failed = true
					c.wmu.Lock()
					if c.werr == nil {
						c.werr = fmt.Errorf("amqp1: write: %w", err)
					}
					c.wmu.Unlock()
					_ = c.nc.Close() // unblocks the reader
				}
				c.lastWrite.Store(time.Now().UnixNano())
			}
			if f.written != nil {
				close(f.written)
			}
		}
	}
}

// send encodes and queues an AMQP frame on the given local channel.
func (c *Conn) send(channel uint16, p Performative, payload []byte, written chan struct{}) error {
	body, err := Encode(p)
	if err != nil {
		if written != nil {
			close(written)
		}
		return err
	}
	body = append(body, payload...)
	f, err := AppendFrame(make([]byte, 0, FrameHeaderSize+len(body)), FrameTypeAMQP, channel, body)
	if err != nil {
		if written != nil {
			close(written)
		}
		return err
	}
	return c.enqueue(f, written)
}

func (c *Conn) heartbeatLoop() {
	defer c.wg.Done()
	interval := max(c.peerIdle/2, 10*time.Millisecond)
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	empty, _ := AppendFrame(nil, FrameTypeAMQP, 0, nil)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			if time.Since(time.Unix(0, c.lastWrite.Load())) >= interval {
				c.lastWrite.Store(time.Now().UnixNano())
				if c.enqueue(empty, nil) != nil {
					return
				}
			}
		}
	}
}

// ---- reader ----

func (c *Conn) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// sendCloseLocked sends close (once) and bounds the wait for the peer's reply.
func (c *Conn) sendCloseLocked(e *Error) {
	if c.closeSent || c.ended {
		return
	}
	c.closeSent = true
	_ = c.send(0, &Close{Error: e}, nil, nil)
	_ = c.nc.SetReadDeadline(time.Now().Add(c.cfg.CloseTimeout))
}

func (c *Conn) readLoop() error {
	for {
		c.mu.Lock()
		if !c.closeSent && c.cfg.IdleTimeout > 0 {
			// Under c.mu, so that a close sent meanwhile keeps its shorter deadline.
			_ = c.nc.SetReadDeadline(time.Now().Add(2 * c.cfg.IdleTimeout))
		}
		c.mu.Unlock()
		f, err := ReadFrame(c.br, c.cfg.MaxFrameSize)
		if err != nil {
			c.mu.Lock()
			closing := c.closeSent
			c.mu.Unlock()
			if werr := c.writeErr(); werr != nil {
				return werr
			}
			var ne net.Error
			switch {
			case closing:
				return nil // we closed; the peer did not answer in time or hung up
			case errors.As(err, &ne) && ne.Timeout():
				c.fail(&Error{Condition: ErrCondResourceLimitExceeded, Description: "idle timeout: no frames received"})
				return fmt.Errorf("%w: nothing received for %v", ErrIdleTimeout, 2*c.cfg.IdleTimeout)
			case errors.Is(err, ErrFraming):
				c.fail(&Error{Condition: ErrCondFramingError, Description: err.Error()})
				return err
			}
			return fmt.Errorf("amqp1: read: %w", err)
		}
		if len(f.Body) == 0 {
			continue // empty frame: heartbeat
		}
		if f.Type != FrameTypeAMQP {
			err := fmt.Errorf("%w: frame type %d after open", ErrFraming, f.Type)
			c.fail(&Error{Condition: ErrCondFramingError, Description: err.Error()})
			return err
		}
		p, err := DecodePerformative(f.Body)
		if err != nil {
			c.fail(&Error{Condition: ErrCondDecodeError, Description: err.Error()})
			return err
		}
		if cl, ok := p.(*Close); ok {
			c.mu.Lock()
			closing := c.closeSent
			c.closeSent = true
			c.mu.Unlock()
			if !closing {
				_ = c.send(0, &Close{}, nil, nil)
			}
			if cl.Error != nil {
				return fmt.Errorf("amqp1: peer closed the connection: %w", cl.Error)
			}
			return nil
		}
		c.mu.Lock()
		closing := c.closeSent
		c.mu.Unlock()
		if closing {
			continue // after our close only the peer's close matters
		}
		if e := c.dispatch(f.Channel, p); e != nil {
			c.fail(e)
			return fmt.Errorf("amqp1: protocol error: %w", e)
		}
	}
}

// fail sends close with e and waits briefly for it to be written.
func (c *Conn) fail(e *Error) {
	c.log.Debug("amqp1: closing connection", slog.String("condition", string(e.Condition)), slog.String("description", e.Description))
	written := make(chan struct{})
	c.mu.Lock()
	if c.closeSent || c.ended {
		c.mu.Unlock()
		return
	}
	c.closeSent = true
	err := c.send(0, &Close{Error: e}, nil, written)
	c.mu.Unlock()
	if err == nil {
		select {
		case <-written:
		case <-time.After(c.cfg.WriteTimeout):
		}
	}
}

// dispatch handles one performative received after open. A non-nil result
// is a connection error.
func (c *Conn) dispatch(channel uint16, p Performative) *Error {
	switch p := p.(type) {
	case *Open:
		return &Error{Condition: ErrCondIllegalState, Description: "second open"}
	case *Begin:
		return c.onBegin(channel, p)
	}
	c.mu.Lock()
	s := c.sessions[channel]
	c.mu.Unlock()
	if s == nil {
		return &Error{Condition: ErrCondIllegalState, Description: fmt.Sprintf("%T on channel %d without a session", p, channel)}
	}
	return s.dispatch(p)
}
