package emulator

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// waitJobStatus polls a job until its status is want (a failure deadline,
// no timing asserted).
func waitJobStatus(t *testing.T, e *Emulator, id, want string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j := restJSON(t, e, "GET", "/api/jobs/"+id, nil, http.StatusOK)
		if j["status"] == want {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %v, want %s", id, j["status"], want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func jobDeviceStatuses(t *testing.T, e *Emulator, id string) map[string]any {
	t.Helper()
	ans := restJSON(t, e, "GET", "/api/jobs/"+id+"/devices", nil, http.StatusOK)
	out := map[string]any{}
	for _, v := range ans["value"].([]any) {
		m := v.(map[string]any)
		out[m["id"].(string)] = m["status"]
	}
	return out
}

// Jobs through the core: a property job sets desired properties of
// offline devices (completed), a command job fails offline devices
// (the template does not queue the command); jobs, scheduled jobs,
// organizations and users survive a restart with --data-dir, and a job
// the restart interrupted continues from its first pending device.
// Roles: an operator runs jobs but manages no users or organizations; a
// token with only organization roles is refused.
func TestJobsThroughTheCoreAndRestart(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	e, err := startData(t, Options{DataDir: dataDir, RESTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(testTemplate), &doc); err != nil {
		t.Fatal(err)
	}
	const tid = "dtmi:contoso:jobsTemplate"
	restJSON(t, e, "PUT", "/api/deviceTemplates/"+url.PathEscape(tid), doc, http.StatusOK)
	restJSON(t, e, "PUT", "/api/organizations/seattle", map[string]any{"displayName": "Seattle"}, http.StatusOK)
	for _, id := range []string{"d1", "d2"} {
		restJSON(t, e, "PUT", "/api/devices/"+id, map[string]any{"template": tid, "organizations": []any{"seattle"}}, http.StatusOK)
	}
	restJSON(t, e, "PUT", "/api/devices/d3", map[string]any{"template": tid, "organizations": []any{"paris"}}, http.StatusUnprocessableEntity)
	restJSON(t, e, "PUT", "/api/deviceGroups/all", map[string]any{"displayName": "All", "filter": "SELECT * FROM devices"}, http.StatusOK)
	restJSON(t, e, "PUT", "/api/users/u1", map[string]any{"type": "email", "email": "a@contoso.com",
		"roles": []any{map[string]any{"role": roleOperator}}}, http.StatusOK)

	op := newToken(t, e, "op", roleOperator)
	status := func(tok, method, path string, body any) int {
		t.Helper()
		st, _ := restDo(t, e, method, path, tok, body)
		return st
	}
	propJob := map[string]any{"group": "all", "data": []any{map[string]any{"type": "property", "target": tid,
		"path": "thermostat1.targetTemperature", "value": 22.5}}}
	if st := status(op, "PUT", "/api/jobs/props", propJob); st != http.StatusOK {
		t.Fatalf("operator PUT job: %d", st)
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/users"}, {"PUT", "/api/users/u2"}, {"PUT", "/api/organizations/x"}, {"DELETE", "/api/organizations/seattle"},
	} {
		if st := status(op, c.method, c.path, map[string]any{}); st != http.StatusForbidden {
			t.Errorf("operator %s %s: %d, want 403", c.method, c.path, st)
		}
	}
	if st := status(op, "GET", "/api/organizations", nil); st != http.StatusOK {
		t.Errorf("operator GET organizations: %d", st)
	}
	ans := restJSON(t, e, "PUT", "/api/apiTokens/orgop", map[string]any{"roles": []any{
		map[string]any{"role": "b4935647-30e4-4ed3-9074-dcac66c2f8ef", "organization": "seattle"}}}, http.StatusOK)
	if st := status(ans["token"].(string), "GET", "/api/devices", nil); st != http.StatusForbidden {
		t.Errorf("organization-only token: %d, want 403", st)
	}
	restJSON(t, e, "DELETE", "/api/organizations/seattle", nil, http.StatusConflict)

	waitJobStatus(t, e, "props", "complete")
	props := restJSON(t, e, "GET", "/api/devices/d2/components/thermostat1/properties", nil, http.StatusOK)
	if props["targetTemperature"] != 22.5 {
		t.Fatalf("d2 properties after the job: %v", props)
	}
	restJSON(t, e, "PUT", "/api/jobs/cmds", map[string]any{"group": "all", "data": []any{map[string]any{"type": "command", "target": tid, "path": "reboot"}}}, http.StatusOK)
	waitJobStatus(t, e, "cmds", "complete")
	if got := jobDeviceStatuses(t, e, "cmds"); got["d1"] != "failed" || got["d2"] != "failed" {
		t.Fatalf("command job on offline devices: %v", got)
	}
	start := time.Now().Add(240 * time.Hour).UTC().Format(time.RFC3339)
	restJSON(t, e, "PUT", "/api/scheduledJobs/later", map[string]any{"group": "all", "data": propJob["data"],
		"schedule": map[string]any{"start": start, "recurrence": "weekly"}}, http.StatusOK)
	// A job as a restart leaves it: running, d1 done, d2 not yet.
	interrupted := `{"job":{"id":"cut","group":"all","status":"running","data":[{"type":"property","target":"` + tid +
		`","path":"thermostat1.targetTemperature","value":30}]},"devices":[{"id":"d1","status":"completed","batch":0},{"id":"d2","status":"pending","batch":0}]}`
	if err := e.core.PutAppDoc("jobs", "cut", []byte(interrupted)); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e2, err := startData(t, Options{DataDir: dataDir, RESTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	waitJobStatus(t, e2, "cut", "complete")
	if got := jobDeviceStatuses(t, e2, "cut"); got["d1"] != "completed" || got["d2"] != "completed" {
		t.Fatalf("interrupted job after restart: %v", got)
	}
	d1 := restJSON(t, e2, "GET", "/api/devices/d1/components/thermostat1/properties", nil, http.StatusOK)
	d2 := restJSON(t, e2, "GET", "/api/devices/d2/components/thermostat1/properties", nil, http.StatusOK)
	if d1["targetTemperature"] != 22.5 || d2["targetTemperature"] != 30.0 {
		t.Fatalf("after the continued job: d1 %v (not run again), d2 %v", d1["targetTemperature"], d2["targetTemperature"])
	}
	if got := jobDeviceStatuses(t, e2, "cmds"); got["d1"] != "failed" {
		t.Fatalf("stored job after restart: %v", got)
	}
	jobs := restJSON(t, e2, "GET", "/api/jobs", nil, http.StatusOK)
	if n := len(jobs["value"].([]any)); n != 3 {
		t.Fatalf("%d jobs after restart", n)
	}
	if sj := restJSON(t, e2, "GET", "/api/scheduledJobs/later", nil, http.StatusOK); sj["schedule"] == nil || sj["completed"] != false {
		t.Fatalf("scheduled job after restart: %v", sj)
	}
	restJSON(t, e2, "GET", "/api/organizations/seattle", nil, http.StatusOK)
	restJSON(t, e2, "GET", "/api/users/u1", nil, http.StatusOK)
	// The job can be rerun over its failed devices after the restart.
	rerun := restJSON(t, e2, "PUT", "/api/jobs/cmds/rerun/cmds2", nil, http.StatusOK)
	if rerun["id"] != "cmds2" {
		t.Fatalf("rerun: %v", rerun)
	}
	waitJobStatus(t, e2, "cmds2", "complete")
}

// apitoken_create.json (testdata/spec-examples of the REST API, copied
// unchanged): an administrator role and an Org Administrator role in
// "seattle" (which must exist: 422 before). The answer is the example's
// but for the expiry and token text, which the emulator generates.
func TestSpecExampleFileAPITokenCreate(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	raw, err := os.ReadFile(filepath.Join("internal", "restapi", "testdata", "spec-examples", "apitoken_create.json"))
	if err != nil {
		t.Fatal(err)
	}
	var x struct {
		Parameters struct {
			TokenID string         `json:"tokenId"`
			Body    map[string]any `json:"body"`
		} `json:"parameters"`
		Responses map[string]struct {
			Body map[string]any `json:"body"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(raw, &x); err != nil {
		t.Fatal(err)
	}
	path := "/api/apiTokens/" + x.Parameters.TokenID
	restJSON(t, e, "PUT", path, x.Parameters.Body, http.StatusUnprocessableEntity)
	restJSON(t, e, "PUT", "/api/organizations/seattle", map[string]any{}, http.StatusOK)
	got := restJSON(t, e, "PUT", path, x.Parameters.Body, http.StatusOK)
	want := x.Responses["200"].Body
	for _, k := range []string{"id", "roles"} {
		if jsonOf(t, got[k]) != jsonOf(t, want[k]) {
			t.Fatalf("%s = %s, want %s", k, jsonOf(t, got[k]), jsonOf(t, want[k]))
		}
	}
	if tok, _ := got["token"].(string); !strings.HasPrefix(tok, "SharedAccessSignature sr=") {
		t.Fatalf("token %v", got["token"])
	}
	if _, err := time.Parse(time.RFC3339, got["expiry"].(string)); err != nil {
		t.Fatalf("expiry %v", got["expiry"])
	}
	// The organization is now used by the token.
	restJSON(t, e, "DELETE", "/api/organizations/seattle", nil, http.StatusConflict)
}
