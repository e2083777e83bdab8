package restapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Job is an IoT Central job: a change (writable properties, cloud
// properties or a command) applied to the devices of a device group.
type Job struct {
	// ID is 1 to 255 letters, digits, '-' or '_'.
	ID string `json:"id"`
	// ScheduledJobID names the scheduled job that created the job.
	ScheduledJobID string `json:"scheduledJobId,omitempty"`
	// DisplayName is free text.
	DisplayName string `json:"displayName,omitempty"`
	// Description is free text, shown even when empty (as the spec's
	// example of scheduled runs shows it).
	Description string `json:"description"`
	// Group is the id of the device group whose devices the job changes.
	Group string `json:"group"`
	// Batch splits the devices into batches run one after another.
	Batch *JobBatch `json:"batch,omitempty"`
	// CancellationThreshold cancels the job when this many devices fail.
	CancellationThreshold *JobCancellationThreshold `json:"cancellationThreshold,omitempty"`
	// Data are the changes, all of one type.
	Data []JobData `json:"data"`
	// Start and End are when the job ran (read only).
	Start *time.Time `json:"start,omitempty"`
	End   *time.Time `json:"end,omitempty"`
	// Progress counts the devices by status (read only).
	Progress *JobProgress `json:"progress,omitempty"`
	// Status is pending, running, stopped, complete, cancelled or failed
	// (read only).
	Status string `json:"status,omitempty"`
	// Organizations holds at most one existing organization id.
	Organizations []string `json:"organizations,omitempty"`
}

// JobBatch is a job's batching: a number of devices or a percentage of
// them per batch.
type JobBatch struct {
	// Type is "number" or "percentage".
	Type string `json:"type"`
	// Value is the number (>= 1) or percentage (0 < v <= 100).
	Value float64 `json:"value"`
}

// JobCancellationThreshold cancels a job when a number or percentage of
// its devices (or of a batch's, Batch true) have failed.
type JobCancellationThreshold struct {
	// Type is "number" or "percentage".
	Type string `json:"type"`
	// Value is the number (>= 1) or percentage (0 < v <= 100).
	Value float64 `json:"value"`
	// Batch applies the threshold to each batch instead of the whole job.
	Batch bool `json:"batch,omitempty"`
}

// JobData is one change of a job: Type "property" (a writable property,
// sent to the device as desired), "cloudProperty" or "command"; Target
// the device template id; Path "[component.]name"; Value the property
// value or the command's request payload.
type JobData struct {
	// Type is property, cloudProperty or command.
	Type string `json:"type"`
	// Target is the id of the device template that defines the capability.
	Target string `json:"target"`
	// Path is the capability: "name" or "component.name".
	Path string `json:"path"`
	// Value is the property value (required for properties) or the
	// command's request payload.
	Value json.RawMessage `json:"value,omitempty"`
}

// JobProgress counts a job's devices by status.
type JobProgress struct {
	// Total is the number of the job's devices.
	Total int `json:"total"`
	// Pending counts the devices not run yet.
	Pending int `json:"pending"`
	// Completed counts the devices changed.
	Completed int `json:"completed"`
	// Failed counts the devices whose change failed.
	Failed int `json:"failed"`
}

// JobDeviceStatus is one device of a job: pending (not run yet),
// completed or failed.
type JobDeviceStatus struct {
	// ID is the device id.
	ID string `json:"id"`
	// Status is DevicePending, DeviceCompleted or DeviceFailed.
	Status string `json:"status"`
}

// The job statuses. IoT Central's spec example shows "complete" for a
// job that ran to its end (whatever its devices' outcome).
const (
	// JobPending is a job created and not started yet.
	JobPending = "pending"
	// JobRunning is a job changing its devices.
	JobRunning = "running"
	// JobStopped is a job stopped by POST .../stop (resumable).
	JobStopped = "stopped"
	// JobComplete is a job that ran every device.
	JobComplete = "complete"
	// JobCancelled is a job its cancellation threshold ended.
	JobCancelled = "cancelled"
	// JobFailed is a scheduled run that could not start.
	JobFailed = "failed"
)

// The device statuses of a job.
const (
	// DevicePending is a device not run yet.
	DevicePending = "pending"
	// DeviceCompleted is a device changed.
	DeviceCompleted = "completed"
	// DeviceFailed is a device whose change failed.
	DeviceFailed = "failed"
)

// jobRecord is a job as stored: the job and its devices in the order
// they run, each with its batch number and its failure reason.
type jobRecord struct {
	Job     Job         `json:"job"`
	Devices []jobDevice `json:"devices"`
}

type jobDevice struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Batch  int    `json:"batch"`
	Error  string `json:"error,omitempty"`
}

// view is the job as the API shows it, with its progress.
func (rec jobRecord) view() Job {
	j := rec.Job
	p := JobProgress{Total: len(rec.Devices)}
	for _, d := range rec.Devices {
		switch d.Status {
		case DeviceCompleted:
			p.Completed++
		case DeviceFailed:
			p.Failed++
		default:
			p.Pending++
		}
	}
	if j.Status != JobPending || p.Total > 0 {
		j.Progress = &p
	}
	return j
}

