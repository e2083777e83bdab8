// Package app is the device application of the SDK: it provisions a
// device, opens and supervises its hub session, keeps the writable
// properties in sync and dispatches commands and cloud-to-device messages
// to the user's handlers. It talks to the world only through package ports
// (transports and a credential store), so it is tested with the generated
// mocks; the root package iotc wires it to real adapters. Users build
// iotc.Client (custom transports and mocks plug in through
// iotc.Config.Adapter), not this package's Client.
//
// The Client is composed of parts with one job each, each in its own file
// with its own state and lock: the session holder (holder, holder.go), the
// inbound dispatcher (dispatcher, dispatch.go: one bounded queue per kind
// of event, queue.go; the user's handlers, handlers.go; the
// writable-property ledger, ledger.go) and the outbox pump (outboxPump,
// outbox.go). The Client itself keeps the connection's life: Connect and
// the provisioning path (connect.go), the supervisor (supervise.go), the
// operations and Close. A new use case is one more file.
//
// The client owns a single reconnect loop: transports never reconnect on
// their own. Sends and property reports ride over reconnects (at least
// once, with the same message id). Every goroutine the client starts ends
// before Close returns.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// statusQueueLimit bounds the status changes waiting for a slow OnStatus:
// beyond it the oldest waiting change is dropped (logged), so the latest,
// Close's included, is always delivered.
const statusQueueLimit = 64

// phase is where the client is in its life.
type phase uint8

const (
	phaseIdle        phase = iota // not connected, nobody connecting (new, or Connect failed)
	phaseConnecting               // Connect is running
	phaseSupervising              // connected once; the supervisor keeps a session open
	phaseGaveUp                   // the supervisor gave up (see gaveUp)
	phaseClosed                   // Close was called
)

// Client is one device's connection to IoT Central. Its methods are safe
// for concurrent use. Build it with New, register handlers, then Connect.
type Client struct {
	opts      Options
	log       *slog.Logger
	regID     string
	deviceKey string      // symmetric key the device signs with; "" for X.509
	connStr   *connStrHub // the connection string's hub and device; nil without one

	// runCtx is the context handlers see; Close cancels it.
	runCtx    context.Context
	runCancel context.CancelFunc
	wg        sync.WaitGroup // supervisor, Connect calls, session closers, helpers
	cb        callbacks      // goroutines running user code

	disp    dispatcher            // inbound events and the user's handlers (dispatch.go)
	statusQ *queue[domain.Status] // only with OnStatus

	// hold is the session holder (holder.go); its lock also guards the
	// fields below up to ob.
	hold      holder
	closeDone chan struct{}
	status    domain.Status
	assign    *assignment
	provided  json.RawMessage

	connectCancel context.CancelFunc // cancels the running Connect's context; nil when none runs
	watched       *watch             // the current session's watch; nil while a supervisor step runs (supervise.go)
	// sup is the supervisor's retry state, touched only by the one step
	// that runs at a time.
	sup struct{ failures, backoff int32 }

	ob outboxPump // the outbox pump (outbox.go)
}

// connStrHub is where a connection string points: all the client keeps of
// it (the key is in deviceKey).
type connStrHub struct{ host, deviceID string }

// session is an open hub session with what the supervisor needs to know.
// draining is written and idle is guarded under Client.mu; ops is
// incremented under Client.mu (read-locked) and decremented without it.
type session struct {
	ports.HubSession
	transport   string
	issued      time.Time // wall clock time the SAS token was minted
	expiry      time.Time // zero for X.509
	connectedAt time.Time

	ops      atomic.Int64  // operations in flight
	draining atomic.Bool   // no new operation may start
	idle     chan struct{} // closed when ops reaches 0 while draining
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
	c.log = c.log.With("device_id", regID)
	switch opts.Credential.Kind {
	case domain.KindGroupKey, domain.KindDeviceKey, domain.KindConnectionString:
		if opts.Credential.UsesX509() {
			break
		}
		if c.deviceKey, err = opts.Credential.DeviceKey(regID); err != nil {
			return nil, fmt.Errorf("%w: %w", domain.ErrInvalidConfig, err)
		}
	}
	if opts.Credential.Kind == domain.KindConnectionString {
		cs, _ := domain.ParseConnectionString(opts.Credential.ConnectionString) // validated
		c.connStr = &connStrHub{host: cs.HostName, deviceID: cs.DeviceID}
	}
	c.runCtx, c.runCancel = context.WithCancel(context.Background())
	c.disp.init(c)
	c.ob.c = c
	// Status reports are all delivered, Close's included.
	if opts.OnStatus != nil {
		c.statusQ = new(queue[domain.Status])
		c.statusQ.init(context.Background(), statusQueueLimit, &c.cb, c.deliverStatus)
		c.statusQ.dropOldest = true
	}
	c.status = domain.Status{State: domain.StateDisconnected}
	c.ob.logDamage()
	return c, nil
}

