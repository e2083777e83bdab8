package core

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrReplaced is the reason a device's connection is dropped when the
// device opens a newer one (IoT Hub keeps one connection per device).
var ErrReplaced = errors.New("emulator: the device connected again")

// Session is one authenticated hub connection of a device as every device
// front-end (MQTT, AMQP, and the ones to come) uses it: the front-end
// calls its methods for what the device sends, and the core reaches the
// device through the Link given to Connect. Its methods are safe for
// concurrent use.
type Session struct {
	c          *Core
	id         string
	link       Link
	authMethod string
}

// Connect opens device id's hub session on link l once the device was
// authenticated (AuthenticateHub, whose answer is auth): it checks the connection faults and
// makes l the device's one connection. An id "{deviceId}/{moduleId}"
// (ModuleKey) opens a module's session: its own connection, twin and
// methods, its telemetry stored with its device's, no cloud-to-device
// messages (NextC2D finds none), refused while its device is disabled. modelID, when not "", becomes the device's model id.
// Errors: ErrNotFound (unknown device), ErrUnauthorized (disabled),
// ErrUnavailable (refused by a fault, wrapping ErrThrottled or
// ErrQuotaExceeded when that is the reason).
//
// It returns the connection l replaces (nil when none) for the front-end
// to drop as its protocol requires: one of its own connections it may
// replace itself, any other with Drop(ErrReplaced).
func (c *Core) Connect(id string, auth HubAuth, l Link, modelID string) (*Session, Link, error) {
	if err := c.AdmitConnection(id); err != nil {
		return nil, nil, err
	}
	prev, err := c.Attach(id, l, modelID)
	if err != nil {
		return nil, nil, err
	}
	s := &Session{c: c, id: id, link: l, authMethod: AuthMethodSAS}
	_, module := SplitKey(id)
	switch {
	case auth.X509 && module != "":
		s.authMethod = AuthMethodModuleX509
	case auth.X509:
		s.authMethod = AuthMethodX509
	case module != "":
		s.authMethod = AuthMethodModuleSAS
	}
	return s, prev, nil
}

// DeviceID is the session's device (a module's device for a module session).
func (s *Session) DeviceID() string { d, _ := SplitKey(s.id); return d }

// ModuleID is the session's module, "" for a device session.
func (s *Session) ModuleID() string { _, m := SplitKey(s.id); return m }

// Current reports whether the session is still the device's connection.
func (s *Session) Current() bool { return s.c.Current(s.id, s.link) }

// Admit checks an operation of the device against the fault switches
// before the front-end reads or answers it (see Core.Admit): it may wait
// (throttle shaping), and returns ErrThrottled or ErrQuotaExceeded.
func (s *Session) Admit(ctx context.Context, op Operation) error { return s.c.Admit(ctx, s.id, op) }

// Telemetry stores a device-to-cloud message sent on the session (after
// Admit) and returns once it is stored (durably with a store):
// acknowledge it only then. t.DeviceID and t.Received are set here; the
// core keeps t.Body, so a front-end whose buffer is reused must pass a
// copy. Errors: ErrTooLarge (body over MaxTelemetryBody), ErrStore.
func (s *Session) Telemetry(t Telemetry) error {
	if len(t.Body) > MaxTelemetryBody {
		return fmt.Errorf("%w: telemetry body of %d bytes exceeds %d", ErrTooLarge, len(t.Body), MaxTelemetryBody)
	}
	t.DeviceID, t.ModuleID = SplitKey(s.id)
	t.AuthMethod = s.authMethod
	if t.Received.IsZero() {
		t.Received = time.Now().UTC()
	}
	return s.c.StoreTelemetry(t)
}

// Twin answers a twin GET: the status (200; 429 when throttled by a
// fault; 404 for a deleted device) and the body (the twin document, or
// an error object).
func (s *Session) Twin(ctx context.Context) (int, []byte) {
	if err := s.c.Admit(ctx, s.id, OpTwin); err != nil {
		return twinRefusal(err)
	}
	return s.c.TwinDocument(s.id)
}

// PatchReported applies a reported-properties patch: the status (204 with
// the new version; 400 for a patch IoT Hub refuses; 429 when throttled)
// and an error body.
func (s *Session) PatchReported(ctx context.Context, body []byte) (int, int64, []byte) {
	if err := s.c.Admit(ctx, s.id, OpTwin); err != nil {
		status, b := twinRefusal(err)
		return status, 0, b
	}
	return s.c.PatchReported(s.id, body)
}

// twinRefusal is the answer to a twin request refused by a fault: 429
// when throttled, else 503.
func twinRefusal(err error) (int, []byte) {
	if errors.Is(err, ErrThrottled) {
		return 429, twinErrorCode(429001, err.Error())
	}
	return 503, twinErrorCode(503001, err.Error())
}

// NextC2D takes the oldest queued cloud-to-device message not in flight
// for delivery on this session; ok is false when there is none or the
// session is no longer the device's connection.
func (s *Session) NextC2D() (C2DMessage, bool) { return s.c.NextC2D(s.id, s.link) }

// SettleC2D settles a message delivered on this session (see
// Core.SettleC2D); lockToken is the message id. A settlement of a message
// not in flight on this session (a dead or replaced session's) is ignored
// and reported with ErrNotFound, as IoT Hub refuses a stale lock token.
func (s *Session) SettleC2D(lockToken string, o Outcome) error {
	return s.c.SettleC2D(s.id, s.link, lockToken, o)
}

// SubscriptionsChanged tells the core the device subscribed or
// unsubscribed (wakes WaitSubscribed callers).
func (s *Session) SubscriptionsChanged() { s.c.SubscriptionsChanged(s.id) }

// Touch records activity on the session.
func (s *Session) Touch() { s.c.Touch(s.id) }

// Close ends the session: the messages in flight on it go back to the
// queue for a newer connection. Call it once the connection ended.
func (s *Session) Close() { s.c.Detach(s.id, s.link) }
