package amqpcore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/iotc-go/iotc/adapters/internal/notify"
	"log/slog"
	"strings"
	"sync"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/adapters/internal/wsdial"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// Twin request vocabulary (message annotations).
const (
	annOperation     = "operation"
	annResource      = "resource"
	annStatus        = "status"
	annVersion       = "version"
	annComponent     = "dt-subject"
	resourceReported = "/properties/reported"
	resourceDesired  = "/notifications/twin/properties/desired"
	propMethodName   = "IoThub-methodname"
	propMethodStatus = "IoThub-status"
	// settleTimeout bounds writing one cloud-to-device disposition.
	settleTimeout = 10 * time.Second
)

// Session is one IoT Hub session over AMQP; it implements
// ports.HubSession. Create it with Transport.Connect.
type Session struct {
	t        *Transport
	log      *slog.Logger
	deviceID string
	events   ports.EventHandler

	conn *goamqp.Conn
	// life ends when Close is called; it bounds the receive loops.
	life   context.Context
	cancel context.CancelFunc

	cbsMu    sync.Mutex // one put-token at a time
	cbs      *cbs       // nil for X.509 sessions
	audience string

	tel   *goamqp.Sender
	c2d   *goamqp.Receiver
	mReq  *goamqp.Receiver
	mRsp  *goamqp.Sender
	twSnd *goamqp.Sender
	twRcv *goamqp.Receiver

	mu      sync.Mutex
	expiry  time.Time // SAS token expiry; zero for X.509
	pending map[string]chan *goamqp.Message
	closed  bool // Close called
	ended   bool // done closed
	err     error

	onEnd     notify.OnEnd // AfterDone's functions
	done      chan struct{}
	wg        sync.WaitGroup // receive loops
	settles   sync.WaitGroup // dispositions being written
	closeOnce sync.Once
}

var (
	_ ports.HubSession   = (*Session)(nil)
	_ ports.DoneNotifier = (*Session)(nil)
)

// Connect implements ports.HubConnector over AMQP: it opens one
// connection to conn.Host, authenticates with a CBS put-token of
// conn.Auth.SASToken on $cbs (SASL ANONYMOUS) or with the TLS client
// certificate (no SASL), attaches the telemetry sender, the
// cloud-to-device receiver, the direct-method pair and the twin pair
// (announcing conn.ModelID as com.microsoft:model-id on each), subscribes
// to desired-property notifications and delivers events to events on a
// goroutine the session owns, in arrival order.
//
// Errors: domain.ErrInvalidConfig for a missing host, device id, handler
// or credential, a malformed SAS token or bad options; an error wrapping
// domain.ErrUnauthorized when the hub refuses the token or the
// certificate (CBS status 401, amqp:unauthorized-access);
// domain.ErrDeviceNotFound for an unknown device; ctx's error; otherwise a
// retryable network error naming no address. IoT Hub allows one
// connection per device: a second one ends the first.
func (t *Transport) Connect(ctx context.Context, conn ports.HubConnection, events ports.EventHandler) (ports.HubSession, error) {
	if events == nil {
		return nil, fmt.Errorf("%w: hub connect needs an event handler", domain.ErrInvalidConfig)
	}
	if conn.Host == "" || conn.DeviceID == "" {
		return nil, fmt.Errorf("%w: hub connect needs a host and a device id", domain.ErrInvalidConfig)
	}
	if conn.Auth.SASToken == "" && conn.Auth.Certificate == nil {
		return nil, fmt.Errorf("%w: hub connect needs a SAS token or a certificate", domain.ErrInvalidConfig)
	}
	s := &Session{
		t:        t,
		log:      t.log.With("device_id", conn.DeviceID, "host", conn.Host),
		deviceID: conn.DeviceID,
		events:   events,
		pending:  make(map[string]chan *goamqp.Message),
		done:     make(chan struct{}),
	}
	var sasl goamqp.SASLType
	if conn.Auth.SASToken != "" {
		tok, err := domain.ParseSAS(conn.Auth.SASToken)
		if err != nil {
			return nil, fmt.Errorf("%w: hub connect: the SAS token is malformed", domain.ErrInvalidConfig)
		}
		s.expiry, s.audience = tok.Expiry, tok.RawResource
		sasl = goamqp.SASLTypeAnonymous()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	s.log.Debug("hub: connecting", "model_id", conn.ModelID)
	cctx, cancel := context.WithTimeout(ctx, t.connTimeout)
	defer cancel()
	c, err := t.open(cctx, conn.Host, conn.Auth.Certificate, sasl)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", connectStepError(ctx, cctx, err))
	}
	s.conn = c
	s.life, s.cancel = context.WithCancel(context.Background())
	if err := s.attach(cctx, conn); err != nil {
		s.cancel()
		_ = c.Close()
		return nil, fmt.Errorf("hub: %w", connectStepError(ctx, cctx, err))
	}
	s.wg.Add(3)
	go s.loop(s.twRcv, s.onTwin)
	go s.loop(s.mReq, s.onMethod)
	go s.loop(s.c2d, s.onCloudMessage)
	// Desired-property notifications flow only after this request.
	if _, err := s.twinRequest(cctx, "desired subscription", "PUT", resourceDesired, []byte(" ")); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("hub: %w", connectStepError(ctx, cctx, err))
	}
	s.log.Debug("hub: connected")
	return s, nil
}

