package core

import (
	"testing"
	"time"
)

func TestEventsConnectionTwinAndCounts(t *testing.T) {
	c := newCoreWithDevice(t, "d")
	all, stopAll := c.WatchEvents("")
	defer stopAll()
	one, stopOne := c.WatchEvents("d")
	defer stopOne()

	l1, l2 := newFakeLink(), newFakeLink()
	if _, err := c.Attach("d", l1, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Attach("d", l2, ""); err != nil {
		t.Fatal(err)
	}
	c.Detach("d", l1) // replaced: no disconnect event
	if err := c.UpdateProperties(t.Context(), "d", "", map[string]any{"p": 1.0}); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := c.PatchReported("d", []byte(`{"p":{"value":1,"ac":200,"av":2}}`)); st != 204 {
		t.Fatalf("PatchReported status %d", st)
	}
	c.Detach("d", l2)
	c.StoreTelemetry(Telemetry{DeviceID: "d", Body: []byte(`{"t":1}`), Received: time.Now()})
	c.StoreTelemetry(Telemetry{DeviceID: "d", Body: []byte(`{"t":2}`), Received: time.Now()})

	want := []EventKind{EventConnected, EventConnected, EventDesired, EventReported, EventDisconnected}
	got := c.RecentEvents("d")
	if len(got) != len(want) {
		t.Fatalf("RecentEvents = %+v, want kinds %v", got, want)
	}
	for i, k := range want {
		if got[i].Kind != k {
			t.Errorf("event %d = %v, want %v", i, got[i].Kind, k)
		}
	}
	if !got[1].Replaced || got[0].Replaced || got[0].Protocol != "fake" {
		t.Errorf("connected events = %+v %+v", got[0], got[1])
	}
	if got[2].Version != 2 || got[3].Version < 1 {
		t.Errorf("versions: desired %d reported %d", got[2].Version, got[3].Version)
	}
	for name, ch := range map[string]<-chan Event{"all": all, "device": one} {
		for i, k := range want {
			select {
			case ev := <-ch:
				if ev.Kind != k || ev.DeviceID != "d" {
					t.Errorf("%s watcher event %d = %+v, want %v", name, i, ev, k)
				}
			default:
				t.Fatalf("%s watcher has %d events, want %d", name, i, len(want))
			}
		}
	}
	if n := c.MessageCount("d"); n != 2 {
		t.Errorf("MessageCount = %d, want 2", n)
	}
	if n := c.MessageCount("nobody"); n != 0 {
		t.Errorf("MessageCount(unknown) = %d", n)
	}
}

func TestEventsRecentIsBounded(t *testing.T) {
	c := newCoreWithDevice(t, "d")
	for range MaxRecentEvents + 10 {
		l := newFakeLink()
		if _, err := c.Attach("d", l, ""); err != nil {
			t.Fatal(err)
		}
		c.Detach("d", l)
	}
	got := c.RecentEvents("d")
	if len(got) != MaxRecentEvents || got[len(got)-1].Kind != EventDisconnected {
		t.Fatalf("kept %d events, last %v", len(got), got[len(got)-1].Kind)
	}
	ch, stop := c.WatchEvents("d")
	stop()
	stop()
	c.Detach("d", nil)
	if _, err := c.Attach("d", newFakeLink(), ""); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		t.Fatalf("stopped watcher got %+v", ev)
	default:
	}
}
