package amqpcore

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/domain"
)

func TestConditionError(t *testing.T) {
	for cond, want := range map[goamqp.ErrCond]error{
		goamqp.ErrCondUnauthorizedAccess:    domain.ErrUnauthorized,
		goamqp.ErrCondNotFound:              domain.ErrDeviceNotFound,
		goamqp.ErrCondResourceLimitExceeded: domain.ErrMessageTooLarge,
		goamqp.ErrCondMessageSizeExceeded:   domain.ErrMessageTooLarge,
		condServerBusy:                      domain.ErrThrottled,
		condThrottled:                       domain.ErrThrottled,
		condTimeout:                         domain.ErrTimeout,
	} {
		err := conditionError("op", &goamqp.Error{Condition: cond, Description: "why"})
		if !errors.Is(err, want) || !strings.Contains(err.Error(), string(cond)) {
			t.Errorf("%s: %v, want it to match %v and name the condition", cond, err, want)
		}
	}
	var he *domain.HubError
	if err := conditionError("op", &goamqp.Error{Condition: goamqp.ErrCondInternalError}); !errors.As(err, &he) || he.Status != 500 || !domain.IsRetryable(err) {
		t.Errorf("internal error: %v, want a retryable 500", err)
	}
	long := conditionError("op", &goamqp.Error{Condition: goamqp.ErrCondInvalidField, Description: strings.Repeat("x", 5000)})
	if len(long.Error()) > 2*maxDescription {
		t.Errorf("description not shortened: %d bytes", len(long.Error()))
	}
}

func TestDeadError(t *testing.T) {
	remote := &goamqp.LinkError{RemoteErr: &goamqp.Error{Condition: goamqp.ErrCondUnauthorizedAccess, Description: "SAS token expired"}}
	for _, tc := range []struct {
		name    string
		err     error
		expired bool
		want    []error
	}{
		{"expired token", remote, true, []error{domain.ErrNotConnected, domain.ErrUnauthorized, domain.ErrTokenExpired}},
		{"refused", remote, false, []error{domain.ErrNotConnected, domain.ErrUnauthorized}},
		{"forced", &goamqp.ConnError{RemoteErr: &goamqp.Error{Condition: goamqp.ErrCondConnectionForced}}, false, []error{domain.ErrNotConnected}},
		{"local", fmt.Errorf("read tcp 10.0.0.1:1234->10.0.0.2:5671: %w", errors.New("connection reset by peer")), false, []error{domain.ErrNotConnected}},
	} {
		err := deadError(tc.err, tc.expired)
		for _, w := range tc.want {
			if !errors.Is(err, w) {
				t.Errorf("%s: %v does not match %v", tc.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "10.0.0") {
			t.Errorf("%s: %q names an address", tc.name, err)
		}
		var le *goamqp.LinkError
		var ce *goamqp.ConnError
		var ae *goamqp.Error
		if errors.As(err, &le) || errors.As(err, &ce) || errors.As(err, &ae) {
			t.Errorf("%s: a go-amqp type leaks out of %v", tc.name, err)
		}
	}
	if !domain.IsRetryable(deadError(&goamqp.ConnError{}, false)) {
		t.Error("a lost connection is not retryable")
	}
}

func TestRefusal(t *testing.T) {
	ans := refusal(&goamqp.Error{Condition: condServerBusy, Description: `{"errorCode":429001}`, Info: map[string]any{"status-code": int32(429), "retry-after": "3"}})
	if ans.status != 429 || !ans.hasRetry || ans.retryAfter != 3*time.Second {
		t.Errorf("throttled refusal = %+v", ans)
	}
	if ans := refusal(&goamqp.Error{Condition: goamqp.ErrCondUnauthorizedAccess}); ans.status != 401 || ans.hasRetry {
		t.Errorf("unauthorized refusal without info = %+v", ans)
	}
	if err := dpsError("register", dpsAnswer{status: 401, body: []byte(`{"errorCode":401002,"message":"bad"}`)}); !errors.Is(err, domain.ErrUnauthorized) || domain.IsRetryable(err) {
		t.Errorf("dps 401 = %v", err)
	}
	var he *domain.HubError
	if err := dpsError("register", dpsAnswer{status: 400, body: []byte("not json")}); !errors.As(err, &he) || he.Status != 400 {
		t.Errorf("dps 400 = %v", err)
	}
}

func TestValues(t *testing.T) {
	u := newUUID()
	back, ok := parseUUID(u.String())
	if !ok || back != u {
		t.Fatalf("uuid round trip %s", u)
	}
	for _, bad := range []string{"", "1", "a/b", strings.Repeat("z", 36), "00000000-0000-0000-0000-00000000000g"} {
		if _, ok := parseUUID(bad); ok {
			t.Errorf("parseUUID(%q) accepted", bad)
		}
	}
	for _, tc := range []struct {
		v    any
		want string
	}{{"s", "s"}, {goamqp.Symbol("y"), "y"}, {int32(7), "7"}, {uint64(9), "9"}, {true, "true"}, {[]byte{1, 2}, "0102"}} {
		if got, ok := textOf(tc.v); !ok || got != tc.want {
			t.Errorf("textOf(%#v) = %q, %v", tc.v, got, ok)
		}
	}
	if _, ok := textOf(map[string]any{}); ok {
		t.Error("textOf(map) ok")
	}
	m := telemetryMessage(domain.Message{Body: []byte("{}"), Component: "c1", MessageID: "m", CorrelationID: "c", ContentType: "text/plain",
		CreationTime: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Properties: map[string]string{"k": "v"}})
	if *m.Properties.ContentType != "text/plain" || *m.Properties.ContentEncoding != domain.DefaultContentEncoding ||
		m.Properties.MessageID != "m" || m.Properties.CorrelationID != "c" || m.Annotations[goamqp.Symbol(annComponent)] != "c1" ||
		m.ApplicationProperties["k"] != "v" || m.ApplicationProperties[domain.PropCreationTimeUTC] != "2025-01-02T03:04:05Z" {
		t.Errorf("telemetry message %+v %+v", m, m.Properties)
	}
	if *telemetryMessage(domain.Message{}).Properties.ContentType != domain.DefaultContentType {
		t.Error("default content type not applied")
	}
}

// A recycled telemetry buffer carries nothing of the message sent before.
func TestTelemetryBufReuse(t *testing.T) {
	b := new(telemetryBuf)
	full := b.build(domain.Message{Body: []byte(`{"a":1}`), Component: "c1", MessageID: "m1", CorrelationID: "c1", ContentType: "text/plain",
		ContentEncoding: "utf-16", CreationTime: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Properties: map[string]string{"k": "v"}})
	if full.Properties.MessageID != "m1" || full.Annotations == nil || full.ApplicationProperties["k"] != "v" {
		t.Fatalf("first message %+v %+v", full, full.Properties)
	}
	b.reset()
	m := b.build(domain.Message{Body: []byte(`{}`)})
	p := m.Properties
	if m.Annotations != nil || m.ApplicationProperties != nil || p.MessageID != nil || p.CorrelationID != nil ||
		*p.ContentType != domain.DefaultContentType || *p.ContentEncoding != domain.DefaultContentEncoding ||
		len(m.Data) != 1 || string(m.Data[0]) != `{}` {
		t.Errorf("reused buffer kept the previous message: %+v %+v", m, p)
	}
	bin, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back goamqp.Message
	if err := back.UnmarshalBinary(bin); err != nil || string(back.GetData()) != `{}` || back.Properties.MessageID != nil {
		t.Errorf("decoded %+v %v", back, err)
	}
}