// attach opens the session, authenticates and attaches every link.
func (s *Session) attach(ctx context.Context, conn ports.HubConnection) error {
	sess, err := s.conn.NewSession(ctx, nil)
	if err != nil {
		return attachError(ctx, "session", err)
	}
	if conn.Auth.SASToken != "" {
		s.cbs = &cbs{sess: sess}
		if err := s.cbs.putToken(ctx, s.t.reqTimeout, s.audience, conn.Auth.SASToken); err != nil {
			return err
		}
	}
	base := "/devices/" + conn.DeviceID
	props := func(extra ...string) map[string]any {
		p := map[string]any{propClientVersion: s.t.version, propAPIVersion: hubAPIVersion}
		if conn.ModelID != "" {
			p[propModelID] = conn.ModelID
		}
		for i := 0; i+1 < len(extra); i += 2 {
			p[extra[i]] = extra[i+1]
		}
		return p
	}
	if s.tel, err = sess.NewSender(ctx, base+"/messages/events", &goamqp.SenderOptions{Properties: props()}); err != nil {
		return attachError(ctx, "attach the telemetry link", err)
	}
	methods := props(propChannelCorrelation, "methods:"+newUUID().String())
	if s.mReq, err = sess.NewReceiver(ctx, base+"/methods/devicebound", &goamqp.ReceiverOptions{Properties: methods, Credit: 10}); err != nil {
		return attachError(ctx, "attach the method request link", err)
	}
	if s.mRsp, err = sess.NewSender(ctx, base+"/methods/devicebound", &goamqp.SenderOptions{Properties: methods}); err != nil {
		return attachError(ctx, "attach the method response link", err)
	}
	twin := props(propChannelCorrelation, "twin:"+newUUID().String())
	settled := goamqp.SenderSettleModeSettled
	if s.twSnd, err = sess.NewSender(ctx, base+"/twin", &goamqp.SenderOptions{Properties: twin, SettlementMode: &settled}); err != nil {
		return attachError(ctx, "attach the twin request link", err)
	}
	if s.twRcv, err = sess.NewReceiver(ctx, base+"/twin", &goamqp.ReceiverOptions{Properties: twin, Credit: 10, RequestedSenderSettleMode: &settled}); err != nil {
		return attachError(ctx, "attach the twin response link", err)
	}
	if s.c2d, err = sess.NewReceiver(ctx, base+"/messages/devicebound", &goamqp.ReceiverOptions{Properties: props(), Credit: int32(s.t.c2dCredit)}); err != nil {
		return attachError(ctx, "attach the cloud-to-device link", err)
	}
	return nil
}