// Status returns the current connection status.
func (c *Client) Status() domain.Status {
	c.hold.mu.Lock()
	defer c.hold.mu.Unlock()
	return c.status
}

// IsConnected reports whether a hub session is open and taking new
// operations.
func (c *Client) IsConnected() bool {
	c.hold.mu.Lock()
	defer c.hold.mu.Unlock()
	return c.hold.sess != nil
}

// Err returns the error that made the client give up reconnecting (refused
// credentials, disabled device, untrusted server, retries exhausted);
// otherwise, while no session is open (connecting, reconnecting, after a
// failed Connect), the last attempt's error (connection refused, host not
// found, the lost session's error); nil while connected or before any
// attempt failed.
func (c *Client) Err() error {
	c.hold.mu.Lock()
	defer c.hold.mu.Unlock()
	if c.hold.phase == phaseGaveUp || c.hold.sess == nil {
		return c.hold.gaveUp
	}
	return nil
}

// attemptFailed records err as the last attempt's error and reports it.
func (c *Client) attemptFailed(st domain.Status) {
	c.hold.mu.Lock()
	c.hold.gaveUp = st.Err
	c.setStatusLocked(st)
	c.hold.mu.Unlock()
}

// DeviceID returns the device id: the one assigned by DPS once connected,
// else the configured one.
func (c *Client) DeviceID() string {
	c.hold.mu.Lock()
	defer c.hold.mu.Unlock()
	if c.assign != nil {
		return c.assign.deviceID
	}
	return c.regID
}

// ProvisioningPayload returns the custom payload DPS returned with the
// last assignment made by this client (a custom allocation policy's
// answer), or nil when there was none or the cached credentials were used.
func (c *Client) ProvisioningPayload() json.RawMessage {
	c.hold.mu.Lock()
	defer c.hold.mu.Unlock()
	return append(json.RawMessage(nil), c.provided...)
}

// setStatusLocked records and reports a state change; c.hold.mu is held.
func (c *Client) setStatusLocked(st domain.Status) {
	if c.hold.phase == phaseClosed && st.State != domain.StateClosed {
		return
	}
	c.status = st
	if c.statusQ != nil && !c.statusQ.push(st) { // a drainer goroutine per change is for someone to tell
		c.log.Warn("the status callback is behind; the oldest status not yet delivered was dropped", "limit", statusQueueLimit)
	}
	if !c.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	attrs := []any{"state", st.State.String(), "reason", st.Reason.String()}
	if st.Transport != "" {
		attrs = append(attrs, "via", st.Transport)
	}
	if st.Err != nil {
		attrs = append(attrs, "err", st.Err)
	}
	c.log.Info("connection status", attrs...)
}

func (c *Client) setStatus(st domain.Status) {
	c.hold.mu.Lock()
	c.setStatusLocked(st)
	c.hold.mu.Unlock()
}

// goTracked runs fn on a goroutine Close waits for, unless the client is
// closed.
func (c *Client) goTracked(fn func()) bool {
	c.hold.mu.Lock()
	defer c.hold.mu.Unlock()
	return c.goTrackedLocked(fn)
}

func (c *Client) goTrackedLocked(fn func()) bool {
	if c.hold.untracked {
		return false
	}
	c.wg.Add(1)
	go func() { defer c.wg.Done(); fn() }()
	return true
}

