package restapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests replay the spec's own example files (testdata/spec-examples,
// copied unchanged; see its README) and compare every value of the
// example's response with the emulator's answer, but for the paths each
// test names (generated ids, times) and what it substitutes (and says why).

type specExample struct {
	Parameters map[string]json.RawMessage `json:"parameters"`
	Responses  map[string]struct {
		Body json.RawMessage `json:"body"`
	} `json:"responses"`
}

func loadExample(t *testing.T, name string) specExample {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "spec-examples", name))
	if err != nil {
		t.Fatal(err)
	}
	var x specExample
	if err := json.Unmarshal(b, &x); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return x
}

// param returns a string parameter of the example.
func (x specExample) param(t *testing.T, name string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(x.Parameters[name], &s); err != nil {
		t.Fatalf("parameter %s: %v", name, err)
	}
	return s
}

// response returns the example's response body for status, decoded,
// after replacing each old string by its new one (the substitutions).
func (x specExample) response(t *testing.T, status string, subst ...string) any {
	t.Helper()
	r, ok := x.Responses[status]
	if !ok {
		t.Fatalf("the example has no %s response", status)
	}
	var v any
	if len(r.Body) > 0 {
		if err := json.Unmarshal([]byte(strings.NewReplacer(subst...).Replace(string(r.Body))), &v); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// body returns the example's request body with the substitutions.
func (x specExample) body(subst ...string) string {
	return strings.NewReplacer(subst...).Replace(string(x.Parameters["body"]))
}

// sameValues reports where got differs from want: a member of want
// missing in got, or another value; paths (with [*] for array items)
// listed in ignore are only checked to be present.
func sameValues(path string, got, want any, ignore []string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: got %T, want an object", path, got)
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				return path + "." + k + ": missing"
			}
			if d := sameValues(path+"."+k, gv, wv, ignore); d != "" {
				return d
			}
		}
		return ""
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: got %v, want %d items", path, got, len(w))
		}
		for i := range w {
			if d := sameValues(path+"[*]", g[i], w[i], ignore); d != "" {
				return d
			}
		}
		return ""
	}
	if slices.Contains(ignore, path) {
		return ""
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprintf("%T", got) != fmt.Sprintf("%T", want) {
		return fmt.Sprintf("%s: got %v, want %v", path, got, want)
	}
	return ""
}

func wantExample(t *testing.T, r response, status int, want any, ignore ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	var got any
	_ = json.Unmarshal(r.raw, &got)
	if d := sameValues("$", got, want, ignore); d != "" {
		t.Fatalf("differs from the spec example: %s\n got %s", d, r.raw)
	}
}

// jobs_list.json and jobs_stop.json: the example job (its device still
// running, so "running") is listed as the example shows it, then stopped
// (204). The example's target "urn:1dgygpt7t:modelDefinition:02uwtefvdy"
// is replaced by a DTMI: the emulator's template ids are DTMIs.
func TestSpecExampleFilesJobs(t *testing.T) {
	t.Parallel()
	e, jf, _, _ := newJobEnv(t, 0)
	const target = "dtmi:modelDefinition:uwtefvdy" // a DTMI segment cannot start with a digit
	subst := []string{"urn:1dgygpt7t:modelDefinition:02uwtefvdy", target}
	e.call("PUT", "/api/deviceTemplates/"+target, `{"@type":["ModelDefinition","DeviceModel"],"capabilityModel":{"@type":"Interface","contents":[
		{"@type":"Component","name":"componentName","schema":{"@type":"Interface","contents":[{"@type":"Property","name":"propertyName","schema":"string","writable":true}]}}]}}`).want(t, http.StatusOK)
	list := loadExample(t, "jobs_list.json")
	want := list.response(t, "200", subst...)
	job := want.(map[string]any)["value"].([]any)[0].(map[string]any)
	e.call("PUT", "/api/deviceGroups/"+job["group"].(string), `{"displayName":"g","filter":"SELECT * FROM devices"}`).want(t, http.StatusOK)
	jf.mu.Lock()
	jf.devices["dev"] = Device{ID: "dev", Template: target, Enabled: true}
	jf.mu.Unlock()
	jf.blockOn = "dev"
	req := map[string]any{}
	for k, v := range job {
		if k != "id" && k != "status" { // read only
			req[k] = v
		}
	}
	b, _ := json.Marshal(req)
	e.call("PUT", "/api/jobs/"+job["id"].(string), string(b)).want(t, http.StatusOK)
	<-jf.reached
	wantExample(t, e.call("GET", "/api/jobs", ""), http.StatusOK, want)

	stop := loadExample(t, "jobs_stop.json")
	if _, ok := stop.Responses["204"]; !ok {
		t.Fatal("jobs_stop.json has no 204")
	}
	e.call("POST", "/api/jobs/"+stop.param(t, "jobId")+"/stop", "").wantNoContent(t)
	close(jf.release)
	r := e.call("GET", "/api/jobs/myJobId", "")
	if r.body["status"] != JobStopped {
		t.Fatalf("after stop: %s", r.raw)
	}
	jf.mu.Lock()
	defer jf.mu.Unlock()
	if len(jf.patches) > 1 {
		t.Fatalf("patches %v", jf.patches)
	}
}

