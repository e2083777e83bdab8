package core

import (
	"reflect"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu  sync.Mutex
	evs []FeedEvent
}

func (r *recorder) Observe(ev FeedEvent) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
}

func (r *recorder) kinds() []FeedKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]FeedKind, len(r.evs))
	for i, e := range r.evs {
		out[i] = e.Kind
	}
	return out
}

func TestFeedReportsEveryChangeInOrder(t *testing.T) {
	c := New(Config{IDScope: "0ne1", HubHost: "h"})
	t.Cleanup(c.Close)
	var r, r2 recorder
	remove := c.AddObserver(&r)
	remove2 := c.AddObserver(&r2)

	if _, err := c.CreateDevice("d"); err != nil {
		t.Fatal(err)
	}
	l := newFakeLink()
	if _, err := c.Attach("d", l, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.StoreTelemetry(Telemetry{DeviceID: "d", Component: "c1", Body: []byte(`{"t":1}`),
		Properties: map[string]string{"k": "v"}, Received: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := c.PatchReported("d", []byte(`{"fw":"1.0","c1":{"__t":"c","x":2}}`)); st != 204 {
		t.Fatalf("PatchReported status %d", st)
	}
	if err := c.UpdateProperties(t.Context(), "d", "", map[string]any{"target": 21.5}); err != nil {
		t.Fatal(err)
	}
	c.Detach("d", l)
	name, off := "Dev D", false
	if _, _, err := c.PutDevice("d", DeviceSpec{DisplayName: &name, Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.PutDevice("d", DeviceSpec{DisplayName: &name}); err != nil { // no change: no event
		t.Fatal(err)
	}
	tpl := map[string]any{"@type": []any{"ModelDefinition", "DeviceModel"}, "displayName": "T",
		"capabilityModel": map[string]any{"@id": "dtmi:x:T;1", "@type": "Interface", "contents": []any{}}}
	if _, err := c.PutTemplate("dtmi:x:T;1", tpl); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutTemplate("dtmi:x:T;1", tpl); err != nil {
		t.Fatal(err)
	}
	tplID := "dtmi:x:T;1"
	if _, _, err := c.PutDevice("d", DeviceSpec{Template: &tplID}); err != nil {
		t.Fatal(err)
	}
	empty := ""
	if _, _, err := c.PutDevice("d", DeviceSpec{Template: &empty}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTemplate("dtmi:x:T;1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteDevice("d"); err != nil {
		t.Fatal(err)
	}

	want := []FeedKind{FeedRegistered, FeedConnected, FeedTelemetry, FeedReported, FeedDesired, FeedDisconnected,
		FeedDisabled, FeedDisplayNameChanged, FeedTemplateCreated, FeedTemplateUpdated, FeedTemplateAssigned,
		FeedTemplateAssigned, FeedTemplateDeleted, FeedDeleted}
	if got := r.kinds(); !reflect.DeepEqual(got, want) {
		t.Fatalf("observed %v\nwant     %v", got, want)
	}
	if got := r2.kinds(); !reflect.DeepEqual(got, want) {
		t.Fatalf("second observer saw %v", got)
	}
	tel := r.evs[2]
	if tel.DeviceID != "d" || string(tel.Telemetry.Body) != `{"t":1}` || tel.Telemetry.Component != "c1" ||
		tel.Telemetry.Properties["k"] != "v" || tel.Telemetry.Seq != 1 || tel.Time.IsZero() {
		t.Errorf("telemetry event = %+v", tel)
	}
	rep := r.evs[3]
	if rep.Patch["fw"] != "1.0" || rep.Version < 1 {
		t.Errorf("reported event = %+v", rep)
	}
	if c1, _ := rep.Patch["c1"].(map[string]any); c1["x"] != 2.0 || c1["__t"] != "c" {
		t.Errorf("reported component section = %+v", rep.Patch["c1"])
	}
	if des := r.evs[4]; des.Patch["target"] != 21.5 || des.Version < 1 {
		t.Errorf("desired event = %+v", des)
	}
	if ev := r.evs[8]; ev.TemplateID != "dtmi:x:T;1" || ev.DeviceID != "" {
		t.Errorf("template event = %+v", ev)
	}
	// Each observer owns its copy.
	r.evs[3].Patch["fw"] = "changed"
	if r2.evs[3].Patch["fw"] != "1.0" {
		t.Error("observers share the patch map")
	}

	remove()
	remove()
	remove2()
	if _, err := c.CreateDevice("e"); err != nil {
		t.Fatal(err)
	}
	if n := len(r.kinds()); n != len(want) {
		t.Errorf("removed observer got %d events, want %d", n, len(want))
	}
}

func TestFeedHubDeviceLifecycle(t *testing.T) {
	c := New(Config{IDScope: "0ne1", HubHost: "h"})
	t.Cleanup(c.Close)
	var r recorder
	defer c.AddObserver(&r)()
	off, on := false, true
	if _, err := c.PutHubDevice("h1", true, "", HubDeviceSpec{Enabled: &on}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutHubDevice("h1", false, "*", HubDeviceSpec{Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateHubTwin(t.Context(), "h1", "", nil, map[string]any{"p": 1.0}, false); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteHubDevice("h1", "*"); err != nil {
		t.Fatal(err)
	}
	want := []FeedKind{FeedRegistered, FeedDisabled, FeedDesired, FeedDeleted}
	if got := r.kinds(); !reflect.DeepEqual(got, want) {
		t.Fatalf("observed %v, want %v", got, want)
	}
}

func TestFeedKindString(t *testing.T) {
	if FeedTelemetry.String() != "telemetry" || FeedTemplateDeleted.String() != "templateDeleted" || FeedKind(99).String() != "unknown" {
		t.Error("FeedKind names")
	}
}

func TestFeedProvisionedOnce(t *testing.T) {
	c := New(Config{IDScope: "0ne1", HubHost: "h", AutoApprove: true, Groups: []EnrollmentGroup{{ID: "g", Enabled: true, PrimaryKey: RandomKey(), SecondaryKey: RandomKey()}}})
	t.Cleanup(c.Close)
	var r recorder
	defer c.AddObserver(&r)()
	for range 2 {
		if res := c.Register(DPSAuth{RegistrationID: "new", GroupID: "g"}, []byte(`{"registrationId":"new"}`)); res.Status >= 300 {
			t.Fatalf("register: %d %s", res.Status, res.Body)
		}
	}
	if _, err := c.CreateDevice("d"); err != nil {
		t.Fatal(err)
	}
	if res := c.Register(DPSAuth{RegistrationID: "d"}, []byte(`{"registrationId":"d"}`)); res.Status >= 300 {
		t.Fatalf("register: %d %s", res.Status, res.Body)
	}
	want := []FeedKind{FeedRegistered, FeedProvisioned, FeedRegistered, FeedProvisioned}
	if got := r.kinds(); !reflect.DeepEqual(got, want) {
		t.Fatalf("observed %v, want %v", got, want)
	}
}