func (c *Client) deliverStatus(st domain.Status) {
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

// ConnectOptions are the optional parts of one Connect call; nil selects
// the defaults.
type ConnectOptions struct {
	// ForceProvisioning makes Connect register with DPS again even when
	// the credentials cache (or an earlier Connect) holds an assignment,
	// as the Python client's connect(force_dps=True). DPS allows a limited
	// number of registrations per device (about 5 per 10 s, and it
	// throttles with 429). Default false.
	ForceProvisioning bool
}

// Connect provisions the device if needed, opens the hub session and
// starts supervising it: from then on the client reconnects by itself
// until Close. Retryable failures (connection refused, host not found,
// timeouts, throttling) are retried with the backoff while ctx lasts (and
// up to MaxAttempts consecutive failures), each one reported to the status
// callback and kept in Err and Status. Permanent ones return at once: an
// untrusted server certificate (domain.ErrUntrustedServer), credentials
// refused by DPS (a *domain.ProvisioningError that also matches
// domain.ErrUnauthorized), a disabled enrollment, credentials refused by
// the hub (domain.ErrUnauthorized). When ctx ends first the error wraps
// domain.ErrNotConnected, ctx's error and the last attempt's error.
// Errors: domain.ErrClosed after Close and those above. A failed Connect leaves no
// goroutine running. Calling Connect on a connected client returns nil;
// calling it while another Connect runs returns domain.ErrInvalidConfig.
func (c *Client) Connect(ctx context.Context, opts *ConnectOptions) error {
	var co ConnectOptions
	if opts != nil {
		co = *opts
	}
	// Close cancels ctx through connectCancel (an AfterFunc on runCtx
	// would leave a children map behind in every client).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.hold.mu.Lock()
	switch c.hold.phase {
	case phaseClosed:
		c.hold.mu.Unlock()
		return domain.ErrClosed
	case phaseGaveUp:
		err := c.hold.gaveUp
		c.hold.mu.Unlock()
		return fmt.Errorf("%w: %w", domain.ErrClosed, err)
	case phaseSupervising:
		c.hold.mu.Unlock()
		return nil
	case phaseConnecting:
		c.hold.mu.Unlock()
		return fmt.Errorf("%w: Connect is already in progress", domain.ErrInvalidConfig)
	}
	c.hold.phase = phaseConnecting
	c.hold.broadcastLocked()
	c.wg.Add(1) // Close waits for this call
	if co.ForceProvisioning {
		c.assign, c.hold.skipCache = nil, true
	}
	c.setStatusLocked(domain.Status{State: domain.StateConnecting})
	c.connectCancel = cancel
	c.hold.mu.Unlock()
	defer c.wg.Done()
	defer func() {
		c.hold.mu.Lock()
		c.connectCancel = nil
		c.hold.mu.Unlock()
	}()

	fail := func(st domain.Status, err error) error {
		c.hold.mu.Lock()
		if c.hold.phase == phaseConnecting {
			c.hold.phase = phaseIdle
			c.hold.gaveUp = st.Err
			c.hold.broadcastLocked()
			c.setStatusLocked(st)
		}
		closed := c.hold.phase == phaseClosed
		c.hold.mu.Unlock()
		if closed {
			return domain.ErrClosed
		}
		return err
	}
	failures := 0
	var last error // the last failed attempt's error before ctx ended
	for {
		s, err := c.establish(ctx, true)
		if err == nil {
			c.hold.mu.Lock()
			if c.hold.phase == phaseClosed {
				c.hold.mu.Unlock()
				return domain.ErrClosed
			}
			c.hold.phase = phaseSupervising
			c.armLocked(s)
			c.hold.mu.Unlock()
			return nil
		}
		if c.runCtx.Err() != nil {
			return domain.ErrClosed
		}
		if ctx.Err() != nil {
			// The attempt ctx's end cut short says less than the one
			// before it.
			err = connectEnded(ctx, last, err)
			return fail(domain.Status{State: domain.StateDisconnected, Reason: reasonFor(last), Err: err}, err)
		}
		if !domain.IsRetryable(err) {
			return fail(domain.Status{State: domain.StateDisconnected, Reason: reasonFor(err), Err: err}, fmt.Errorf("iotc: %w", err))
		}
		last = err
		failures++
		if c.opts.MaxAttempts > 0 && failures >= c.opts.MaxAttempts {
			err = fmt.Errorf("iotc: %d connection attempts failed: %w", failures, err)
			return fail(domain.Status{State: domain.StateDisconnected, Reason: domain.ReasonRetryExpired, Err: err}, err)
		}
		c.attemptFailed(domain.Status{State: domain.StateConnecting, Reason: reasonFor(err), Err: err})
		if c.sleep(ctx, c.opts.Backoff.Delay(failures-1, randFloat())) != nil {
			if c.runCtx.Err() != nil {
				return fail(domain.Status{State: domain.StateDisconnected}, domain.ErrClosed)
			}
			err = connectEnded(ctx, last, nil)
			return fail(domain.Status{State: domain.StateDisconnected, Reason: reasonFor(last), Err: err}, err)
		}
	}
}

// connectEnded is Connect's error when ctx ended before a session opened:
// it wraps domain.ErrNotConnected, ctx's error and the last failed
// attempt's error (last), or else the error of the attempt that ctx's end
// cut short.
func connectEnded(ctx context.Context, last, attempt error) error {
	cause := last
	if cause == nil {
		cause = attempt
	}
	switch {
	case cause == nil:
		return fmt.Errorf("iotc: %w: %w", domain.ErrNotConnected, ctx.Err())
	case errors.Is(cause, ctx.Err()):
		return fmt.Errorf("iotc: %w: %w", domain.ErrNotConnected, cause)
	}
	return fmt.Errorf("iotc: %w: %w; the last attempt failed: %w", domain.ErrNotConnected, ctx.Err(), cause)
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

// onSession runs op on a session, riding over reconnects: when the session
// dies under it (an error wrapping domain.ErrNotConnected), op runs again
// on the next session, unless FailFast is set or ctx has ended.
func (c *Client) onSession(ctx context.Context, op func(*session) error) error {
	var avoid *session
	transient := 0
	for {
		s, err := c.hold.wait(ctx, avoid, c.opts.FailFast)
		if err != nil {
			return err
		}
		err = op(s)
		c.hold.release(s)
		if err != nil && isTransient(err) && !c.opts.FailFast {
			// Throttled (429) or a service error (5xx): the session lives;
			// try again on it after the backoff, as the Azure SDKs do.
			d := c.opts.Backoff.Delay(transient, randFloat())
			transient++
			c.log.Debug("the hub asked to slow down; retrying", "err", err, "retry_in", d)
			if werr := c.sleep(ctx, d); werr != nil {
				return fmt.Errorf("%w: %w", err, werr)
			}
			continue
		}
		if err == nil || !errors.Is(err, domain.ErrNotConnected) || c.opts.FailFast {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", err, ctx.Err())
		}
		c.sessionFailed(s, err)
		avoid = s
	}
}

// isTransient reports a refusal that a later try on the same session may
// not get: throttling and service errors.
func isTransient(err error) bool {
	var he *domain.HubError
	return errors.Is(err, domain.ErrThrottled) || (errors.As(err, &he) && he.Status >= 500)
}

// sessionFailed makes sure a session an operation found dead is replaced:
// if the transport has not ended it yet, it is closed so that the
// supervisor sees it end.
func (c *Client) sessionFailed(s *session, err error) {
	select {
	case <-s.Done():
		return
	default:
	}
	c.log.Debug("an operation found the session dead; closing it", "err", err)
	if !c.goTracked(func() { _ = s.Close() }) {
		_ = s.Close()
	}
}

// SendTelemetry validates m, gives it a random message id when it has
// none, and sends it, returning once the hub acknowledged it. While the
// client is connecting or reconnecting it waits for the next session
// within ctx, and a message whose session died before the acknowledgement
// is sent again on the next session with the same message id (at least
// once: the hub may see it twice). Errors: domain.ErrMessageTooLarge over
// 256 KiB (IoT Hub's limit, checked before sending), domain.ErrInvalidConfig
// for a reserved property name, domain.ErrClosed after Close or once the
// client gave up, domain.ErrNotConnected when Connect was never called or
// failed, or with FailFast while offline; when ctx ends while offline the
// error matches both domain.ErrNotConnected and ctx's error.
func (c *Client) SendTelemetry(ctx context.Context, m domain.Message) error {
	if m.MessageID == "" {
		m.MessageID = newMessageID()
	}
	m, err := m.WithDefaults().Checked() // the transport does not check it again
	if err != nil {
		return err
	}
	err = c.onSession(ctx, func(s *session) error { return s.SendTelemetry(ctx, m) })
	if err != nil {
		return fmt.Errorf("iotc: send telemetry: %w", err)
	}
	if c.log.Enabled(ctx, slog.LevelDebug) { // the arguments cost allocations even when disabled
		c.log.Debug("telemetry sent", "message_id", m.MessageID, "component", m.Component, "bytes", len(m.Body))
	}
	return nil
}

// ReportProperties reports read-only (or any) properties. A non-empty
// component wraps them as {"component": {"__t": "c", ...}}. It waits for
// a session and rides over reconnects as SendTelemetry does (a patch is
// idempotent). Errors: domain.ErrMessageTooLarge over 32 KiB (the twin
// section limit), those of SendTelemetry for the connection, and
// *domain.HubError when the hub refuses the patch (429 throttled: IoT Hub
// allows about 50 updates per second per unit).
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
// AckProperty waits and reports right after it. An acknowledgement for a
// version older than one already handed to the handler is not reported:
// AckProperty returns domain.ErrSuperseded. Other errors are those of
// ReportProperties, or ctx's.
func (c *Client) AckProperty(ctx context.Context, p domain.Property, ack domain.PropertyAck) error {
	patch := domain.AckPatch(p, ack)
	if _, err := domain.EncodeReported(patch); err != nil {
		return err
	}
	done, deferred, err := c.disp.props.deferAck(p, ack)
	switch {
	case err != nil:
		return err
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
	var v int64
	err = c.onSession(ctx, func(s *session) (err error) {
		v, err = s.PatchReported(ctx, body)
		return err
	})
	if err != nil {
		return fmt.Errorf("iotc: report properties: %w", err)
	}
	c.log.Debug("properties reported", "version", v, "bytes", len(body))
	return nil
}

// FetchTwin reads the device twin, waiting for a session as SendTelemetry
// does. Errors: those of SendTelemetry for the connection, *domain.HubError
// when the hub refuses (429 throttled: about 100 reads per second per
// unit), domain.ErrMalformed for an unparsable twin.
func (c *Client) FetchTwin(ctx context.Context) (domain.Twin, error) {
	var b []byte
	err := c.onSession(ctx, func(s *session) (err error) {
		b, err = s.GetTwin(ctx)
		return err
	})
	if err != nil {
		return domain.Twin{}, fmt.Errorf("iotc: get twin: %w", err)
	}
	return domain.ParseTwin(b)
}

// Close stops reconnecting, lets the operations in flight on the open
// session finish (up to DrainTimeout or ctx), cancels the handlers'
// context, closes the session and waits until every goroutine the client
// started has ended: running handlers are waited for. Queued events not
// yet handled are dropped; a cloud-to-device message whose handler did not
// return before Close stays unsettled and is delivered again on a later
// connection. If ctx ends first, Close returns ctx's error and the rest
// ends in the background as soon as the handlers return. Close is
// idempotent; later calls wait the same way.
//
// Close may be called from inside a handler or the status callback (a
// "reboot" command): it then starts the shutdown and returns nil at once,
// since it cannot wait for the goroutine it runs on; the shutdown completes
// when the callback returns, and a Close from another goroutine waits for
// it.
func (c *Client) Close(ctx context.Context) error {
	inside := c.cb.inside()
	c.hold.mu.Lock()
	if c.hold.phase != phaseClosed {
		c.setStatusLocked(domain.Status{State: domain.StateClosed, Reason: domain.ReasonClientClose})
		c.hold.phase = phaseClosed
		c.hold.broadcastLocked()
		c.closeDone = make(chan struct{})
		sess := c.hold.sess
		c.hold.sess = nil
		go c.shutdown(ctx, sess, c.closeDone)
	}
	done := c.closeDone
	c.hold.mu.Unlock()
	if inside {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("iotc: close: still shutting down: %w", ctx.Err())
	}
}

// shutdown is Close's work; done is closed when everything has ended.
func (c *Client) shutdown(ctx context.Context, sess *session, done chan struct{}) {
	if sess != nil {
		timeout := c.opts.DrainTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(dl))
		}
		c.hold.drain(sess, timeout, c.log)
	}
	c.runCancel()
	c.unwatch()
	c.hold.mu.Lock()
	if c.connectCancel != nil {
		c.connectCancel() // a Connect still running ends with ErrClosed
	}
	c.hold.mu.Unlock()
	c.disp.stop()
	c.hold.mu.Lock()
	c.hold.untracked = true
	c.hold.mu.Unlock()
	c.wg.Wait() // supervisor, Connect calls, closers of old sessions, outbox pump
	c.ob.close()
	if sess != nil {
		if err := sess.Close(); err != nil {
			c.log.Debug("close session", "err", err)
		}
	}
	if c.statusQ != nil {
		c.statusQ.stop()
	}
	close(done)
}

// newMessageID returns a random UUID (version 4).
func newMessageID() string { return domain.NewUUID().String() }

// reasonFor maps an error to the status reason reported with it.
func reasonFor(err error) domain.Reason {
	var pe *domain.ProvisioningError
	switch {
	case err == nil:
		return domain.ReasonNone
	case errors.As(err, &pe) && (pe.Status == domain.DPSDisabled || pe.Status == domain.DPSBlacklisted):
		return domain.ReasonDeviceDisabled
	case errors.Is(err, domain.ErrUntrustedServer):
		return domain.ReasonUntrustedServer
	case errors.Is(err, domain.ErrUnauthorized), errors.Is(err, domain.ErrDeviceNotFound), errors.Is(err, domain.ErrInvalidKey):
		return domain.ReasonBadCredential
	case errors.Is(err, domain.ErrConnectionRefused), errors.Is(err, domain.ErrHostNotFound), isNetworkError(err):
		return domain.ReasonNoNetwork
	}
	return domain.ReasonCommunicationError
}