func (h *handler) jobRoutes() []route {
	return []route{
		{"/api/jobs", map[string]http.HandlerFunc{"GET": h.listJobs}},
		{"/api/jobs/{id}", map[string]http.HandlerFunc{"GET": h.getJob, "PUT": h.putJob}},
		{"/api/jobs/{id}/devices", map[string]http.HandlerFunc{"GET": h.jobDevices}},
		{"/api/jobs/{id}/stop", map[string]http.HandlerFunc{"POST": h.stopJob}},
		{"/api/jobs/{id}/resume", map[string]http.HandlerFunc{"POST": h.resumeJob}},
		{"/api/jobs/{id}/rerun/{rerunId}", map[string]http.HandlerFunc{"PUT": h.rerunJob}},
	}
}

// applicationRoutes are the routes of the entities kept as documents.
func (h *handler) applicationRoutes() []route {
	rs := h.jobRoutes()
	rs = append(rs, h.scheduledJobRoutes()...)
	rs = append(rs, h.organizationRoutes()...)
	rs = append(rs, h.relationshipRoutes()...)
	rs = append(rs, h.moduleRoutes()...)
	return rs
}

func (h *handler) listJobs(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	var recs []jobRecord
	if err == nil {
		recs, err = listDocs[jobRecord](r.Context(), db, jobsCollection)
	}
	out := make([]Job, 0, len(recs))
	for _, rec := range recs {
		out = append(out, rec.view())
	}
	page(h, w, r, out, err)
}

func (h *handler) getJob(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	var rec jobRecord
	if err == nil {
		rec, err = getDoc[jobRecord](r.Context(), db, jobsCollection, r.PathValue("id"))
	}
	h.respond(w, r, http.StatusOK, rec.view(), err)
}

func (h *handler) jobDevices(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	var rec jobRecord
	if err == nil {
		rec, err = getDoc[jobRecord](r.Context(), db, jobsCollection, r.PathValue("id"))
	}
	out := make([]JobDeviceStatus, 0, len(rec.Devices))
	for _, d := range rec.Devices {
		out = append(out, JobDeviceStatus{ID: d.ID, Status: d.Status})
	}
	page(h, w, r, out, err)
}

// checkJobID applies the spec's pattern ^[a-zA-Z0-9_-]*$, up to 255.
func checkJobID(what, id string) error {
	if !idPattern(id, 255, "-_") {
		return invalidf("%s id %q must be 1 to 255 letters, digits, '-' or '_'", what, id)
	}
	return nil
}

// checkAmount validates a batch or cancellation threshold amount.
func checkAmount(what, typ string, v float64) error {
	switch typ {
	case "number":
		if v < 1 || v != math.Trunc(v) {
			return invalidf("%s of type number must be a whole number >= 1, got %v", what, v)
		}
	case "percentage":
		if v <= 0 || v > 100 {
			return invalidf("%s of type percentage must be > 0 and <= 100, got %v", what, v)
		}
	default:
		return invalidf("%s type %q is not number or percentage", what, typ)
	}
	return nil
}

// splitPath reads a job path "[component.]name".
func splitPath(p string) (component, name string) {
	if c, n, ok := strings.Cut(p, "."); ok {
		return c, n
	}
	return "", p
}

// checkJobDefinition validates what a job and a scheduled job share: the
// group exists; data is 1.. entries of one served type, each naming an
// existing template and a capability of it of the right kind (a
// writable property, a cloud property, a command), with a value where
// one is needed; batch and threshold amounts; organizations exist.
func (h *handler) checkJobDefinition(ctx context.Context, group string, data []JobData, batch *JobBatch, th *JobCancellationThreshold, orgs []string) error {
	if group == "" {
		return invalidf("group is required: the id of a device group")
	}
	gb, ok := h.b.(DeviceGroupBackend)
	if !ok {
		return invalidf("device group %q does not exist", group)
	}
	if _, err := gb.GetDeviceGroup(ctx, group); errors.Is(err, ErrNotFound) {
		return invalidf("device group %q does not exist", group)
	} else if err != nil {
		return err
	}
	if len(data) == 0 {
		return invalidf("data is required: at least one {\"type\", \"target\", \"path\", \"value\"}")
	}
	for i, d := range data {
		if d.Type != data[0].Type {
			return invalidf("data entries must all be of one type: %q and %q", data[0].Type, d.Type)
		}
		if d.Target == "" || d.Path == "" {
			return invalidf("data[%d]: target (a device template id) and path are required", i)
		}
		doc, err := h.b.GetTemplate(ctx, d.Target)
		if errors.Is(err, ErrNotFound) {
			return invalidf("data[%d]: device template %q does not exist", i, d.Target)
		} else if err != nil {
			return err
		}
		c, name := splitPath(d.Path)
		hasValue := len(d.Value) > 0 && string(d.Value) != "null"
		switch d.Type {
		case "property":
			e := templateEntry(doc, c, name, "Property")
			if e == nil || hasJSONType(e["@type"], "Cloud") || e["writable"] != true {
				return invalidf("data[%d]: %q is not a writable property of template %q", i, d.Path, d.Target)
			}
			if !hasValue {
				return invalidf("data[%d]: a property job needs a value", i)
			}
		case "cloudProperty":
			e := templateEntry(doc, c, name, "Cloud")
			if e == nil {
				return invalidf("data[%d]: %q is not a cloud property of template %q", i, d.Path, d.Target)
			}
			if !hasValue {
				return invalidf("data[%d]: a cloud property job needs a value", i)
			}
		case "command":
			if templateEntry(doc, c, name, "Command") == nil {
				return invalidf("data[%d]: %q is not a command of template %q", i, d.Path, d.Target)
			}
		case "deviceTemplateMigration":
			return invalidf("data[%d]: device template migration jobs are not served by the emulator", i)
		default:
			return invalidf("data[%d]: type %q is not property, cloudProperty or command", i, d.Type)
		}
	}
	if batch != nil {
		if err := checkAmount("batch", batch.Type, batch.Value); err != nil {
			return err
		}
	}
	if th != nil {
		if err := checkAmount("cancellationThreshold", th.Type, th.Value); err != nil {
			return err
		}
	}
	return h.checkOrganizations(ctx, orgs)
}

