package amqp1

import (
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