// loop receives from r until the session ends, handing each message to
// handle; a receive error (other than Close) ends the session.
func (s *Session) loop(r *goamqp.Receiver, handle func(*goamqp.Message)) {
	defer s.wg.Done()
	for {
		m, err := r.Receive(s.life, nil)
		if err != nil {
			s.fail(err)
			return
		}
		handle(m)
	}
}

// fail ends the session after a link, session or connection error,
// unless Close caused it, and closes the connection.
func (s *Session) fail(cause error) {
	s.mu.Lock()
	if s.closed || s.ended {
		s.mu.Unlock()
		return
	}
	expired := !s.expiry.IsZero() && !time.Now().Before(s.expiry)
	s.mu.Unlock()
	err := deadError(cause, expired)
	s.log.Debug("hub: connection lost", "err", err)
	s.end(err)
	_ = s.conn.Close()
}

// end records why the session ended (first caller wins), closes done and
// fails every pending request.
func (s *Session) end(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.err = err
	clear(s.pending)
	close(s.done)
	s.mu.Unlock()
	s.onEnd.Fire()
}

// AfterDone implements ports.DoneNotifier: f runs on a goroutine of its
// own once the session has ended (at once if it has), unless stop is
// called first; stop reports whether it prevented f.
func (s *Session) AfterDone(f func()) (stop func() bool) { return s.onEnd.Add(f) }

// Done is closed when the session has ended, by Close or by the loss of
// the connection (this adapter never reconnects).
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is nil while the session runs and after Close; after a lost
// connection it wraps domain.ErrNotConnected and, when the hub said why,
// the matching domain error (domain.ErrUnauthorized and
// domain.ErrTokenExpired when the SAS token had expired).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// deadErr is the error of an operation attempted on or cut by a dead
// session.
func (s *Session) deadErr() error {
	if err := s.Err(); err != nil {
		return err
	}
	return fmt.Errorf("%w: session closed", domain.ErrNotConnected)
}

// opError classifies the error of a send on one of the session's links.
func (s *Session) opError(ctx context.Context, op string, err error) error {
	var ae *goamqp.Error
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", op, ctx.Err())
	case linkFailed(err):
		s.fail(err)
		return fmt.Errorf("%s: %w", op, s.deadErr())
	case errors.As(err, &ae):
		return fmt.Errorf("%s: %w", op, conditionError(op, ae))
	}
	return fmt.Errorf("%s: %w", op, wsdial.Sanitize(err))
}

// alive returns the dead-session error once the session has ended.
func (s *Session) alive() error {
	select {
	case <-s.done:
		return s.deadErr()
	default:
		return nil
	}
}

