package amqphub

import (
	"errors"
	"testing"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
)

func TestLinkAddressOnAnotherHostIsRefused(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	_, s, _ := h.connectDevice(t, "dev1")
	_, err := s.NewSender(testCtx(t), "amqps://evil.example/devices/dev1/messages/events", nil)
	if got := condition(err); got != amqp.ErrCondNotFound {
		t.Fatalf("address on evil.example: %v (condition %q), want amqp:not-found", err, got)
	}
	for _, addr := range []string{"amqps://" + testHost + "/devices/dev1/messages/events", "amqps://" + testHost + ":5671/devices/dev1/messages/events"} {
		snd, err := s.NewSender(testCtx(t), addr, nil)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		_ = snd.Close(testCtx(t))
	}
}

func TestOnlyCBSBeforeAToken(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	c := h.dial(t, &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()})
	s := session(t, c)
	// A DPS or hub link before any token is refused by the engine, before
	// the application layer sees it.
	_, err := s.NewReceiver(testCtx(t), "/devices/dev1/messages/devicebound", nil)
	if got := condition(err); got != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("c2d link before a token: %v, want unauthorized-access", err)
	}
	// The $cbs exchange works and logs the connection in: then the limits
	// of a logged-in connection apply (more links than before login).
	cbs := newCBS(t, s)
	if st, _ := cbs.putToken(t, testHost+"/devices/dev1", hubToken(t, "dev1", 3600e9)); st != 200 {
		t.Fatalf("put-token %d", st)
	}
	for i := range amqp1.DefaultLoginMaxLinks + 2 {
		snd, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", &amqp.SenderOptions{Name: "t" + string(rune('a'+i))})
		if err != nil {
			t.Fatalf("link %d after login: %v", i, err)
		}
		defer snd.Close(testCtx(t))
	}
}

func TestCBSFloodBeforeLoginClosesTheConnection(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	c := h.dial(t, &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()})
	s := session(t, c)
	var err error
	for i := range amqp1.DefaultLoginMaxLinks + 2 {
		if _, err = s.NewSender(testCtx(t), "$cbs", &amqp.SenderOptions{Name: "cbs" + string(rune('a'+i))}); err != nil {
			break
		}
	}
	var ce *amqp.ConnError
	if !errors.As(err, &ce) || ce.RemoteErr == nil || ce.RemoteErr.Condition != amqp.ErrCondResourceLimitExceeded {
		t.Fatalf("after %d $cbs links: %v, want the connection closed with resource-limit-exceeded", amqp1.DefaultLoginMaxLinks+2, err)
	}
	if err := recv(t, h.errs); !errors.Is(err, amqp1.ErrTooManyLinks) {
		t.Errorf("ServeConn = %v, want ErrTooManyLinks", err)
	}
}
