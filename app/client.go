// Package app is the device application of the SDK: it provisions a
// device, opens and supervises its hub session, keeps the writable
// properties in sync and dispatches commands and cloud-to-device messages
// to the user's handlers. It talks to the world only through package ports
// (transports and a credential store), so it is tested with the generated
// mocks; the root package iotc wires it to real adapters.
//
// The client owns a single reconnect loop: transports never reconnect on
// their own. Every goroutine the client starts ends before Close returns.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// PropertyHandler applies one writable property and returns the
// acknowledgement to report: Status 200 (or 0) applied, 202 accepted and
// still in progress (report the final answer later with Client.AckProperty),
// 4xx/5xx refused, with an optional Description and the applied Value.
type PropertyHandler func(ctx context.Context, p domain.DesiredProperty) domain.PropertyAck

// CommandHandler runs a direct-method command and returns its response
// (any status, a JSON-encodable payload of at most 128 KiB).
type CommandHandler func(ctx context.Context, c domain.CommandRequest) domain.CommandResponse

// QueuedCommandHandler runs a command IoT Central queued while the device
// was offline. It takes no response; the message is settled when the
// handler returns.
type QueuedCommandHandler func(ctx context.Context, c domain.CommandRequest)

// CloudMessageHandler receives a cloud-to-device message that is not a
// queued command. The message is settled when the handler returns.
type CloudMessageHandler func(ctx context.Context, m domain.CloudMessage)

// Client is one device's connection to IoT Central. Its methods are safe
// for concurrent use. Build it with New, register handlers, then Connect.
type Client struct {
	opts      Options
	log       *slog.Logger
	regID     string
	deviceKey string // symmetric key the device signs with; "" for X.509
	connStr   *domain.ConnectionString

	handlers struct {
		sync.RWMutex
		property PropertyHandler
		command  CommandHandler
		queued   QueuedCommandHandler
		message  CloudMessageHandler
	}

	runCtx    context.Context
	runCancel context.CancelFunc
	wg        sync.WaitGroup // supervisor and workers
	statusWG  sync.WaitGroup // status dispatcher

	propQ   *queue[propEvent]
	cmdQ    *queue[methodJob]
	msgQ    *queue[cloudJob]
	statusQ *queue[domain.ConnectionStatus]

	// lastDesired is the desired $version last handled; only the property
	// worker touches it.
	lastDesired int64

	// ackMu guards the properties the worker is handling and the final
	// acknowledgements given for them meanwhile.
	ackMu    sync.Mutex
	inflight map[string]bool
	handling bool // handlers of the in-flight properties are running
	deferred []deferredAck

	mu          sync.Mutex
	started     bool
	connecting  bool
	supervising bool
	closed      bool
	closeDone   chan struct{}
	gaveUp      error
	status      domain.ConnectionStatus
	sess        *session
	assign      *assignment
	skipCache   bool // the cached record was refused; provision instead
	preferred   int  // index of the transport that worked last
}

// session is an open hub session with what the supervisor needs to know.
type session struct {
	ports.HubSession
	transport   string
	issued      time.Time // wall clock time the SAS token was minted
	expiry      time.Time // zero for X.509
	connectedAt time.Time
}

// assignment is where the device connects and where that came from.
type assignment struct {
	hub, deviceID string
	fromCache     bool
}

// New checks opts and returns a client that is not connected yet. It
// starts no goroutine. Errors wrap domain.ErrInvalidConfig (and
// domain.ErrInvalidKey for a key that is not base64).
func New(opts Options) (*Client, error) {
	opts = opts.withDefaults()
	regID, err := opts.validate()
	if err != nil {
		return nil, err
	}
	c := &Client{opts: opts, regID: regID}
	c.log = opts.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("device", regID)
	switch opts.Credential.Kind {
	case domain.KindGroupKey, domain.KindDeviceKey, domain.KindConnectionString:
		if c.deviceKey, err = opts.Credential.DeviceKey(regID); err != nil {
			return nil, fmt.Errorf("%w: %w", domain.ErrInvalidConfig, err)
		}
	}
	if opts.Credential.Kind == domain.KindConnectionString {
		cs, _ := domain.ParseConnectionString(opts.Credential.ConnectionString) // validated
		c.connStr = &cs
	}
	c.runCtx, c.runCancel = context.WithCancel(context.Background())
	c.propQ = newQueue[propEvent](opts.QueueLimit)
	c.cmdQ = newQueue[methodJob](opts.QueueLimit)
	c.msgQ = newQueue[cloudJob](opts.QueueLimit)
	c.statusQ = newQueue[domain.ConnectionStatus](0)
	c.status = domain.ConnectionStatus{State: domain.StateDisconnected}
	return c, nil
}

