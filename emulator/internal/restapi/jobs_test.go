package restapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// jobFake is the fake backend with per-device failures and a device
// whose change blocks until released, for the job runner's tests.
type jobFake struct {
	*fakeBackend
	jmu     sync.Mutex
	failOn  map[string]bool // devices whose change fails
	blockOn string          // the device whose change waits for release
	reached chan struct{}   // closed when blockOn's change starts
	release chan struct{}   // closed to let it go on
	order   []string        // devices changed, in order
	done    chan struct{}   // closed at cleanup: background work stops
}

func (f *jobFake) Done() <-chan struct{} { return f.done }

func (f *jobFake) gate(ctx context.Context, id string) error {
	f.jmu.Lock()
	f.order = append(f.order, id)
	fail := f.failOn[id]
	block := id == f.blockOn
	f.jmu.Unlock()
	if block {
		close(f.reached)
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail {
		return fmt.Errorf("device %s: %w", id, ErrDeviceOffline)
	}
	return nil
}

func (f *jobFake) PatchDesired(ctx context.Context, id string, patch map[string]any) error {
	if err := f.gate(ctx, id); err != nil {
		return err
	}
	return f.fakeBackend.PatchDesired(ctx, id, patch)
}

func (f *jobFake) InvokeCommand(ctx context.Context, id, component, name string, req CommandRequest) (CommandResult, error) {
	if err := f.gate(ctx, id); err != nil {
		return CommandResult{}, err
	}
	return f.fakeBackend.InvokeCommand(ctx, id, component, name, req)
}

// fakeClock is a Clock advanced by hand.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []clockWaiter
}

type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) At(t time.Time) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if !t.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, clockWaiter{t, ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

const jobTemplateID = "dtmi:contoso:jobTemplate"

const jobTemplate = `{"@type":["ModelDefinition","DeviceModel"],"displayName":"Job template","capabilityModel":{
  "@id":"dtmi:contoso:jobModel;1","@type":"Interface","contents":[
    {"@type":"Property","name":"interval","schema":"integer","writable":true},
    {"@type":"Property","name":"serial","schema":"string"},
    {"@type":["Property","Cloud"],"name":"site","schema":"string"},
    {"@type":"Command","name":"reboot"},
    {"@type":"Command","name":"update","durable":true},
    {"@type":"Component","name":"thermostat","schema":{"@type":"Interface","contents":[
      {"@type":"Property","name":"target","schema":"double","writable":true}]}}]}}`

// newJobEnv serves a handler over a jobFake holding devices d1..dn of
// the job template in group "all", on a fake clock.
func newJobEnv(t *testing.T, n int) (*env, *jobFake, *fakeClock, *handler) {
	t.Helper()
	jf := &jobFake{fakeBackend: newFake(), failOn: map[string]bool{}, done: make(chan struct{}),
		reached: make(chan struct{}), release: make(chan struct{})}
	clock := &fakeClock{now: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
	h := New(jf, Options{Token: testToken, Clock: clock, Logger: slog.New(slog.DiscardHandler)}).(*handler)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		close(jf.done)
		h.jobs.wg.Wait()
	})
	e := &env{t: t, f: jf.fakeBackend, srv: srv, log: &syncBuffer{}}
	e.call("PUT", "/api/deviceTemplates/"+jobTemplateID, jobTemplate).want(t, http.StatusOK)
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("d%d", i)
		jf.devices[id] = Device{ID: id, Template: jobTemplateID, Enabled: true}
	}
	jf.devices["other"] = Device{ID: "other", Enabled: true} // in the group, not of the template
	e.call("PUT", "/api/deviceGroups/all", `{"displayName":"All","filter":"SELECT * FROM devices"}`).want(t, http.StatusOK)
	return e, jf, clock, h
}

// waitJob polls the job until its status is one of want (a failure
// deadline only: no timing is asserted).
func waitJob(t *testing.T, e *env, id string, want ...string) response {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := e.call("GET", "/api/jobs/"+id, "")
		if r.status != http.StatusOK {
			t.Fatalf("GET job %s: %d %s", id, r.status, r.raw)
		}
		if slices.Contains(want, r.body["status"].(string)) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %v, want one of %v", id, r.body["status"], want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func deviceStatuses(t *testing.T, e *env, id string) map[string]string {
	t.Helper()
	r := e.call("GET", "/api/jobs/"+id+"/devices?api-version="+APIVersion, "")
	r.want(t, http.StatusOK)
	out := map[string]string{}
	for _, v := range r.body["value"].([]any) {
		m := v.(map[string]any)
		out[m["id"].(string)] = m["status"].(string)
	}
	return out
}

