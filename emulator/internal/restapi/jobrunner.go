package restapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// jobRunner runs jobs: one goroutine per running job, which takes the
// job's devices in order, batch after batch, one device at a time, and
// stores each device's outcome in the job's document before the next, so
// a restart (--data-dir) loses at most the device in flight, which runs
// again. Stop, resume and the outcome of a device are read-modify-writes
// of the job's document under mu.
type jobRunner struct {
	h     *handler
	mu    sync.Mutex
	alive map[string]bool // jobs with a goroutine
	done  <-chan struct{} // closed when the backend stops (nil: never)
	ctx   context.Context
	wg    sync.WaitGroup
	// deviceTimeout bounds one device's change (a command's connection
	// and response timeouts plus grace).
	deviceTimeout time.Duration
	// exitHook, when set (tests), runs as a job's goroutine begins to
	// exit after finding its job stopped.
	exitHook func(id string)
}

func newJobRunner(h *handler) *jobRunner {
	jr := &jobRunner{h: h, alive: map[string]bool{}, deviceTimeout: time.Duration(DefaultResponseTimeout)*time.Second + commandGrace}
	ctx, cancel := context.WithCancel(context.Background())
	jr.ctx = ctx
	if d, ok := h.b.(doner); ok {
		jr.done = d.Done()
		go func() { <-jr.done; cancel() }()
	} else {
		_ = cancel // never cancelled: the backend never stops
	}
	return jr
}

// recover continues the jobs a restart interrupted: every job stored as
// pending or running runs again from its first pending device.
func (jr *jobRunner) recover() {
	db, ok := jr.h.b.(DocBackend)
	if !ok {
		return
	}
	recs, err := listDocs[jobRecord](jr.ctx, db, jobsCollection)
	if err != nil {
		jr.h.log.Error("restapi: cannot read the stored jobs", "err", err)
		return
	}
	for _, rec := range recs {
		if rec.Job.Status == JobPending || rec.Job.Status == JobRunning {
			jr.h.log.Info("restapi: continuing a job interrupted by a restart", "job", rec.Job.ID)
			jr.start(db, rec.Job.ID)
		}
	}
}

// create stores job j (validated) over the group's devices now, or over
// devices when not nil (a rerun), and starts it.
func (jr *jobRunner) create(ctx context.Context, db DocBackend, j Job, devices []string) (jobRecord, error) {
	jr.mu.Lock()
	defer jr.mu.Unlock()
	if _, err := db.Doc(ctx, jobsCollection, j.ID); err == nil {
		return jobRecord{}, errorf(ErrConflict, "job %q exists; a job cannot be replaced (use another id, or rerun it)", j.ID)
	} else if !errors.Is(err, ErrNotFound) {
		return jobRecord{}, err
	}
	if devices == nil {
		var err error
		if devices, err = jr.h.devicesFor(ctx, j.Group, j.Data); err != nil {
			return jobRecord{}, err
		}
	}
	size := batchSize(j.Batch, len(devices))
	rec := jobRecord{Job: j, Devices: make([]jobDevice, 0, len(devices))}
	for i, id := range devices {
		rec.Devices = append(rec.Devices, jobDevice{ID: id, Status: DevicePending, Batch: i / size})
	}
	rec.Job.Status, rec.Job.Start, rec.Job.End, rec.Job.Progress = JobPending, nil, nil, nil
	if err := putDoc(ctx, db, jobsCollection, j.ID, rec); err != nil {
		return jobRecord{}, err
	}
	jr.startLocked(db, j.ID)
	return rec, nil
}

func (jr *jobRunner) start(db DocBackend, id string) {
	jr.mu.Lock()
	defer jr.mu.Unlock()
	jr.startLocked(db, id)
}

func (jr *jobRunner) startLocked(db DocBackend, id string) {
	if jr.alive[id] {
		return
	}
	jr.alive[id] = true
	jr.wg.Add(1)
	go func() {
		defer jr.wg.Done()
		jr.run(db, id)
	}()
}

// stop stops a pending or running job before its next device (409
// otherwise).
func (jr *jobRunner) stop(ctx context.Context, db DocBackend, id string) error {
	return jr.update(ctx, db, id, func(rec *jobRecord) error {
		if rec.Job.Status != JobPending && rec.Job.Status != JobRunning {
			return fmt.Errorf("%w: job %q is %s; only a pending or running job stops", errJobState, id, rec.Job.Status)
		}
		rec.Job.Status = JobStopped
		return nil
	})
}

