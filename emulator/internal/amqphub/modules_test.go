package amqphub

import (
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// TestModuleLinks: a module's token (audience .../devices/{d}/modules/{m},
// signed with the module's key) opens its telemetry link; its telemetry
// is stored with the module id; the device's token does not open the
// module's links nor the module's the device's; a module has no
// cloud-to-device link.
func TestModuleLinks(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	if _, err := h.m.PutHubModule("dev1", "m1", true, "", core.HubModuleSpec{PrimaryKey: testKey}); err != nil {
		t.Fatal(err)
	}
	c := h.dial(t, nil)
	s := session(t, c)
	cbs := newCBS(t, s)
	modAud := testHost + "/devices/dev1/modules/m1"
	if code, desc := cbs.putToken(t, testHost+"/devices/dev1/modules/m9", sas(t, testHost+"/devices/dev1/modules/m9", time.Now().Add(time.Hour))); code != 404 {
		t.Fatalf("token of an unknown module: %d %s", code, desc)
	}
	if code, desc := cbs.putToken(t, modAud, hubToken(t, "dev1", time.Hour)); code != 401 {
		t.Fatalf("the device's token for the module's audience: %d %s", code, desc)
	}
	if code, desc := cbs.putToken(t, modAud, sas(t, modAud, time.Now().Add(time.Hour))); code != 200 {
		t.Fatalf("module token: %d %s", code, desc)
	}
	if _, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("the module's token opened the device's link: %v", err)
	}
	if _, err := s.NewReceiver(testCtx(t), "/devices/dev1/modules/m1/messages/devicebound", nil); condition(err) != amqp.ErrCondNotAllowed {
		t.Fatalf("module C2D link: %v", err)
	}
	snd, err := s.NewSender(testCtx(t), "/devices/dev1/modules/m1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(testCtx(t), &amqp.Message{Data: [][]byte{[]byte(`{"x":1}`)}, Properties: &amqp.MessageProperties{MessageID: "mm"}}, nil); err != nil {
		t.Fatal(err)
	}
	hist, err := h.m.TelemetryHistory("dev1", core.HistoryFilter{})
	if err != nil || len(hist) != 1 || hist[0].ModuleID != "m1" || hist[0].DeviceID != "dev1" || hist[0].SystemProperties()[core.PropModuleID] != "m1" {
		t.Fatalf("module telemetry: %+v", hist)
	}
	if m, err := h.m.HubModule("dev1", "m1"); err != nil || !m.Connected {
		t.Fatalf("module not shown connected: %+v %v", m, err)
	}
}
