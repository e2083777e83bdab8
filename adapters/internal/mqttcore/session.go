package mqttcore

import (
	"context"
	"errors"
	"fmt"
	"github.com/iotc-go/iotc/adapters/internal/notify"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// twinResult is a twin response delivered to the waiting request.
type twinResult struct {
	TwinResponse
	body []byte
}

// Session is one IoT Hub session over MQTT; it implements
// ports.HubSession. Create it with Core.Connect.
type Session struct {
	core     *Core
	log      *slog.Logger
	cl       paho.Client
	raw      *gracefulConn
	deviceID string
	events   ports.EventHandler
	expiry   time.Time // SAS token expiry; zero for X.509

	telemetryPrefix string
	rid             atomic.Uint64

	mu      sync.Mutex
	pending map[string]chan twinResult // made by the first request, dropped when empty (an idle session holds none)
	closed  bool                       // Close called
	ended   bool                       // done closed
	err     error
	onEnd   notify.OnEnd // AfterDone's functions

	done      chan struct{}
	pubs      sync.WaitGroup // publishes inside paho
	closeOnce sync.Once
}

var (
	_ ports.HubSession   = (*Session)(nil)
	_ ports.DoneNotifier = (*Session)(nil)
)

// Connect implements ports.HubConnector: it connects to conn.Host with
// client id = device id and a persistent session (CleanSession=false, so
// cloud-to-device messages wait while the device is away), subscribes to
// twin responses, desired patches, direct methods (QoS 0) and
// cloud-to-device messages (QoS 1, acknowledged only when settled), and
// delivers events to events on a goroutine the session owns, in arrival
// order.
//
// Errors: domain.ErrInvalidConfig for a missing host, device id, handler
// or credential; an error wrapping domain.ErrUnauthorized for CONNACK 4/5
// or a refused subscription (SUBACK 0x80); ctx's error; a retryable
// network error otherwise. IoT Hub allows one connection per device: a
// second one drops the first.
func (c *Core) Connect(ctx context.Context, conn ports.HubConnection, events ports.EventHandler) (ports.HubSession, error) {
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
		core:            c,
		log:             c.log.With("device_id", conn.DeviceID, "host", conn.Host),
		deviceID:        conn.DeviceID,
		events:          events,
		telemetryPrefix: TelemetryTopic(conn.DeviceID, ""),
		done:            make(chan struct{}),
	}
	if conn.Auth.SASToken != "" {
		if t, err := domain.ParseSAS(conn.Auth.SASToken); err == nil {
			s.expiry = t.Expiry
		}
	}
	s.log.Debug("hub: connecting", "model_id", conn.ModelID)
	handlers := map[string]paho.MessageHandler{
		TopicTwinResFilter:              s.onTwinResponse,
		TopicDesiredFilter:              s.onDesired,
		TopicMethodsFilter:              s.onMethod,
		CloudToDeviceFilter(s.deviceID): s.onCloudMessage,
	}
	cl, raw, err := c.connect(ctx, connParams{
		host:     conn.Host,
		clientID: conn.DeviceID,
		username: HubUsername(conn.Host, conn.DeviceID, conn.ModelID, c.cfg.ClientVersion),
		password: conn.Auth.SASToken,
		cert:     conn.Auth.Certificate,
		clean:    false,
		onLost:   s.onLost,
		routes:   handlers,
	})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	s.cl, s.raw = cl, raw
	filters := map[string]byte{
		TopicTwinResFilter:              0,
		TopicDesiredFilter:              0,
		TopicMethodsFilter:              0,
		CloudToDeviceFilter(s.deviceID): 1,
	}
	tok := cl.SubscribeMultiple(filters, nil)
	if err := wait(ctx, tok, s.done, errConnLost); err == nil {
		err = checkSubAck(tok, filters)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("hub: %w", err)
		}
	} else {
		cause := err
		if errors.Is(err, errConnLost) {
			cause = s.Err()
		}
		s.Close()
		return nil, fmt.Errorf("hub: subscribe: %w", cause)
	}
	s.log.Debug("hub: connected")
	return s, nil
}

