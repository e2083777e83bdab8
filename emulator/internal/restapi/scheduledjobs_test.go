package restapi

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

func scheduledRuns(t *testing.T, e *env, id string) []map[string]any {
	t.Helper()
	r := e.call("GET", "/api/scheduledJobs/"+id+"/jobs", "")
	r.want(t, http.StatusOK)
	var out []map[string]any
	for _, v := range r.body["value"].([]any) {
		out = append(out, v.(map[string]any))
	}
	return out
}

// A daily scheduled job ending after 3 occurrences starts a job at its
// start time and each day after, on the injected clock; occurrences
// missed while time jumped count, collapsed into one run; then it is
// completed and starts nothing more.
func TestScheduledJobRunsOnTime(t *testing.T) {
	t.Parallel()
	e, _, clock, h := newJobEnv(t, 2)
	start := clock.Now().Add(time.Hour)
	r := e.call("PUT", "/api/scheduledJobs/nightly", `{"displayName":"nightly","group":"all",
		"data":[{"type":"command","target":"`+jobTemplateID+`","path":"reboot"}],
		"schedule":{"start":"`+start.Format(time.RFC3339)+`","recurrence":"daily","end":{"type":"occurrences","occurrences":3}}}`)
	r.want(t, http.StatusOK)
	if r.body["enabled"] != true || r.body["completed"] != false || r.body["etag"] == nil {
		t.Fatalf("PUT answered %s", r.raw)
	}
	step := func(d time.Duration, wantRuns int) {
		t.Helper()
		clock.Advance(d)
		h.sched.runDue(t.Context()) // what the scheduler's goroutine does when the clock wakes it
		if got := len(scheduledRuns(t, e, "nightly")); got != wantRuns {
			t.Fatalf("at %s: %d runs, want %d", clock.Now().Format(time.RFC3339), got, wantRuns)
		}
	}
	step(0, 0)
	step(59*time.Minute, 0)
	step(time.Minute, 1) // the start
	step(23*time.Hour, 1)
	step(time.Hour, 2) // a day later
	runs := scheduledRuns(t, e, "nightly")
	for _, run := range runs {
		if run["scheduledJobId"] != "nightly" || run["group"] != "all" {
			t.Fatalf("run %v", run)
		}
		waitJob(t, e, run["id"].(string), JobComplete)
	}
	if runs[0]["displayName"] != "nightly - 1" && runs[1]["displayName"] != "nightly - 1" {
		t.Fatalf("run names %v, %v", runs[0]["displayName"], runs[1]["displayName"])
	}
	step(5*24*time.Hour, 3) // the third occurrence (and the time past it) runs once
	if r := e.call("GET", "/api/scheduledJobs/nightly", ""); r.body["completed"] != true {
		t.Fatalf("after 3 occurrences: %s", r.raw)
	}
	step(7*24*time.Hour, 3)
}

