package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// This file holds IoT Hub's jobs (v2): a direct method or a twin update
// scheduled for a set of devices, run once at its start time, with
// per-job statistics. Jobs are stored (meta records "job/{id}") when they
// are created, start and end; a job that was scheduled or running when the
// emulator stopped runs again from its start after Load.

// Job types (IoT Hub's names).
const (
	JobTypeMethod = "scheduleDeviceMethod"
	JobTypeTwin   = "scheduleUpdateTwin"
)

// Job statuses (IoT Hub's names).
const (
	JobQueued    = "queued"
	JobScheduled = "scheduled"
	JobRunning   = "running"
	JobCompleted = "completed"
	JobCancelled = "cancelled"
	JobFailed    = "failed"
)

// Job limits.
const (
	// MaxJobs is how many jobs the emulator keeps (finished ones included;
	// the oldest finished job is forgotten beyond it).
	MaxJobs = 100
	// DefaultJobMaxExecution bounds a job without maxExecutionTimeInSeconds.
	DefaultJobMaxExecution = time.Hour
)

// JobMethod is the direct method of a scheduleDeviceMethod job.
type JobMethod struct {
	// Name is the method name (required).
	Name string `json:"methodName"`
	// Payload is the JSON request; empty sends null.
	Payload json.RawMessage `json:"payload,omitempty"`
	// ResponseTimeoutInSeconds bounds each device's answer (0: 30 s, at
	// most 300); ConnectTimeoutInSeconds waits for an offline device (0: none).
	ResponseTimeoutInSeconds int `json:"responseTimeoutInSeconds,omitempty"`
	ConnectTimeoutInSeconds  int `json:"connectTimeoutInSeconds,omitempty"`
}

// JobTwin is the twin change of a scheduleUpdateTwin job (merge patches).
type JobTwin struct {
	// Tags and Desired are merged into each device's twin (null removes).
	Tags    map[string]any `json:"tags,omitempty"`
	Desired map[string]any `json:"desired,omitempty"`
}

// JobStats are IoT Hub's deviceJobStatistics.
type JobStats struct {
	// DeviceCount is the number of devices selected; the others count
	// them by state.
	DeviceCount    int `json:"deviceCount"`
	FailedCount    int `json:"failedCount"`
	SucceededCount int `json:"succeededCount"`
	RunningCount   int `json:"runningCount"`
	PendingCount   int `json:"pendingCount"`
}

// Job is a scheduled job and its state.
type Job struct {
	// ID names the job (as device ids); Type is JobTypeMethod or JobTypeTwin.
	ID   string `json:"jobId"`
	Type string `json:"type"`
	// QueryCondition is the WHERE clause as the service gave it (shown only).
	QueryCondition string `json:"queryCondition"`
	// DeviceIDs are the devices the condition selected at creation.
	DeviceIDs []string `json:"deviceIds"`
	// Method or Twin is what the job does, by Type.
	Method *JobMethod `json:"method,omitempty"`
	Twin   *JobTwin   `json:"twin,omitempty"`
	// Start is when it runs (zero or past: now); MaxExecution bounds the
	// run in seconds (0: DefaultJobMaxExecution).
	Start        time.Time `json:"startTime"`
	MaxExecution int       `json:"maxExecutionTimeInSeconds"`
	// Created and End (zero until it ends) are set by the core.
	Created time.Time `json:"createdTime"`
	End     time.Time `json:"endTime,omitzero"`
	// Status is one of the Job* statuses; FailureReason says why it failed.
	Status        string   `json:"status"`
	FailureReason string   `json:"failureReason,omitempty"`
	Stats         JobStats `json:"deviceJobStatistics"`
}

type jobState struct {
	job    Job
	cancel chan struct{} // closed by CancelJob
	seq    int64         // creation order
}

const metaJobPrefix = "job/"

func (c *Core) jobChangeLocked(j Job) Change {
	return Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: metaJobPrefix + j.ID, Doc: mustJSON(j)}}
}

// restoreJob loads a stored job (Load); running ones are queued again.
func (c *Core) restoreJob(doc []byte) error {
	var j Job
	if err := json.Unmarshal(doc, &j); err != nil {
		return err
	}
	if c.jobs == nil {
		c.jobs = map[string]*jobState{}
	}
	if j.Status == JobRunning || j.Status == JobQueued {
		j.Status = JobScheduled
		j.Stats = JobStats{DeviceCount: len(j.DeviceIDs), PendingCount: len(j.DeviceIDs)}
	}
	c.jobSeq++
	c.jobs[j.ID] = &jobState{job: j, cancel: make(chan struct{}), seq: c.jobSeq}
	return nil
}

