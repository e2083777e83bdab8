package restapi

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
)

// odataEnv has five devices with distinct fields and three templates.
func odataEnv(t *testing.T) *env {
	e := newEnv(t)
	e.f.devices = map[string]Device{
		"a1": {ID: "a1", DisplayName: "Thermostat one", Template: "dtmi:t:thermo;1", Enabled: true, Provisioned: true},
		"a2": {ID: "a2", DisplayName: "thermostat two", Template: "dtmi:t:thermo;1", Enabled: false, Simulated: true},
		"b1": {ID: "b1", DisplayName: "Pump", Template: "dtmi:t:pump;1", Enabled: true, Organizations: []string{"seattle"}},
		"b2": {ID: "b2", DisplayName: "Zebra's pump", Enabled: true},
		"c1": {ID: "c1", DisplayName: "Alpha", Enabled: true, Provisioned: true, Simulated: true},
	}
	for id, dn := range map[string]string{"dtmi:t:thermo;1": "Thermostat", "dtmi:t:pump;1": "Pump", "dtmi:t:room;1": "Room thermostat"} {
		e.f.x().templates[id] = map[string]any{"@id": id, "@type": []any{"ModelDefinition", "DeviceModel"}, "displayName": dn,
			"capabilityModel": map[string]any{"@id": id + "-model", "@type": "Interface"}}
	}
	return e
}

func ids(t *testing.T, r response, key string) []string {
	t.Helper()
	r.want(t, http.StatusOK)
	var out []string
	for _, v := range r.body["value"].([]any) {
		out = append(out, v.(map[string]any)[key].(string))
	}
	return out
}

func TestODataDeviceFilter(t *testing.T) {
	e := odataEnv(t)
	for _, c := range []struct{ filter, want string }{
		{"displayName eq 'Pump'", "b1"},
		{"displayName ne 'Pump'", "a1,a2,b2,c1"},
		{"enabled eq false", "a2"},
		{"Enabled ne true", "a2"}, // the documentation's own spelling
		{"provisioned eq true and simulated eq true", "c1"},
		{"id eq 'a1' or id eq 'b2'", "a1,b2"},
		{"template eq 'dtmi:t:thermo;1'", "a1,a2"},
		{"template eq null", "b2,c1"},
		{"template ne null and not (enabled eq false)", "a1,b1"},
		{"displayName gt 'Pump'", "a1,a2,b2"},
		{"displayName ge 'Pump'", "a1,a2,b1,b2"},
		{"displayName lt 'Pump'", "c1"},
		{"displayName le 'Pump'", "b1,c1"},
		{"contains(displayName, 'THERMO')", "a1,a2"},
		{"indexof(displayName, 'pump') ge 0", "b2"},
		{"indexof(displayName, 'pump') lt 0", "a1,a2,b1,c1"},
		{"displayName eq 'Zebra''s pump'", "b2"},
		{"scopes eq 'seattle'", "b1"},
		{"(id eq 'a1' or id eq 'a2') and enabled eq true", "a1"},
	} {
		got := ids(t, e.call("GET", "/api/devices?$top=100&$filter="+url.QueryEscape(c.filter), ""), "id")
		if want := splitIDs(c.want); !slices.Equal(got, want) {
			t.Errorf("$filter=%s: got %v, want %v", c.filter, got, want)
		}
	}
}