// RenewToken implements ports.SessionLifecycle: it presents sasToken with
// a new CBS put-token on the open connection; sends in flight go on
// undisturbed and the hub extends the session to the new expiry.
// Errors: domain.ErrInvalidConfig for a malformed token;
// domain.ErrNotSupported for an X.509 session (no token to renew);
// domain.ErrUnauthorized (wrapped) when the hub refuses the token (the
// session keeps the old one until it expires); domain.ErrNotConnected
// for a dead session; ctx's error; domain.ErrTimeout after
// Options.RequestTimeout.
func (s *Session) RenewToken(ctx context.Context, sasToken string) error {
	if s.cbs == nil {
		return fmt.Errorf("%w: an X.509 session has no SAS token to renew", domain.ErrNotSupported)
	}
	tok, err := domain.ParseSAS(sasToken)
	if err != nil {
		return fmt.Errorf("%w: renew token: the SAS token is malformed", domain.ErrInvalidConfig)
	}
	if err := s.alive(); err != nil {
		return fmt.Errorf("renew token: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("renew token: %w", err)
	}
	s.cbsMu.Lock()
	defer s.cbsMu.Unlock()
	if err := s.cbs.putToken(ctx, s.t.reqTimeout, tok.RawResource, sasToken); err != nil {
		if errors.Is(err, domain.ErrNotConnected) {
			s.fail(errors.New("CBS link lost"))
			return fmt.Errorf("renew token: %w", s.deadErr())
		}
		return fmt.Errorf("renew token: %w", err)
	}
	s.mu.Lock()
	s.expiry = tok.Expiry
	s.mu.Unlock()
	s.log.Debug("hub: SAS token renewed in place", "expiry", tok.Expiry)
	return nil
}

// Close closes the connection after the settlements made before it have
// been written and the hub confirmed it has them (it answered the detach
// of the cloud-to-device link, waited for at most 10 s), waits for the
// session's goroutines (its receive loops, which hand the events to the
// EventHandler) and returns nil; events that arrive after Close are not
// delivered. Unsettled cloud-to-device messages stay with
// the hub for the next session. Close is idempotent and safe to call from
// any goroutine except an EventHandler callback.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		ended := s.ended
		s.mu.Unlock()
		s.settles.Wait()
		if !ended {
			// Detach the cloud-to-device link and wait for the hub's
			// answer (at most settleTimeout): the hub reads a connection's
			// frames in order, so once it answered it holds every
			// disposition written before. Closing without it, the next
			// connection could reach the hub first (a slow proxy) and the
			// hub, dropping this one, would deliver a settled message again.
			ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
			if err := s.c2d.Close(ctx); err != nil {
				s.log.Debug("hub: cloud-to-device link not detached cleanly", "err", lostText(err))
			}
			cancel()
		}
		s.cancel()
		_ = s.conn.Close()
		s.end(nil)
		s.wg.Wait()
		s.log.Debug("hub: closed")
	})
	return nil
}

// SendTelemetry implements ports.TelemetrySender: it validates m (an
// oversized message fails with domain.ErrMessageTooLarge before anything
// is sent; reserved or empty property keys with domain.ErrInvalidConfig),
// sends it on /devices/{id}/messages/events (body as one data section;
// message-id, correlation-id, content-type and content-encoding as AMQP
// properties; application properties plus iothub-creation-time-utc; the
// component as the dt-subject annotation) and returns when the hub
// accepted it. A refusal gives *domain.HubError (413 too large, 429
// throttled); a session that died before the disposition gives an error
// wrapping domain.ErrNotConnected (the message may have arrived); ctx's
// end gives ctx's error.
func (s *Session) SendTelemetry(ctx context.Context, m domain.Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if err := s.alive(); err != nil {
		return err
	}
	t := telemetryPool.Get().(*telemetryBuf)
	if err := s.tel.Send(ctx, t.build(m), nil); err != nil {
		// Not recycled: a send cut by the link's end may leave its
		// transfer frame (which points into the message) still queued.
		return s.opError(ctx, "telemetry", err)
	}
	t.reset()
	telemetryPool.Put(t)
	return nil
}

// telemetryBuf holds the AMQP message of one send, recycled through
// telemetryPool after a successful send: go-amqp encodes the message
// before Send hands the transfer on, and once Send returned nil the frame
// has been written and the disposition received, so nothing refers to the
// message any more. It saves the three allocations of a message, its
// properties and its data list.
type telemetryBuf struct {
	msg   goamqp.Message
	props goamqp.MessageProperties
	data  [1][]byte
}

var telemetryPool = sync.Pool{New: func() any { return new(telemetryBuf) }}

// build maps m into the buffer and returns its message.
func (t *telemetryBuf) build(m domain.Message) *goamqp.Message {
	t.data[0] = m.Body
	t.msg.Data = t.data[:]
	t.msg.Properties = &t.props
	fillTelemetry(&t.msg, m)
	return &t.msg
}

// reset drops every reference to the last message sent.
func (t *telemetryBuf) reset() {
	*t = telemetryBuf{}
}

