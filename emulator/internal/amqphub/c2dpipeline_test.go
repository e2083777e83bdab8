package amqphub

import (
	"testing"

	"github.com/Azure/go-amqp"
)

// TestC2DSeveralUnsettled: the device holds two messages before settling
// either (the Node SDK test does), as IoT Hub allows up to the link credit.
func TestC2DSeveralUnsettled(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	h.b.queueC2D("dev1", C2DMessage{LockToken: "L1", MessageID: "c1", Body: []byte("one")})
	h.b.queueC2D("dev1", C2DMessage{LockToken: "L2", MessageID: "c2", Body: []byte("two")})
	_, s, _ := h.connectDevice(t, "dev1")
	rcv, err := s.NewReceiver(testCtx(t), "/devices/dev1/messages/devicebound", &amqp.ReceiverOptions{Credit: 10})
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
	if m1.Properties.MessageID != "c1" || m2.Properties.MessageID != "c2" {
		t.Fatalf("order %v %v", m1.Properties.MessageID, m2.Properties.MessageID)
	}
	if err := rcv.AcceptMessage(testCtx(t), m2); err != nil {
		t.Fatal(err)
	}
	if err := rcv.AcceptMessage(testCtx(t), m1); err != nil {
		t.Fatal(err)
	}
	got := map[string]C2DOutcome{}
	for range 2 {
		st := recv(t, h.b.settles)
		got[st.lockToken] = st.outcome
	}
	if got["L1"] != C2DComplete || got["L2"] != C2DComplete || h.b.queueLen("dev1") != 0 {
		t.Fatalf("settles %v, queue %d", got, h.b.queueLen("dev1"))
	}
}
