package amqp1

import (
	"errors"
	"testing"

	"github.com/Azure/go-amqp"
)

// TestSendSettled: on a mixed-mode link SendSettled sends pre-settled
// deliveries, so a peer that never settles keeps granting credit (go-amqp
// stops at its credit of unsettled deliveries); on a link that asked for
// unsettled deliveries it fails with ErrSettleMode.
func TestSendSettled(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	c := dial(t, ts, nil)
	s := newSession(t, c)
	const credit, n = 4, 12
	rcv, err := s.NewReceiver(testCtx(t), "out", &amqp.ReceiverOptions{Credit: credit, SettlementMode: amqp.ReceiverSettleModeFirst.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			if err := l.SendSettled(testCtx(t), &Message{Data: [][]byte{{byte(i)}}}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for i := range n {
		m, err := rcv.Receive(testCtx(t), nil)
		if err != nil {
			t.Fatalf("message %d of %d (never settled by the peer): %v", i, n, err)
		}
		if m.Data[0][0] != byte(i) {
			t.Fatalf("message %d has %v", i, m.Data)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}

	rcv2, err := s.NewReceiver(testCtx(t), "out2", &amqp.ReceiverOptions{RequestedSenderSettleMode: amqp.SenderSettleModeUnsettled.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv2.Close(testCtx(t))
	l2 := recv(t, sink.links)
	if err := l2.SendSettled(testCtx(t), &Message{Data: [][]byte{{1}}}); !errors.Is(err, ErrSettleMode) {
		t.Fatalf("SendSettled on an unsettled-mode link: %v, want ErrSettleMode", err)
	}
}
