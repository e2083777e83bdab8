package iotctest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/iotctest"
	"github.com/iotc-go/iotc/ports"
)

// The checks of this file go through the ports, as an adapter's user
// would, so that they hold whatever iotctest is made of: they are the
// emulator's checks (IoT Hub's), which iotctest must make too.

// events records what a session receives.
type events struct {
	c2d chan cloudMessage
}

type cloudMessage struct {
	msg    domain.CloudMessage
	settle func(domain.Outcome)
}

func newEvents() *events { return &events{c2d: make(chan cloudMessage, 8)} }

func (e *events) OnDesiredPatch([]byte)                                                  {}
func (e *events) OnMethod(ports.MethodRequest, func(context.Context, int, []byte) error) {}
func (e *events) OnCloudMessage(m domain.CloudMessage, settle func(domain.Outcome)) {
	e.c2d <- cloudMessage{m, settle}
}

func sasToken(t *testing.T, key, resource string) string {
	t.Helper()
	tok, err := domain.BuildSAS(key, resource, time.Now().Add(time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func deviceKey(t *testing.T, id string) string {
	t.Helper()
	k, err := domain.DeriveDeviceKey(iotctest.GroupKey, id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// provision registers id through the Provisioner port.
func provision(t *testing.T, h *iotctest.Hub, id string) {
	t.Helper()
	_, err := h.Provision(testCtx(t), ports.ProvisioningRequest{
		IDScope: iotctest.IDScope, Registration: domain.RegistrationRequest{RegistrationID: id},
		Auth: ports.Auth{SASToken: sasToken(t, deviceKey(t, id), domain.DPSResource(iotctest.IDScope, id))},
	})
	if err != nil {
		t.Fatalf("Provision %s: %v", id, err)
	}
}

func open(t *testing.T, h *iotctest.Hub, id string, e ports.EventHandler) ports.HubSession {
	t.Helper()
	s, err := h.Connect(testCtx(t), ports.HubConnection{
		Host: iotctest.HubHost, DeviceID: id,
		Auth: ports.Auth{SASToken: sasToken(t, deviceKey(t, id), domain.HubResource(iotctest.HubHost, id))},
	}, e)
	if err != nil {
		t.Fatalf("Connect %s: %v", id, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestTokenForTheWrongResourceIsRefused: a token signed with the device's
// own key but naming another resource (another device, another hub, a
// module, the hub alone, the device's DPS registration) opens no session,
// renews none, and a hub token registers nothing.
func TestTokenForTheWrongResourceIsRefused(t *testing.T) {
	h := iotctest.New()
	provision(t, h, "dev")
	provision(t, h, "other")
	key := deviceKey(t, "dev")
	for _, res := range []string{
		domain.HubResource(iotctest.HubHost, "other"),
		domain.HubResource("elsewhere.azure-devices.net", "dev"),
		domain.HubResource(iotctest.HubHost, "dev") + "/modules/m",
		iotctest.HubHost,
		domain.DPSResource(iotctest.IDScope, "dev"),
	} {
		s, err := h.Connect(testCtx(t), ports.HubConnection{Host: iotctest.HubHost, DeviceID: "dev", Auth: ports.Auth{SASToken: sasToken(t, key, res)}}, newEvents())
		if s != nil {
			_ = s.Close()
		}
		if !errors.Is(err, domain.ErrUnauthorized) {
			t.Errorf("Connect with a token for %q = %v, want ErrUnauthorized", res, err)
		}
	}
	_, err := h.Provision(testCtx(t), ports.ProvisioningRequest{
		IDScope: iotctest.IDScope, Registration: domain.RegistrationRequest{RegistrationID: "dev"},
		Auth: ports.Auth{SASToken: sasToken(t, key, domain.HubResource(iotctest.HubHost, "dev"))},
	})
	if !errors.Is(err, domain.ErrUnauthorized) {
		t.Errorf("Provision with a hub token = %v, want ErrUnauthorized", err)
	}
	s := open(t, h, "dev", newEvents())
	if err := s.RenewToken(testCtx(t), sasToken(t, key, domain.HubResource(iotctest.HubHost, "other"))); !errors.Is(err, domain.ErrUnauthorized) {
		t.Errorf("RenewToken with another device's resource = %v, want ErrUnauthorized", err)
	}
	if err := s.RenewToken(testCtx(t), sasToken(t, key, domain.HubResource(iotctest.HubHost, "dev"))); err != nil {
		t.Errorf("RenewToken with a good token = %v", err)
	}
}

// TestOneSessionPerDevice: a second session of a device replaces the
// first, which ends (Done, Err wrapping ErrNotConnected) and can no longer
// send, read the twin or answer.
func TestOneSessionPerDevice(t *testing.T) {
	h := iotctest.New()
	provision(t, h, "dev")
	ctx := testCtx(t)
	s1 := open(t, h, "dev", newEvents())
	s2 := open(t, h, "dev", newEvents())
	select {
	case <-s1.Done():
	default:
		t.Fatal("the first session is still open after the second connected")
	}
	if !errors.Is(s1.Err(), domain.ErrNotConnected) {
		t.Errorf("first session's Err = %v, want ErrNotConnected", s1.Err())
	}
	if err := s1.SendTelemetry(ctx, domain.Message{Body: []byte(`{"old":1}`)}); !errors.Is(err, domain.ErrNotConnected) {
		t.Errorf("telemetry on the replaced session = %v, want ErrNotConnected", err)
	}
	if _, err := s1.GetTwin(ctx); !errors.Is(err, domain.ErrNotConnected) {
		t.Errorf("twin on the replaced session = %v, want ErrNotConnected", err)
	}
	if err := s2.SendTelemetry(ctx, domain.Message{Body: []byte(`{"new":1}`)}); err != nil {
		t.Fatal(err)
	}
	if got := h.Telemetry("dev"); len(got) != 1 || string(got[0].Body) != `{"new":1}` {
		t.Errorf("hub got %d messages, want the second session's only", len(got))
	}
	if !h.Connected("dev") || h.Connects("dev") != 2 {
		t.Errorf("Connected %v, Connects %d", h.Connected("dev"), h.Connects("dev"))
	}
	// A client connecting again (its reconnect) is the device's session too.
	c := connect(t, h, "dev", nil)
	_ = c
	select {
	case <-s2.Done():
	default:
		t.Fatal("the second session is still open after the client connected")
	}
}

// TestSettlementOnADeadSessionIsRefused: a message delivered on a session
// that then ended (dropped or replaced) and settled there is not settled:
// it stays queued, SendCloudToDevice does not return, and it comes again
// on the next session, whose settlement counts.
func TestSettlementOnADeadSessionIsRefused(t *testing.T) {
	for _, how := range []string{"dropped", "closed", "replaced"} {
		t.Run(how, func(t *testing.T) {
			h := iotctest.New()
			provision(t, h, "dev")
			ctx := testCtx(t)
			e1 := newEvents()
			s1 := open(t, h, "dev", e1)
			out := make(chan iotc.Outcome, 1)
			go func() {
				o, err := h.SendCloudToDevice(ctx, "dev", []byte("x"), nil)
				if err != nil {
					t.Error(err)
				}
				out <- o
			}()
			m := <-e1.c2d
			e2 := newEvents()
			switch how {
			case "dropped":
				if err := h.Drop("dev"); err != nil {
					t.Fatal(err)
				}
			case "closed":
				_ = s1.Close()
			case "replaced":
				open(t, h, "dev", e2)
			}
			m.settle(domain.Complete)
			if n := h.Queued("dev"); n != 1 {
				t.Fatalf("%d messages queued after a settlement on a dead session, want 1", n)
			}
			select {
			case o := <-out:
				t.Fatalf("SendCloudToDevice returned %v for a settlement on a dead session", o)
			default:
			}
			if how != "replaced" {
				open(t, h, "dev", e2)
			}
			var m2 cloudMessage
			select {
			case m2 = <-e2.c2d:
			case <-ctx.Done():
				t.Fatal("the message did not come again on the next session")
			}
			if string(m2.msg.Body) != "x" || m2.msg.MessageID() != m.msg.MessageID() {
				t.Fatalf("redelivered %+v, want the same message", m2.msg)
			}
			m2.settle(domain.Reject)
			select {
			case o := <-out:
				if o != domain.Reject {
					t.Fatalf("SendCloudToDevice = %v, want reject", o)
				}
			case <-ctx.Done():
				t.Fatal("the settlement on the live session was not seen")
			}
			if n := h.Queued("dev"); n != 0 {
				t.Fatalf("%d messages queued after the settlement, want 0", n)
			}
		})
	}
}

// TestServiceLimitsAndTwinRules: what IoT Hub (and the emulator) refuse,
// iotctest refuses: a reported patch with a key IoT Hub forbids or deeper
// than 10 levels (20 here: the emulator takes 11 until its depth fix), a cloud-to-device body over 64 KiB, a device id with a
// character IoT Hub refuses, a command name that breaks a topic.
func TestServiceLimitsAndTwinRules(t *testing.T) {
	h := iotctest.New()
	provision(t, h, "dev")
	ctx := testCtx(t)
	s := open(t, h, "dev", newEvents())
	deep := strings.Repeat(`{"a":`, 20) + "1" + strings.Repeat("}", 20)
	for _, patch := range []string{`{"$bad":1}`, `{"a.b":1}`, deep} {
		_, err := s.PatchReported(ctx, []byte(patch))
		var he *domain.HubError
		if !errors.As(err, &he) || he.Status != 400 {
			t.Errorf("reported patch %s = %v, want a 400 HubError", patch, err)
		}
	}
	if _, err := s.PatchReported(ctx, []byte(`{"ok":{"nested":true}}`)); err != nil {
		t.Errorf("a valid patch: %v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Second) // bounds a wait the old hub would start; not a timing assertion
	defer cancel()
	if _, err := h.SendCloudToDevice(sctx, "dev", make([]byte, 64<<10+1), nil); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a 64 KiB + 1 cloud-to-device body = %v, want a refusal", err)
	}
	_, err := h.Provision(ctx, ports.ProvisioningRequest{
		IDScope: iotctest.IDScope, Registration: domain.RegistrationRequest{RegistrationID: "bad/id"},
		Auth: ports.Auth{SASToken: sasToken(t, deviceKey(t, "bad/id"), domain.DPSResource(iotctest.IDScope, "bad/id"))},
	})
	if err == nil {
		t.Error("a registration id with '/' was provisioned")
	}
	if err := h.QueueCommand("dev", "", "bad/name", nil); err == nil {
		t.Error("a command name with '/' was queued")
	}
}
