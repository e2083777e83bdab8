package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// eventually polls cond (the deadline only ends a hung test).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func newCore(t *testing.T, devices ...string) *core.Core {
	t.Helper()
	c := core.New(core.Config{IDScope: "0ne1", HubHost: "h"})
	t.Cleanup(c.Close)
	for _, d := range devices {
		if _, err := c.CreateDevice(d); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func telemetry(t *testing.T, c *core.Core, dev, body string) {
	t.Helper()
	if err := c.StoreTelemetry(core.Telemetry{DeviceID: dev, Body: []byte(body), Received: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
}

// TestWebhookRetryLosesNothingAndKeepsOrder: a webhook that fails, then
// recovers: every message arrives once recovered, in the order sent, and
// the statuses show the error and then health.
func TestWebhookRetryLosesNothingAndKeepsOrder(t *testing.T) {
	c := newCore(t, "d1", "d2")
	h := newHook(t)
	var up atomic.Bool
	h.fail = func(int) int {
		if up.Load() {
			return 200
		}
		return 503
	}
	m := newManager(t, c, Options{})
	if _, err := m.PutDestination(Destination{ID: "hook", DisplayName: "Hook", Type: TypeWebhook, URL: h.srv.URL}); err != nil {
		t.Fatal(err)
	}
	if d, _ := m.Destination("hook"); d.Status.Status != "waiting" {
		t.Errorf("new destination status %q, want waiting", d.Status.Status)
	}
	if _, err := m.PutExport(Export{ID: "tel", DisplayName: "T", Enabled: true, Source: SourceTelemetry,
		Destinations: []DestinationRef{{ID: "hook"}}}); err != nil {
		t.Fatal(err)
	}
	if e, _ := m.Export("tel"); e.Status.Status != "starting" {
		t.Errorf("new export status %q, want starting", e.Status.Status)
	}
	const n = 20
	for i := range n {
		telemetry(t, c, fmt.Sprintf("d%d", i%2+1), fmt.Sprintf(`{"n":%d}`, i))
	}
	eventually(t, "destination status error", func() bool {
		d, _ := m.Destination("hook")
		return d.Status.Status == "error"
	})
	d, _ := m.Destination("hook")
	if len(d.Errors) != 1 || d.Errors[0].Code != "webhookFailed" || !strings.Contains(d.Errors[0].Message, "503") {
		t.Errorf("destination errors = %+v", d.Errors)
	}
	e, _ := m.Export("tel")
	if e.Status.Status != "error" || len(e.Errors) != 1 || !strings.Contains(e.Errors[0].Message, "destination hook") {
		t.Errorf("export status = %+v", e.Status)
	}
	up.Store(true)
	bodies := h.wait(t, n)
	if len(bodies) != n {
		t.Fatalf("got %d messages, want %d", len(bodies), n)
	}
	for i, b := range bodies {
		var msg struct {
			DeviceID  string         `json:"deviceId"`
			Telemetry map[string]int `json:"telemetry"`
		}
		if err := json.Unmarshal(b, &msg); err != nil {
			t.Fatal(err)
		}
		if msg.Telemetry["n"] != i || msg.DeviceID != fmt.Sprintf("d%d", i%2+1) {
			t.Errorf("message %d = %s (out of order or lost)", i, b)
		}
	}
	eventually(t, "destination healthy", func() bool {
		d, _ := m.Destination("hook")
		return d.Status.Status == "healthy"
	})
	d, _ = m.Destination("hook")
	e, _ = m.Export("tel")
	if len(d.Errors) != 0 || d.LastExportTime == "" || e.Status.Status != "healthy" || len(e.Errors) != 0 || e.LastExportTime == "" {
		t.Errorf("after recovery: destination %+v export %+v", d.Status, e.Status)
	}
	h.mu.Lock()
	failed := len(h.reqs) - len(h.bods)
	h.mu.Unlock()
	if failed < 1 {
		t.Errorf("the webhook refused %d requests; the test needs at least one retry", failed)
	}
}

func TestWebhookHeadersQueryAndSecrets(t *testing.T) {
	c := newCore(t, "d")
	h := newHook(t)
	m := newManager(t, c, Options{})
	dst := Destination{ID: "hook", DisplayName: "Hook", Type: TypeWebhook, URL: h.srv.URL + "/in?fixed=1",
		HeaderCustomizations: map[string]Customization{"x-custom-region": {Value: "westcentralus"}, "x-key": {Value: "s3cret", Secret: true}},
		QueryCustomizations:  map[string]Customization{"code": {Value: "abc", Secret: true}},
		Authorization:        &Authorization{Type: "header", Value: "SharedAccessSignature sr=x&sig=y"}}
	got, err := m.PutDestination(dst)
	if err != nil {
		t.Fatal(err)
	}
	if got.HeaderCustomizations["x-key"].Value != Mask || got.QueryCustomizations["code"].Value != Mask ||
		got.Authorization.Value != Mask || got.HeaderCustomizations["x-custom-region"].Value != "westcentralus" {
		t.Errorf("secrets not masked: %+v", got)
	}
	// A PUT sending the masked values back keeps the secrets.
	if _, err := m.PutDestination(got); err != nil {
		t.Fatal(err)
	}
	if _, err := m.PutExport(Export{ID: "e", DisplayName: "E", Enabled: true, Source: SourceTelemetry, Destinations: []DestinationRef{{ID: "hook"}}}); err != nil {
		t.Fatal(err)
	}
	telemetry(t, c, "d", `{"t":1}`)
	h.wait(t, 1)
	h.mu.Lock()
	r := h.reqs[0]
	h.mu.Unlock()
	if r.Method != "POST" || r.URL.Path != "/in" || r.URL.Query().Get("fixed") != "1" || r.URL.Query().Get("code") != "abc" {
		t.Errorf("request %s %s", r.Method, r.URL)
	}
	if r.Header.Get("x-custom-region") != "westcentralus" || r.Header.Get("x-key") != "s3cret" ||
		r.Header.Get("Authorization") != "SharedAccessSignature sr=x&sig=y" {
		t.Errorf("headers %v", r.Header)
	}
}

func TestFilterAndEnrichmentsThroughTheModel(t *testing.T) {
	c := newCore(t)
	h := newHook(t)
	m := newManager(t, c, Options{})
	tpl := map[string]any{"@type": []any{"ModelDefinition", "DeviceModel"}, "displayName": "Thermostat",
		"capabilityModel": map[string]any{"@id": "dtmi:x:T;1", "@type": "Interface", "contents": []any{
			map[string]any{"@type": "Telemetry", "name": "temperature", "schema": "double"},
			map[string]any{"@type": "Component", "name": "info", "schema": map[string]any{"@id": "dtmi:x:Info;1", "@type": "Interface",
				"contents": []any{map[string]any{"@type": "Property", "name": "serial", "schema": "string"}}}},
		}}}
	if _, err := c.PutTemplate("tpl1", tpl); err != nil {
		t.Fatal(err)
	}
	tid, name := "tpl1", "Kitchen"
	for _, id := range []string{"a", "b", "other"} {
		spec := core.DeviceSpec{}
		if id != "other" {
			spec.Template = &tid
		}
		if id == "a" {
			spec.DisplayName = &name
		}
		if _, _, err := c.PutDevice(id, spec); err != nil {
			t.Fatal(err)
		}
	}
	if st, _, _ := c.PatchReported("a", []byte(`{"info":{"__t":"c","serial":"SN-1"}}`)); st != 204 {
		t.Fatal(st)
	}
	if _, err := m.PutDestination(Destination{ID: "hook", DisplayName: "Hook", Type: TypeWebhook, URL: h.srv.URL}); err != nil {
		t.Fatal(err)
	}
	_, err := m.PutExport(Export{ID: "hot", DisplayName: "Hot", Enabled: true, Source: SourceTelemetry,
		Filter:       `SELECT * FROM dtmi:x:T;1 WHERE temperature > 20 AND NOT ($id = "b" AND temperature < 30)`,
		Destinations: []DestinationRef{{ID: "hook"}},
		Enrichments: map[string]Enrichment{"name": {Path: "$displayName"}, "template": {Path: "$templateDisplayName"},
			"enabled": {Path: "$enabled"}, "serial": {Target: "dtmi:x:Info;1", Path: "serial"},
			"missing": {Target: "dtmi:x:Info;1", Path: "nothing"}, "site": {Value: "lab"}}})
	if err != nil {
		t.Fatal(err)
	}
	telemetry(t, c, "a", `{"temperature":19}`)     // too cold
	telemetry(t, c, "other", `{"temperature":50}`) // not of the template
	telemetry(t, c, "b", `{"temperature":25}`)     // b under 30
	telemetry(t, c, "b", `{"humidity":25}`)        // no temperature
	telemetry(t, c, "a", `{"temperature":21}`)     // exported
	telemetry(t, c, "b", `{"temperature":31}`)     // exported
	bodies := h.wait(t, 2)
	// A last message proves nothing else was queued before it.
	telemetry(t, c, "a", `{"temperature":40}`)
	bodies = h.wait(t, 3)
	var msgs []map[string]any
	for _, b := range bodies {
		msgs = append(msgs, decode(t, b))
	}
	if len(msgs) != 3 || msgs[0]["deviceId"] != "a" || msgs[1]["deviceId"] != "b" || msgs[2]["deviceId"] != "a" {
		t.Fatalf("exported %v", msgs)
	}
	en := msgs[0]["enrichments"].(map[string]any)
	want := map[string]any{"name": "Kitchen", "template": "Thermostat", "enabled": true, "serial": "SN-1", "site": "lab"}
	if len(en) != len(want) {
		t.Errorf("enrichments %v, want %v", en, want)
	}
	for k, v := range want {
		if en[k] != v {
			t.Errorf("enrichment %s = %v, want %v", k, en[k], v)
		}
	}
	if e := msgs[1]["enrichments"].(map[string]any); e["serial"] != nil || e["name"] != "b" {
		t.Errorf("device b enrichments %v (b has no serial)", e)
	}
}

func TestStatusOfDisabledExportAndEventHubsErrorPath(t *testing.T) {
	c := newCore(t, "d")
	m := newManager(t, c, Options{SendTimeout: 2 * time.Second})
	// An Event Hubs namespace nobody serves: the destination shows the
	// error and the message stays queued.
	cs := "Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0;EntityPath=hub"
	d, err := m.PutDestination(Destination{ID: "eh", DisplayName: "EH", Type: TypeEventHubs,
		Authorization: &Authorization{Type: "connectionString", ConnectionString: cs}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(d.Authorization.ConnectionString, "c2VjcmV0") || !strings.Contains(d.Authorization.ConnectionString, "SharedAccessKey="+Mask) {
		t.Errorf("connection string shown as %q", d.Authorization.ConnectionString)
	}
	if _, err := m.PutExport(Export{ID: "off", DisplayName: "Off", Enabled: false, Source: SourceTelemetry, Destinations: []DestinationRef{{ID: "eh"}}}); err != nil {
		t.Fatal(err)
	}
	if e, _ := m.Export("off"); e.Status.Status != "notStarted" {
		t.Errorf("disabled export status %q", e.Status.Status)
	}
	telemetry(t, c, "d", `{"t":1}`)
	if _, err := m.PutExport(Export{ID: "on", DisplayName: "On", Enabled: true, Source: SourceTelemetry, Destinations: []DestinationRef{{ID: "eh"}}}); err != nil {
		t.Fatal(err)
	}
	telemetry(t, c, "d", `{"t":2}`)
	eventually(t, "Event Hubs destination in error", func() bool {
		d, _ := m.Destination("eh")
		return d.Status.Status == "error"
	})
	d, _ = m.Destination("eh")
	if d.Errors[0].Code != "destinationUnreachable" || strings.Contains(d.Errors[0].Message, "c2VjcmV0") {
		t.Errorf("errors %+v", d.Errors)
	}
	m.mu.Lock()
	queued := len(m.dests["eh"].queue)
	m.mu.Unlock()
	if queued != 1 {
		t.Errorf("%d messages queued, want 1 (the disabled export's message is not exported)", queued)
	}
	if err := m.DeleteDestination("eh"); !errors.Is(err, ErrConflict) {
		t.Errorf("delete of a destination in use: %v", err)
	}
	for _, id := range []string{"on", "off"} {
		if err := m.DeleteExport(id); err != nil {
			t.Fatal(err)
		}
	}
	m.mu.Lock()
	queued = len(m.dests["eh"].queue)
	m.mu.Unlock()
	if queued != 0 {
		t.Errorf("%d messages of deleted exports still queued", queued)
	}
	if err := m.DeleteDestination("eh"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Destination("eh"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted destination: %v", err)
	}
}

func TestDefinitionsPersistInTheCore(t *testing.T) {
	c := newCore(t)
	m, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.PutDestination(Destination{ID: "hook", DisplayName: "Hook", Type: TypeWebhook, URL: "http://127.0.0.1:1/x",
		HeaderCustomizations: map[string]Customization{"k": {Value: "v", Secret: true}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.PutExport(Export{ID: "e", DisplayName: "E", Enabled: true, Source: SourceDeviceConnectivity,
		Filter: "SELECT * FROM devices WHERE $simulated = false", Destinations: []DestinationRef{{ID: "hook"}}}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m2 := newManager(t, c, Options{})
	d, err := m2.StoredDestination("hook")
	if err != nil || d.URL != "http://127.0.0.1:1/x" || d.HeaderCustomizations["k"].Value != "v" {
		t.Errorf("destination after restart: %+v %v", d, err)
	}
	if e, err := m2.Export("e"); err != nil || e.Filter == "" || !e.Enabled || len(e.Destinations) != 1 {
		t.Errorf("export after restart: %+v %v", e, err)
	}
	if got := len(m2.ExportsOfMust(t, "hook")); got != 1 {
		t.Errorf("exports of hook: %d", got)
	}
}

func (m *Manager) ExportsOfMust(t *testing.T, id string) []Export {
	t.Helper()
	es, err := m.ExportsOf(id)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func TestCheckDefinitions(t *testing.T) {
	ok := func(string) bool { return true }
	none := func(string) bool { return false }
	good := Export{ID: "e", DisplayName: "E", Enabled: true, Source: SourceTelemetry, Destinations: []DestinationRef{{ID: "d"}}}
	if err := CheckExport(good, ok); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(e *Export){
		"unknown destination": func(e *Export) {}, // with none
		"no destination":      func(e *Export) { e.Destinations = nil },
		"bad source":          func(e *Export) { e.Source = "logs" },
		"audit":               func(e *Export) { e.Source = "audit" },
		"transform":           func(e *Export) { e.Destinations[0].Transform = "{}" },
		"no name":             func(e *Export) { e.DisplayName = "" },
		"bad id":              func(e *Export) { e.ID = "a/b" },
		"bad enrichment":      func(e *Export) { e.Enrichments = map[string]Enrichment{"x": {Path: "$nope"}} },
		"empty enrichment":    func(e *Export) { e.Enrichments = map[string]Enrichment{"x": {}} },
		"bad filter":          func(e *Export) { e.Filter = "SELECT a FROM devices" },
		"six destinations": func(e *Export) {
			e.Destinations = []DestinationRef{{ID: "1"}, {ID: "2"}, {ID: "3"}, {ID: "4"}, {ID: "5"}, {ID: "6"}}
		},
	}
	for name, mutate := range bad {
		e := good
		e.Destinations = []DestinationRef{{ID: "d"}}
		mutate(&e)
		exists := ok
		if name == "unknown destination" {
			exists = none
		}
		if err := CheckExport(e, exists); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	badDest := []Destination{
		{ID: "d", DisplayName: "D", Type: "blobstorage@v1"},
		{ID: "d", DisplayName: "D", Type: TypeWebhook, URL: "ftp://x"},
		{ID: "d", DisplayName: "D", Type: TypeWebhook, URL: "http://x", Authorization: &Authorization{Type: "oauth"}},
		{ID: "d", DisplayName: "D", Type: TypeEventHubs},
		{ID: "d", DisplayName: "D", Type: TypeEventHubs, Authorization: &Authorization{Type: "connectionString", ConnectionString: "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=s"}},
		{ID: "d", DisplayName: "D", Type: TypeEventHubs, Authorization: &Authorization{Type: "systemAssignedManagedIdentity"}},
		{ID: "d", Type: TypeWebhook, URL: "http://x"},
		{ID: "d", DisplayName: "D"},
	}
	for i, d := range badDest {
		if err := CheckDestination(d); !errors.Is(err, ErrInvalid) {
			t.Errorf("destination %d accepted: %v", i, err)
		} else if strings.Contains(err.Error(), "SharedAccessKey=s") {
			t.Errorf("error shows the key: %v", err)
		}
	}
}

func TestParseFilter(t *testing.T) {
	env := func(m map[string]any) env {
		return func(n string) (any, bool) { v, ok := lookupPath(m, n); return v, ok }
	}
	msg := env(map[string]any{"t": 25.0, "s": "on", "b": true, "o": map[string]any{"x": 1.0}, "$id": "dev1", "n": nil})
	cases := []struct {
		q    string
		want bool
	}{
		{"SELECT * FROM devices", true},
		{"select * from dtmi:x:T;1 where t > 20", true},
		{"SELECT * FROM devices WHERE t >= 25 AND t <= 25", true},
		{"SELECT * FROM devices WHERE t < 25 OR s = 'on'", true},
		{`SELECT * FROM devices WHERE NOT (s = "on")`, false},
		{"SELECT * FROM devices WHERE o.x = 1", true},
		{"SELECT * FROM devices WHERE b = true AND s <> 'off'", true},
		{"SELECT * FROM devices WHERE missing > 1", false},
		{"SELECT * FROM devices WHERE missing != 1", false},
		{"SELECT * FROM devices WHERE missing = null", true},
		{"SELECT * FROM devices WHERE t != null", true},
		{"SELECT * FROM devices WHERE n = null", true},
		{"SELECT * FROM devices WHERE s > 5", false},
		{"SELECT * FROM devices WHERE $id = 'dev1'", true},
		{"SELECT * FROM dtmi:a;1 AS A WHERE A.t > 20", true},
		{"SELECT * FROM devices WHERE 20 < t", true},
	}
	for _, c := range cases {
		f, err := ParseFilter(c.q, SourceTelemetry)
		if err != nil {
			t.Errorf("%s: %v", c.q, err)
			continue
		}
		if got := f.Match(msg); got != c.want {
			t.Errorf("%s = %v, want %v", c.q, got, c.want)
		}
	}
	if f, _ := ParseFilter("SELECT * FROM dtmi:x:T;1 AS A", SourceTelemetry); f.From != "dtmi:x:T;1" {
		t.Errorf("From = %q", f.From)
	}
	for _, q := range []string{"", "SELECT a FROM devices", "SELECT * FROM a, b", "SELECT * FROM devices WHERE", "SELECT * FROM devices WHERE t >",
		"SELECT * FROM devices WHERE t > 1 extra", "SELECT * FROM devices WHERE $nope = 1", "SELECT * FROM devices WHERE contains(t, 'x')",
		"SELECT * FROM devices WHERE 'a' = 'b'", "SELECT * FROM devices WHERE (t > 1", "SELECT * FROM devices WHERE s = 'open",
		"SELECT * FROM devices WHERE t ! 1", strings.Repeat("x", MaxFilterBytes+1)} {
		if _, err := ParseFilter(q, SourceTelemetry); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q accepted: %v", q, err)
		}
	}
	if _, err := ParseFilter("SELECT * FROM devices WHERE temperature > 1", SourceDeviceConnectivity); !errors.Is(err, ErrInvalid) {
		t.Errorf("a connectivity filter on telemetry accepted: %v", err)
	}
}

// TestQueueOverflowDropsTheOldest: a destination that stays down holds
// MaxQueue messages; older ones are dropped and the status says so; the
// rest arrive, in order, once it is back.
func TestQueueOverflowDropsTheOldest(t *testing.T) {
	c := newCore(t, "d")
	h := newHook(t)
	var up atomic.Bool
	h.fail = func(int) int {
		if up.Load() {
			return 200
		}
		return 500
	}
	m := newManager(t, c, Options{MaxQueue: 3})
	if _, err := m.PutDestination(Destination{ID: "hook", DisplayName: "Hook", Type: TypeWebhook, URL: h.srv.URL}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.PutExport(Export{ID: "e", DisplayName: "E", Enabled: true, Source: SourceTelemetry, Destinations: []DestinationRef{{ID: "hook"}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		telemetry(t, c, "d", fmt.Sprintf(`{"n":%d}`, i))
	}
	eventually(t, "three messages dropped", func() bool {
		d, _ := m.Destination("hook")
		for _, e := range d.Errors {
			if e.Code == "messagesDropped" && strings.HasPrefix(e.Message, "3 messages dropped") {
				return true
			}
		}
		return false
	})
	up.Store(true)
	bodies := h.wait(t, 3)
	for i, b := range bodies {
		var msg struct {
			Telemetry map[string]int `json:"telemetry"`
		}
		_ = json.Unmarshal(b, &msg)
		if msg.Telemetry["n"] != i+3 {
			t.Errorf("message %d = %s, want n=%d (the three oldest dropped)", i, b, i+3)
		}
	}
	eventually(t, "healthy after recovery", func() bool {
		d, _ := m.Destination("hook")
		return d.Status.Status == "healthy" && len(d.Errors) == 0
	})
}