func progress(r response) string {
	p, _ := r.body["progress"].(map[string]any)
	return fmt.Sprintf("total=%v pending=%v completed=%v failed=%v", p["total"], p["pending"], p["completed"], p["failed"])
}

// A property job writes the property to every device of the group that
// uses the target template, as desired properties (components marked),
// batch after batch, and ends complete with each device completed.
func TestJobProperty(t *testing.T) {
	t.Parallel()
	e, jf, _, _ := newJobEnv(t, 5)
	r := e.call("PUT", "/api/jobs/j1", `{"displayName":"Set target","group":"all","batch":{"type":"number","value":2},
		"data":[{"type":"property","target":"`+jobTemplateID+`","path":"thermostat.target","value":21.5},
		        {"type":"property","target":"`+jobTemplateID+`","path":"interval","value":30}]}`)
	r.want(t, http.StatusOK)
	if r.body["id"] != "j1" || r.body["group"] != "all" {
		t.Fatalf("PUT answered %s", r.raw)
	}
	r = waitJob(t, e, "j1", JobComplete)
	if got := progress(r); got != "total=5 pending=0 completed=5 failed=0" {
		t.Fatalf("progress %s", got)
	}
	if r.body["start"] == nil || r.body["end"] == nil {
		t.Fatalf("start/end missing: %s", r.raw)
	}
	want := map[string]string{"d1": "completed", "d2": "completed", "d3": "completed", "d4": "completed", "d5": "completed"}
	if got := deviceStatuses(t, e, "j1"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("device statuses %v", got)
	}
	jf.mu.Lock()
	defer jf.mu.Unlock()
	if len(jf.patches) != 10 {
		t.Fatalf("%d patches, want 10 (2 per device): %v", len(jf.patches), jf.patches)
	}
	jsonEqual(t, jf.patches[0], `{"thermostat":{"__t":"c","target":21.5}}`)
	jsonEqual(t, jf.patches[1], `{"interval":30}`)
	if !slices.Equal(jf.order, []string{"d1", "d1", "d2", "d2", "d3", "d3", "d4", "d4", "d5", "d5"}) {
		t.Fatalf("devices changed in order %v", jf.order)
	}
	jsonEqual(t, jf.twins["d3"].Desired["interval"], `30`)
}

// The cancellation threshold counts failed devices over the job, or
// over each batch with "batch": true; reaching it cancels the job and
// leaves the devices not yet run pending.
func TestJobCancellationThreshold(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, batch, threshold string
		failOn                 []string
		status, progress       string
		statuses               string
	}{
		{"job-wide number", `{"type":"number","value":2}`, `{"type":"number","value":2}`, []string{"d1", "d3"},
			JobCancelled, "total=5 pending=2 completed=1 failed=2", "map[d1:failed d2:completed d3:failed d4:pending d5:pending]"},
		{"per batch, never reached", `{"type":"number","value":2}`, `{"type":"number","value":2,"batch":true}`, []string{"d1", "d3"},
			JobComplete, "total=5 pending=0 completed=3 failed=2", "map[d1:failed d2:completed d3:failed d4:completed d5:completed]"},
		{"per batch percentage", `{"type":"percentage","value":40}`, `{"type":"percentage","value":100,"batch":true}`, []string{"d3", "d4"},
			JobCancelled, "total=5 pending=1 completed=2 failed=2", "map[d1:completed d2:completed d3:failed d4:failed d5:pending]"},
		{"job-wide percentage", `{"type":"number","value":1}`, `{"type":"percentage","value":20}`, []string{"d2"},
			JobCancelled, "total=5 pending=3 completed=1 failed=1", "map[d1:completed d2:failed d3:pending d4:pending d5:pending]"},
		{"no threshold", `{"type":"number","value":5}`, `null`, []string{"d1", "d2", "d3"},
			JobComplete, "total=5 pending=0 completed=2 failed=3", "map[d1:failed d2:failed d3:failed d4:completed d5:completed]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, jf, _, _ := newJobEnv(t, 5)
			for _, d := range tc.failOn {
				jf.failOn[d] = true
			}
			e.call("PUT", "/api/jobs/j", `{"group":"all","batch":`+tc.batch+`,"cancellationThreshold":`+tc.threshold+`,
				"data":[{"type":"command","target":"`+jobTemplateID+`","path":"reboot","value":{"delay":1}}]}`).want(t, http.StatusOK)
			r := waitJob(t, e, "j", JobComplete, JobCancelled)
			if r.body["status"] != tc.status || progress(r) != tc.progress {
				t.Fatalf("status %v, %s; want %s, %s", r.body["status"], progress(r), tc.status, tc.progress)
			}
			if got := fmt.Sprint(deviceStatuses(t, e, "j")); got != tc.statuses {
				t.Fatalf("device statuses %s, want %s", got, tc.statuses)
			}
		})
	}
}

