package emulator

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
)

// Device groups: stored (across a restart), their query (the spec's
// example filters) selects the devices GET /deviceGroups/{id}/devices
// lists, as the devices change; bad queries and organizations are 422.
func TestDeviceGroups(t *testing.T) {
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
	const tid = "dtmi:modelDefinition:dtdlv2" // the template of the spec's devicegroups_list.json
	restJSON(t, e, "PUT", "/api/deviceTemplates/"+url.PathEscape(tid), doc, http.StatusOK)
	for id, body := range map[string]map[string]any{
		"sim":   {"template": tid, "simulated": true},
		"real":  {"template": tid},
		"other": {"simulated": true},
	} {
		restJSON(t, e, "PUT", "/api/devices/"+id, body, http.StatusOK)
	}
	// devicegroups_list.json's third entry, with the emulator's template id.
	g := restJSON(t, e, "PUT", "/api/deviceGroups/group3", map[string]any{"displayName": "DeviceGroupEntry3",
		"description": "This is a default device group containing all the devices for this particular Device Template.",
		"filter":      `SELECT * FROM devices WHERE $template = "` + tid + `" AND $simulated = true`}, http.StatusOK)
	if g["etag"] == nil || g["id"] != "group3" {
		t.Fatalf("PUT answered %v", g)
	}
	restJSON(t, e, "PUT", "/api/deviceGroups/all", map[string]any{"displayName": "All", "filter": "SELECT * FROM devices"}, http.StatusOK)
	members := func(e *Emulator, group string) []string {
		t.Helper()
		ans := restJSON(t, e, "GET", "/api/deviceGroups/"+group+"/devices", nil, http.StatusOK)
		var ids []string
		for _, v := range ans["value"].([]any) {
			ids = append(ids, v.(map[string]any)["id"].(string))
		}
		return ids
	}
	if got := members(e, "group3"); !slices.Equal(got, []string{"sim"}) {
		t.Fatalf("group3 members %v", got)
	}
	if got := members(e, "all"); !slices.Equal(got, []string{"other", "real", "sim"}) {
		t.Fatalf("all members %v", got)
	}
	restJSON(t, e, "PATCH", "/api/devices/real", map[string]any{"simulated": true}, http.StatusOK)
	if got := members(e, "group3"); !slices.Equal(got, []string{"real", "sim"}) {
		t.Fatalf("group3 members after a change %v", got)
	}
	// PATCH is a merge patch; the query is checked again.
	g = restJSON(t, e, "PATCH", "/api/deviceGroups/group3", map[string]any{"filter": "SELECT * FROM devices WHERE $id = 'other' OR NOT ($simulated = true)"}, http.StatusOK)
	if g["displayName"] != "DeviceGroupEntry3" {
		t.Fatalf("PATCH lost the display name: %v", g)
	}
	for _, body := range []map[string]any{
		{"displayName": "x", "filter": "SELECT * FROM things"},
		{"displayName": "x", "filter": "SELECT * FROM devices WHERE $color = 'red'"},
		{"displayName": "x", "filter": "SELECT * FROM devices WHERE $simulated = 'yes'"},
		{"displayName": "x", "filter": "SELECT * FROM devices WHERE ($id = 'a'"},
		{"displayName": "x", "filter": "SELECT * FROM devices WHERE $id = 'a' AND"},
		{"displayName": "x"},
		{"filter": "SELECT * FROM devices"},
		{"displayName": "x", "filter": "SELECT * FROM devices", "organizations": []any{"seattle"}},
	} {
		restJSON(t, e, "PUT", "/api/deviceGroups/bad", body, http.StatusUnprocessableEntity)
	}
	list := restJSON(t, e, "GET", "/api/deviceGroups?$orderby=displayName", nil, http.StatusOK)
	if v := list["value"].([]any); len(v) != 2 || v[0].(map[string]any)["id"] != "all" {
		t.Fatalf("list %v", list)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := startData(t, Options{DataDir: dataDir, RESTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if got := members(e2, "group3"); !slices.Equal(got, []string{"other"}) {
		t.Fatalf("group3 after restart %v", got)
	}
	restJSON(t, e2, "DELETE", "/api/deviceGroups/group3", nil, http.StatusNoContent)
	restJSON(t, e2, "GET", "/api/deviceGroups/group3/devices", nil, http.StatusNotFound)
}
