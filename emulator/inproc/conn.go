package inproc

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Events receives what the hub sends a connected device. A Conn calls it
// on one goroutine of its own, in the order the hub sent them, and only
// while the connection is open; implementations should return quickly
// (the next event waits).
type Events interface {
	// DesiredPatch receives a desired-properties patch: JSON with
	// "$version".
	DesiredPatch(patch []byte)
	// Method receives a direct-method request; answer it with
	// Conn.RespondMethod and the same requestID.
	Method(requestID, method string, payload []byte)
	// CloudMessage receives a cloud-to-device message; settle it with
	// Conn.SettleC2D and its MessageID. An unsettled message comes again
	// on the device's next connection.
	CloudMessage(m C2DMessage)
}

// C2DMessage is a cloud-to-device message delivered to a device.
type C2DMessage = core.C2DMessage

// Conn is one device's hub connection, made by Hub.Connect. It is the
// device's only connection until it ends: by Close, by Hub.Disconnect or a
// fault, by its SAS token expiring, or by a newer Connect of the same
// device. Its methods are safe for concurrent use.
type Conn struct {
	h      *Hub
	id     string
	events Events
	wg     sync.WaitGroup // the delivery goroutine

	mu      sync.Mutex
	sess    *core.Session // nil until Connect attached it
	queue   []func()      // events to deliver, in order
	running bool          // a delivery goroutine runs
	pulling bool          // a C2D pull is queued
	ended   bool
	err     error // why it ended; nil after Close
	done    chan struct{}
	expiry  time.Time
	expire  *time.Timer
	rid     uint64
	methods map[string]chan methodAnswer
}

type methodAnswer struct {
	status int
	body   []byte
}

var (
	_ core.Link      = (*Conn)(nil)
	_ core.FaultLink = (*Conn)(nil)
)

// errTokenExpired is the reason a connection ends when its SAS token expires.
var errTokenExpired = fmt.Errorf("%w: SAS token expired", ErrUnauthorized)

// Connect opens device id's hub connection on hubHost with a SAS token
// for "{hubHost}/devices/{id}" signed with one of the device's keys (the
// emulator's checks), announcing modelID when not "". It replaces the
// device's live connection, which ends with ErrReplaced, and delivers the
// queued cloud-to-device messages to events. The connection ends when the
// token expires (renew it in place with RenewToken). Errors: ErrNotFound
// (unknown hub host or device), ErrUnauthorized, ErrUnavailable (refused
// by a fault), ErrInvalid (nil events), ctx.Err(), ErrClosed.
func (h *Hub) Connect(ctx context.Context, hubHost, id, sasToken, modelID string, events Events) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if events == nil {
		return nil, fmt.Errorf("%w: no Events", ErrInvalid)
	}
	if hubHost != h.core.HubHost() {
		return nil, fmt.Errorf("%w: unknown hub host %q", ErrNotFound, hubHost)
	}
	auth, err := h.core.AuthenticateHub(id, sasToken, nil)
	if err != nil {
		return nil, err
	}
	c := &Conn{h: h, id: id, events: events, done: make(chan struct{}), methods: map[string]chan methodAnswer{}, expiry: auth.Expiry}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	sess, prev, err := h.core.Connect(id, auth, c, modelID)
	if err != nil {
		h.forget(c)
		return nil, err
	}
	c.mu.Lock()
	c.sess = sess
	dropped := c.ended // dropped between Connect and here: detach now
	if !dropped && !c.expiry.IsZero() {
		c.expire = time.AfterFunc(time.Until(c.expiry), func() { c.end(errTokenExpired) })
	}
	c.mu.Unlock()
	if dropped {
		sess.Close()
		if err := c.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: dropped while connecting", ErrDisconnected)
	}
	if prev != nil {
		prev.Drop(ErrReplaced)
	}
	h.mu.Lock()
	h.connects[id]++
	h.changedLocked()
	h.mu.Unlock()
	c.NotifyC2D()
	return c, nil
}

func (h *Hub) forget(c *Conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.changedLocked()
	h.mu.Unlock()
}