// onLost runs on a paho goroutine when the connection drops.
func (s *Session) onLost(cause error) {
	cause = scrub(cause)
	err := fmt.Errorf("%w: mqtt connection lost: %w", domain.ErrNotConnected, cause)
	if !s.expiry.IsZero() && !time.Now().Before(s.expiry) {
		err = fmt.Errorf("%w: %w: connection lost after the SAS token expired: %w", domain.ErrUnauthorized, domain.ErrTokenExpired, cause)
	}
	s.log.Debug("hub: connection lost", "err", cause)
	s.end(err)
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
// connection it wraps domain.ErrNotConnected and the cause (and
// domain.ErrUnauthorized plus domain.ErrTokenExpired when the SAS token
// had expired, which is how IoT Hub ends such sessions).
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

// RenewToken returns domain.ErrNotSupported: MQTT 3.1.1 cannot present a
// new password on an open connection; reconnect with the new token.
func (s *Session) RenewToken(context.Context, string) error {
	return fmt.Errorf("%w: mqtt cannot renew a SAS token in place", domain.ErrNotSupported)
}

// Close refuses new operations, lets the publishes already handed to paho
// reach the connection, disconnects (DISCONNECT after every settlement
// made before Close, then a graceful close so that none is lost), waits
// for paho's goroutines and returns nil; events that arrive after Close
// are not delivered. Unsettled cloud-to-device messages stay with the hub for the next
// session. Close is idempotent and safe to call from any goroutine except
// an EventHandler callback.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		// While connected, paho's writer takes publishes promptly; waiting
		// for them keeps a Publish from racing Disconnect (it would block
		// until its handoff timeout). On a dead connection they end within
		// publishHandoff.
		s.pubs.Wait()
		s.cl.Disconnect(disconnectQuiesce)
		_ = s.raw.Close()
		s.end(nil)
		s.log.Debug("hub: closed")
	})
	return nil
}

// publish publishes and waits for the token (PUBACK for QoS 1, the write
// for QoS 0), ctx or the session's end. paho's Publish blocks (up to
// publishHandoff, again and again) while its writer cannot write, so while
// the connection is congested (32 KiB wait to be written, or a write has
// run for 100 ms) it runs on a goroutine of its own whenever ctx can end,
// and the caller returns within moments of ctx's end.
// Otherwise it runs on the caller's goroutine: the connection writes
// behind (gracefulConn), so paho's writer takes the packet at once; a
// stall that begins during the handoff delays the return after ctx's end
// by at most publishHandoff. Every failure that means the connection is
// gone wraps domain.ErrNotConnected.
func (s *Session) publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	s.mu.Lock()
	if s.ended || s.closed {
		s.mu.Unlock()
		return s.deadErr()
	}
	s.pubs.Add(1)
	s.mu.Unlock()
	s.raw.publishing.Add(1)
	defer s.raw.publishing.Add(-1)
	var tok paho.Token
	if ctx.Done() == nil || !s.raw.Congested() {
		tok = s.handOver(ctx, topic, qos, payload)
		s.pubs.Done()
	} else {
		ch := tokenChans.Get().(chan paho.Token)
		go func() {
			defer s.pubs.Done()
			ch <- s.handOver(ctx, topic, qos, payload)
		}()
		select {
		case tok = <-ch:
			tokenChans.Put(ch) // drained: the goroutine sent its only value
		case <-ctx.Done():
			return ctx.Err() // ch is left to the goroutine and the collector
		case <-s.done:
			return s.deadErr()
		}
	}
	err := wait(ctx, tok, s.done, errConnLost)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errConnLost):
		return s.deadErr()
	case ctx.Err() != nil:
		return err
	}
	// paho fails a publish only for the connection's sake: not connected,
	// lost before the acknowledgement, a write that failed or timed out.
	return fmt.Errorf("%w: mqtt publish: %w", domain.ErrNotConnected, scrub(err))
}

// tokenChans recycles the one-slot channels a publish's handover
// goroutine answers on (two allocations per message otherwise).
var tokenChans = sync.Pool{New: func() any { return make(chan paho.Token, 1) }}

