package amqp1

import (
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
)

// draining reports whether l's receiveLoop runs.
func draining(l *Link) bool {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	return l.draining
}

// A receiving link runs its delivery loop only while deliveries wait: an
// attached, idle link costs no goroutine, before and after messages.
func TestIdleReceiverLinkRunsNoLoop(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	s := newSession(t, dial(t, ts, nil))
	ctx := testCtx(t)
	snd, err := s.NewSender(ctx, "/devices/d1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	if draining(l) {
		t.Fatal("an attached link with nothing to deliver runs a loop")
	}
	for i := range 3 {
		if err := snd.Send(ctx, amqp.NewMessage([]byte{byte(i)}), nil); err != nil {
			t.Fatalf("Send #%d: %v", i, err)
		}
		recv(t, sink.msgs)
	}
	deadline := time.Now().Add(10 * time.Second)
	for draining(l) { // the loop ends right after settling the last delivery
		if time.Now().After(deadline) {
			t.Fatal("the delivery loop still runs with nothing left to deliver")
		}
		time.Sleep(time.Millisecond)
	}
}