// The default content type and encoding, shared by every message that
// uses them (go-amqp only reads them).
var (
	defaultContentType     = domain.DefaultContentType
	defaultContentEncoding = domain.DefaultContentEncoding
)

// telemetryMessage maps m to its AMQP message in a buffer of its own.
func telemetryMessage(m domain.Message) *goamqp.Message { return new(telemetryBuf).build(m) }

// fillTelemetry sets the properties, annotations and application
// properties of m on msg, whose Properties are set and empty.
func fillTelemetry(msg *goamqp.Message, m domain.Message) {
	msg.Properties.ContentType, msg.Properties.ContentEncoding = &defaultContentType, &defaultContentEncoding
	if m.ContentType != "" && m.ContentType != defaultContentType {
		ct := m.ContentType
		msg.Properties.ContentType = &ct
	}
	if m.ContentEncoding != "" && m.ContentEncoding != defaultContentEncoding {
		ce := m.ContentEncoding
		msg.Properties.ContentEncoding = &ce
	}
	if m.MessageID != "" {
		msg.Properties.MessageID = m.MessageID
	}
	if m.CorrelationID != "" {
		msg.Properties.CorrelationID = m.CorrelationID
	}
	if m.Component != "" {
		msg.Annotations = goamqp.Annotations{goamqp.Symbol(annComponent): m.Component}
	}
	if len(m.Properties) > 0 || !m.CreationTime.IsZero() {
		msg.ApplicationProperties = make(map[string]any, len(m.Properties)+1)
		for k, v := range m.Properties {
			msg.ApplicationProperties[k] = v
		}
		if !m.CreationTime.IsZero() {
			msg.ApplicationProperties[domain.PropCreationTimeUTC] = m.CreationTime.UTC().Format(time.RFC3339Nano)
		}
	}
}

// twinRequest sends a twin request and waits for its answer; a status of
// 300 or more gives a *domain.HubError.
func (s *Session) twinRequest(ctx context.Context, op, operation, resource string, body []byte) (*goamqp.Message, error) {
	corr := newUUID().String()
	ch := make(chan *goamqp.Message, 1)
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", op, s.deadErr())
	}
	s.pending[corr] = ch
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		delete(s.pending, corr)
		s.mu.Unlock()
	}
	ann := goamqp.Annotations{goamqp.Symbol(annOperation): operation}
	if resource != "" {
		ann[goamqp.Symbol(annResource)] = resource
	}
	msg := &goamqp.Message{Properties: &goamqp.MessageProperties{CorrelationID: corr}, Annotations: ann, Data: [][]byte{body}}
	if err := s.twSnd.Send(ctx, msg, nil); err != nil {
		forget()
		return nil, s.opError(ctx, op, err)
	}
	timer := time.NewTimer(s.t.reqTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		status := 200
		if v, ok := annotation(r, annStatus); ok {
			if n, ok := intOf(v); ok {
				status = int(n)
			}
		}
		if status >= 300 {
			return nil, twinError(op, status, bodyOf(r))
		}
		return r, nil
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("%s: %w", op, ctx.Err())
	case <-timer.C:
		forget()
		return nil, fmt.Errorf("%s: %w: no response within %s", op, domain.ErrTimeout, s.t.reqTimeout)
	case <-s.done:
		return nil, fmt.Errorf("%s: %w", op, s.deadErr())
	}
}

// twinError builds a *domain.HubError from a twin status and body.
func twinError(op string, status int, body []byte) *domain.HubError {
	he := &domain.HubError{Op: op, Status: status}
	var se struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	if len(body) > 0 && json.Unmarshal(body, &se) == nil {
		he.Code = se.ErrorCode
		if len(se.Message) > maxDescription {
			se.Message = se.Message[:maxDescription]
		}
		he.Message = se.Message
	}
	return he
}

