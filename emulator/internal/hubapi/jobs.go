package hubapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// jobBody is a jobs v2 PUT body.
type jobBody struct {
	JobID                     string          `json:"jobId"`
	Type                      string          `json:"type"`
	QueryCondition            string          `json:"queryCondition"`
	CloudToDeviceMethod       *core.JobMethod `json:"cloudToDeviceMethod"`
	UpdateTwin                *twinBody       `json:"updateTwin"`
	StartTime                 *string         `json:"startTime"`
	MaxExecutionTimeInSeconds int             `json:"maxExecutionTimeInSeconds"`
}

// jobJSON is a job as IoT Hub's jobs v2 API returns it.
func jobJSON(j core.Job) map[string]any {
	out := map[string]any{
		"jobId": j.ID, "type": j.Type, "queryCondition": j.QueryCondition, "status": j.Status,
		"createdTime": j.Created.UTC().Format(time.RFC3339Nano), "startTime": j.Start.UTC().Format(time.RFC3339Nano),
		"maxExecutionTimeInSeconds": j.MaxExecution, "deviceJobStatistics": j.Stats,
	}
	if !j.End.IsZero() {
		out["endTime"] = j.End.UTC().Format(time.RFC3339Nano)
	}
	if j.FailureReason != "" {
		out["failureReason"] = j.FailureReason
	}
	if j.Method != nil {
		out["cloudToDeviceMethod"] = j.Method
	}
	if j.Twin != nil {
		out["updateTwin"] = map[string]any{"tags": j.Twin.Tags, "properties": map[string]any{"desired": j.Twin.Desired}}
	}
	return out
}

// putJob schedules a job over the devices its queryCondition selects now
// (IoT Hub evaluates it when the job starts; the emulator at creation).
func (h *Handler) putJob(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var b jobBody
	if err := readJSON(r, &b); err != nil {
		return err
	}
	if b.JobID != "" && b.JobID != id {
		return fmt.Errorf("%w: jobId %q in the body is not %q of the path", errBadRequest, b.JobID, id)
	}
	if strings.TrimSpace(b.QueryCondition) == "" {
		return fmt.Errorf("%w: queryCondition is required", errBadRequest)
	}
	q, err := parseQuery("SELECT deviceId FROM devices WHERE " + b.QueryCondition)
	if err != nil || len(q.groupBy) > 0 {
		return fmt.Errorf("%w: queryCondition %q: %v", errQuery, b.QueryCondition, err)
	}
	j := core.Job{ID: id, Type: b.Type, QueryCondition: b.QueryCondition, Method: b.CloudToDeviceMethod, MaxExecution: b.MaxExecutionTimeInSeconds}
	if b.UpdateTwin != nil {
		j.Twin = &core.JobTwin{Tags: b.UpdateTwin.Tags}
		if b.UpdateTwin.Properties != nil {
			j.Twin.Desired = b.UpdateTwin.Properties.Desired
		}
	}
	if m := j.Method; m != nil {
		if m.ResponseTimeoutInSeconds != 0 && (m.ResponseTimeoutInSeconds < MinMethodTimeout || m.ResponseTimeoutInSeconds > MaxMethodTimeout) {
			return fmt.Errorf("%w: responseTimeoutInSeconds %d is not in %d..%d", errBadRequest, m.ResponseTimeoutInSeconds, MinMethodTimeout, MaxMethodTimeout)
		}
		if m.ConnectTimeoutInSeconds < 0 || m.ConnectTimeoutInSeconds > MaxMethodTimeout {
			return fmt.Errorf("%w: connectTimeoutInSeconds %d is not in 0..%d", errBadRequest, m.ConnectTimeoutInSeconds, MaxMethodTimeout)
		}
	}
	if b.StartTime != nil && *b.StartTime != "" {
		t, err := time.Parse(time.RFC3339Nano, *b.StartTime)
		if err != nil {
			return fmt.Errorf("%w: startTime %q is not ISO 8601", errBadRequest, *b.StartTime)
		}
		j.Start = t
	}
	twins := h.core.HubTwins()
	docs := make([]map[string]any, len(twins))
	for i, t := range twins {
		docs[i] = twinJSON(t)
	}
	for _, row := range q.run(docs) {
		if id, ok := row.(map[string]any)["deviceId"].(string); ok {
			j.DeviceIDs = append(j.DeviceIDs, id)
		}
	}
	out, err := h.core.ScheduleJob(r.Context(), j)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, jobJSON(out))
	return nil
}

// jobNotFound answers IoT Hub's JobNotFound for an unknown job.
func (h *Handler) jobNotFound(w http.ResponseWriter, r *http.Request, err error) bool {
	if errors.Is(err, core.ErrNotFound) {
		h.fail(w, r, http.StatusNotFound, "JobNotFound", 404002, err.Error())
		return true
	}
	return false
}

func (h *Handler) getJob(w http.ResponseWriter, r *http.Request) error {
	j, err := h.core.Job(r.PathValue("id"))
	if h.jobNotFound(w, r, err) {
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, jobJSON(j))
	return nil
}

func (h *Handler) cancelJob(w http.ResponseWriter, r *http.Request) error {
	j, err := h.core.CancelJob(r.PathValue("id"))
	if h.jobNotFound(w, r, err) {
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, jobJSON(j))
	return nil
}

// queryJobs lists jobs (GET /jobs/v2/query?jobType=&jobStatus=), newest
// first, paged as device queries are.
func (h *Handler) queryJobs(w http.ResponseWriter, r *http.Request) error {
	jobs := h.core.Jobs(r.URL.Query().Get("jobType"), r.URL.Query().Get("jobStatus"))
	size := DefaultPageSize
	if s := r.Header.Get("x-ms-max-item-count"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("%w: x-ms-max-item-count %q", errBadRequest, s)
		}
		size = min(n, MaxPageSize)
	}
	start := 0
	if s := r.Header.Get("x-ms-continuation"); s != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(s, "offset:"))
		if err != nil || n < 0 || !strings.HasPrefix(s, "offset:") {
			return fmt.Errorf("%w: x-ms-continuation %q is not one this emulator gave", errBadRequest, s)
		}
		start = min(n, len(jobs))
	}
	end := min(start+size, len(jobs))
	if end < len(jobs) {
		w.Header().Set("x-ms-continuation", "offset:"+strconv.Itoa(end))
	}
	out := make([]any, 0, end-start)
	for _, j := range jobs[start:end] {
		out = append(out, jobJSON(j))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
