package core_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/store/memstore"
)

// dropLink records the reason it was dropped.
type dropLink struct {
	link
	mu      sync.Mutex
	dropped error
}

func (l *dropLink) Drop(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropped = err
}

func (l *dropLink) wasDropped() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped != nil
}

// TestModulesGoWithTheirDevice: disabling a device drops its modules'
// connections and refuses them; deleting it deletes its modules, in the
// store too (a restarted core does not find them), and drops them.
func TestModulesGoWithTheirDevice(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	c := core.New(core.Config{IDScope: "0ne1", HubHost: "h", Store: st})
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if _, err := c.PutHubDevice("d1", true, "", core.HubDeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"m1", "m2"} {
		if _, err := c.PutHubModule("d1", m, true, "", core.HubModuleSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.PutHubModule("d1", "m1", true, "", core.HubModuleSpec{}); !errors.Is(err, core.ErrConflict) || !errors.Is(err, core.ErrModuleExists) {
		t.Fatalf("second create: %v", err)
	}
	if _, err := c.PutHubModule("d1", "m3", false, "*", core.HubModuleSpec{}); !errors.Is(err, core.ErrNotFound) || !errors.Is(err, core.ErrModuleNotFound) {
		t.Fatalf("update of a missing module: %v", err)
	}
	if _, err := c.PutHubModule("d1", "m3", true, "", core.HubModuleSpec{CertificateAuthority: true}); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("CA module: %v", err)
	}
	// New keys end a live connection; a change of managedBy does not.
	l0 := &dropLink{}
	if _, _, err := c.Connect(core.ModuleKey("d1", "m2"), core.HubAuth{}, l0, ""); err != nil {
		t.Fatal(err)
	}
	m2, err := c.HubModule("d1", "m2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutHubModule("d1", "m2", false, m2.ETag, core.HubModuleSpec{ManagedBy: "x"}); err != nil || l0.wasDropped() {
		t.Fatalf("managedBy change: %v, dropped %v", err, l0.wasDropped())
	}
	if _, err := c.PutHubModule("d1", "m2", false, m2.ETag, core.HubModuleSpec{}); !errors.Is(err, core.ErrPreconditionFailed) {
		t.Fatalf("stale etag: %v", err)
	}
	if _, err := c.PutHubModule("d1", "m2", false, "*", core.HubModuleSpec{PrimaryKey: core.RandomKey()}); err != nil || !l0.wasDropped() {
		t.Fatalf("key change: %v, dropped %v", err, l0.wasDropped())
	}
	l1 := &dropLink{}
	if _, _, err := c.Connect(core.ModuleKey("d1", "m1"), core.HubAuth{}, l1, ""); err != nil {
		t.Fatal(err)
	}
	// Disabled: the module's connection is dropped and a new one refused.
	if _, err := c.PutHubDevice("d1", false, "*", core.HubDeviceSpec{Enabled: new(false)}); err != nil {
		t.Fatal(err)
	}
	if !l1.wasDropped() {
		t.Fatal("disabling the device left its module connected")
	}
	if _, _, err := c.Connect(core.ModuleKey("d1", "m1"), core.HubAuth{}, &dropLink{}, ""); !errors.Is(err, core.ErrUnauthorized) {
		t.Fatalf("module of a disabled device connected: %v", err)
	}
	if _, err := c.PutHubDevice("d1", false, "*", core.HubDeviceSpec{Enabled: new(true)}); err != nil {
		t.Fatal(err)
	}
	l2 := &dropLink{}
	if _, _, err := c.Connect(core.ModuleKey("d1", "m2"), core.HubAuth{}, l2, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteDevice("d1"); err != nil {
		t.Fatal(err)
	}
	if !l2.wasDropped() {
		t.Fatal("deleting the device left its module connected")
	}
	if _, err := c.HubModule("d1", "m2"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("module of a deleted device: %v", err)
	}
	recs, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Kind == core.KindMeta && len(r.Key) > 7 && r.Key[:7] == "module/" {
			t.Fatalf("record %q left in the store", r.Key)
		}
	}
	// A restarted core has the device gone, and a new d1 has no modules.
	c2 := core.New(core.Config{IDScope: "0ne1", HubHost: "h", Store: st})
	if err := c2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c2.Close)
	if _, err := c2.PutHubDevice("d1", true, "", core.HubDeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	if ms, err := c2.HubModules("d1"); err != nil || len(ms) != 0 {
		t.Fatalf("modules of a new d1: %v %v", ms, err)
	}
}

// TestModuleTwinVersions: a module twin's desired and reported $versions
// grow on their own, apart from its device's, and survive a restart.
func TestModuleTwinVersions(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	c := core.New(core.Config{IDScope: "0ne1", HubHost: "h", Store: st})
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if _, err := c.PutHubDevice("d1", true, "", core.HubDeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutHubModule("d1", "m1", true, "", core.HubModuleSpec{}); err != nil {
		t.Fatal(err)
	}
	s, _, err := c.Connect(core.ModuleKey("d1", "m1"), core.HubAuth{}, link{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.DeviceID() != "d1" || s.ModuleID() != "m1" {
		t.Fatalf("session ids %q %q", s.DeviceID(), s.ModuleID())
	}
	// A message for the device is not the module's: modules have none.
	if _, err := c.SendServiceC2D(ctx, "d1", core.ServiceC2D{MessageID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if m, ok := s.NextC2D(); ok {
		t.Fatalf("the module got cloud-to-device message %+v", m)
	}
	if err := s.SettleC2D("c1", core.Complete); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("the module settled its device's message: %v", err)
	}
	for i := range 3 {
		if _, err := c.UpdateHubModuleTwin(ctx, "d1", "m1", "", nil, map[string]any{"n": i}, false); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if st, _, body := s.PatchReported(ctx, []byte(`{"r":1}`)); st != 204 {
			t.Fatalf("reported: %d %s", st, body)
		}
	}
	tw, err := c.HubModuleTwin("d1", "m1")
	if err != nil || tw.Desired["$version"] != int64(4) && tw.Desired["$version"] != 4.0 || tw.Reported["$version"] != int64(3) && tw.Reported["$version"] != 3.0 {
		t.Fatalf("module twin versions: desired %v reported %v (%v)", tw.Desired["$version"], tw.Reported["$version"], err)
	}
	dt, _ := c.HubTwin("d1")
	if dt.Version != 2 {
		t.Fatalf("device twin version %d, want 2 (untouched)", dt.Version)
	}
	c2 := core.New(core.Config{IDScope: "0ne1", HubHost: "h", Store: st})
	if err := c2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c2.Close)
	tw2, err := c2.HubModuleTwin("d1", "m1")
	if err != nil || tw2.ETag != tw.ETag || tw2.Version != tw.Version {
		t.Fatalf("after restart: %+v %v, want etag %s", tw2, err, tw.ETag)
	}
}

// BenchmarkSessionTelemetry compares a module's telemetry with its
// device's (memory only): the module key's lookup should cost nothing
// that shows. Compare the two sub-benchmarks' ns/op side by side.
func BenchmarkSessionTelemetry(b *testing.B) {
	c := core.New(core.Config{IDScope: "0ne1", HubHost: "h", TelemetryHistory: 100})
	b.Cleanup(c.Close)
	if _, err := c.PutHubDevice("d1", true, "", core.HubDeviceSpec{}); err != nil {
		b.Fatal(err)
	}
	if _, err := c.PutHubModule("d1", "m1", true, "", core.HubModuleSpec{}); err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"t":21.5}`)
	for _, key := range []string{"d1", core.ModuleKey("d1", "m1")} {
		s, _, err := c.Connect(key, core.HubAuth{}, link{}, "")
		if err != nil {
			b.Fatal(err)
		}
		b.Run(map[bool]string{true: "module", false: "device"}[key != "d1"], func(b *testing.B) {
			for b.Loop() {
				if err := s.Telemetry(core.Telemetry{Body: body}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDPSEdgeDevice: a device DPS assigns from an iotEdge enrollment group
// is an edge device as the registry shows it: its generated scope and the
// $edgeAgent and $edgeHub modules.
func TestDPSEdgeDevice(t *testing.T) {
	c := core.New(core.Config{IDScope: "0ne1", HubHost: "h", AutoApprove: true})
	t.Cleanup(c.Close)
	if _, err := c.PutEnrollmentGroup(core.EnrollmentGroup{ID: "edges", Enabled: true, Type: core.GroupTypeIoTEdge}); err != nil {
		t.Fatal(err)
	}
	if r := c.Register(core.DPSAuth{RegistrationID: "gw1", GroupID: "edges"}, []byte(`{"registrationId":"gw1"}`)); r.Status != 202 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	d, err := c.HubDevice("gw1")
	if err != nil || !d.IotEdge || d.DeviceScope != "ms-azure-iot-edge://gw1-"+core.GenerationID(d.Created) {
		t.Fatalf("edge device: %+v %v", d, err)
	}
	ms, err := c.HubModules("gw1")
	if err != nil || len(ms) != 2 || ms[0].ModuleID != core.ModuleEdgeAgent || ms[1].ModuleID != core.ModuleEdgeHub {
		t.Fatalf("edge modules: %+v %v", ms, err)
	}
}
