package restapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"time"
)

// ScheduledJob is an IoT Central scheduled job: a job definition the
// emulator starts at Schedule's times, each run a Job with
// ScheduledJobID set.
type ScheduledJob struct {
	// Etag changes whenever the scheduled job changes (set by the handler).
	Etag string `json:"etag,omitempty"`
	// ID is 1 to 255 letters, digits, '-' or '_'.
	ID string `json:"id"`
	// DisplayName names the jobs it starts ("<displayName> - <run>").
	DisplayName string `json:"displayName,omitempty"`
	// Description is free text, copied to its jobs.
	Description string `json:"description,omitempty"`
	// Group is the device group of its jobs (see Job.Group).
	Group string `json:"group"`
	// Batch is its jobs' batching (see Job.Batch).
	Batch *JobBatch `json:"batch,omitempty"`
	// CancellationThreshold is its jobs' threshold (see Job).
	CancellationThreshold *JobCancellationThreshold `json:"cancellationThreshold,omitempty"`
	// Data are its jobs' changes (see Job.Data).
	Data []JobData `json:"data"`
	// Organizations holds at most one existing organization id.
	Organizations []string `json:"organizations,omitempty"`
	// Schedule is when it runs.
	Schedule JobSchedule `json:"schedule"`
	// Enabled is true unless set false; a disabled scheduled job starts
	// nothing. Default true.
	Enabled *bool `json:"enabled,omitempty"`
	// Completed is true once no run is left (read only).
	Completed bool `json:"completed"`
}

// JobSchedule is when a scheduled job runs: at Start, then every day,
// week or month (Recurrence; "" runs once) until End.
type JobSchedule struct {
	// Recurrence is "daily", "weekly", "monthly" or "" (once).
	Recurrence string `json:"recurrence,omitempty"`
	// Start is the first run's time; required.
	Start time.Time `json:"start"`
	// End ends a recurring schedule; nil runs for ever.
	End *JobScheduleEnd `json:"end,omitempty"`
}

// JobScheduleEnd ends a recurring schedule: Type "date" (no run on a
// later day than Date, YYYY-MM-DD, UTC) or "occurrences" (1..999 runs).
type JobScheduleEnd struct {
	// Type is "date" or "occurrences".
	Type string `json:"type"`
	// Date is the last day runs may happen on (YYYY-MM-DD, UTC).
	Date string `json:"date,omitempty"`
	// Occurrences is the number of runs, 1..999.
	Occurrences int `json:"occurrences,omitempty"`
}

// scheduledRecord is a scheduled job as stored with the number of its
// occurrences that have passed (run, or skipped while the emulator was
// down).
type scheduledRecord struct {
	Job  ScheduledJob `json:"job"`
	Runs int          `json:"runs"`
}

func scheduledWithEtag(s ScheduledJob) ScheduledJob {
	if s.ID == "" {
		return s
	}
	s.Etag = ""
	s.Etag = etagOf(s)
	return s
}

// occurrence is the time of run k (0-based) of a schedule.
func occurrence(s JobSchedule, k int) time.Time {
	switch s.Recurrence {
	case "daily":
		return s.Start.AddDate(0, 0, k)
	case "weekly":
		return s.Start.AddDate(0, 0, 7*k)
	case "monthly":
		// The same day of the month, or the month's last day when it is
		// shorter (a schedule on the 31st runs on February's last day).
		y, m, d := s.Start.Date()
		first := time.Date(y, m+time.Month(k), 1, s.Start.Hour(), s.Start.Minute(), s.Start.Second(), s.Start.Nanosecond(), s.Start.Location())
		last := first.AddDate(0, 1, -1).Day()
		return first.AddDate(0, 0, min(d, last)-1)
	}
	return s.Start
}

// pastEnd reports whether run k (0-based) is past the schedule's end.
func pastEnd(s JobSchedule, k int) bool {
	if s.Recurrence == "" {
		return k >= 1
	}
	if s.End == nil {
		return false
	}
	switch s.End.Type {
	case "occurrences":
		return k >= s.End.Occurrences
	case "date":
		end, _ := time.Parse(time.DateOnly, s.End.Date)
		return occurrence(s, k).UTC().After(end.Add(24*time.Hour - time.Nanosecond))
	}
	return false
}

func checkSchedule(s JobSchedule) error {
	if s.Start.IsZero() {
		return invalidf("schedule.start is required (a date-time)")
	}
	switch s.Recurrence {
	case "", "daily", "weekly", "monthly":
	default:
		return invalidf("schedule.recurrence %q is not daily, weekly or monthly", s.Recurrence)
	}
	if s.End == nil {
		return nil
	}
	switch s.End.Type {
	case "date":
		if _, err := time.Parse(time.DateOnly, s.End.Date); err != nil {
			return invalidf("schedule.end.date %q is not a date (YYYY-MM-DD)", s.End.Date)
		}
	case "occurrences":
		if s.End.Occurrences < 1 || s.End.Occurrences > 999 {
			return invalidf("schedule.end.occurrences must be 1 to 999, got %d", s.End.Occurrences)
		}
	default:
		return invalidf("schedule.end.type %q is not date or occurrences", s.End.Type)
	}
	return nil
}

