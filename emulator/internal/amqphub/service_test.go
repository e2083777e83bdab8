package amqphub

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/core"
	esas "github.com/iotc-go/iotc/emulator/internal/sas"
)

// serviceToken signs a hub-level token with the named policy.
func serviceToken(t *testing.T, h *harness, policy string) string {
	t.Helper()
	for _, p := range h.m.Policies() {
		if p.Name == policy {
			tok, err := esas.Build(p.PrimaryKey, testHost, time.Now().Add(time.Hour), p.Name)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
	}
	t.Fatalf("no policy %s", policy)
	return ""
}

func TestServiceCBSNeedsServiceConnect(t *testing.T) {
	h := startHarness(t, false)
	c := h.dial(t, nil)
	s := session(t, c)
	cbs := newCBS(t, s)
	// Before any token, the service nodes are refused.
	if _, err := s.NewSender(testCtx(t), "/messages/devicebound", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("sender without a token: %v", err)
	}
	s = session(t, c)
	cbs = newCBS(t, s)
	// registryRead has no ServiceConnect.
	if code, _ := cbs.putToken(t, testHost, serviceToken(t, h, "registryRead")); code != 401 {
		t.Fatalf("registryRead put-token: %d", code)
	}
	// A device key cannot sign for the hub.
	if code, _ := cbs.putToken(t, testHost, sas(t, testHost, time.Now().Add(time.Hour))); code != 401 {
		t.Fatalf("unsigned-by-policy put-token: %d", code)
	}
	if _, err := s.NewSender(testCtx(t), "/messages/devicebound", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("sender after refused tokens: %v", err)
	}
	// A device's token logs the connection in but opens no service node.
	_, ds, _ := h.connectDevice(t, "dev1")
	if _, err := ds.NewSender(testCtx(t), "/messages/devicebound", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("sender with a device token: %v", err)
	}
	if _, err := ds.NewReceiver(testCtx(t), "/messages/serviceBound/feedback", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("feedback receiver with a device token: %v", err)
	}
	s = session(t, c)
	cbs = newCBS(t, s)
	if code, desc := cbs.putToken(t, testHost, serviceToken(t, h, "service")); code != 200 {
		t.Fatalf("service put-token: %d %s", code, desc)
	}
	if _, err := s.NewSender(testCtx(t), "/messages/devicebound", nil); err != nil {
		t.Fatalf("sender with a service token: %v", err)
	}
}

// TestServiceC2DAndFeedback: a message sent on /messages/devicebound
// reaches the device with its id and properties; completing it yields a
// Success record on the feedback link; a message without ack yields none.
func TestServiceC2DAndFeedback(t *testing.T) {
	h := startHarness(t, false)
	c := h.dial(t, nil)
	s := session(t, c)
	if code, desc := newCBS(t, s).putToken(t, testHost, serviceToken(t, h, "iothubowner")); code != 200 {
		t.Fatalf("put-token: %d %s", code, desc)
	}
	snd, err := s.NewSender(testCtx(t), "/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := s.NewReceiver(testCtx(t), "/messages/serviceBound/feedback", &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	send := func(to, id, ack string) error {
		m := &amqp.Message{Properties: &amqp.MessageProperties{To: &to, MessageID: id, CorrelationID: "corr-" + id, UserID: []byte("svc")},
			ApplicationProperties: map[string]any{"color": "green"}, Data: [][]byte{[]byte("hi " + id)}}
		if ack != "" {
			m.ApplicationProperties["iothub-ack"] = ack
		}
		return snd.Send(testCtx(t), m, nil)
	}
	if err := send("/devices/dev1/messages/devicebound", "m-none", ""); err != nil {
		t.Fatal(err)
	}
	if err := send("/devices/dev1/messages/devicebound", "m-full", "full"); err != nil {
		t.Fatal(err)
	}
	// Refusals: no such device, a bad to, a bad ack.
	for _, tc := range []struct{ to, ack string }{
		{"/devices/nobody/messages/devicebound", ""},
		{"/devices/dev1/messages/events", ""},
		{"/devices/dev1/messages/devicebound", "sometimes"},
	} {
		if err := send(tc.to, "bad", tc.ack); err == nil {
			t.Fatalf("send to %s ack %q accepted", tc.to, tc.ack)
		}
	}

	_, ds, _ := h.connectDevice(t, "dev1")
	rcv, err := ds.NewReceiver(testCtx(t), "/devices/dev1/messages/devicebound", &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"m-none", "m-full"} {
		m, err := rcv.Receive(testCtx(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.Properties == nil || m.Properties.MessageID != want || m.ApplicationProperties["color"] != "green" || string(m.GetData()) != "hi "+want ||
			m.Properties.CorrelationID != "corr-"+want || string(m.Properties.UserID) != "svc" {
			t.Fatalf("device got %+v %v %q, want %s", m.Properties, m.ApplicationProperties, m.GetData(), want)
		}
		if err := rcv.AcceptMessage(testCtx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	f, err := fb.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var recs []core.FeedbackRecord
	if err := json.Unmarshal(f.GetData(), &recs); err != nil {
		t.Fatalf("feedback body %q: %v", f.GetData(), err)
	}
	if len(recs) != 1 || recs[0].OriginalMessageID != "m-full" || recs[0].StatusCode != core.FeedbackSuccess || recs[0].DeviceID != "dev1" {
		t.Fatalf("feedback %+v", recs)
	}
	// Released: the batch comes again; accepted: it is gone.
	if err := fb.ReleaseMessage(testCtx(t), f); err != nil {
		t.Fatal(err)
	}
	f, err = fb.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fb.AcceptMessage(testCtx(t), f); err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool { return len(h.m.TakeFeedback(10)) == 0 }) {
		t.Fatal("an accepted feedback batch is still pending")
	}
}

// waitFor polls cond (the feedback settlement runs on the outbox
// goroutine after the disposition); it bounds the wait, it measures nothing.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// TestServiceLinksDetachedAtTokenExpiry: the service's links end with
// amqp:unauthorized-access when its token expires unrenewed.
func TestServiceLinksDetachedAtTokenExpiry(t *testing.T) {
	h := startHarness(t, false)
	c := h.dial(t, nil)
	s := session(t, c)
	p := h.m.Policies()[1] // service
	tok, err := esas.Build(p.PrimaryKey, testHost, time.Now().Add(2*time.Second), p.Name)
	if err != nil {
		t.Fatal(err)
	}
	if code, desc := newCBS(t, s).putToken(t, testHost, tok); code != 200 {
		t.Fatalf("put-token: %d %s", code, desc)
	}
	fb, err := s.NewReceiver(testCtx(t), "/messages/serviceBound/feedback", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fb.Receive(testCtx(t), nil) // returns when the link is detached
	if condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("feedback link after the token expired: %v", err)
	}
}
