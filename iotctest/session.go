package iotctest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// session is one open device connection; it implements ports.HubSession.
// Events reach the device in order on a goroutine the session runs only
// while it has some to deliver.
type session struct {
	hub    *Hub
	dev    *device
	events ports.EventHandler

	mu      sync.Mutex
	queue   []func(ports.EventHandler)
	running bool
	ended   bool
	err     error
	done    chan struct{}
	wg      sync.WaitGroup
}

func newSession(h *Hub, d *device, e ports.EventHandler) *session {
	return &session{hub: h, dev: d, events: e, done: make(chan struct{})}
}

func (s *session) deliver(f func(ports.EventHandler)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.queue = append(s.queue, f)
	if !s.running {
		s.running = true
		s.wg.Add(1)
		go s.drain()
	}
}

func (s *session) drain() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if len(s.queue) == 0 || s.ended {
			s.queue, s.running = nil, false
			s.mu.Unlock()
			return
		}
		f := s.queue[0]
		s.queue = s.queue[1:]
		s.mu.Unlock()
		f(s.events)
	}
}

// end closes the session with err (nil for Close) and forgets it on the
// device.
func (s *session) end(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.err = true, err
	close(s.done)
	s.mu.Unlock()
	h := s.hub
	h.mu.Lock()
	if s.dev.sess == s {
		s.dev.sess = nil
	}
	h.changedLocked()
	h.mu.Unlock()
}

func (s *session) alive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		if s.err != nil {
			return s.err
		}
		return fmt.Errorf("%w: session closed", domain.ErrNotConnected)
	}
	return nil
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
	if err := s.alive(); err != nil {
		return err
	}
	t := Telemetry{Component: m.Component, Body: append(json.RawMessage(nil), m.Body...), MessageID: m.MessageID, Received: time.Now(), Properties: map[string]string{}}
	for k, v := range m.Properties {
		t.Properties[k] = v
	}
	h := s.hub
	h.mu.Lock()
	s.dev.telemetry = append(s.dev.telemetry, t)
	h.changedLocked()
	h.mu.Unlock()
	return nil
}

// GetTwin implements ports.TwinClient.
func (s *session) GetTwin(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.alive(); err != nil {
		return nil, err
	}
	h := s.hub
	h.mu.Lock()
	doc := map[string]any{"desired": s.dev.desired.doc(true), "reported": s.dev.reported.doc(true)}
	h.mu.Unlock()
	return json.Marshal(doc)
}

// PatchReported implements ports.TwinClient with IoT Hub's 32 KiB limit;
// a patch that is not a JSON object gives a 400 *domain.HubError.
func (s *session) PatchReported(ctx context.Context, patch []byte) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(patch) > domain.MaxTwinSectionSize {
		return 0, fmt.Errorf("%w: reported patch of %d bytes", domain.ErrMessageTooLarge, len(patch))
	}
	if err := s.alive(); err != nil {
		return 0, err
	}
	p, err := decodeObject(patch)
	if err != nil {
		return 0, &domain.HubError{Op: "reported patch", Status: 400, Message: err.Error()}
	}
	h := s.hub
	h.mu.Lock()
	v := s.dev.reported.apply(p, time.Now())
	s.dev.patches = append(s.dev.patches, append(json.RawMessage(nil), patch...))
	h.changedLocked()
	h.mu.Unlock()
	return v, nil
}

// RespondMethod implements ports.MethodResponder.
func (s *session) RespondMethod(ctx context.Context, requestID string, status int, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(payload) > domain.MaxMethodPayloadSize {
		return fmt.Errorf("%w: method response of %d bytes", domain.ErrMessageTooLarge, len(payload))
	}
	if err := s.alive(); err != nil {
		return err
	}
	h := s.hub
	h.mu.Lock()
	ch := s.dev.methods[requestID]
	h.mu.Unlock()
	if ch != nil {
		select {
		case ch <- CommandResult{Status: status, Payload: append(json.RawMessage(nil), payload...)}:
		default:
		}
	}
	return nil
}

// Done implements ports.SessionLifecycle.
func (s *session) Done() <-chan struct{} { return s.done }

// Err implements ports.SessionLifecycle.
func (s *session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// RenewToken implements ports.SessionLifecycle: the token is checked and
// taken in place, as over AMQP.
func (s *session) RenewToken(ctx context.Context, token string) error {
	if err := s.alive(); err != nil {
		return err
	}
	return verify(token, domain.HubResource(HubHost, s.dev.id), s.dev.id)
}

// Close implements ports.SessionLifecycle.
func (s *session) Close() error {
	s.end(nil)
	s.wg.Wait()
	return nil
}