// scheduler starts the runs of scheduled jobs on time (Options.Clock):
// one goroutine, started with the first scheduled job, waits until the
// earliest next run or a change. Runs missed while the emulator was down
// collapse into one run at start-up (they count as occurrences).
type scheduler struct {
	h    *handler
	mu   sync.Mutex // held by runDue and by scheduled job writes
	wake chan struct{}
	once sync.Once
}

func newScheduler(h *handler) *scheduler {
	return &scheduler{h: h, wake: make(chan struct{}, 1)}
}

// kick makes the scheduler look at the schedules again, starting its
// goroutine the first time.
func (s *scheduler) kick() {
	if _, ok := s.h.b.(DocBackend); !ok {
		return
	}
	s.once.Do(func() { go s.loop() })
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *scheduler) loop() {
	var done <-chan struct{}
	if d, ok := s.h.b.(doner); ok {
		done = d.Done()
	}
	for {
		next, ok := s.runDue(s.h.jobs.ctx)
		var at <-chan time.Time
		if ok {
			at = s.h.clock.At(next)
		}
		select {
		case <-done:
			return
		case <-s.wake:
		case <-at:
		}
	}
}

// runDue starts the runs due at the clock's time and returns the time of
// the earliest run left (false when none).
func (s *scheduler) runDue(ctx context.Context) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	db, ok := s.h.b.(DocBackend)
	if !ok {
		return time.Time{}, false
	}
	recs, err := listDocs[scheduledRecord](ctx, db, scheduledJobsCollection)
	if err != nil {
		if ctx.Err() == nil {
			s.h.log.Error("restapi: cannot read the scheduled jobs", "err", err)
		}
		return time.Time{}, false
	}
	now := s.h.clock.Now()
	var earliest time.Time
	for _, rec := range recs {
		sj := rec.Job
		if sj.Completed || sj.Enabled != nil && !*sj.Enabled {
			continue
		}
		changed := false
		if !pastEnd(sj.Schedule, rec.Runs) && !occurrence(sj.Schedule, rec.Runs).After(now) {
			run := rec.Runs + 1
			for rec.Runs++; !pastEnd(sj.Schedule, rec.Runs) && !occurrence(sj.Schedule, rec.Runs).After(now); rec.Runs++ {
			}
			s.startRun(ctx, db, sj, run)
			changed = true
		}
		if pastEnd(sj.Schedule, rec.Runs) {
			rec.Job.Completed, changed = true, true
		} else if t := occurrence(sj.Schedule, rec.Runs); earliest.IsZero() || t.Before(earliest) {
			earliest = t
		}
		if changed {
			if err := putDoc(ctx, db, scheduledJobsCollection, sj.ID, rec); err != nil && ctx.Err() == nil {
				s.h.log.Error("restapi: cannot store a scheduled job", "scheduledJob", sj.ID, "err", err)
			}
		}
	}
	return earliest, !earliest.IsZero()
}

// startRun creates the job of run n of sj; a run that cannot start (its
// group was deleted) is stored as a failed job.
func (s *scheduler) startRun(ctx context.Context, db DocBackend, sj ScheduledJob, n int) {
	j := Job{ID: newRequestID(), ScheduledJobID: sj.ID, DisplayName: fmt.Sprintf("%s - %d", sj.DisplayName, n),
		Description: sj.Description, Group: sj.Group, Batch: sj.Batch, CancellationThreshold: sj.CancellationThreshold,
		Data: sj.Data, Organizations: sj.Organizations}
	s.h.log.Info("restapi: scheduled job starts a run", "scheduledJob", sj.ID, "run", n, "job", j.ID)
	if _, err := s.h.jobs.create(ctx, db, j, nil); err != nil {
		s.h.log.Warn("restapi: a scheduled run could not start", "scheduledJob", sj.ID, "job", j.ID, "err", err)
		now := s.h.clock.Now().UTC()
		j.Status, j.Start, j.End = JobFailed, &now, &now
		_ = putDoc(ctx, db, jobsCollection, j.ID, jobRecord{Job: j, Devices: []jobDevice{}})
	}
}

func (h *handler) scheduledJobRoutes() []route {
	return []route{
		{"/api/scheduledJobs", map[string]http.HandlerFunc{"GET": h.listScheduledJobs}},
		{"/api/scheduledJobs/{id}", map[string]http.HandlerFunc{"GET": h.getScheduledJob, "PUT": h.putScheduledJob,
			"PATCH": h.patchScheduledJob, "DELETE": h.deleteScheduledJob}},
		{"/api/scheduledJobs/{id}/jobs", map[string]http.HandlerFunc{"GET": h.scheduledJobJobs}},
	}
}

func (h *handler) listScheduledJobs(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	var recs []scheduledRecord
	if err == nil {
		recs, err = listDocs[scheduledRecord](r.Context(), db, scheduledJobsCollection)
	}
	out := make([]ScheduledJob, 0, len(recs))
	for _, rec := range recs {
		out = append(out, scheduledWithEtag(rec.Job))
	}
	page(h, w, r, out, err)
}