// handOver calls paho's Publish, again while its handoff to paho's writer
// times out (the packet was then not written) and the session and ctx
// live.
func (s *Session) handOver(ctx context.Context, topic string, qos byte, payload []byte) paho.Token {
	for {
		tok := s.cl.Publish(topic, qos, false, payload)
		select {
		case <-tok.Done():
		default:
			return tok // handed over: the token completes later
		}
		err := tok.Error()
		if err == nil || err.Error() != errPublishTimeout || ctx.Err() != nil {
			return tok
		}
		select {
		case <-s.done:
			return tok
		default:
		}
		s.log.Debug("hub: paho's writer is busy; handing the publish over again")
	}
}

// errPublishTimeout is the text of the error paho gives a Publish whose
// packet could not be handed to its writer within the write timeout.
const errPublishTimeout = "publish was broken by timeout"

// SendTelemetry implements ports.TelemetrySender: it validates m (an
// oversized message fails with domain.ErrMessageTooLarge before anything
// is sent; reserved or empty property keys with domain.ErrInvalidConfig),
// publishes it at QoS 1 on devices/{id}/messages/events/{property bag}
// and returns when the hub sent PUBACK. A session that died before the
// PUBACK gives an error wrapping domain.ErrNotConnected (the message may
// have arrived); ctx's end gives ctx's error.
func (s *Session) SendTelemetry(ctx context.Context, m domain.Message) error {
	topic, err := m.EncodeTopic(s.telemetryPrefix)
	if err != nil {
		return err
	}
	return s.publish(ctx, topic, 1, m.Body)
}

// forgetLocked removes request rid; the map goes with the last one (Go
// maps keep their buckets once grown). Called with s.mu held.
func (s *Session) forgetLocked(rid string) {
	delete(s.pending, rid)
	if len(s.pending) == 0 {
		s.pending = nil
	}
}

// request sends a twin request and waits for its response.
func (s *Session) request(ctx context.Context, op, topic string, body []byte) (twinResult, error) {
	rid := strconv.FormatUint(s.rid.Add(1), 10)
	ch := make(chan twinResult, 1)
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return twinResult{}, s.deadErr()
	}
	if s.pending == nil {
		s.pending = make(map[string]chan twinResult, 1)
	}
	s.pending[rid] = ch
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		s.forgetLocked(rid)
		s.mu.Unlock()
	}
	if err := s.publish(ctx, topic+rid, 0, body); err != nil {
		forget()
		return twinResult{}, fmt.Errorf("%s: %w", op, err)
	}
	timer := time.NewTimer(s.core.cfg.RequestTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.Status >= 300 {
			return r, hubError(op, r.Status, r.body)
		}
		return r, nil
	case <-ctx.Done():
		forget()
		return twinResult{}, fmt.Errorf("%s: %w", op, ctx.Err())
	case <-timer.C:
		forget()
		return twinResult{}, fmt.Errorf("%s: %w: no response within %s", op, domain.ErrTimeout, s.core.cfg.RequestTimeout)
	case <-s.done:
		return twinResult{}, fmt.Errorf("%s: %w", op, s.deadErr())
	}
}

// GetTwin implements ports.TwinClient: it returns the twin document
// {"desired":{...},"reported":{...}} as the hub sent it. A status of 300
// or more gives a *domain.HubError (429 throttled, 5xx retryable); no
// answer within Config.RequestTimeout gives domain.ErrTimeout.
func (s *Session) GetTwin(ctx context.Context) ([]byte, error) {
	r, err := s.request(ctx, "twin get", topicTwinGet, nil)
	if err != nil {
		return nil, err
	}
	return r.body, nil
}

// PatchReported implements ports.TwinClient: it sends patch (JSON; null
// removes a member) and returns the new reported $version. A patch over
// domain.MaxTwinSectionSize (32 KiB) fails with domain.ErrMessageTooLarge
// before sending; a refusal gives *domain.HubError (400 bad JSON, 429
// throttled); a response without $version gives domain.ErrMalformed.
func (s *Session) PatchReported(ctx context.Context, patch []byte) (int64, error) {
	if len(patch) > domain.MaxTwinSectionSize {
		return 0, fmt.Errorf("%w: reported patch of %d bytes exceeds %d", domain.ErrMessageTooLarge, len(patch), domain.MaxTwinSectionSize)
	}
	r, err := s.request(ctx, "reported patch", topicTwinPatchReported, patch)
	if err != nil {
		return 0, err
	}
	if !r.HasVersion {
		return 0, fmt.Errorf("reported patch: %w: response without $version", domain.ErrMalformed)
	}
	return r.Version, nil
}