// Stop takes effect before the next device; resume continues from the
// first pending device; rerun runs the failed devices as a new job.
func TestJobStopResumeRerun(t *testing.T) {
	t.Parallel()
	e, jf, _, _ := newJobEnv(t, 4)
	jf.blockOn = "d2"
	jf.failOn["d4"] = true
	e.call("PUT", "/api/jobs/j", `{"group":"all","data":[{"type":"command","target":"`+jobTemplateID+`","path":"reboot"}]}`).want(t, http.StatusOK)
	<-jf.reached // d2's command is in flight
	e.call("GET", "/api/jobs/j", "").want(t, http.StatusOK)
	e.call("PUT", "/api/jobs/j/rerun/again", "").wantError(t, http.StatusConflict, "Conflict") // running
	e.call("POST", "/api/jobs/j/resume", "").wantError(t, http.StatusConflict, "Conflict")     // not stopped
	e.call("POST", "/api/jobs/j/stop", "").wantNoContent(t)
	close(jf.release)
	deadline := time.Now().Add(20 * time.Second)
	for deviceStatuses(t, e, "j")["d2"] == DevicePending {
		if time.Now().After(deadline) {
			t.Fatal("d2 never finished")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := e.call("GET", "/api/jobs/j", "")
	if r.body["status"] != JobStopped {
		t.Fatalf("status %v after stop", r.body["status"])
	}
	if got := fmt.Sprint(deviceStatuses(t, e, "j")); got != "map[d1:completed d2:completed d3:pending d4:pending]" {
		t.Fatalf("after stop: %s", got)
	}
	e.call("POST", "/api/jobs/j/stop", "").wantError(t, http.StatusConflict, "Conflict")
	e.call("POST", "/api/jobs/j/resume", "").wantNoContent(t)
	r = waitJob(t, e, "j", JobComplete)
	if got := fmt.Sprint(deviceStatuses(t, e, "j")); got != "map[d1:completed d2:completed d3:completed d4:failed]" {
		t.Fatalf("after resume: %s", got)
	}
	jf.jmu.Lock()
	if !slices.Equal(jf.order, []string{"d1", "d2", "d3", "d4"}) {
		t.Fatalf("devices ran %v: each once, in order", jf.order)
	}
	jf.failOn = map[string]bool{}
	jf.jmu.Unlock()
	e.call("POST", "/api/jobs/j/resume", "").wantError(t, http.StatusConflict, "Conflict")
	e.call("PUT", "/api/jobs/j/rerun/j", "").wantError(t, http.StatusConflict, "Conflict") // id taken
	r = e.call("PUT", "/api/jobs/j/rerun/again", "")
	r.want(t, http.StatusOK)
	if r.body["id"] != "again" || r.body["group"] != "all" {
		t.Fatalf("rerun answered %s", r.raw)
	}
	r = waitJob(t, e, "again", JobComplete)
	if got := fmt.Sprint(deviceStatuses(t, e, "again")); got != "map[d4:completed]" || progress(r) != "total=1 pending=0 completed=1 failed=0" {
		t.Fatalf("rerun: %s, %s", got, progress(r))
	}
	e.call("PUT", "/api/jobs/again/rerun/third", "").wantError(t, http.StatusConflict, "Conflict") // nothing failed
	e.call("POST", "/api/jobs/nope/stop", "").wantError(t, http.StatusNotFound, "NotFound")
	list := e.call("GET", "/api/jobs", "")
	if v := list.body["value"].([]any); len(v) != 2 {
		t.Fatalf("GET /jobs: %s", list.raw)
	}
}

// A command the template marks durable ("queue if offline") is queued,
// not invoked; a cloud property job stores the value, shown among the
// device's properties.
func TestJobDurableCommandAndCloudProperty(t *testing.T) {
	t.Parallel()
	e, jf, _, _ := newJobEnv(t, 2)
	jf.failOn["d1"] = true // would fail if invoked
	e.call("PUT", "/api/jobs/q", `{"group":"all","data":[{"type":"command","target":"`+jobTemplateID+`","path":"update","value":"v2"}]}`).want(t, http.StatusOK)
	waitJob(t, e, "q", JobComplete)
	if got := fmt.Sprint(deviceStatuses(t, e, "q")); got != "map[d1:completed d2:completed]" {
		t.Fatalf("durable: %s", got)
	}
	jf.mu.Lock()
	if len(jf.queued) != 2 || len(jf.invokes) != 0 || string(jf.queued[0].request) != `"v2"` {
		t.Fatalf("queued %v, invoked %v", jf.queued, jf.invokes)
	}
	jf.mu.Unlock()
	e.call("PUT", "/api/jobs/c", `{"group":"all","data":[{"type":"cloudProperty","target":"`+jobTemplateID+`","path":"site","value":"Oslo"}]}`).want(t, http.StatusOK)
	waitJob(t, e, "c", JobComplete)
	r := e.call("GET", "/api/devices/d2/properties", "")
	r.want(t, http.StatusOK)
	if r.body["site"] != "Oslo" {
		t.Fatalf("properties %s", r.raw)
	}
}

// A job is validated before it starts (422), cannot be replaced (409).
func TestJobRefusals(t *testing.T) {
	t.Parallel()
	e, _, _, _ := newJobEnv(t, 1)
	data := func(typ, path, value string) string {
		return `[{"type":"` + typ + `","target":"` + jobTemplateID + `","path":"` + path + `"` + value + `}]`
	}
	for name, body := range map[string]string{
		"unknown group":        `{"group":"nope","data":` + data("property", "interval", `,"value":1`) + `}`,
		"no group":             `{"data":` + data("property", "interval", `,"value":1`) + `}`,
		"no data":              `{"group":"all","data":[]}`,
		"unknown template":     `{"group":"all","data":[{"type":"property","target":"dtmi:x:y","path":"interval","value":1}]}`,
		"read-only property":   `{"group":"all","data":` + data("property", "serial", `,"value":"x"`) + `}`,
		"cloud as property":    `{"group":"all","data":` + data("property", "site", `,"value":"x"`) + `}`,
		"unknown command":      `{"group":"all","data":` + data("command", "explode", ``) + `}`,
		"not a cloud property": `{"group":"all","data":` + data("cloudProperty", "interval", `,"value":1`) + `}`,
		"property sans value":  `{"group":"all","data":` + data("property", "interval", ``) + `}`,
		"unknown type":         `{"group":"all","data":` + data("firmware", "interval", `,"value":1`) + `}`,
		"migration":            `{"group":"all","data":[{"type":"deviceTemplateMigration","template":"x","target":"x","path":"x"}]}`,
		"mixed types": `{"group":"all","data":[{"type":"property","target":"` + jobTemplateID + `","path":"interval","value":1},
			{"type":"command","target":"` + jobTemplateID + `","path":"reboot"}]}`,
		"batch zero":       `{"group":"all","batch":{"type":"number","value":0},"data":` + data("command", "reboot", ``) + `}`,
		"batch fraction":   `{"group":"all","batch":{"type":"number","value":1.5},"data":` + data("command", "reboot", ``) + `}`,
		"batch over 100%":  `{"group":"all","batch":{"type":"percentage","value":101},"data":` + data("command", "reboot", ``) + `}`,
		"threshold type":   `{"group":"all","cancellationThreshold":{"type":"some","value":1},"data":` + data("command", "reboot", ``) + `}`,
		"unknown org":      `{"group":"all","organizations":["nowhere"],"data":` + data("command", "reboot", ``) + `}`,
		"body id mismatch": `{"id":"other","group":"all","data":` + data("command", "reboot", ``) + `}`,
	} {
		if r := e.call("PUT", "/api/jobs/bad", body); r.status != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d %s", name, r.status, r.raw)
		}
	}
	e.call("PUT", "/api/jobs/bad$id", `{}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("GET", "/api/jobs/bad", "").wantError(t, http.StatusNotFound, "NotFound")
	ok := `{"group":"all","data":` + data("command", "reboot", ``) + `}`
	e.call("PUT", "/api/jobs/once", ok).want(t, http.StatusOK)
	e.call("PUT", "/api/jobs/once", ok).wantError(t, http.StatusConflict, "Conflict")
	waitJob(t, e, "once", JobComplete)
}

// Without application documents the job routes answer 501.
func TestJobsNeedDocuments(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var _ DocBackend = e.f                                      // the plain fake keeps documents...
	h := New(struct{ Backend }{e.f}, Options{Token: testToken}) // ...this one does not
	srv := httptest.NewServer(h)
	defer srv.Close()
	e2 := &env{t: t, f: e.f, srv: srv}
	for _, p := range []string{"/api/jobs", "/api/scheduledJobs", "/api/users", "/api/organizations", "/api/devices/dev1/relationships"} {
		e2.call("GET", p, "").wantError(t, http.StatusNotImplemented, "NotImplemented")
	}
}

// wantNoContent checks a 204 without a body.
func (r response) wantNoContent(t *testing.T) {
	t.Helper()
	if r.status != http.StatusNoContent || len(r.raw) != 0 {
		t.Fatalf("status = %d, want 204 without a body; body %s", r.status, r.raw)
	}
}

// A device that answers a command job with an error status (>= 400)
// fails; with a success status it completes.
func TestJobCommandResponseStatus(t *testing.T) {
	t.Parallel()
	e, jf, _, _ := newJobEnv(t, 1)
	jf.mu.Lock()
	jf.invokeRes = CommandResult{ResponseCode: 500, Response: []byte(`"broken"`)}
	jf.mu.Unlock()
	body := `{"group":"all","data":[{"type":"command","target":"` + jobTemplateID + `","path":"reboot"}]}`
	e.call("PUT", "/api/jobs/bad", body).want(t, http.StatusOK)
	waitJob(t, e, "bad", JobComplete)
	if got := deviceStatuses(t, e, "bad")["d1"]; got != DeviceFailed {
		t.Fatalf("answered 500: %s", got)
	}
	jf.mu.Lock()
	jf.invokeRes = CommandResult{ResponseCode: 200}
	jf.mu.Unlock()
	e.call("PUT", "/api/jobs/good", body).want(t, http.StatusOK)
	waitJob(t, e, "good", JobComplete)
	if got := deviceStatuses(t, e, "good")["d1"]; got != DeviceCompleted {
		t.Fatalf("answered 200: %s", got)
	}
}

// A resume that arrives while the stopped job's goroutine is exiting
// (it found the job stopped, and is still counted alive) is not lost: the
// job runs to its end.
func TestJobResumeWhileExiting(t *testing.T) {
	t.Parallel()
	e, jf, _, h := newJobEnv(t, 2)
	exiting, resumed := make(chan struct{}), make(chan struct{})
	h.jobs.exitHook = func(string) {
		close(exiting)
		<-resumed
	}
	jf.blockOn = "d1"
	e.call("PUT", "/api/jobs/j", `{"group":"all","data":[{"type":"command","target":"`+jobTemplateID+`","path":"reboot"}]}`).want(t, http.StatusOK)
	<-jf.reached
	e.call("POST", "/api/jobs/j/stop", "").wantNoContent(t)
	close(jf.release)
	<-exiting // the goroutine saw "stopped" and is leaving
	e.call("POST", "/api/jobs/j/resume", "").wantNoContent(t)
	h.jobs.exitHook = nil
	close(resumed)
	waitJob(t, e, "j", JobComplete)
	if got := fmt.Sprint(deviceStatuses(t, e, "j")); got != "map[d1:completed d2:completed]" {
		t.Fatalf("after resume: %s", got)
	}
}