// resume runs a stopped job again from its first pending device (409
// for a job that is not stopped).
func (jr *jobRunner) resume(ctx context.Context, db DocBackend, id string) error {
	err := jr.update(ctx, db, id, func(rec *jobRecord) error {
		if rec.Job.Status != JobStopped {
			return fmt.Errorf("%w: job %q is %s; only a stopped job resumes", errJobState, id, rec.Job.Status)
		}
		rec.Job.Status = JobRunning
		return nil
	})
	if err == nil {
		jr.start(db, id)
	}
	return err
}

// rerun creates job newID with the definition of job id over the devices
// that failed in it; the job must have ended and have failed devices.
func (jr *jobRunner) rerun(ctx context.Context, db DocBackend, id, newID string) (jobRecord, error) {
	rec, err := getDoc[jobRecord](ctx, db, jobsCollection, id)
	if err != nil {
		return jobRecord{}, err
	}
	switch rec.Job.Status {
	case JobPending, JobRunning, JobStopped:
		return jobRecord{}, fmt.Errorf("%w: job %q is %s; a job reruns once it has ended", errJobState, id, rec.Job.Status)
	}
	var failed []string
	for _, d := range rec.Devices {
		if d.Status == DeviceFailed {
			failed = append(failed, d.ID)
		}
	}
	if len(failed) == 0 {
		return jobRecord{}, fmt.Errorf("%w: job %q has no failed device to rerun", errJobState, id)
	}
	j := rec.Job
	j.ID, j.ScheduledJobID = newID, ""
	return jr.create(ctx, db, j, failed)
}

// update changes the stored job under mu.
func (jr *jobRunner) update(ctx context.Context, db DocBackend, id string, f func(*jobRecord) error) error {
	jr.mu.Lock()
	defer jr.mu.Unlock()
	rec, err := getDoc[jobRecord](ctx, db, jobsCollection, id)
	if err != nil {
		return err
	}
	if err := f(&rec); err != nil {
		return err
	}
	return putDoc(ctx, db, jobsCollection, id, rec)
}

// run is a job's goroutine.
func (jr *jobRunner) run(db DocBackend, id string) {
	sawStop := false
	defer func() {
		if sawStop && jr.exitHook != nil {
			jr.exitHook(id)
		}
		jr.mu.Lock()
		defer jr.mu.Unlock()
		delete(jr.alive, id)
		if !sawStop || jr.ctx.Err() != nil {
			return
		}
		// A resume between this goroutine's last look (stopped) and its
		// exit found it alive and started nothing: run again.
		if rec, err := getDoc[jobRecord](jr.ctx, db, jobsCollection, id); err == nil &&
			(rec.Job.Status == JobRunning || rec.Job.Status == JobPending) {
			jr.startLocked(db, id)
		}
	}()
	log := jr.h.log.With("job", id)
	for {
		if jr.ctx.Err() != nil {
			return // the emulator stops; the stored job continues on restart
		}
		// Pick the next device, or end the job.
		var next jobDevice
		var rec jobRecord
		err := jr.update(jr.ctx, db, id, func(r *jobRecord) error {
			rec = *r
			if r.Job.Status != JobPending && r.Job.Status != JobRunning {
				return errStopRun
			}
			if r.Job.Status == JobPending || r.Job.Start == nil {
				now := jr.h.clock.Now().UTC()
				r.Job.Start = &now
			}
			r.Job.Status = JobRunning
			for _, d := range r.Devices {
				if d.Status == DevicePending {
					next = d
					return nil
				}
			}
			now := jr.h.clock.Now().UTC()
			r.Job.Status, r.Job.End = JobComplete, &now
			rec = *r
			return nil
		})
		if errors.Is(err, errStopRun) {
			sawStop = true
			return
		}
		if err == nil && next.ID == "" {
			return
		}
		if err != nil {
			if jr.ctx.Err() == nil {
				log.Error("restapi: job stopped by a store error", "err", err)
			}
			return
		}
		outcome := jr.apply(rec.Job, next.ID)
		err = jr.update(jr.ctx, db, id, func(r *jobRecord) error {
			total, failed, batchTotal, batchFailed := 0, 0, 0, 0
			for i := range r.Devices {
				d := &r.Devices[i]
				if d.ID == next.ID && d.Status == DevicePending {
					d.Status, d.Error = DeviceCompleted, ""
					if outcome != nil {
						d.Status, d.Error = DeviceFailed, outcome.Error()
					}
				}
				total++
				if d.Batch == next.Batch {
					batchTotal++
				}
				if d.Status == DeviceFailed {
					failed++
					if d.Batch == next.Batch {
						batchFailed++
					}
				}
			}
			th := r.Job.CancellationThreshold
			reached := false
			if th != nil && th.Batch {
				reached = thresholdReached(th, batchFailed, batchTotal)
			} else {
				reached = thresholdReached(th, failed, total)
			}
			if reached && (r.Job.Status == JobRunning || r.Job.Status == JobStopped) {
				now := jr.h.clock.Now().UTC()
				r.Job.Status, r.Job.End = JobCancelled, &now
			}
			return nil
		})
		if outcome != nil {
			log.Info("restapi: job device failed", "device", next.ID, "err", outcome)
		}
		if err != nil {
			if jr.ctx.Err() == nil {
				log.Error("restapi: job stopped by a store error", "err", err)
			}
			return
		}
	}
}

