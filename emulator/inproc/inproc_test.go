package inproc_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator/inproc"
	"github.com/iotc-go/iotc/emulator/internal/sas"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// device records what a connection receives.
type device struct {
	mu      sync.Mutex
	desired [][]byte
	methods chan [3]string
	c2d     chan inproc.C2DMessage
}

func newDevice() *device {
	return &device{methods: make(chan [3]string, 8), c2d: make(chan inproc.C2DMessage, 8)}
}

func (d *device) DesiredPatch(p []byte) {
	d.mu.Lock()
	d.desired = append(d.desired, p)
	d.mu.Unlock()
}
func (d *device) Method(rid, method string, payload []byte) {
	d.methods <- [3]string{rid, method, string(payload)}
}
func (d *device) CloudMessage(m inproc.C2DMessage) { d.c2d <- m }

func newHub(t *testing.T) *inproc.Hub {
	t.Helper()
	h, err := inproc.New(inproc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func token(t *testing.T, key, resource string, expiry time.Time) string {
	t.Helper()
	tok, err := sas.Build(key, resource, expiry, "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func deviceKey(t *testing.T, h *inproc.Hub, id string) string {
	t.Helper()
	k, err := sas.DeriveKey(h.GroupKey(), id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func hubToken(t *testing.T, h *inproc.Hub, id string) string {
	return token(t, deviceKey(t, h, id), sas.HubResource(h.HubHost(), id), time.Now().Add(time.Hour))
}

// register provisions id through DPS and returns a connection of it.
func register(t *testing.T, h *inproc.Hub, id string) {
	t.Helper()
	tok := token(t, deviceKey(t, h, id), sas.DPSResource(h.IDScope(), id), time.Now().Add(time.Hour))
	r, err := h.Register(t.Context(), h.IDScope(), id, tok, []byte(`{"registrationId":"`+id+`","payload":{"modelId":"dtmi:x;1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != "assigned" || r.AssignedHub != h.HubHost() || r.DeviceID != id || r.Substatus != "initialAssignment" {
		t.Fatalf("registration %+v", r)
	}
}

func connect(t *testing.T, h *inproc.Hub, id string, d *device) *inproc.Conn {
	t.Helper()
	c, err := h.Connect(t.Context(), h.HubHost(), id, hubToken(t, h, id), "", d)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestDeviceAndOperator(t *testing.T) {
	h := newHub(t)
	ctx := t.Context()
	register(t, h, "dev")
	d := newDevice()
	c := connect(t, h, "dev", d)
	if dev, err := h.Device("dev"); err != nil || !dev.Connected || dev.Connects != 1 || dev.ModelID != "dtmi:x;1" {
		t.Fatalf("Device = %+v, %v", dev, err)
	}
	if err := c.Telemetry(ctx, inproc.Telemetry{Body: []byte(`{"t":1}`), Component: "c1", MessageID: "m1"}); err != nil {
		t.Fatal(err)
	}
	hist, err := h.TelemetryHistory("dev")
	if err != nil || len(hist) != 1 || hist[0].MessageID != "m1" || hist[0].Component != "c1" || hist[0].DeviceID != "dev" {
		t.Fatalf("history %+v, %v", hist, err)
	}
	if err := c.Telemetry(ctx, inproc.Telemetry{Body: make([]byte, inproc.MaxTelemetryBody+1)}); !errors.Is(err, inproc.ErrTooLarge) {
		t.Fatalf("oversized telemetry = %v, want ErrTooLarge", err)
	}
	status, v, _, err := c.PatchReported(ctx, []byte(`{"serial":"X"}`))
	if err != nil || status != 204 || v != 2 {
		t.Fatalf("PatchReported = %d %d %v", status, v, err)
	}
	if status, _, _, _ := c.PatchReported(ctx, []byte(`[1]`)); status != 400 {
		t.Fatalf("a patch that is not an object answered %d, want 400", status)
	}
	dv, err := h.UpdateProperties(ctx, "dev", "", map[string]any{"fan": true})
	if err != nil || dv != 2 {
		t.Fatalf("UpdateProperties = %d, %v", dv, err)
	}
	status, body, err := c.Twin(ctx)
	if err != nil || status != 200 || !strings.Contains(string(body), `"fan":true`) || !strings.Contains(string(body), `"serial":"X"`) {
		t.Fatalf("Twin = %d %s %v", status, body, err)
	}
	res := make(chan inproc.CommandResult, 1)
	go func() {
		r, err := h.InvokeCommand(ctx, "dev", "c1", "reboot", map[string]int{"delay": 1}, 0)
		if err != nil {
			t.Error(err)
		}
		res <- r
	}()
	m := <-d.methods
	if m[1] != "c1*reboot" || m[2] != `{"delay":1}` {
		t.Fatalf("method request %q", m)
	}
	if err := c.RespondMethod(m[0], 202, []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.Status != 202 || string(r.Payload) != `{"ok":true}` {
		t.Fatalf("command result %+v", r)
	}
	d.mu.Lock()
	n := len(d.desired)
	d.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d desired patches delivered, want 1", n)
	}
	if err := h.Disconnect("dev"); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if !errors.Is(c.Err(), inproc.ErrDisconnected) {
		t.Fatalf("Err after Disconnect = %v", c.Err())
	}
	if _, err := h.InvokeCommand(ctx, "dev", "", "x", nil, 0); !errors.Is(err, inproc.ErrDeviceOffline) {
		t.Fatalf("command to an offline device = %v, want ErrDeviceOffline", err)
	}
}

// TestTokenForTheWrongResourceIsRefused: a token signed with the right
// key but naming another resource opens nothing and renews nothing.
func TestTokenForTheWrongResourceIsRefused(t *testing.T) {
	h := newHub(t)
	register(t, h, "dev")
	register(t, h, "other")
	key := deviceKey(t, h, "dev")
	exp := time.Now().Add(time.Hour)
	for _, res := range []string{
		sas.HubResource(h.HubHost(), "other"),
		sas.HubResource("elsewhere.azure-devices.net", "dev"),
		sas.HubResource(h.HubHost(), "dev") + "/modules/m",
		h.HubHost(),
		sas.DPSResource(h.IDScope(), "dev"),
	} {
		if c, err := h.Connect(t.Context(), h.HubHost(), "dev", token(t, key, res, exp), "", newDevice()); !errors.Is(err, inproc.ErrUnauthorized) {
			if c != nil {
				c.Close()
			}
			t.Errorf("Connect with a token for %q = %v, want ErrUnauthorized", res, err)
		}
	}
	if _, err := h.Register(t.Context(), h.IDScope(), "dev", token(t, key, sas.HubResource(h.HubHost(), "dev"), exp), []byte(`{}`)); !errors.Is(err, inproc.ErrUnauthorized) {
		t.Errorf("Register with a hub token = %v, want ErrUnauthorized", err)
	}
	c := connect(t, h, "dev", newDevice())
	if err := c.RenewToken(token(t, key, sas.HubResource(h.HubHost(), "other"), exp)); !errors.Is(err, inproc.ErrUnauthorized) {
		t.Errorf("RenewToken for another device = %v, want ErrUnauthorized", err)
	}
	if err := c.RenewToken(hubToken(t, h, "dev")); err != nil {
		t.Errorf("RenewToken with a good token = %v", err)
	}
}

// TestOneConnectionPerDevice: a new connection replaces the old one, which
// ends and can no longer send.
func TestOneConnectionPerDevice(t *testing.T) {
	h := newHub(t)
	register(t, h, "dev")
	c1 := connect(t, h, "dev", newDevice())
	c2 := connect(t, h, "dev", newDevice())
	select {
	case <-c1.Done():
	default:
		t.Fatal("the replaced connection is still open")
	}
	if !errors.Is(c1.Err(), inproc.ErrReplaced) {
		t.Fatalf("replaced connection's Err = %v, want ErrReplaced", c1.Err())
	}
	if err := c1.Telemetry(t.Context(), inproc.Telemetry{Body: []byte(`{}`)}); !errors.Is(err, inproc.ErrDisconnected) {
		t.Fatalf("telemetry on the replaced connection = %v, want ErrDisconnected", err)
	}
	if err := c2.Telemetry(t.Context(), inproc.Telemetry{Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if dev, _ := h.Device("dev"); !dev.Connected || dev.Connects != 2 {
		t.Fatalf("Device = %+v", dev)
	}
	if hist, _ := h.TelemetryHistory("dev"); len(hist) != 1 {
		t.Fatalf("%d messages stored, want the new connection's one", len(hist))
	}
}

// TestSettlementOnAnEndedConnectionIsRefused: a message delivered on a
// connection that ended cannot be settled on it; it comes again on the
// next connection, where its settlement counts.
func TestSettlementOnAnEndedConnectionIsRefused(t *testing.T) {
	for _, how := range []string{"dropped", "replaced"} {
		t.Run(how, func(t *testing.T) {
			h := newHub(t)
			ctx := t.Context()
			register(t, h, "dev")
			d1 := newDevice()
			c1 := connect(t, h, "dev", d1)
			out := make(chan inproc.Outcome, 1)
			go func() {
				o, err := h.SendCloudToDevice(ctx, "dev", []byte("x"), map[string]string{"k": "v"})
				if err != nil {
					t.Error(err)
				}
				out <- o
			}()
			m := <-d1.c2d
			if string(m.Body) != "x" || m.Properties["k"] != "v" || m.Redelivered {
				t.Fatalf("delivered %+v", m)
			}
			d2 := newDevice()
			var c2 *inproc.Conn
			if how == "dropped" {
				if err := h.Disconnect("dev"); err != nil {
					t.Fatal(err)
				}
			} else {
				c2 = connect(t, h, "dev", d2)
			}
			if err := c1.SettleC2D(m.MessageID, inproc.Complete); !errors.Is(err, inproc.ErrNotFound) {
				t.Fatalf("settlement on the ended connection = %v, want ErrNotFound", err)
			}
			if n := h.PendingC2D("dev"); n != 1 {
				t.Fatalf("%d messages pending after a refused settlement, want 1", n)
			}
			if c2 == nil {
				c2 = connect(t, h, "dev", d2)
			}
			m2 := <-d2.c2d
			if m2.MessageID != m.MessageID || !m2.Redelivered {
				t.Fatalf("redelivered %+v", m2)
			}
			if err := c2.SettleC2D(m2.MessageID, inproc.Reject); err != nil {
				t.Fatal(err)
			}
			if o := <-out; o != inproc.Reject {
				t.Fatalf("SendCloudToDevice = %v, want the accepted settlement, reject", o)
			}
			if err := c2.SettleC2D(m2.MessageID, inproc.Complete); !errors.Is(err, inproc.ErrNotFound) {
				t.Fatalf("second settlement = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestTokenExpiryEndsTheConnection: the connection ends at its token's
// expiry, as the emulator's MQTT front-end ends it.
func TestTokenExpiryEndsTheConnection(t *testing.T) {
	h := newHub(t)
	register(t, h, "dev")
	tok := token(t, deviceKey(t, h, "dev"), sas.HubResource(h.HubHost(), "dev"), time.Now().Add(time.Second))
	c, err := h.Connect(t.Context(), h.HubHost(), "dev", tok, "", newDevice())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the connection outlived its token")
	}
	if !errors.Is(c.Err(), inproc.ErrUnauthorized) {
		t.Fatalf("Err = %v, want ErrUnauthorized", c.Err())
	}
}

func TestConnectRefusals(t *testing.T) {
	h := newHub(t)
	register(t, h, "dev")
	ctx := t.Context()
	if _, err := h.Connect(ctx, "elsewhere", "dev", hubToken(t, h, "dev"), "", newDevice()); !errors.Is(err, inproc.ErrNotFound) {
		t.Errorf("unknown hub host = %v", err)
	}
	if _, err := h.Connect(ctx, h.HubHost(), "nobody", hubToken(t, h, "nobody"), "", newDevice()); !errors.Is(err, inproc.ErrNotFound) {
		t.Errorf("unknown device = %v", err)
	}
	if err := h.RefuseConnections("dev", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Connect(ctx, h.HubHost(), "dev", hubToken(t, h, "dev"), "", newDevice()); !errors.Is(err, inproc.ErrUnavailable) {
		t.Errorf("refused connect = %v, want ErrUnavailable", err)
	}
	h.ClearFaults("dev")
	c := connect(t, h, "dev", newDevice())
	if err := h.InjectFault("dev", inproc.Fault{Kind: "InvokeAuthError"}); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if !errors.Is(c.Err(), inproc.ErrUnauthorized) {
		t.Errorf("Err after an auth fault = %v, want ErrUnauthorized", c.Err())
	}
	if _, err := h.Register(ctx, "0neWRONG", "dev", "x", nil); !errors.Is(err, inproc.ErrNotFound) {
		t.Errorf("unknown scope = %v", err)
	}
}

// TestNoProtocolNoStore: the in-process front-end pulls in no listener,
// no protocol front-end, no wire grammar and no SQLite.
func TestNoProtocolNoStore(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/iotc-go/iotc/emulator/inproc").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"mochi-mqtt", "sqlite", "/emulator/internal/wire", "/emulator/internal/mqtthub", "/emulator/internal/amqphub",
			"/emulator/internal/amqp1", "/emulator/internal/restapi", "/emulator/internal/dashboard", "/emulator/internal/wslistener", "/emulator/internal/store/", "net/http"} {
			if strings.Contains(dep, bad) {
				t.Errorf("inproc depends on %s", dep)
			}
		}
	}
}
