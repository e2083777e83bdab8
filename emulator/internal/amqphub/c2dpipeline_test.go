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
	h.queueC2D(t, "dev1", "one", nil)
	h.queueC2D(t, "dev1", "two", nil)
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
	if string(m1.GetData()) != "one" || string(m2.GetData()) != "two" {
		t.Fatalf("order %q %q", m1.GetData(), m2.GetData())
	}
	if err := rcv.AcceptMessage(testCtx(t), m2); err != nil {
		t.Fatal(err)
	}
	if err := rcv.AcceptMessage(testCtx(t), m1); err != nil {
		t.Fatal(err)
	}
	// Both completed: none left, none dead-lettered.
	h.waitPending(t, "dev1", 0)
	if dl := h.m.DeadLetters("dev1"); len(dl) != 0 {
		t.Fatalf("dead letters %v", dl)
	}
}