func (h *handler) getScheduledJob(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	var rec scheduledRecord
	if err == nil {
		rec, err = getDoc[scheduledRecord](r.Context(), db, scheduledJobsCollection, r.PathValue("id"))
	}
	h.respond(w, r, http.StatusOK, scheduledWithEtag(rec.Job), err)
}

func (h *handler) scheduledJobJobs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	db, err := h.docs()
	if err == nil {
		_, err = db.Doc(r.Context(), scheduledJobsCollection, id)
	}
	var recs []jobRecord
	if err == nil {
		recs, err = listDocs[jobRecord](r.Context(), db, jobsCollection)
	}
	out := []Job{}
	for _, rec := range recs {
		if rec.Job.ScheduledJobID == id {
			out = append(out, rec.view())
		}
	}
	page(h, w, r, out, err)
}

func (h *handler) putScheduledJob(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	var sj ScheduledJob
	if err == nil {
		err = asValidation(decodeJSON(body, &sj))
	}
	h.writeScheduledJob(w, r, sj, sj.Etag, err)
}

func (h *handler) patchScheduledJob(w http.ResponseWriter, r *http.Request) {
	patch, bodyEtag, err := readMergePatch(w, r)
	var sj ScheduledJob
	if err == nil {
		var rec scheduledRecord
		rec, err = mergeDoc[scheduledRecord](r.Context(), h, scheduledJobsCollection, r.PathValue("id"), map[string]any{"job": patch})
		sj = rec.Job
	}
	h.writeScheduledJob(w, r, sj, bodyEtag, err)
}

// writeScheduledJob validates and stores a scheduled job (If-Match and
// the body etag are checked against the stored one). Its runs so far are
// kept when the schedule is unchanged, else counted again from its start.
func (h *handler) writeScheduledJob(w http.ResponseWriter, r *http.Request, sj ScheduledJob, bodyEtag string, err error) {
	id := r.PathValue("id")
	var db DocBackend
	if err == nil {
		db, err = h.docs()
	}
	if err == nil {
		err = checkJobID("scheduled job", id)
	}
	if err == nil && sj.ID != "" && sj.ID != id {
		err = invalidf("body id %q differs from the id %q in the path", sj.ID, id)
	}
	sj.ID, sj.Etag, sj.Completed = id, "", false
	if sj.Enabled == nil {
		t := true
		sj.Enabled = &t
	}
	if err == nil {
		err = checkSchedule(sj.Schedule)
	}
	h.entityMu.Lock() // the organizations checked stay until the scheduled job is stored
	defer h.entityMu.Unlock()
	if err == nil {
		err = h.checkJobDefinition(r.Context(), sj.Group, sj.Data, sj.Batch, sj.CancellationThreshold, sj.Organizations)
	}
	if err == nil {
		h.sched.mu.Lock()
		cur, gerr := getDoc[scheduledRecord](r.Context(), db, scheduledJobsCollection, id)
		exists := gerr == nil
		if gerr != nil && !errors.Is(gerr, ErrNotFound) {
			err = gerr
		}
		if err == nil {
			err = checkEtag(r, scheduledWithEtag(cur.Job).Etag, exists, bodyEtag)
		}
		rec := scheduledRecord{Job: sj}
		if exists && reflect.DeepEqual(cur.Job.Schedule, sj.Schedule) {
			rec.Runs = cur.Runs
			if cur.Job.Enabled != nil && !*cur.Job.Enabled && *sj.Enabled {
				// Enabled again: the occurrences that passed while it was
				// disabled are skipped, not run late.
				now := h.clock.Now()
				for !pastEnd(sj.Schedule, rec.Runs) && !occurrence(sj.Schedule, rec.Runs).After(now) {
					rec.Runs++
				}
			}
		}
		rec.Job.Completed = pastEnd(sj.Schedule, rec.Runs)
		sj.Completed = rec.Job.Completed
		if err == nil {
			err = putDoc(r.Context(), db, scheduledJobsCollection, id, rec)
		}
		h.sched.mu.Unlock()
	}
	if err == nil {
		h.sched.kick()
	}
	h.respond(w, r, http.StatusOK, scheduledWithEtag(sj), err)
}

func (h *handler) deleteScheduledJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	db, err := h.docs()
	if err == nil {
		h.sched.mu.Lock()
		var cur scheduledRecord
		cur, err = getDoc[scheduledRecord](r.Context(), db, scheduledJobsCollection, id)
		if err == nil {
			err = checkEtag(r, scheduledWithEtag(cur.Job).Etag, true, "")
		}
		if err == nil {
			err = db.DeleteDoc(r.Context(), scheduledJobsCollection, id)
		}
		h.sched.mu.Unlock()
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// kickIfAny starts the scheduler when scheduled jobs are stored (at
// start-up, after a restart).
func (s *scheduler) kickIfAny() {
	db, ok := s.h.b.(DocBackend)
	if !ok {
		return
	}
	if docs, err := db.Docs(s.h.jobs.ctx, scheduledJobsCollection); err == nil && len(docs) > 0 {
		s.kick()
	}
}
