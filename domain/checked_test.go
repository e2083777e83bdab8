package domain

import (
	"errors"
	"testing"
)

// TestCheckedValidatesOnce: Checked applies the rules and marks the
// message; Validate and EncodeTopic on a checked message do not apply them
// again (the transport's check of what the client already checked), while
// an unchecked message is still checked by both.
func TestCheckedValidatesOnce(t *testing.T) {
	if _, err := (Message{Body: make([]byte, MaxTelemetrySize+1)}).Checked(); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("Checked(oversized) = %v, want ErrMessageTooLarge", err)
	}
	if _, err := (Message{Properties: map[string]string{"$.mid": "x"}}).Checked(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Checked(reserved key) = %v, want ErrInvalidConfig", err)
	}
	m, err := Message{Body: []byte(`{}`)}.Checked()
	if err != nil {
		t.Fatal(err)
	}
	// Changed after the check, against Checked's doc: the rules do not run
	// again, which shows they ran once.
	m.Properties = map[string]string{"$.bad": "x"}
	if err := m.Validate(); err != nil {
		t.Errorf("Validate on a checked message = %v, want nil (not checked again)", err)
	}
	if _, err := m.EncodeTopic("devices/d/messages/events/"); err != nil {
		t.Errorf("EncodeTopic on a checked message = %v, want nil (not checked again)", err)
	}
	u := Message{Body: []byte(`{}`), Properties: map[string]string{"$.bad": "x"}}
	if err := u.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate on an unchecked message = %v, want ErrInvalidConfig", err)
	}
	if _, err := u.EncodeTopic("devices/d/messages/events/"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("EncodeTopic on an unchecked message = %v, want ErrInvalidConfig", err)
	}
}
