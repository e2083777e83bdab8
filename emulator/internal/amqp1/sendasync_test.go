package amqp1

import (
	"context"
	"testing"

	"github.com/Azure/go-amqp"
)

// TestSendAsyncKeepsSeveralDeliveriesUnsettled sends two messages on one
// unsettled link before the peer settles either, and gets each outcome.
func TestSendAsyncKeepsSeveralDeliveriesUnsettled(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	c := dial(t, ts, nil)
	s := newSession(t, c)
	rcv, err := s.NewReceiver(testCtx(t), "out", &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	w1, err := l.SendAsync(testCtx(t), &Message{Data: [][]byte{[]byte("one")}})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := l.SendAsync(testCtx(t), &Message{Data: [][]byte{[]byte("two")}})
	if err != nil {
		t.Fatal(err)
	}
	m1, err := rcv.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := rcv.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(m1.GetData()) != "one" || string(m2.GetData()) != "two" {
		t.Fatalf("order: %q %q", m1.GetData(), m2.GetData())
	}
	if err := rcv.ReleaseMessage(testCtx(t), m2); err != nil {
		t.Fatal(err)
	}
	if err := rcv.AcceptMessage(testCtx(t), m1); err != nil {
		t.Fatal(err)
	}
	if out, err := w2(testCtx(t)); err != nil {
		t.Fatal(err)
	} else if _, ok := out.(*Released); !ok {
		t.Fatalf("second outcome %T", out)
	}
	out, err := w1(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := out.(*Accepted); !ok {
		t.Fatalf("first outcome %T", out)
	}
	if again, err := w1(testCtx(t)); again != out || err != nil {
		t.Fatalf("second wait: %v %v", again, err)
	}
}

// TestSendAsyncOutcomeWinsOverAnEndedContext: once the peer's disposition
// has arrived, waiting with a context that has ended meanwhile (the link
// closing right after the device settled) still reports the outcome. A
// random choice between the two would count settled messages as
// abandoned about half the time; 40 deliveries make that certain to show.
func TestSendAsyncOutcomeWinsOverAnEndedContext(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	c := dial(t, ts, nil)
	s := newSession(t, c)
	rcv, err := s.NewReceiver(testCtx(t), "out", &amqp.ReceiverOptions{Credit: 100})
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	const n = 40
	var waits []func(context.Context) (Outcome, error)
	for range n + 1 {
		w, err := l.SendAsync(testCtx(t), &Message{Data: [][]byte{[]byte("m")}})
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, w)
	}
	for range n + 1 {
		m, err := rcv.Receive(testCtx(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := rcv.AcceptMessage(testCtx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	// The last disposition was processed, so all the earlier ones were.
	if _, err := waits[n](testCtx(t)); err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for i, w := range waits[:n] {
		out, err := w(ended)
		if _, ok := out.(*Accepted); !ok || err != nil {
			t.Fatalf("delivery %d: %v, %v after its disposition arrived, want Accepted", i, out, err)
		}
	}
}