// GetTwin implements ports.TwinClient: it returns the twin document
// {"desired":{...},"reported":{...}} as the hub sent it. A status of 300
// or more gives a *domain.HubError (429 throttled, 5xx retryable); no
// answer within Options.RequestTimeout gives domain.ErrTimeout; a dead
// session domain.ErrNotConnected.
func (s *Session) GetTwin(ctx context.Context) ([]byte, error) {
	r, err := s.twinRequest(ctx, "twin get", "GET", "", []byte(" "))
	if err != nil {
		return nil, err
	}
	return bodyOf(r), nil
}

// PatchReported implements ports.TwinClient: it sends patch (JSON; null
// removes a member) and returns the new reported $version. A patch over
// domain.MaxTwinSectionSize (32 KiB) fails with domain.ErrMessageTooLarge
// before sending; a refusal gives *domain.HubError (400 bad JSON, 429
// throttled); an answer without a version gives domain.ErrMalformed.
func (s *Session) PatchReported(ctx context.Context, patch []byte) (int64, error) {
	if len(patch) > domain.MaxTwinSectionSize {
		return 0, fmt.Errorf("%w: reported patch of %d bytes exceeds %d", domain.ErrMessageTooLarge, len(patch), domain.MaxTwinSectionSize)
	}
	r, err := s.twinRequest(ctx, "reported patch", "PATCH", resourceReported, patch)
	if err != nil {
		return 0, err
	}
	v, ok := annotation(r, annVersion)
	n, isInt := intOf(v)
	if !ok || !isInt {
		return 0, fmt.Errorf("reported patch: %w: response without a version", domain.ErrMalformed)
	}
	return n, nil
}

// respondMethod answers a direct method (the reply OnMethod carries): it sends payload with
// IoThub-status = status and the request's uuid correlation-id on the
// method response link and returns when the hub accepted it. A payload
// over domain.MaxMethodPayloadSize (128 KiB) fails with
// domain.ErrMessageTooLarge; a request id that is not the uuid of a
// request of this transport with domain.ErrInvalidConfig; a dead session
// with domain.ErrNotConnected. The hub answers the caller with 504 when
// the response comes after its timeout.
func (s *Session) respondMethod(ctx context.Context, requestID string, status int, payload []byte) error {
	if len(payload) > domain.MaxMethodPayloadSize {
		return fmt.Errorf("%w: method response of %d bytes exceeds %d", domain.ErrMessageTooLarge, len(payload), domain.MaxMethodPayloadSize)
	}
	id, ok := parseUUID(requestID)
	if !ok {
		return fmt.Errorf("%w: method request id %q is not a uuid", domain.ErrInvalidConfig, requestID)
	}
	if status < -1<<31 || status > 1<<31-1 {
		return fmt.Errorf("%w: method status %d", domain.ErrInvalidConfig, status)
	}
	if err := s.alive(); err != nil {
		return fmt.Errorf("method response: %w", err)
	}
	err := s.mRsp.Send(ctx, &goamqp.Message{
		Properties:            &goamqp.MessageProperties{CorrelationID: id},
		ApplicationProperties: map[string]any{propMethodStatus: int32(status)},
		Data:                  [][]byte{payload},
	}, nil)
	if err != nil {
		return s.opError(ctx, "method response", err)
	}
	return nil
}

// deliver hands an event to the handler on the calling goroutine (the
// protocol library's receiver: the handler only queues, see
// ports.EventHandler), unless the session was closed.
func (s *Session) deliver(f func()) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		f()
	}
}

// onTwin handles a twin response (with a correlation-id) or a desired
// patch (without).
func (s *Session) onTwin(m *goamqp.Message) {
	_ = s.twRcv.AcceptMessage(s.life, m) // a no-op when pre-settled
	if corr := correlationOf(m); corr != "" {
		s.mu.Lock()
		ch, ok := s.pending[corr]
		delete(s.pending, corr)
		s.mu.Unlock()
		if !ok {
			s.log.Debug("hub: twin response for no pending request")
			return
		}
		ch <- m // buffered, sent once
		return
	}
	body := bodyOf(m)
	if len(strings.TrimSpace(string(body))) == 0 {
		return
	}
	s.deliver(func() { s.events.OnDesiredPatch(body) })
}