// DeviceID is the connection's device.
func (c *Conn) DeviceID() string { return c.id }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the connection ended: nil while open and after Close;
// otherwise an error wrapping ErrDisconnected and the reason (ErrReplaced,
// ErrUnauthorized for an expired token or an auth fault, ErrClosed when
// the Hub closed, the operator's drop).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// alive returns the session while the connection is open and still the
// device's, else an error wrapping ErrDisconnected.
func (c *Conn) alive() (*core.Session, error) {
	c.mu.Lock()
	ended, err, sess := c.ended, c.err, c.sess
	c.mu.Unlock()
	if ended {
		if err == nil {
			err = fmt.Errorf("%w: closed", ErrDisconnected)
		}
		return nil, err
	}
	if !sess.Current() {
		return nil, fmt.Errorf("%w: %w", ErrDisconnected, ErrReplaced)
	}
	return sess, nil
}

// end ends the connection with reason (nil for Close), detaches it from
// the device and fails pending method calls. It never blocks on the
// delivery goroutine.
func (c *Conn) end(reason error) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	if reason != nil {
		c.err = fmt.Errorf("%w: %w", ErrDisconnected, reason)
	}
	close(c.done)
	c.queue = nil
	if c.expire != nil {
		c.expire.Stop()
	}
	sess := c.sess
	c.mu.Unlock()
	if sess != nil {
		sess.Close() // in-flight messages go back to the queue
	}
	c.h.forget(c)
}

// Close ends the connection and waits for the event delivery goroutine
// (so it must not be called from an Events method). It is idempotent.
func (c *Conn) Close() {
	c.end(nil)
	c.wg.Wait()
}

// deliver queues f for the delivery goroutine, starting it when idle.
func (c *Conn) deliver(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	c.queue = append(c.queue, f)
	if !c.running {
		c.running = true
		c.wg.Add(1)
		go c.drain()
	}
}

func (c *Conn) drain() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.ended {
			c.queue, c.running = nil, false
			c.mu.Unlock()
			return
		}
		f := c.queue[0]
		c.queue = c.queue[1:]
		c.mu.Unlock()
		f()
	}
}

// Telemetry sends a device-to-cloud message and returns once the hub
// stored it (its acknowledgement). The hub sets t.DeviceID, AuthMethod,
// Received and Seq and keeps t's Body and maps: do not change them after.
// Errors: ErrDisconnected, ErrTooLarge over MaxTelemetryBody,
// ErrThrottled or ErrQuotaExceeded (faults), ctx.Err().
func (c *Conn) Telemetry(ctx context.Context, t Telemetry) error {
	sess, err := c.alive()
	if err != nil {
		return err
	}
	if err := sess.Admit(ctx, core.OpTelemetry); err != nil {
		return err
	}
	if err := sess.Telemetry(t); err != nil {
		return err
	}
	c.h.notify()
	return nil
}

// Twin answers a twin GET as IoT Hub does: the status (200; 404 for a
// deleted device; 429 when throttled) and the body (the twin document
// {"desired":...,"reported":...}, or an error object). It returns
// ErrDisconnected on an ended connection.
func (c *Conn) Twin(ctx context.Context) (int, []byte, error) {
	sess, err := c.alive()
	if err != nil {
		return 0, nil, err
	}
	status, body := sess.Twin(ctx)
	return status, body, nil
}

// PatchReported applies a reported-properties patch as IoT Hub does: the
// status (204 with the new reported version; 400 for a patch IoT Hub
// refuses: not an object, key rules, depth over 10, a section over
// MaxTwinSection; 429 when throttled) and an error body. It returns
// ErrDisconnected on an ended connection.
func (c *Conn) PatchReported(ctx context.Context, patch []byte) (status int, version int64, body []byte, err error) {
	sess, err := c.alive()
	if err != nil {
		return 0, 0, nil, err
	}
	status, version, body = sess.PatchReported(ctx, patch)
	if status == 204 {
		c.h.notify()
	}
	return status, version, body, nil
}

// RespondMethod answers the direct-method request requestID. A response
// to no pending request (late, or unknown) is dropped, as IoT Hub does.
// It returns ErrDisconnected on an ended connection.
func (c *Conn) RespondMethod(requestID string, status int, payload []byte) error {
	if _, err := c.alive(); err != nil {
		return err
	}
	c.mu.Lock()
	ch, ok := c.methods[requestID]
	delete(c.methods, requestID)
	c.mu.Unlock()
	if ok {
		ch <- methodAnswer{status: status, body: append([]byte(nil), payload...)} // buffered, one sender: the entry was removed
	}
	return nil
}