// resumeJobs starts the runners of the jobs Load found unfinished.
func (c *Core) resumeJobs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, js := range c.jobs {
		if js.job.Status == JobScheduled {
			c.startJobLocked(js)
		}
	}
}

// ScheduleJob validates and stores job j (ID, Type, DeviceIDs, Method or
// Twin, Start, MaxExecution set by the caller; Start zero means now) and
// runs it at its start time. It returns the stored job, ErrConflict for
// an id in use, ErrInvalid for a bad job, or the store's error.
func (c *Core) ScheduleJob(ctx context.Context, j Job) (Job, error) {
	if err := ValidID(j.ID); err != nil {
		return Job{}, fmt.Errorf("job: %w", err)
	}
	switch j.Type {
	case JobTypeMethod:
		if j.Method == nil || j.Method.Name == "" {
			return Job{}, fmt.Errorf("%w: a %s job needs cloudToDeviceMethod.methodName", ErrInvalid, j.Type)
		}
		if _, err := MethodName("", j.Method.Name); err != nil {
			return Job{}, err
		}
	case JobTypeTwin:
		if j.Twin == nil || (len(j.Twin.Tags) == 0 && len(j.Twin.Desired) == 0) {
			return Job{}, fmt.Errorf("%w: a %s job needs updateTwin tags or desired properties", ErrInvalid, j.Type)
		}
	default:
		return Job{}, fmt.Errorf("%w: job type %q (want %s or %s)", ErrInvalid, j.Type, JobTypeMethod, JobTypeTwin)
	}
	if j.MaxExecution <= 0 {
		j.MaxExecution = int(DefaultJobMaxExecution / time.Second)
	}
	now := c.now()
	if j.Start.IsZero() || j.Start.Before(now) {
		j.Start = now
	}
	j.Created, j.Status, j.End, j.FailureReason = now, JobScheduled, time.Time{}, ""
	j.DeviceIDs = slices.Clone(j.DeviceIDs)
	j.Stats = JobStats{DeviceCount: len(j.DeviceIDs), PendingCount: len(j.DeviceIDs)}
	c.mu.Lock()
	if c.jobs == nil {
		c.jobs = map[string]*jobState{}
	}
	if _, ok := c.jobs[j.ID]; ok {
		c.mu.Unlock()
		return Job{}, fmt.Errorf("%w: job %q", ErrConflict, j.ID)
	}
	changes := []Change{c.jobChangeLocked(j)}
	if len(c.jobs) >= MaxJobs {
		old := c.oldestFinishedLocked()
		if old == "" {
			c.mu.Unlock()
			return Job{}, fmt.Errorf("%w: %d jobs are unfinished", ErrQueueFull, MaxJobs)
		}
		delete(c.jobs, old)
		changes = append(changes, Change{Op: OpDelete, Record: Record{Kind: KindMeta, Key: metaJobPrefix + old}})
	}
	c.jobSeq++
	js := &jobState{job: j, cancel: make(chan struct{}), seq: c.jobSeq}
	c.jobs[j.ID] = js
	staged := c.stageLocked(changes...)
	c.mu.Unlock()
	if err := await(ctx, staged); err != nil {
		return Job{}, err
	}
	c.mu.Lock()
	c.startJobLocked(js)
	c.mu.Unlock()
	c.log.Info("job scheduled", "job_id", j.ID, "type", j.Type, "devices", len(j.DeviceIDs))
	return j, nil
}

func (c *Core) oldestFinishedLocked() string {
	var id string
	var seq int64
	for k, js := range c.jobs {
		switch js.job.Status {
		case JobCompleted, JobCancelled, JobFailed:
			if id == "" || js.seq < seq {
				id, seq = k, js.seq
			}
		}
	}
	return id
}

// startJobLocked runs js at its start time; c.mu held.
func (c *Core) startJobLocked(js *jobState) {
	if c.closed() {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.runJob(js)
	}()
}

