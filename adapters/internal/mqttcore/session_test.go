package mqttcore

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/iotc-go/iotc/domain"
)

// reference is what telemetryTopic must be equivalent to.
func reference(prefix string, m domain.Message) (string, error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	return prefix + m.PropertyBag().Encode(), nil
}

func TestTelemetryTopicMatchesValidateAndEncode(t *testing.T) {
	t.Parallel()
	s := &Session{telemetryPrefix: TelemetryTopic("dev1", "")}
	bagOf := func(m domain.Message) int { return m.Size() - len(m.Body) }
	root := domain.Message{}
	comp := domain.Message{Component: "thermostat1"}
	msgs := []domain.Message{
		{Body: []byte(`{"a":1}`)},
		{Body: []byte(`{"a":1}`), Component: "thermostat1"},
		{Body: []byte(`{"a":1}`)}, // back to root: the cache must follow
		{Body: []byte("x"), ContentType: "text/plain", ContentEncoding: "ascii"},
		{Body: []byte("x"), ContentType: "text/plain"},
		{Body: []byte(`{}`), MessageID: "m1", CorrelationID: "c1", CreationTime: time.Unix(1, 0)},
		{Body: []byte(`{}`), Properties: map[string]string{"k": "v", "a b": "c&d"}},
		{Body: []byte(`{}`), Properties: map[string]string{"$.mid": "reserved"}},
		{Body: []byte(`{}`), Properties: map[string]string{"": "empty key"}},
		{Body: bytes.Repeat([]byte("a"), domain.MaxTelemetrySize-bagOf(root))},
		{Body: bytes.Repeat([]byte("a"), domain.MaxTelemetrySize-bagOf(root)+1)},
		{Body: bytes.Repeat([]byte("a"), domain.MaxTelemetrySize-bagOf(comp)), Component: "thermostat1"},
		{Body: bytes.Repeat([]byte("a"), domain.MaxTelemetrySize-bagOf(comp)+1), Component: "thermostat1"},
		{Body: bytes.Repeat([]byte("a"), domain.MaxTelemetrySize), Properties: map[string]string{"k": "v"}},
	}
	for round := range 2 { // the second round runs with a warm cache
		for i, m := range msgs {
			got, gotErr := s.telemetryTopic(m)
			want, wantErr := reference(s.telemetryPrefix, m)
			if got != want {
				t.Errorf("round %d message %d: topic %q, want %q", round, i, got, want)
			}
			if (gotErr == nil) != (wantErr == nil) ||
				errors.Is(gotErr, domain.ErrMessageTooLarge) != errors.Is(wantErr, domain.ErrMessageTooLarge) ||
				errors.Is(gotErr, domain.ErrInvalidConfig) != errors.Is(wantErr, domain.ErrInvalidConfig) {
				t.Errorf("round %d message %d: error %v, want %v", round, i, gotErr, wantErr)
			}
		}
	}
}

func FuzzTelemetryTopic(f *testing.F) {
	f.Add([]byte(`{"a":1}`), "", "", "", "", "")
	f.Add([]byte("x"), "text/plain", "ascii", "comp", "m1", "k")
	f.Fuzz(func(t *testing.T, body []byte, ct, ce, component, mid, propKey string) {
		s := &Session{telemetryPrefix: TelemetryTopic("dev1", "")}
		m := domain.Message{Body: body, ContentType: ct, ContentEncoding: ce, Component: component, MessageID: mid}
		if propKey != "" {
			m.Properties = map[string]string{propKey: "v"}
		}
		for range 2 {
			got, gotErr := s.telemetryTopic(m)
			want, wantErr := reference(s.telemetryPrefix, m)
			if got != want || (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("telemetryTopic = %q, %v; want %q, %v", got, gotErr, want, wantErr)
			}
		}
	})
}