// OnProperty sets the writable-property handler (nil removes it). Set it
// before Connect so that the startup twin sync reaches it: without a
// handler, desired properties are left unacknowledged (never auto-acked).
// Handlers run one at a time, in the order the patches arrived.
func (c *Client) OnProperty(h PropertyHandler) {
	c.handlers.Lock()
	c.handlers.property = h
	c.handlers.Unlock()
}

// OnCommand sets the direct-method handler (nil removes it). Without one,
// commands are answered 501 with {"error": "..."}. A panicking handler is
// answered 500. Commands run one at a time in arrival order, on a goroutine
// separate from properties and messages.
func (c *Client) OnCommand(h CommandHandler) {
	c.handlers.Lock()
	c.handlers.command = h
	c.handlers.Unlock()
}

// OnQueuedCommand sets the handler of commands queued while the device
// was offline (cloud-to-device messages with a "method-name" property,
// "prefix:name" and "component*name" both understood). When it is nil,
// queued commands go to the OnCommand handler with Queued set, and its
// response is discarded.
func (c *Client) OnQueuedCommand(h QueuedCommandHandler) {
	c.handlers.Lock()
	c.handlers.queued = h
	c.handlers.Unlock()
}

// OnCloudMessage sets the handler of other cloud-to-device messages. Without
// one they are logged and settled.
func (c *Client) OnCloudMessage(h CloudMessageHandler) {
	c.handlers.Lock()
	c.handlers.message = h
	c.handlers.Unlock()
}

// Status returns the current connection status.
func (c *Client) Status() domain.ConnectionStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// IsConnected reports whether a hub session is open.
func (c *Client) IsConnected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil
}

// Err returns the error that made the client give up reconnecting (refused
// credentials, disabled device, retries exhausted), or nil.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gaveUp
}

// DeviceID returns the device id: the one assigned by DPS once connected,
// else the configured one.
func (c *Client) DeviceID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.assign != nil {
		return c.assign.deviceID
	}
	return c.regID
}

// setStatusLocked records and reports a state change; c.mu is held.
func (c *Client) setStatusLocked(st domain.ConnectionStatus) {
	if c.closed && st.State != domain.StateClosed {
		return
	}
	c.status = st
	if c.started {
		c.statusQ.push(st)
	}
	if st.Err != nil {
		c.log.Info("connection status", "state", st.State.String(), "reason", st.Reason.String(), "transport", st.Transport, "err", st.Err)
	} else {
		c.log.Info("connection status", "state", st.State.String(), "reason", st.Reason.String(), "transport", st.Transport)
	}
}

func (c *Client) setStatus(st domain.ConnectionStatus) {
	c.mu.Lock()
	c.setStatusLocked(st)
	c.mu.Unlock()
}

// startLocked starts the workers and the status dispatcher once; c.mu is held.
func (c *Client) startLocked() {
	if c.started {
		return
	}
	c.started = true
	c.wg.Add(3)
	go func() { defer c.wg.Done(); c.propQ.run(c.runCtx, c.handleProperty) }()
	go func() { defer c.wg.Done(); c.cmdQ.run(c.runCtx, c.handleMethod) }()
	go func() { defer c.wg.Done(); c.msgQ.run(c.runCtx, c.handleCloud) }()
	c.statusWG.Add(1)
	go func() { defer c.statusWG.Done(); c.statusQ.run(context.Background(), c.deliverStatus) }()
}

// goTracked runs fn on a goroutine Close waits for, unless the client is
// closing.
func (c *Client) goTracked(fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() { defer c.wg.Done(); fn() }()
	return true
}