func (c *Core) runJob(js *jobState) {
	c.mu.Lock()
	start, maxExec := js.job.Start, time.Duration(js.job.MaxExecution)*time.Second
	c.mu.Unlock()
	t := time.NewTimer(time.Until(start))
	defer t.Stop()
	select {
	case <-t.C:
	case <-js.cancel:
		return
	case <-c.done:
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), maxExec)
	defer cancel()
	go func() {
		select {
		case <-js.cancel:
			cancel()
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	c.mu.Lock()
	if js.job.Status != JobScheduled {
		c.mu.Unlock()
		return
	}
	js.job.Status = JobRunning
	j := js.job
	staged := c.stageLocked(c.jobChangeLocked(j))
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		c.log.Warn("job start not stored", "job_id", j.ID, "error", err)
	}
	c.log.Info("job running", "job_id", j.ID)
	for _, id := range j.DeviceIDs {
		if ctx.Err() != nil {
			break
		}
		c.mu.Lock()
		js.job.Stats.PendingCount--
		js.job.Stats.RunningCount++
		c.mu.Unlock()
		err := c.runJobOn(ctx, j, id)
		c.mu.Lock()
		js.job.Stats.RunningCount--
		if err == nil {
			js.job.Stats.SucceededCount++
		} else {
			js.job.Stats.FailedCount++
		}
		c.mu.Unlock()
		if err != nil {
			c.log.Info("job failed on a device", "job_id", j.ID, "device_id", id, "error", err)
		}
	}
	c.mu.Lock()
	switch {
	case js.job.Status == JobCancelled:
	case c.closed():
		c.mu.Unlock()
		return // runs again after a restart
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		js.job.Status, js.job.FailureReason = JobFailed, "maxExecutionTimeInSeconds reached"
	default:
		js.job.Status = JobCompleted
	}
	js.job.End = c.now()
	j = js.job
	staged = c.stageLocked(c.jobChangeLocked(j))
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		c.log.Warn("job end not stored", "job_id", j.ID, "error", err)
	}
	c.log.Info("job ended", "job_id", j.ID, "status", j.Status, "succeeded", j.Stats.SucceededCount, "failed", j.Stats.FailedCount)
}

// runJobOn applies the job to one device.
func (c *Core) runJobOn(ctx context.Context, j Job, id string) error {
	switch j.Type {
	case JobTypeMethod:
		m := j.Method
		var payload any = json.RawMessage("null")
		if len(m.Payload) > 0 {
			payload = m.Payload
		}
		_, err := c.InvokeCommand(ctx, id, "", m.Name, payload,
			time.Duration(m.ConnectTimeoutInSeconds)*time.Second, time.Duration(m.ResponseTimeoutInSeconds)*time.Second)
		return err
	default:
		var tags, desired map[string]any
		if j.Twin.Tags != nil {
			tags = deepCopyMap(j.Twin.Tags)
		}
		if j.Twin.Desired != nil {
			desired = deepCopyMap(j.Twin.Desired)
		}
		_, err := c.UpdateHubTwin(ctx, id, "*", tags, desired, false)
		return err
	}
}

// Job returns a job, or ErrNotFound.
func (c *Core) Job(id string) (Job, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	js, ok := c.jobs[id]
	if !ok {
		return Job{}, fmt.Errorf("%w: job %q", ErrNotFound, id)
	}
	return js.job, nil
}

// Jobs lists the jobs of type and status ("" for any), newest first.
func (c *Core) Jobs(jobType, status string) []Job {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*jobState
	for _, js := range c.jobs {
		if (jobType == "" || strings.EqualFold(js.job.Type, jobType)) && (status == "" || strings.EqualFold(js.job.Status, status)) {
			out = append(out, js)
		}
	}
	slices.SortFunc(out, func(a, b *jobState) int { return int(b.seq - a.seq) })
	jobs := make([]Job, len(out))
	for i, js := range out {
		jobs[i] = js.job
	}
	return jobs
}

// CancelJob cancels a scheduled or running job (devices not reached yet are
// left alone) and returns it. It returns ErrNotFound, or ErrInvalid for a
// finished job.
func (c *Core) CancelJob(id string) (Job, error) {
	c.mu.Lock()
	js, ok := c.jobs[id]
	if !ok {
		c.mu.Unlock()
		return Job{}, fmt.Errorf("%w: job %q", ErrNotFound, id)
	}
	switch js.job.Status {
	case JobScheduled, JobQueued, JobRunning:
	default:
		c.mu.Unlock()
		return Job{}, fmt.Errorf("%w: job %q is %s", ErrInvalid, id, js.job.Status)
	}
	wasRunning := js.job.Status == JobRunning
	js.job.Status = JobCancelled
	if !wasRunning {
		js.job.End = c.now()
	}
	close(js.cancel)
	j := js.job
	staged := c.stageLocked(c.jobChangeLocked(j))
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return Job{}, err
	}
	c.log.Info("job cancelled", "job_id", id)
	return j, nil
}