// The scheduler's own goroutine starts a run when the injected clock
// reaches the start (no call into the scheduler by the test).
func TestScheduledJobGoroutineWakesOnClock(t *testing.T) {
	t.Parallel()
	e, _, clock, _ := newJobEnv(t, 1)
	start := clock.Now().Add(10 * time.Minute)
	e.call("PUT", "/api/scheduledJobs/once", `{"group":"all","data":[{"type":"command","target":"`+jobTemplateID+`","path":"reboot"}],
		"schedule":{"start":"`+start.Format(time.RFC3339)+`"}}`).want(t, http.StatusOK)
	clock.Advance(10 * time.Minute)
	deadline := time.Now().Add(20 * time.Second)
	for len(scheduledRuns(t, e, "once")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the scheduler never started the run")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for time.Now().Before(deadline) {
		if r := e.call("GET", "/api/scheduledJobs/once", ""); r.body["completed"] == true {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("a one-time scheduled job is not completed after its run")
}

// Occurrence times and ends: weekly, monthly, end by date (inclusive
// day, UTC), by occurrences, none.
func TestScheduleOccurrences(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 31, 22, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		s    JobSchedule
		runs string
	}{
		{JobSchedule{Start: start}, "[2026-01-31T22:00]"},
		{JobSchedule{Start: start, Recurrence: "weekly", End: &JobScheduleEnd{Type: "date", Date: "2026-02-14"}},
			"[2026-01-31T22:00 2026-02-07T22:00 2026-02-14T22:00]"},
		{JobSchedule{Start: start, Recurrence: "monthly", End: &JobScheduleEnd{Type: "occurrences", Occurrences: 3}},
			"[2026-01-31T22:00 2026-02-28T22:00 2026-03-31T22:00]"}, // February's last day
		{JobSchedule{Start: start, Recurrence: "daily", End: &JobScheduleEnd{Type: "date", Date: "2026-01-30"}}, "[]"},
	} {
		var runs []string
		for k := 0; !pastEnd(tc.s, k) && k < 10; k++ {
			runs = append(runs, occurrence(tc.s, k).Format("2006-01-02T15:04"))
		}
		if got := fmt.Sprint(runs); got != tc.runs && !(got == "[]" && tc.runs == "[]") {
			t.Errorf("%+v: runs %s, want %s", tc.s, got, tc.runs)
		}
	}
}

// PATCH merges; a disabled scheduled job starts nothing; DELETE; etags
// (If-Match) are enforced; bad schedules are 422.
func TestScheduledJobCRUD(t *testing.T) {
	t.Parallel()
	e, _, clock, h := newJobEnv(t, 1)
	start := clock.Now().Add(time.Minute).Format(time.RFC3339)
	body := `{"displayName":"x","group":"all","data":[{"type":"command","target":"` + jobTemplateID + `","path":"reboot"}],"schedule":{"start":"` + start + `","recurrence":"weekly"}}`
	r := e.call("PUT", "/api/scheduledJobs/s1", body)
	r.want(t, http.StatusOK)
	etag := r.body["etag"].(string)
	r = e.call("PATCH", "/api/scheduledJobs/s1", `{"enabled":false,"description":"off"}`)
	r.want(t, http.StatusOK)
	if r.body["enabled"] != false || r.body["description"] != "off" || r.body["displayName"] != "x" || r.body["etag"] == etag {
		t.Fatalf("PATCH answered %s", r.raw)
	}
	clock.Advance(time.Hour)
	h.sched.runDue(t.Context())
	if n := len(scheduledRuns(t, e, "s1")); n != 0 {
		t.Fatalf("a disabled scheduled job ran %d times", n)
	}
	// Enabled again: the occurrence that passed while disabled is skipped;
	// the next one (a week after the start) runs.
	r = e.call("PATCH", "/api/scheduledJobs/s1", `{"enabled":true}`)
	r.want(t, http.StatusOK)
	h.sched.runDue(t.Context())
	if n := len(scheduledRuns(t, e, "s1")); n != 0 {
		t.Fatalf("a missed occurrence ran late after enabling: %d runs", n)
	}
	clock.Advance(7 * 24 * time.Hour)
	h.sched.runDue(t.Context())
	if n := len(scheduledRuns(t, e, "s1")); n != 1 {
		t.Fatalf("%d runs a week later", n)
	}
	req, _ := http.NewRequest("DELETE", e.srv.URL+"/api/scheduledJobs/s1?api-version="+APIVersion, nil)
	req.Header.Set("Authorization", testToken)
	req.Header.Set("If-Match", etag) // stale
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("DELETE with a stale If-Match: %d", res.StatusCode)
	}
	if list := e.call("GET", "/api/scheduledJobs", ""); len(list.body["value"].([]any)) != 1 {
		t.Fatalf("list %s", list.raw)
	}
	e.call("DELETE", "/api/scheduledJobs/s1", "").wantNoContent(t)
	e.call("GET", "/api/scheduledJobs/s1", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", "/api/scheduledJobs/s1/jobs", "").wantError(t, http.StatusNotFound, "NotFound")
	for name, sched := range map[string]string{
		"no start":        `{"recurrence":"daily"}`,
		"bad recurrence":  `{"start":"` + start + `","recurrence":"hourly"}`,
		"bad end type":    `{"start":"` + start + `","recurrence":"daily","end":{"type":"never"}}`,
		"bad end date":    `{"start":"` + start + `","recurrence":"daily","end":{"type":"date","date":"soon"}}`,
		"zero occurrence": `{"start":"` + start + `","recurrence":"daily","end":{"type":"occurrences","occurrences":0}}`,
		"1000 occurrence": `{"start":"` + start + `","recurrence":"daily","end":{"type":"occurrences","occurrences":1000}}`,
	} {
		b := `{"group":"all","data":[{"type":"command","target":"` + jobTemplateID + `","path":"reboot"}],"schedule":` + sched + `}`
		if r := e.call("PUT", "/api/scheduledJobs/bad", b); r.status != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d %s", name, r.status, r.raw)
		}
	}
	if r := e.call("PUT", "/api/scheduledJobs/bad", `{"group":"nope","data":[{"type":"command","target":"`+jobTemplateID+`","path":"reboot"}],"schedule":{"start":"`+start+`"}}`); r.status != http.StatusUnprocessableEntity {
		t.Errorf("unknown group: %d", r.status)
	}
}