func (c *Client) deliverStatus(st domain.ConnectionStatus) {
	if c.opts.OnStatus == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("status callback panicked", "panic", fmt.Sprint(r))
		}
	}()
	c.opts.OnStatus(st)
}

// Connect provisions the device if needed, opens the hub session and
// starts supervising it: from then on the client reconnects by itself
// until Close. Retryable failures are retried with the backoff while ctx
// lasts (and up to MaxAttempts); refused credentials or a disabled
// enrollment return at once. Errors: domain.ErrClosed after Close, errors
// wrapping domain.ErrUnauthorized, domain.ErrDeviceNotFound,
// *domain.ProvisioningError, or ctx's error. Calling Connect on a
// connected client returns nil.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return domain.ErrClosed
	case c.gaveUp != nil:
		err := c.gaveUp
		c.mu.Unlock()
		return fmt.Errorf("%w: %w", domain.ErrClosed, err)
	case c.supervising:
		c.mu.Unlock()
		return nil
	case c.connecting:
		c.mu.Unlock()
		return fmt.Errorf("%w: Connect is already in progress", domain.ErrInvalidConfig)
	}
	c.connecting = true
	c.startLocked()
	c.setStatusLocked(domain.ConnectionStatus{State: domain.StateConnecting})
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.connecting = false
		c.mu.Unlock()
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.runCtx, cancel)
	defer stop()

	attempt := 0
	for {
		s, err := c.establish(ctx, true)
		if err == nil {
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				return domain.ErrClosed
			}
			c.supervising = true
			c.wg.Add(1)
			go c.supervise(s)
			c.mu.Unlock()
			return nil
		}
		if c.runCtx.Err() != nil {
			return domain.ErrClosed
		}
		if ctx.Err() != nil || !domain.IsRetryable(err) {
			c.setStatus(domain.ConnectionStatus{State: domain.StateDisconnected, Reason: reasonFor(err), Err: err})
			return err
		}
		attempt++
		if c.opts.MaxAttempts > 0 && attempt >= c.opts.MaxAttempts {
			err = fmt.Errorf("iotc: %d connection attempts failed: %w", attempt, err)
			c.setStatus(domain.ConnectionStatus{State: domain.StateDisconnected, Reason: domain.ReasonRetryExpired, Err: err})
			return err
		}
		c.setStatus(domain.ConnectionStatus{State: domain.StateConnecting, Reason: reasonFor(err), Err: err})
		if err := c.sleep(ctx, c.opts.Backoff.Delay(attempt-1, randFloat())); err != nil {
			c.setStatus(domain.ConnectionStatus{State: domain.StateDisconnected, Reason: domain.ReasonNone, Err: err})
			return err
		}
	}
}

// sleep waits d or until ctx ends.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// current returns the open session, or an error saying why there is none.
func (c *Client) current() (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, domain.ErrClosed
	case c.gaveUp != nil:
		return nil, fmt.Errorf("%w: %w", domain.ErrClosed, c.gaveUp)
	case c.sess == nil:
		return nil, domain.ErrNotConnected
	}
	return c.sess, nil
}

// SendTelemetry validates m, gives it a random message id when it has
// none, and sends it over the open session, returning once the hub
// acknowledged it. It does not wait for a connection: while the client is
// offline or reconnecting it returns domain.ErrNotConnected at once.
// Other errors: domain.ErrMessageTooLarge over 256 KiB (IoT Hub's limit,
// checked before sending), domain.ErrInvalidConfig for a reserved
// property name, domain.ErrClosed after Close, ctx's error.
func (c *Client) SendTelemetry(ctx context.Context, m domain.Message) error {
	if m.MessageID == "" {
		m.MessageID = newMessageID()
	}
	m = m.WithDefaults()
	if err := m.Validate(); err != nil {
		return err
	}
	s, err := c.current()
	if err != nil {
		return err
	}
	if err := s.SendTelemetry(ctx, m); err != nil {
		return fmt.Errorf("iotc: send telemetry: %w", err)
	}
	c.log.Debug("telemetry sent", "message_id", m.MessageID, "component", m.Component, "bytes", len(m.Body))
	return nil
}