// putJob creates a job and starts it. A job cannot be replaced (409).
func (h *handler) putJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	db, err := h.docs()
	var body []byte
	if err == nil {
		err = checkJobID("job", id)
	}
	if err == nil {
		body, err = readBody(w, r)
	}
	var j Job
	if err == nil {
		err = asValidation(decodeJSON(body, &j))
	}
	if err == nil && j.ID != "" && j.ID != id {
		err = invalidf("body id %q differs from the id %q in the path", j.ID, id)
	}
	h.entityMu.Lock() // the organizations checked stay until the job is stored
	defer h.entityMu.Unlock()
	if err == nil {
		err = h.checkJobDefinition(r.Context(), j.Group, j.Data, j.Batch, j.CancellationThreshold, j.Organizations)
	}
	var rec jobRecord
	if err == nil {
		j.ID = id
		rec, err = h.jobs.create(r.Context(), db, j, nil)
	}
	h.respond(w, r, http.StatusOK, rec.view(), err)
}

func (h *handler) stopJob(w http.ResponseWriter, r *http.Request) {
	h.jobAction(w, r, h.jobs.stop)
}

func (h *handler) resumeJob(w http.ResponseWriter, r *http.Request) {
	h.jobAction(w, r, h.jobs.resume)
}

func (h *handler) jobAction(w http.ResponseWriter, r *http.Request, act func(context.Context, DocBackend, string) error) {
	db, err := h.docs()
	if err == nil {
		err = act(r.Context(), db, r.PathValue("id"))
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// rerunJob creates job rerunId over the devices that failed in job id
// (which must have ended).
func (h *handler) rerunJob(w http.ResponseWriter, r *http.Request) {
	id, rerun := r.PathValue("id"), r.PathValue("rerunId")
	db, err := h.docs()
	if err == nil {
		err = checkJobID("rerun job", rerun)
	}
	var rec jobRecord
	if err == nil {
		rec, err = h.jobs.rerun(r.Context(), db, id, rerun)
	}
	h.respond(w, r, http.StatusOK, rec.view(), err)
}

// devicesFor returns the ids of the group's devices that use one of the
// data's target templates, sorted.
func (h *handler) devicesFor(ctx context.Context, group string, data []JobData) ([]string, error) {
	gb, ok := h.b.(DeviceGroupBackend)
	if !ok {
		return nil, invalidf("device group %q does not exist", group)
	}
	g, err := gb.GetDeviceGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	q, err := parseDeviceQuery(g.Filter)
	if err != nil {
		return nil, err
	}
	ds, err := h.b.ListDevices(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range ds {
		if !slices.ContainsFunc(data, func(x JobData) bool { return x.Target == d.Template }) {
			continue
		}
		if q == nil || q.eval(deviceFields(d)) == true {
			out = append(out, d.ID)
		}
	}
	slices.Sort(out)
	return out, nil
}

// batchSize is the number of devices per batch of n devices.
func batchSize(b *JobBatch, n int) int {
	if b == nil || n == 0 {
		return max(n, 1)
	}
	if b.Type == "percentage" {
		return max(1, int(math.Ceil(b.Value*float64(n)/100)))
	}
	return max(1, int(b.Value))
}

// thresholdReached reports whether failed failures out of total reach
// the threshold.
func thresholdReached(th *JobCancellationThreshold, failed, total int) bool {
	if th == nil || failed == 0 {
		return false
	}
	if th.Type == "percentage" {
		return float64(failed)*100 >= th.Value*float64(total)
	}
	return float64(failed) >= th.Value
}

var errJobState = fmt.Errorf("%w: job state", ErrConflict)
