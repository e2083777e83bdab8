package core_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/store/memstore"
)

// link is a connected device that subscribes to everything.
type link struct{}

func (link) Protocol() string                                                  { return "test" }
func (link) Subscribed(core.Feature) bool                                      { return true }
func (link) PushDesired([]byte, int64) error                                   { return nil }
func (link) InvokeMethod(context.Context, string, []byte) (int, []byte, error) { return 200, nil, nil }
func (link) NotifyC2D()                                                        {}
func (link) Drop(error)                                                        {}

// TestServiceStateIsStored: policies, tags, the registry generation,
// queued service messages with their ack and pending feedback records are
// committed through the store and found again by a restarted core.
func TestServiceStateIsStored(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	c := core.New(core.Config{IDScope: "0ne1", HubHost: "h", Store: st})
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	policies := c.Policies()
	d, err := c.PutHubDevice("d1", true, "", core.HubDeviceSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if d, err = c.PutHubDevice("d1", false, d.ETag, core.HubDeviceSpec{StatusReason: "x"}); err != nil {
		t.Fatal(err)
	}
	tw, err := c.UpdateHubTwin(ctx, "d1", "*", map[string]any{"site": "lab"}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []core.ServiceC2D{{MessageID: "pos", Ack: "positive"}, {MessageID: "neg", Ack: "negative"}, {MessageID: "full-rej", Ack: "full"}, {MessageID: "none"}, {MessageID: "kept", Ack: "full"}} {
		if _, err := c.SendServiceC2D(ctx, "d1", m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SendServiceC2D(ctx, "d1", core.ServiceC2D{MessageID: "pos"}); !errors.Is(err, core.ErrConflict) {
		t.Fatalf("a second message with a queued id: %v", err)
	}
	s, _, err := c.Connect("d1", core.HubAuth{}, link{}, "")
	if err != nil {
		t.Fatal(err)
	}
	// pos completed: Success; neg completed: none; full-rej rejected:
	// Rejected; none rejected: none; kept stays queued.
	for _, o := range []core.Outcome{core.Complete, core.Complete, core.Reject, core.Reject} {
		m, ok := s.NextC2D()
		if !ok {
			t.Fatal("no message")
		}
		if err := s.SettleC2D(m.MessageID, o); err != nil {
			t.Fatal(err)
		}
	}
	// A job that ran and one scheduled for later.
	if _, err := c.ScheduleJob(ctx, core.Job{ID: "now", Type: core.JobTypeTwin, DeviceIDs: []string{"d1"}, Twin: &core.JobTwin{Tags: map[string]any{"job": "done"}}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if j, _ := c.Job("now"); j.Status == core.JobCompleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job did not complete")
		}
	}
	if _, err := c.ScheduleJob(ctx, core.Job{ID: "later", Type: core.JobTypeMethod, DeviceIDs: []string{"d1"},
		Method: &core.JobMethod{Name: "m"}, Start: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	tw, _ = c.HubTwin("d1") // the job changed the tags
	cfg, err := c.PutConfiguration("cfg", true, "", map[string]any{"targetCondition": "tags.site = 'lab'"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MarkConfigurationApplied("cfg", []string{"d1"}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2, err := st.Reopen()
	if err != nil {
		t.Fatal(err)
	}
	c2 := core.New(core.Config{IDScope: "0ne1", HubHost: "h", Store: st2})
	defer c2.Close()
	if err := c2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c2.Policies(); len(got) != 4 || got[0] != policies[0] || got[3] != policies[3] {
		t.Fatalf("policies after restart %v", got)
	}
	d2, err := c2.HubDevice("d1")
	if err != nil || d2.ETag != d.ETag || d2.StatusReason != "x" {
		t.Fatalf("device after restart %+v (etag before %s): %v", d2, d.ETag, err)
	}
	tw2, err := c2.HubTwin("d1")
	if err != nil || tw2.ETag != tw.ETag || tw2.Tags["site"] != "lab" {
		t.Fatalf("twin after restart %+v: %v", tw2, err)
	}
	recs := c2.TakeFeedback(10)
	if len(recs) != 2 || recs[0].OriginalMessageID != "pos" || recs[0].StatusCode != core.FeedbackSuccess ||
		recs[1].OriginalMessageID != "full-rej" || recs[1].StatusCode != core.FeedbackRejected {
		t.Fatalf("feedback after restart %+v", recs)
	}
	// The queued message kept its ack: completing it now gives feedback.
	s2, _, err := c2.Connect("d1", core.HubAuth{}, link{}, "")
	if err != nil {
		t.Fatal(err)
	}
	m, ok := s2.NextC2D()
	if !ok || m.MessageID != "kept" {
		t.Fatalf("queued message after restart %+v %v", m, ok)
	}
	if err := s2.SettleC2D(m.MessageID, core.Complete); err != nil {
		t.Fatal(err)
	}
	if recs := c2.TakeFeedback(10); len(recs) != 1 || recs[0].OriginalMessageID != "kept" {
		t.Fatalf("feedback of the kept message %+v", recs)
	}
	if j, err := c2.Job("now"); err != nil || j.Status != core.JobCompleted || j.Stats.SucceededCount != 1 {
		t.Fatalf("finished job after restart %+v: %v", j, err)
	}
	if tw, _ := c2.HubTwin("d1"); tw.Tags["job"] != "done" {
		t.Fatalf("the job's tag after restart: %v", tw.Tags)
	}
	if j, err := c2.Job("later"); err != nil || j.Status != core.JobScheduled {
		t.Fatalf("scheduled job after restart %+v: %v", j, err)
	}
	if got, err := c2.Configuration("cfg"); err != nil || got.ETag() != cfg.ETag() || got.Doc["targetCondition"] != "tags.site = 'lab'" || len(got.Applied) != 1 {
		t.Fatalf("configuration after restart %+v: %v", got, err)
	}
	if j, err := c2.CancelJob("later"); err != nil || j.Status != core.JobCancelled {
		t.Fatalf("cancel after restart %+v: %v", j, err)
	}
}

// TestServiceC2DExpiry: a message past its absolute-expiry-time is not
// delivered and gives Expired feedback to a negative or full ack.
func TestServiceC2DExpiry(t *testing.T) {
	ctx := context.Background()
	c := core.New(core.Config{IDScope: "0ne1", HubHost: "h"})
	defer c.Close()
	if _, err := c.PutHubDevice("d1", true, "", core.HubDeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Second)
	for _, m := range []core.ServiceC2D{
		{MessageID: "old-full", Ack: "full", Expiry: past},
		{MessageID: "old-none", Expiry: past},
		{MessageID: "fresh", Ack: "full", Expiry: time.Now().Add(time.Hour)},
	} {
		if _, err := c.SendServiceC2D(ctx, "d1", m); err != nil {
			t.Fatal(err)
		}
	}
	s, _, err := c.Connect("d1", core.HubAuth{}, link{}, "")
	if err != nil {
		t.Fatal(err)
	}
	m, ok := s.NextC2D()
	if !ok || m.MessageID != "fresh" {
		t.Fatalf("delivered %+v %v, want only the fresh message", m, ok)
	}
	if _, ok := s.NextC2D(); ok {
		t.Fatal("an expired message was delivered")
	}
	recs := c.TakeFeedback(10)
	if len(recs) != 1 || recs[0].OriginalMessageID != "old-full" || recs[0].StatusCode != core.FeedbackExpired {
		t.Fatalf("feedback %+v", recs)
	}
	if n := c.PendingC2D("d1"); n != 1 {
		t.Fatalf("%d messages pending, want the fresh one", n)
	}
}