var errStopRun = errors.New("restapi: job not running")

// apply makes the job's changes on one device, through the same backend
// calls the REST routes use: nil when every change succeeded.
func (jr *jobRunner) apply(j Job, device string) error {
	ctx, cancel := context.WithTimeout(jr.ctx, jr.deviceTimeout)
	defer cancel()
	b := jr.h.b
	for _, d := range j.Data {
		c, name := splitPath(d.Path)
		var value any
		if len(d.Value) > 0 {
			if err := json.Unmarshal(d.Value, &value); err != nil {
				return fmt.Errorf("value of %s: %w", d.Path, err)
			}
		}
		switch d.Type {
		case "property":
			patch := map[string]any{name: value}
			if c != "" {
				patch = map[string]any{c: map[string]any{"__t": "c", name: value}}
			}
			if err := b.PatchDesired(ctx, device, patch); err != nil {
				return err
			}
		case "cloudProperty":
			if err := jr.h.setCloudProperty(ctx, device, c, name, d.Value); err != nil {
				return err
			}
		case "command":
			if jr.h.durableCommand(ctx, device, c, name) {
				if err := b.QueueCommand(ctx, device, c, name, d.Value); err != nil {
					return err
				}
				continue
			}
			res, err := b.InvokeCommand(ctx, device, c, name, CommandRequest{Request: d.Value, ResponseTimeout: DefaultResponseTimeout})
			if err != nil {
				return err
			}
			if res.ResponseCode >= 400 {
				return fmt.Errorf("the device answered command %s with status %d", d.Path, res.ResponseCode)
			}
		default:
			return fmt.Errorf("job data type %q is not served", d.Type)
		}
	}
	return nil
}

// setCloudProperty stores a cloud property value of a device (IoT
// Central keeps cloud properties in the application, not in the device
// twin). The device must exist.
func (h *handler) setCloudProperty(ctx context.Context, device, component, name string, value json.RawMessage) error {
	if _, err := h.b.GetDevice(ctx, device); err != nil {
		return err
	}
	db, err := h.docs()
	if err != nil {
		return err
	}
	h.entityMu.Lock()
	defer h.entityMu.Unlock()
	props := map[string]any{}
	if b, err := db.Doc(ctx, cloudPropsCollection, device); err == nil {
		_ = json.Unmarshal(b, &props)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	var v any
	_ = json.Unmarshal(value, &v)
	if component != "" {
		m, _ := props[component].(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		m[name] = v
		props[component] = m
	} else {
		props[name] = v
	}
	return putDoc(ctx, db, cloudPropsCollection, device, props)
}

// addCloudProperties adds the device's stored cloud property values of
// component ("" for the root) to a properties view, as IoT Central shows
// cloud properties among the device's properties.
func (h *handler) addCloudProperties(ctx context.Context, device, component string, view map[string]any) {
	db, ok := h.b.(DocBackend)
	if !ok {
		return
	}
	b, err := db.Doc(ctx, cloudPropsCollection, device)
	if err != nil {
		return
	}
	var props map[string]any
	if json.Unmarshal(b, &props) != nil {
		return
	}
	if component != "" {
		props, _ = props[component].(map[string]any)
	}
	for k, v := range props {
		if m, isComp := v.(map[string]any); isComp && component == "" {
			cv, _ := view[k].(map[string]any)
			if cv == nil {
				cv = map[string]any{}
			}
			for n, x := range m {
				cv[n] = x
			}
			view[k] = cv
			continue
		}
		view[k] = v
	}
}