// respondMethod answers a direct method (the reply OnMethod carries): it publishes payload
// on $iothub/methods/res/{status}/?$rid={requestID} (QoS 0, as the Azure
// SDKs). A payload over domain.MaxMethodPayloadSize (128 KiB) fails with
// domain.ErrMessageTooLarge; an empty request id or one holding '/', '#',
// '+' or '&' with domain.ErrInvalidConfig; a dead session with
// domain.ErrNotConnected. The hub answers the caller with 504 when the
// response comes after its timeout.
func (s *Session) respondMethod(ctx context.Context, requestID string, status int, payload []byte) error {
	if requestID == "" || strings.ContainsAny(requestID, "/#+&\x00") {
		return fmt.Errorf("%w: method request id %q", domain.ErrInvalidConfig, requestID)
	}
	if len(payload) > domain.MaxMethodPayloadSize {
		return fmt.Errorf("%w: method response of %d bytes exceeds %d", domain.ErrMessageTooLarge, len(payload), domain.MaxMethodPayloadSize)
	}
	if err := s.publish(ctx, MethodResponseTopic(status, requestID), 0, payload); err != nil {
		return fmt.Errorf("method response: %w", err)
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

// onTwinResponse runs on paho's router: it never blocks.
func (s *Session) onTwinResponse(_ paho.Client, m paho.Message) {
	m.Ack()
	r, err := ParseTwinResponseTopic(m.Topic())
	if err != nil {
		s.log.Warn("hub: ignoring twin response", "err", err)
		return
	}
	s.mu.Lock()
	ch, ok := s.pending[r.RID]
	s.forgetLocked(r.RID)
	s.mu.Unlock()
	if !ok {
		s.log.Debug("hub: twin response for no pending request", "rid", r.RID)
		return
	}
	ch <- twinResult{TwinResponse: r, body: m.Payload()} // buffered, sent once
}

// onDesired runs on paho's router.
func (s *Session) onDesired(_ paho.Client, m paho.Message) {
	m.Ack()
	if _, err := ParseDesiredPatchTopic(m.Topic()); err != nil {
		s.log.Warn("hub: ignoring desired patch", "err", err)
		return
	}
	body := m.Payload()
	s.deliver(func() { s.events.OnDesiredPatch(body) })
}

// onMethod runs on paho's router.
func (s *Session) onMethod(_ paho.Client, m paho.Message) {
	m.Ack()
	name, rid, err := ParseMethodRequestTopic(m.Topic())
	if err != nil {
		s.log.Warn("hub: ignoring method request", "err", err)
		return
	}
	req := ports.MethodRequest{Method: name, RequestID: rid, Payload: m.Payload()}
	s.deliver(func() {
		s.events.OnMethod(req, func(ctx context.Context, status int, payload []byte) error {
			return s.respondMethod(ctx, req.RequestID, status, payload)
		})
	})
}

// onCloudMessage runs on paho's router. The PUBACK is sent by settle.
func (s *Session) onCloudMessage(_ paho.Client, m paho.Message) {
	bag, err := ParseCloudToDeviceTopic(s.deviceID, m.Topic())
	if err != nil {
		// Unparsable: acknowledge so the hub does not redeliver it forever.
		m.Ack()
		s.log.Warn("hub: dropping cloud-to-device message", "err", err)
		return
	}
	msg := domain.ParseCloudMessage(m.Payload(), bag)
	var once sync.Once
	settle := func(o domain.Outcome) {
		once.Do(func() {
			if o == domain.Abandon {
				// MQTT cannot abandon on an open connection: leave the
				// message unacknowledged; it comes again on the next one.
				s.log.Debug("hub: cloud-to-device message abandoned; redelivered on the next connection")
				return
			}
			m.Ack()
		})
	}
	s.deliver(func() { s.events.OnCloudMessage(msg, settle) })
}