func splitIDs(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

func TestODataOrderByAndTop(t *testing.T) {
	e := odataEnv(t)
	if got := ids(t, e.call("GET", "/api/devices?$top=10&$orderby=displayName", ""), "id"); !slices.Equal(got, []string{"c1", "b1", "a1", "a2", "b2"}) {
		t.Fatalf("$orderby=displayName: %v", got)
	}
	if got := ids(t, e.call("GET", "/api/devices?$top=10&$orderby="+url.QueryEscape("displayName desc"), ""), "id"); !slices.Equal(got, []string{"b2", "a2", "a1", "b1", "c1"}) {
		t.Fatalf("$orderby=displayName desc: %v", got)
	}
	// $top is the page size; the nextLink keeps the filter and the order.
	r := e.call("GET", "/api/devices?$top=1&$orderby=displayName&$filter="+url.QueryEscape("enabled eq true"), "")
	if got := ids(t, r, "id"); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("$top=1: %v", got)
	}
	next, _ := r.body["nextLink"].(string)
	u, err := url.Parse(next)
	if err != nil || u.Query().Get("$filter") != "enabled eq true" || u.Query().Get("$top") != "1" {
		t.Fatalf("nextLink %q lost the query", next)
	}
	if got := ids(t, e.call("GET", u.RequestURI(), ""), "id"); !slices.Equal(got, []string{"b1"}) {
		t.Fatalf("second page: %v", got)
	}
	// Templates: filter on @id, displayName, capabilityModelId; contains; order by displayName.
	if got := ids(t, e.call("GET", "/api/deviceTemplates?$orderby=displayName&$filter="+url.QueryEscape("contains(displayName, 'thermostat')"), ""), "@id"); !slices.Equal(got, []string{"dtmi:t:room;1", "dtmi:t:thermo;1"}) {
		t.Fatalf("templates contains + orderby: %v", got)
	}
	if got := ids(t, e.call("GET", "/api/deviceTemplates?$filter="+url.QueryEscape("'@id' eq 'dtmi:t:pump;1' or capabilityModelId eq 'dtmi:t:room;1-model'"), ""), "@id"); !slices.Equal(got, []string{"dtmi:t:pump;1", "dtmi:t:room;1"}) {
		t.Fatalf("templates @id/capabilityModelId: %v", got)
	}
}

func TestODataRefusals(t *testing.T) {
	e := odataEnv(t)
	for _, path := range []string{
		"/api/devices?$top=0",
		"/api/devices?$top=101",
		"/api/devices?$top=x",
		"/api/devices?$top=1&$top=2",
		"/api/devices?$orderby=id", // only displayName
		"/api/devices?$orderby=" + url.QueryEscape("displayName up"),
		"/api/devices?$filter=" + url.QueryEscape("color eq 'red'"),               // not a filterable field
		"/api/devices?$filter=" + url.QueryEscape("enabled eq 'yes'"),             // types differ
		"/api/devices?$filter=" + url.QueryEscape("enabled gt false"),             // booleans: eq, ne only
		"/api/devices?$filter=" + url.QueryEscape("startswith(displayName, 'P')"), // not listed for devices
		"/api/devices?$filter=" + url.QueryEscape("displayName eq 'unterminated"),
		"/api/devices?$filter=" + url.QueryEscape("displayName eq"),
		"/api/devices?$filter=" + url.QueryEscape("displayName"), // not a condition
		"/api/devices?$filter=" + url.QueryEscape("id eq 'a' id eq 'b'"),
		"/api/devices?$filter=" + url.QueryEscape("(id eq 'a'"),
		"/api/devices?$filter=" + url.QueryEscape("id eq 'a' and 'x'"),
		"/api/deviceTemplates?$filter=" + url.QueryEscape("indexof(displayName, 'x') ge 0"), // templates: contains only
		"/api/deviceTemplates?$filter=" + url.QueryEscape("template eq 'x'"),
		"/api/enrollmentGroups?$top=1", // lists without OData options refuse them
		"/api/devices/a1/commands/reboot?$filter=" + url.QueryEscape("id eq 'x'"),
	} {
		e.call("GET", path, "").wantError(t, http.StatusBadRequest, "BadRequest")
	}
}

func FuzzODataFilter(f *testing.F) {
	for _, s := range []string{"displayName eq 'a'", "not (enabled eq true) or indexof(id,'x') gt -1", "((((", "'@id' eq 'x'", "scopes ne null"} {
		f.Add(s)
	}
	d := deviceFields(Device{ID: "x", DisplayName: "y", Organizations: []string{"o"}})
	f.Fuzz(func(t *testing.T, s string) {
		q, err := parseOData(url.Values{"$filter": {s}}, &deviceOData)
		if err == nil && q.filter != nil {
			_ = q.filter.eval(d)
		}
	})
}

func FuzzDeviceQuery(f *testing.F) {
	for _, s := range []string{`SELECT * FROM devices WHERE $template = "dtmi:a:b" AND $provisioned = true`, "SELECT * FROM devices", `SELECT * FROM devices WHERE NOT ($id <> 'x' OR $simulated != false)`, `"\`} {
		f.Add(s)
	}
	d := deviceFields(Device{ID: "x", DisplayName: "y", Organizations: []string{"o"}})
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := parseDeviceQuery(s); err == nil && n != nil {
			_ = n.eval(d)
		}
	})
}