// scheduledjobs_list_jobs.json: three runs of scheduled job "first" (a
// command job whose one device fails) are listed as the example shows
// them: complete, progress total 1 failed 1. The emulator generates the
// run ids and names them "first - <run>" (the example's runs 13 to 15).
func TestSpecExampleFilesScheduledJobRuns(t *testing.T) {
	t.Parallel()
	e, jf, clock, h := newJobEnv(t, 0)
	x := loadExample(t, "scheduledjobs_list_jobs.json")
	want := x.response(t, "200").(map[string]any)
	run := want["value"].([]any)[0].(map[string]any)
	data := run["data"].([]any)[0].(map[string]any)
	target := data["target"].(string)
	e.call("PUT", "/api/deviceTemplates/"+target, `{"@type":["ModelDefinition","DeviceModel"],"capabilityModel":{"@type":"Interface","contents":[{"@type":"Command","name":"`+data["path"].(string)+`"}]}}`).want(t, http.StatusOK)
	e.call("PUT", "/api/deviceGroups/"+run["group"].(string), `{"displayName":"g","filter":"SELECT * FROM devices"}`).want(t, http.StatusOK)
	jf.mu.Lock()
	jf.devices["offline"] = Device{ID: "offline", Template: target, Enabled: true}
	jf.mu.Unlock()
	jf.failOn["offline"] = true
	id := x.param(t, "scheduledJobId")
	b, _ := json.Marshal(map[string]any{"displayName": "first", "description": "", "group": run["group"], "data": run["data"],
		"schedule": map[string]any{"start": clock.Now().Format(time.RFC3339), "recurrence": "daily"}})
	e.call("PUT", "/api/scheduledJobs/"+id, string(b)).want(t, http.StatusOK)
	for i := 0; i < 3; i++ {
		if i > 0 {
			clock.Advance(24 * time.Hour)
		}
		h.sched.runDue(t.Context())
	}
	runs := scheduledRuns(t, e, id)
	if len(runs) != 3 {
		t.Fatalf("%d runs", len(runs))
	}
	for _, r := range runs {
		waitJob(t, e, r["id"].(string), JobComplete)
	}
	r := e.call("GET", "/api/scheduledJobs/"+id+"/jobs", "")
	for i := range want["value"].([]any) { // every run looks like the example's first
		want["value"].([]any)[i] = run
	}
	wantExample(t, r, http.StatusOK, want, "$.value[*].id", "$.value[*].displayName")
	for _, v := range r.body["value"].([]any) {
		if !strings.HasPrefix(v.(map[string]any)["displayName"].(string), "first - ") {
			t.Fatalf("run name %v", v)
		}
	}
}

// users_set_serviceprincipal.json: its first role, c7be2c6b-..., is not
// one of IoT Central's built-in roles (a custom role, which the emulator
// does not serve): the request is refused 422 as-is, and answered as the
// example with App Administrator in its place once "seattle" exists.
func TestSpecExampleFilesUsers(t *testing.T) {
	t.Parallel()
	e, _, _, _ := newJobEnv(t, 0)
	x := loadExample(t, "users_set_serviceprincipal.json")
	path := "/api/users/" + x.param(t, "userId")
	e.call("PUT", path, x.body()).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	subst := []string{"c7be2c6b-797e-4551-bb24-33709f6b2e20", RoleAdministrator}
	e.call("PUT", path, x.body(subst...)).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity") // no seattle yet
	e.call("PUT", "/api/organizations/seattle", `{"displayName":"Seattle"}`).want(t, http.StatusOK)
	wantExample(t, e.call("PUT", path, x.body(subst...)), http.StatusOK, x.response(t, "200", subst...))
	wantExample(t, e.call("GET", path, ""), http.StatusOK, x.response(t, "200", subst...))
}

// devices_relationships_create.json, with device1 of a template defining
// a relationship to device2's model.
func TestSpecExampleFilesRelationships(t *testing.T) {
	t.Parallel()
	e, jf, _, _ := newJobEnv(t, 0)
	x := loadExample(t, "devices_relationships_create.json")
	e.call("PUT", "/api/deviceTemplates/dtmi:contoso:gatewayTemplate", relTemplate).want(t, http.StatusOK)
	jf.mu.Lock()
	jf.devices[x.param(t, "deviceId")] = Device{ID: x.param(t, "deviceId"), Template: "dtmi:contoso:gatewayTemplate", Enabled: true}
	jf.devices["device2"] = Device{ID: "device2", Template: jobTemplateID, Enabled: true}
	jf.mu.Unlock()
	path := "/api/devices/" + x.param(t, "deviceId") + "/relationships/" + x.param(t, "relationshipId")
	wantExample(t, e.call("PUT", path, x.body()), http.StatusOK, x.response(t, "200"))
	wantExample(t, e.call("GET", path, ""), http.StatusOK, x.response(t, "200"))
}

// devicegroups_list.json: each listed group PUT (its organizations
// created first) is listed back as the example shows it (sorted by id:
// the example's order is not an order the spec defines).
func TestSpecExampleFilesDeviceGroupsList(t *testing.T) {
	t.Parallel()
	e, _, _, _ := newJobEnv(t, 0)
	e.call("DELETE", "/api/deviceGroups/all", "").wantNoContent(t)
	x := loadExample(t, "devicegroups_list.json")
	want := x.response(t, "200").(map[string]any)
	groups := want["value"].([]any)
	for _, g := range groups {
		m := g.(map[string]any)
		if orgs, ok := m["organizations"].([]any); ok {
			e.call("PUT", "/api/organizations/"+orgs[0].(string), `{}`).want(t, http.StatusOK)
		}
		b, _ := json.Marshal(m)
		e.call("PUT", "/api/deviceGroups/"+m["id"].(string), string(b)).want(t, http.StatusOK)
	}
	slices.SortFunc(groups, func(a, b any) int {
		return strings.Compare(a.(map[string]any)["id"].(string), b.(map[string]any)["id"].(string))
	})
	wantExample(t, e.call("GET", "/api/deviceGroups", ""), http.StatusOK, want)
}
