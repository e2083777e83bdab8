package iotctest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator/inproc"
	"github.com/iotc-go/iotc/ports"
)

// session is one open device connection: it implements ports.HubSession
// over an inproc.Conn, and inproc.Events for what the hub pushes.
type session struct {
	hub    *Hub
	id     string
	events ports.EventHandler
	ready  chan struct{} // closed once conn is set (nil when Connect failed)
	conn   *inproc.Conn
}

var (
	_ ports.HubSession = (*session)(nil)
	_ inproc.Events    = (*session)(nil)
)

// DesiredPatch implements inproc.Events.
func (s *session) DesiredPatch(patch []byte) { s.events.OnDesiredPatch(patch) }

// Method implements inproc.Events.
func (s *session) Method(requestID, method string, payload []byte) {
	s.events.OnMethod(ports.MethodRequest{Method: method, RequestID: requestID, Payload: payload}, func(ctx context.Context, status int, payload []byte) error {
		<-s.ready
		if s.conn == nil {
			return fmt.Errorf("%w: the session did not open", domain.ErrNotConnected)
		}
		return s.respondMethod(ctx, requestID, status, payload)
	})
}

// CloudMessage implements inproc.Events: the message goes to the handler
// with its system properties under their "$." names, and a settle that
// the hub honours only on this live session.
func (s *session) CloudMessage(m inproc.C2DMessage) {
	props := cloneProps(m.Properties)
	props[domain.PropMessageID] = m.MessageID
	props["$.to"] = m.To
	var once sync.Once
	settle := func(o domain.Outcome) {
		once.Do(func() {
			<-s.ready
			if s.conn != nil {
				// Refused (ErrNotFound) when the session has ended: the
				// hub delivers the message again, as the port promises.
				_ = s.conn.SettleC2D(m.MessageID, toOutcome(o))
			}
		})
	}
	s.events.OnCloudMessage(domain.CloudMessage{Body: m.Body, Properties: props}, settle)
}

// SendTelemetry implements ports.TelemetrySender with IoT Hub's 256 KiB
// limit.
func (s *session) SendTelemetry(ctx context.Context, m domain.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return err
	}
	t := inproc.Telemetry{
		Component: m.Component, MessageID: m.MessageID, CorrelationID: m.CorrelationID,
		ContentType: m.ContentType, ContentEncoding: m.ContentEncoding,
		Body: append([]byte(nil), m.Body...), Properties: cloneProps(m.Properties),
	}
	if t.ContentType == "" {
		t.ContentType = domain.DefaultContentType
	}
	if t.ContentEncoding == "" {
		t.ContentEncoding = domain.DefaultContentEncoding
	}
	if !m.CreationTime.IsZero() {
		t.System = map[string]string{"iothub-creation-time-utc": m.CreationTime.UTC().Format(time.RFC3339Nano)}
	}
	return toDomain("telemetry", s.conn.Telemetry(ctx, t))
}

// GetTwin implements ports.TwinClient; a refusal is a *domain.HubError.
func (s *session) GetTwin(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	status, body, err := s.conn.Twin(ctx)
	if err != nil {
		return nil, toDomain("twin get", err)
	}
	if status != 200 {
		return nil, hubError("twin get", status, body)
	}
	return body, nil
}

// PatchReported implements ports.TwinClient with IoT Hub's rules: over
// 32 KiB gives domain.ErrMessageTooLarge before anything is sent; a patch
// IoT Hub refuses (not a JSON object, a key with '.', '$' or a space,
// nesting over 10 levels) a 400 *domain.HubError.
func (s *session) PatchReported(ctx context.Context, patch []byte) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(patch) > domain.MaxTwinSectionSize {
		return 0, fmt.Errorf("%w: reported patch of %d bytes", domain.ErrMessageTooLarge, len(patch))
	}
	h := s.hub
	h.pmu.Lock()
	defer h.pmu.Unlock()
	status, v, body, err := s.conn.PatchReported(ctx, patch)
	if err != nil {
		return 0, toDomain("reported patch", err)
	}
	if status != 204 {
		return 0, hubError("reported patch", status, body)
	}
	h.patches[s.id] = append(h.patches[s.id], append(json.RawMessage(nil), patch...))
	return v, nil
}

// hubError is the *domain.HubError of a refused twin request.
func hubError(op string, status int, body []byte) error {
	var e struct {
		Code    int    `json:"errorCode"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &e) // a body of another shape leaves the status alone to tell
	herr := &domain.HubError{Op: op, Status: status, Code: e.Code, Message: e.Message}
	if status == 429 {
		return fmt.Errorf("%w: %w", domain.ErrThrottled, herr)
	}
	return herr
}

// respondMethod answers a direct method (the reply OnMethod carries) with
// IoT Hub's 128 KiB limit.
func (s *session) respondMethod(ctx context.Context, requestID string, status int, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(payload) > domain.MaxMethodPayloadSize {
		return fmt.Errorf("%w: method response of %d bytes", domain.ErrMessageTooLarge, len(payload))
	}
	return toDomain("method response", s.conn.RespondMethod(requestID, status, payload))
}

// Done implements ports.SessionLifecycle.
func (s *session) Done() <-chan struct{} { return s.conn.Done() }

// Err implements ports.SessionLifecycle: nil after Close, else an error
// wrapping domain.ErrNotConnected (and domain.ErrUnauthorized when the
// token expired or the hub refused the credentials).
func (s *session) Err() error { return toDomain("session", s.conn.Err()) }

// RenewToken implements ports.SessionLifecycle: the token is checked as
// at connect and taken in place, as over AMQP; the session then lasts
// until its expiry.
func (s *session) RenewToken(ctx context.Context, token string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return toDomain("renew token", s.conn.RenewToken(token))
}

// Close implements ports.SessionLifecycle.
func (s *session) Close() error {
	s.conn.Close()
	return nil
}