// onMethod handles a direct-method request: accepted at once, answered
// through the reply handed with it, the request id being the uuid
// correlation-id.
func (s *Session) onMethod(m *goamqp.Message) {
	_ = s.mReq.AcceptMessage(s.life, m)
	var id string
	if m.Properties != nil {
		switch v := m.Properties.CorrelationID.(type) {
		case goamqp.UUID:
			id = v.String()
		case string:
			if u, ok := parseUUID(v); ok {
				id = u.String()
			}
		}
	}
	nv, _ := appProp(m.ApplicationProperties, propMethodName)
	name, _ := textOf(nv)
	if id == "" || name == "" {
		s.log.Warn("hub: ignoring a method request without a uuid correlation-id or a method name")
		return
	}
	req := ports.MethodRequest{Method: name, RequestID: id, Payload: bodyOf(m)}
	s.deliver(func() {
		s.events.OnMethod(req, func(ctx context.Context, status int, payload []byte) error {
			return s.respondMethod(ctx, req.RequestID, status, payload)
		})
	})
}

// onCloudMessage hands a cloud-to-device message to the handler; the
// disposition is sent when the handler settles it.
func (s *Session) onCloudMessage(m *goamqp.Message) {
	msg := cloudMessage(m)
	var once sync.Once
	settle := func(o domain.Outcome) {
		once.Do(func() { s.settle(m, o) })
	}
	s.deliver(func() { s.events.OnCloudMessage(msg, settle) })
}

// settle writes the disposition of m on its own goroutine, so that the
// caller never waits for the network; Close waits for it. After Close or
// the session's end it does nothing: the hub delivers the message again.
func (s *Session) settle(m *goamqp.Message, o domain.Outcome) {
	s.mu.Lock()
	if s.closed || s.ended {
		s.mu.Unlock()
		return
	}
	s.settles.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.settles.Done()
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		defer cancel()
		var err error
		switch o {
		case domain.Abandon:
			err = s.c2d.ReleaseMessage(ctx, m)
		case domain.Reject:
			err = s.c2d.RejectMessage(ctx, m, nil)
		default:
			err = s.c2d.AcceptMessage(ctx, m)
		}
		if err != nil {
			s.log.Debug("hub: cloud-to-device settlement not sent", "outcome", o.String(), "err", lostText(err))
		}
	}()
}

// cloudMessage maps a cloud-to-device AMQP message to the domain's, system
// properties under their "$." names.
func cloudMessage(m *goamqp.Message) domain.CloudMessage {
	props := map[string]string{}
	if p := m.Properties; p != nil {
		if s, ok := textOf(p.MessageID); ok {
			props[domain.PropMessageID] = s
		}
		if s, ok := textOf(p.CorrelationID); ok {
			props[domain.PropCorrelationID] = s
		}
		if p.ContentType != nil {
			props[domain.PropContentType] = *p.ContentType
		}
		if p.ContentEncoding != nil {
			props[domain.PropContentEncoding] = *p.ContentEncoding
		}
		if p.To != nil {
			props[domain.PropTo] = *p.To
		}
		if len(p.UserID) > 0 {
			props[domain.PropUserID] = string(p.UserID)
		}
		if p.AbsoluteExpiryTime != nil && !p.AbsoluteExpiryTime.IsZero() {
			props[domain.PropExpiry] = p.AbsoluteExpiryTime.UTC().Format(time.RFC3339Nano)
		}
	}
	for k, v := range m.ApplicationProperties {
		if s, ok := textOf(v); ok {
			props[k] = s
		}
	}
	return domain.CloudMessage{Body: append([]byte(nil), bodyOf(m)...), Properties: props}
}