// ReportProperties reports read-only (or any) properties. A non-empty
// component wraps them as {"component": {"__t": "c", ...}}. Errors:
// domain.ErrMessageTooLarge over 32 KiB (the twin section limit),
// domain.ErrNotConnected while offline, *domain.HubError when the hub
// refuses the patch (429 throttled: IoT Hub allows about 50 updates per
// second per unit).
func (c *Client) ReportProperties(ctx context.Context, component string, props map[string]any) error {
	return c.report(ctx, domain.ReportedPatch(component, props))
}

// AckProperty reports the acknowledgement of p, typically the final 200
// (or 4xx/5xx) after a handler answered 202. It may be called from inside
// the property handler or concurrently with it, and never lands before
// the handler's own answer: while the handler runs, the acknowledgement
// supersedes the handler's in the patch the client reports when the
// handler returns, and AckProperty returns nil at once (a failure to
// report is logged); while the handler's answer is being reported,
// AckProperty waits and reports right after it. Errors are those of
// ReportProperties, or ctx's.
func (c *Client) AckProperty(ctx context.Context, p domain.DesiredProperty, ack domain.PropertyAck) error {
	patch := domain.AckPatch(p, ack)
	if _, err := domain.EncodeReported(patch); err != nil {
		return err
	}
	done, deferred := c.deferAck(p, ack)
	switch {
	case !deferred:
		return c.report(ctx, patch)
	case done == nil:
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) report(ctx context.Context, patch map[string]any) error {
	body, err := domain.EncodeReported(patch)
	if err != nil {
		return err
	}
	s, err := c.current()
	if err != nil {
		return err
	}
	v, err := s.PatchReported(ctx, body)
	if err != nil {
		return fmt.Errorf("iotc: report properties: %w", err)
	}
	c.log.Debug("properties reported", "version", v, "bytes", len(body))
	return nil
}

// FetchTwin reads the device twin. Errors: domain.ErrNotConnected while
// offline, *domain.HubError when the hub refuses (429 throttled: about 100
// reads per second per unit), domain.ErrMalformed for an unparsable twin.
func (c *Client) FetchTwin(ctx context.Context) (domain.Twin, error) {
	s, err := c.current()
	if err != nil {
		return domain.Twin{}, err
	}
	b, err := s.GetTwin(ctx)
	if err != nil {
		return domain.Twin{}, fmt.Errorf("iotc: get twin: %w", err)
	}
	return domain.ParseTwin(b)
}

// Close closes the session, stops reconnecting and waits until every
// goroutine the client started has ended: handlers see their context
// cancelled and are waited for. Queued events not yet handled are dropped
// (unsettled cloud-to-device messages are delivered again on the next
// connection). If ctx ends first, Close returns ctx's error and the
// remaining goroutines end as soon as the handlers return. Close is
// idempotent; later calls wait the same way.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if !c.closed {
		c.setStatusLocked(domain.ConnectionStatus{State: domain.StateClosed, Reason: domain.ReasonClientClose})
		c.closed = true
		c.closeDone = make(chan struct{})
		sess := c.sess
		c.sess = nil
		c.runCancel()
		done := c.closeDone
		go func() {
			// The workers see runCtx cancelled and return before the session
			// closes, so none of them is inside a session call racing the
			// disconnect.
			c.wg.Wait()
			if sess != nil {
				if err := sess.Close(); err != nil {
					c.log.Debug("close session", "err", err)
				}
			}
			c.statusQ.close()
			c.statusWG.Wait()
			close(done)
		}()
	}
	done := c.closeDone
	c.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("iotc: close: handlers still running: %w", ctx.Err())
	}
}

// newMessageID returns a random UUID (version 4).
func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// reasonFor maps an error to the status reason reported with it.
func reasonFor(err error) domain.Reason {
	var pe *domain.ProvisioningError
	switch {
	case err == nil:
		return domain.ReasonNone
	case errors.As(err, &pe) && (pe.Status == domain.DPSDisabled || pe.Status == domain.DPSBlacklisted):
		return domain.ReasonDeviceDisabled
	case errors.Is(err, domain.ErrUnauthorized), errors.Is(err, domain.ErrDeviceNotFound), errors.Is(err, domain.ErrInvalidKey):
		return domain.ReasonBadCredential
	case isNetworkError(err):
		return domain.ReasonNoNetwork
	}
	return domain.ReasonCommunicationError
}
