package amqp1

import (
	"context"
	"testing"

	"github.com/Azure/go-amqp"
)

// TestSendAsyncPrefersArrivedDisposition: the peer accepts every message
// and then detaches; waiting with the link's own context (ended by then)
// must report each message accepted, not abandoned. Before the fix the
// waiter picked at random between the disposition and the ended context,
// so 16 messages failed this test with probability 1-2^-16.
func TestSendAsyncPrefersArrivedDisposition(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	c := dial(t, ts, nil)
	s := newSession(t, c)
	const n = 16
	rcv, err := s.NewReceiver(testCtx(t), "out", &amqp.ReceiverOptions{Credit: n})
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	waits := make([]func(ctx context.Context) (Outcome, error), 0, n)
	for i := range n {
		w, err := l.SendAsync(testCtx(t), &Message{Data: [][]byte{{byte(i)}}})
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, func(ctx context.Context) (Outcome, error) { return w(ctx) })
	}
	for range n {
		m, err := rcv.Receive(testCtx(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := rcv.AcceptMessage(testCtx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	if err := rcv.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Context().Done():
	case <-testCtx(t).Done():
		t.Fatal("the link did not end")
	}
	for i, w := range waits {
		out, err := w(l.Context())
		if err != nil {
			t.Fatalf("message %d: %v (a settled message treated as abandoned)", i, err)
		}
		if _, ok := out.(*Accepted); !ok {
			t.Fatalf("message %d: outcome %T", i, out)
		}
	}
}
