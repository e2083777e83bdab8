package scenarios

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// PortHub is a hub reached through the SDK's transport port, for the
// checks IoT Hub makes on a device's connections. iotctest.Hub is its own
// transport; the emulator is reached through an MQTT adapter.
type PortHub interface {
	// Transport is the port a device uses to reach the hub.
	Transport(t *testing.T) ports.Transport
	// ProvisioningHost, IDScope and GroupKey say where and how a device
	// registers (its key is derived from the group key).
	ProvisioningHost() string
	IDScope() string
	GroupKey() string
	// QueueCommand queues a command (a cloud-to-device message) for a
	// possibly offline device.
	QueueCommand(ctx context.Context, id, component, name string, payload any) error
	// Drop cuts the device's connection.
	Drop(id string) error
}

// portDevice is a device of a PortHub, registered through DPS.
type portDevice struct {
	t     *testing.T
	tr    ports.Transport
	id    string
	key   string
	hub   string // assigned hub host
	scope string
}

func registerDevice(t *testing.T, ctx context.Context, h PortHub, id string) portDevice {
	t.Helper()
	key, err := domain.DeriveDeviceKey(h.GroupKey(), id)
	if err != nil {
		t.Fatal(err)
	}
	d := portDevice{t: t, tr: h.Transport(t), id: id, key: key, scope: h.IDScope()}
	a, err := d.tr.Provision(ctx, ports.ProvisioningRequest{
		Host: h.ProvisioningHost(), IDScope: d.scope, Registration: domain.RegistrationRequest{RegistrationID: id},
		Auth: ports.Auth{SASToken: d.token(domain.DPSResource(d.scope, id), domain.DPSKeyName)},
	})
	if err != nil {
		t.Fatalf("Provision %s: %v", id, err)
	}
	d.hub = a.Hub
	return d
}

func (d portDevice) token(resource, keyName string) string {
	d.t.Helper()
	tok, err := domain.BuildSAS(d.key, resource, time.Now().Add(time.Hour), keyName)
	if err != nil {
		d.t.Fatal(err)
	}
	return tok
}

// connect opens a session with a token for resource (the device's own
// when ""); the session is closed at the end of the test.
func (d portDevice) connect(ctx context.Context, resource string, e ports.EventHandler) (ports.HubSession, error) {
	if resource == "" {
		resource = domain.HubResource(d.hub, d.id)
	}
	s, err := d.tr.Connect(ctx, ports.HubConnection{Host: d.hub, DeviceID: d.id, Auth: ports.Auth{SASToken: d.token(resource, "")}}, e)
	if s != nil {
		d.t.Cleanup(func() { _ = s.Close() })
	}
	return s, err
}

func (d portDevice) mustConnect(ctx context.Context, e ports.EventHandler) ports.HubSession {
	d.t.Helper()
	s, err := d.connect(ctx, "", e)
	if err != nil {
		d.t.Fatalf("Connect %s: %v", d.id, err)
	}
	return s
}

// portEvents hands the cloud-to-device messages a session receives to a channel.
type portEvents struct{ c2d chan portMessage }

type portMessage struct {
	msg    domain.CloudMessage
	settle func(domain.Outcome)
}

func newPortEvents() *portEvents { return &portEvents{c2d: make(chan portMessage, 8)} }

func (e *portEvents) OnDesiredPatch([]byte)                                                  {}
func (e *portEvents) OnMethod(ports.MethodRequest, func(context.Context, int, []byte) error) {}
func (e *portEvents) OnCloudMessage(m domain.CloudMessage, settle func(domain.Outcome)) {
	e.c2d <- portMessage{m, settle}
}

func waitDone(t *testing.T, ctx context.Context, s ports.HubSession, what string) {
	t.Helper()
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatalf("%s: the session did not end", what)
	}
}

// RunChecks runs, through the transport port, the checks IoT Hub makes on
// a device's connections: a SAS token for the wrong resource is refused;
// one session per device (a new connection replaces the old one); a
// settlement made on a dead session is refused (the message comes again).
func RunChecks(t *testing.T, h PortHub) {
	t.Run("TokenForTheWrongResourceIsRefused", func(t *testing.T) {
		ctx := ctxFor(t)
		d := registerDevice(t, ctx, h, "chk-res")
		for _, res := range []string{
			domain.HubResource(d.hub, "chk-other"),
			domain.HubResource(d.hub, d.id) + "/modules/m",
			d.hub,
			domain.DPSResource(d.scope, d.id),
		} {
			if _, err := d.connect(ctx, res, newPortEvents()); !errors.Is(err, domain.ErrUnauthorized) {
				t.Errorf("Connect with a token for %q = %v, want ErrUnauthorized", res, err)
			}
		}
		// The device's own token still opens a session.
		d.mustConnect(ctx, newPortEvents())
	})
	t.Run("OneSessionPerDevice", func(t *testing.T) {
		ctx := ctxFor(t)
		d := registerDevice(t, ctx, h, "chk-one")
		s1 := d.mustConnect(ctx, newPortEvents())
		s2 := d.mustConnect(ctx, newPortEvents())
		waitDone(t, ctx, s1, "the replaced session")
		if !errors.Is(s1.Err(), domain.ErrNotConnected) {
			t.Errorf("replaced session's Err = %v, want ErrNotConnected", s1.Err())
		}
		if err := s1.SendTelemetry(ctx, domain.Message{Body: []byte(`{"old":1}`)}); !errors.Is(err, domain.ErrNotConnected) {
			t.Errorf("telemetry on the replaced session = %v, want ErrNotConnected", err)
		}
		if err := s2.SendTelemetry(ctx, domain.Message{Body: []byte(`{"new":1}`)}); err != nil {
			t.Errorf("telemetry on the new session: %v", err)
		}
	})
	t.Run("SettlementOnADeadSessionIsRefused", func(t *testing.T) {
		ctx := ctxFor(t)
		d := registerDevice(t, ctx, h, "chk-c2d")
		e1 := newPortEvents()
		s1 := d.mustConnect(ctx, e1)
		if err := h.QueueCommand(ctx, d.id, "", "reboot", map[string]int{"delay": 1}); err != nil {
			t.Fatal(err)
		}
		var m portMessage
		select {
		case m = <-e1.c2d:
		case <-ctx.Done():
			t.Fatal("the message never reached the device")
		}
		if err := h.Drop(d.id); err != nil {
			t.Fatal(err)
		}
		waitDone(t, ctx, s1, "the dropped session")
		m.settle(domain.Complete) // on the dead session: the hub must not take it
		e2 := newPortEvents()
		d.mustConnect(ctx, e2)
		select {
		case m2 := <-e2.c2d:
			if m2.msg.MessageID() != m.msg.MessageID() || string(m2.msg.Body) != string(m.msg.Body) {
				t.Errorf("next session got %v %s, want message %q again", m2.msg.Properties, m2.msg.Body, m.msg.MessageID())
			}
			m2.settle(domain.Complete)
		case <-ctx.Done():
			t.Fatal("a message settled on a dead session did not come again: the hub took the settlement")
		}
	})
}