// SettleC2D settles a cloud-to-device message delivered on this
// connection (lockToken is its MessageID): Complete and Reject remove it,
// Abandon makes it come again. A settlement of a message not in flight on
// this connection (settled already, unknown, or delivered on a connection
// that has ended) is refused with ErrNotFound, as IoT Hub refuses a stale
// lock token; on an ended connection it returns ErrDisconnected too.
func (c *Conn) SettleC2D(lockToken string, o Outcome) error {
	c.mu.Lock()
	sess, ended := c.sess, c.ended
	c.mu.Unlock()
	if err := sess.SettleC2D(lockToken, o); err != nil {
		if ended {
			return fmt.Errorf("%w: %w", ErrDisconnected, err)
		}
		return err
	}
	c.h.settled(lockToken, o)
	return nil
}

// RenewToken presents a new SAS token on the open connection, as AMQP's
// claims-based security does: it must pass the checks of Connect for the
// same device; the connection then lasts until the new token's expiry.
// Errors: ErrDisconnected, ErrUnauthorized, ErrNotFound.
func (c *Conn) RenewToken(sasToken string) error {
	if _, err := c.alive(); err != nil {
		return err
	}
	auth, err := c.h.core.AuthenticateHub(c.id, sasToken, nil)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return fmt.Errorf("%w: closed", ErrDisconnected)
	}
	c.expiry = auth.Expiry
	if c.expire != nil {
		c.expire.Stop()
	}
	if !c.expiry.IsZero() {
		c.expire = time.AfterFunc(time.Until(c.expiry), func() { c.end(errTokenExpired) })
	}
	return nil
}

// Protocol implements core.Link.
func (c *Conn) Protocol() string { return "inproc" }

// Subscribed implements core.Link: an in-process device is subscribed to
// everything while connected, as the SDK's transports subscribe at connect.
func (c *Conn) Subscribed(core.Feature) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.ended
}

// PushDesired implements core.Link.
func (c *Conn) PushDesired(body []byte, _ int64) error {
	b := append([]byte(nil), body...)
	c.deliver(func() { c.events.DesiredPatch(b) })
	return nil
}

// InvokeMethod implements core.Link: it delivers the request and waits
// for RespondMethod, ctx or the end of the connection.
func (c *Conn) InvokeMethod(ctx context.Context, method string, payload []byte) (int, []byte, error) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return 0, nil, fmt.Errorf("%w: closed", ErrDisconnected)
	}
	c.rid++
	rid := strconv.FormatUint(c.rid, 10)
	ch := make(chan methodAnswer, 1)
	c.methods[rid] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.methods, rid)
		c.mu.Unlock()
	}()
	p := append([]byte(nil), payload...)
	c.deliver(func() { c.events.Method(rid, method, p) })
	select {
	case a := <-ch:
		return a.status, a.body, nil
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-c.done:
		return 0, nil, fmt.Errorf("%w: while a method was pending", ErrDisconnected)
	}
}

// NotifyC2D implements core.Link: the delivery goroutine takes the queued
// messages from the core and hands them to Events.CloudMessage.
func (c *Conn) NotifyC2D() {
	c.mu.Lock()
	if c.pulling || c.sess == nil {
		c.mu.Unlock()
		return
	}
	c.pulling = true
	c.mu.Unlock()
	c.deliver(func() {
		c.mu.Lock()
		c.pulling = false
		sess := c.sess
		c.mu.Unlock()
		for {
			m, ok := sess.NextC2D()
			if !ok {
				return
			}
			m.Properties = maps.Clone(m.Properties)
			c.events.CloudMessage(m)
		}
	})
}

// Drop implements core.Link.
func (c *Conn) Drop(reason error) { c.end(reason) }

// InjectFault implements core.FaultLink as the MQTT front-end does: the
// socket-level faults end the connection (an auth fault or a revoked key
// with a reason wrapping ErrUnauthorized); the AMQP link and session kills
// do not apply.
func (c *Conn) InjectFault(k core.FaultKind, _ bool, reason error) bool {
	switch k {
	case core.FaultKillTCP, core.FaultShutDownMQTT:
		c.end(reason)
	case core.FaultAuthError, core.FaultRevokeKey:
		c.end(fmt.Errorf("%w: %w", ErrUnauthorized, reason))
	case core.FaultExpireToken:
		c.end(errTokenExpired)
	default:
		return false
	}
	return true
}
