package export

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// fixture reads a documented example message.
func fixture(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

// normalize sorts a message's "properties" by component and name (the
// documentation prints them in the device's order; the emulator sorts).
func normalize(m map[string]any) map[string]any {
	if ps, ok := m["properties"].([]any); ok {
		sort.Slice(ps, func(i, j int) bool {
			a, b := ps[i].(map[string]any), ps[j].(map[string]any)
			ka := a["component"].(string) + "/" + a["name"].(string)
			kb := b["component"].(string) + "/" + b["name"].(string)
			return ka < kb
		})
	}
	return m
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %s: %v", b, err)
	}
	return m
}

func sameMessage(t *testing.T, name string, got []byte) {
	t.Helper()
	want := normalize(fixture(t, name))
	g := normalize(decode(t, got))
	if !reflect.DeepEqual(g, want) {
		gb, _ := json.MarshalIndent(g, "", "  ")
		wb, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("%s: message differs from the documented one\ngot  %s\nwant %s", name, gb, wb)
	}
}

func at(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// TestFormatMatchesDocumentedExamples builds, from the model events that
// correspond to them, the messages of IoT Central's documented examples.
func TestFormatMatchesDocumentedExamples(t *testing.T) {
	const app = "1dffa667-9bee-4f16-b243-25ad4151475e"
	dev := deviceInfo{ID: "1vzb5ghlsg1", TemplateID: "urn:qugj6vbw5:___qbj_27r", known: true}
	sample := map[string]any{"userSpecifiedKey": "sampleValue"}
	cases := []struct {
		fixture string
		app     string
		ev      core.FeedEvent
		dev     deviceInfo
		enrich  map[string]any
	}{
		{"telemetry.json", app, core.FeedEvent{Kind: core.FeedTelemetry, DeviceID: dev.ID, Time: at(t, "2020-08-05T22:26:55.455Z"),
			Telemetry: core.Telemetry{DeviceID: dev.ID, ModuleID: "VitalsModule", Component: "DeviceComponent",
				Body:       []byte(`{"Activity":"running","BloodPressure":{"Diastolic":7,"Systolic":71},"BodyTemperature":98.73447010562934,"HeartRate":88,"HeartRateVariability":17,"RespiratoryRate":13}`),
				Properties: map[string]string{"messageProp": "value"}}}, dev, sample},
		{"telemetry_creation_time.json", "5782ed70-b703-4f13-bda3-1f5f0f5c678e", core.FeedEvent{Kind: core.FeedTelemetry, DeviceID: "sample-device-01",
			Time: at(t, "2021-01-29T16:45:39.143Z"), Telemetry: core.Telemetry{DeviceID: "sample-device-01", Body: []byte(`{"temperature":8.341033560421833}`),
				System: map[string]string{core.PropCreationTime: "2021-01-29T16:45:39.021Z", core.PropContentType: "application/json"}}},
			deviceInfo{ID: "sample-device-01", TemplateID: "urn:modelDefinition:mkuyqxzgea:e14m1ukpn", known: true}, nil},
		{"properties_reported.json", "fb74969c-8682-4708-af01-33499a7f7d98", core.FeedEvent{Kind: core.FeedReported, DeviceID: "Pepjmh1Hcc",
			Time: at(t, "2023-03-02T10:35:39.281Z"), Patch: map[string]any{"device_info": map[string]any{"__t": "c",
				"swVersion": "12", "osName": "Android", "processorArchitecture": "arm64-v8a", "processorManufacturer": "unknown"}}},
			deviceInfo{ID: "Pepjmh1Hcc", TemplateID: "dtmi:azureiot:ddzig4ascxz", known: true}, map[string]any{}},
		{"device_connectivity.json", app, core.FeedEvent{Kind: core.FeedConnected, DeviceID: dev.ID, Time: at(t, "2021-04-05T22:26:55.455Z")}, dev, sample},
		{"device_lifecycle.json", app, core.FeedEvent{Kind: core.FeedRegistered, DeviceID: dev.ID, Time: at(t, "2021-01-01T22:26:55.455Z")}, dev, sample},
		{"device_template_lifecycle.json", app, core.FeedEvent{Kind: core.FeedTemplateCreated, TemplateID: "urn:qugj6vbw5:___qbj_27r",
			Time: at(t, "2021-01-01T22:26:55.455Z")}, deviceInfo{}, sample},
	}
	for _, c := range cases {
		msg, ok := buildMessage(c.app, c.ev, c.dev, c.enrich)
		if !ok {
			t.Fatalf("%s: no message built", c.fixture)
		}
		sameMessage(t, c.fixture, msg.Body)
		want := fixture(t, c.fixture)
		if msg.Properties[PropApplicationID] != c.app || msg.Properties[PropMessageSource] != want["messageSource"] {
			t.Errorf("%s: application properties %v", c.fixture, msg.Properties)
		}
		if mt, ok := want["messageType"]; ok && msg.Properties[PropMessageType] != mt {
			t.Errorf("%s: %s = %q, want %v", c.fixture, PropMessageType, msg.Properties[PropMessageType], mt)
		}
		if id, ok := want["deviceId"]; ok && msg.Properties[PropDeviceID] != id {
			t.Errorf("%s: %s = %q", c.fixture, PropDeviceID, msg.Properties[PropDeviceID])
		}
	}
}

func TestFormatEdgeCases(t *testing.T) {
	ev := core.FeedEvent{Kind: core.FeedTelemetry, DeviceID: "d", Time: time.Now(), Telemetry: core.Telemetry{Body: []byte("not json")}}
	if _, ok := buildMessage("a", ev, deviceInfo{}, nil); ok {
		t.Error("a body that is not a JSON object was exported")
	}
	// A writable property's acknowledgement exports its value; $ keys
	// and empty patches export nothing.
	ev = core.FeedEvent{Kind: core.FeedReported, DeviceID: "d", Time: time.Now(),
		Patch: map[string]any{"target": map[string]any{"value": 21.5, "ac": 200.0, "av": 3.0}, "$version": 4.0, "gone": nil}}
	msg, ok := buildMessage("a", ev, deviceInfo{}, nil)
	if !ok {
		t.Fatal("no message")
	}
	m := decode(t, msg.Body)
	want := []any{map[string]any{"name": "gone", "value": nil}, map[string]any{"name": "target", "value": 21.5}}
	if !reflect.DeepEqual(m["properties"], want) || m["messageType"] != "devicePropertyReportedChange" {
		t.Errorf("properties = %v", m["properties"])
	}
	if _, ok := buildMessage("a", core.FeedEvent{Kind: core.FeedDesired, Patch: map[string]any{"$version": 1.0}}, deviceInfo{}, nil); ok {
		t.Error("an empty patch was exported")
	}
	ev = core.FeedEvent{Kind: core.FeedDesired, DeviceID: "d", Time: time.Now(), Patch: map[string]any{"p": 1.0}}
	if msg, _ := buildMessage("a", ev, deviceInfo{}, nil); decode(t, msg.Body)["messageType"] != "devicePropertyDesiredChange" {
		t.Errorf("desired change: %s", msg.Body)
	}
	for k, want := range map[core.FeedKind]string{core.FeedDisconnected: "disconnected", core.FeedDeleted: "deleted",
		core.FeedProvisioned: "provisioned", core.FeedEnabled: "enabled", core.FeedDisabled: "disabled",
		core.FeedDisplayNameChanged: "displayNameChanged", core.FeedTemplateAssigned: "deviceTemplateChanged",
		core.FeedTemplateUpdated: "updated", core.FeedTemplateDeleted: "deleted"} {
		msg, ok := buildMessage("a", core.FeedEvent{Kind: k, DeviceID: "d", TemplateID: "t", Time: time.Now()}, deviceInfo{}, nil)
		if !ok || decode(t, msg.Body)["messageType"] != want {
			t.Errorf("%v: %s", k, msg.Body)
		}
	}
}

// hook is a webhook server that records every request.
type hook struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
	bods [][]byte
	got  chan struct{}
	fail func(n int) int // status for request n (from 1); nil: 200
}

func newHook(t *testing.T) *hook {
	h := &hook{got: make(chan struct{}, 1000)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.reqs = append(h.reqs, r)
		n := len(h.reqs)
		status := 200
		if h.fail != nil {
			status = h.fail(n)
		}
		if status < 300 {
			h.bods = append(h.bods, b)
		}
		h.mu.Unlock()
		w.WriteHeader(status)
		if status < 300 {
			h.got <- struct{}{}
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// wait waits for n accepted messages (the deadline only ends a hung test).
func (h *hook) wait(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		h.mu.Lock()
		if len(h.bods) >= n {
			out := slices.Clone(h.bods)
			h.mu.Unlock()
			return out
		}
		h.mu.Unlock()
		select {
		case <-h.got:
		case <-deadline:
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("webhook got %d messages, want %d", len(h.bods), n)
		}
	}
}

type fakeLink struct{}

func (fakeLink) Protocol() string                { return "fake" }
func (fakeLink) Subscribed(core.Feature) bool    { return false }
func (fakeLink) PushDesired([]byte, int64) error { return nil }
func (fakeLink) InvokeMethod(context.Context, string, []byte) (int, []byte, error) {
	return 0, nil, context.Canceled
}
func (fakeLink) NotifyC2D() {}
func (fakeLink) Drop(error) {}

func newManager(t *testing.T, c *core.Core, o Options) *Manager {
	t.Helper()
	if o.RetryInitial == 0 {
		o.RetryInitial, o.RetryMax = time.Millisecond, 5*time.Millisecond
	}
	m, err := New(c, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// TestExportPerSourceThroughTheModel runs every source through the core,
// the export and a webhook, and compares what the webhook receives with
// the documented examples (the fields that name the application, the
// device, its template and the time are taken from the example once
// checked to be set).
func TestExportPerSourceThroughTheModel(t *testing.T) {
	c := core.New(core.Config{IDScope: "0ne1", HubHost: "h"})
	t.Cleanup(c.Close)
	h := newHook(t)
	m := newManager(t, c, Options{ApplicationID: "1dffa667-9bee-4f16-b243-25ad4151475e"})
	if _, err := m.PutDestination(Destination{ID: "hook", DisplayName: "Hook", Type: TypeWebhook, URL: h.srv.URL}); err != nil {
		t.Fatal(err)
	}
	sample := map[string]Enrichment{"userSpecifiedKey": {Value: "sampleValue"}}
	for _, e := range []Export{
		{ID: "tpl", Source: SourceDeviceTemplateLifecycle, Enrichments: sample},
		{ID: "life", Source: SourceDeviceLifecycle, Enrichments: sample},
		{ID: "conn", Source: SourceDeviceConnectivity, Enrichments: sample},
		{ID: "tel", Source: SourceTelemetry, Enrichments: sample},
		{ID: "props", Source: SourceProperties},
	} {
		e.DisplayName, e.Enabled, e.Destinations = e.ID, true, []DestinationRef{{ID: "hook"}}
		if _, err := m.PutExport(e); err != nil {
			t.Fatal(err)
		}
	}
	const tplID = "urn:qugj6vbw5:___qbj_27r"
	tpl := map[string]any{"@type": []any{"ModelDefinition", "DeviceModel"}, "displayName": "Vitals",
		"capabilityModel": map[string]any{"@id": "dtmi:x:vitals;1", "@type": "Interface", "contents": []any{}}}
	if _, err := c.PutTemplate(tplID, tpl); err != nil {
		t.Fatal(err)
	}
	id, tid := "1vzb5ghlsg1", tplID
	if _, _, err := c.PutDevice(id, core.DeviceSpec{Template: &tid}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Attach(id, fakeLink{}, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.StoreTelemetry(core.Telemetry{DeviceID: id, ModuleID: "VitalsModule", Component: "DeviceComponent",
		Body:       []byte(`{"Activity":"running","BloodPressure":{"Diastolic":7,"Systolic":71},"BodyTemperature":98.73447010562934,"HeartRate":88,"HeartRateVariability":17,"RespiratoryRate":13}`),
		Properties: map[string]string{"messageProp": "value"}, Received: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := c.PatchReported(id, []byte(`{"device_info":{"__t":"c","swVersion":"12","osName":"Android","processorArchitecture":"arm64-v8a","processorManufacturer":"unknown"}}`)); st != 204 {
		t.Fatalf("reported patch: %d", st)
	}
	bodies := h.wait(t, 5)
	want := []string{"device_template_lifecycle.json", "device_lifecycle.json", "device_connectivity.json", "telemetry.json", "properties_reported.json"}
	for i, b := range bodies {
		got := decode(t, b)
		fx := fixture(t, want[i])
		if _, err := time.Parse(timeLayout, got["enqueuedTime"].(string)); err != nil {
			t.Errorf("%s: enqueuedTime %v", want[i], got["enqueuedTime"])
		}
		for _, k := range []string{"applicationId", "deviceId", "templateId"} {
			if _, ok := fx[k]; ok && (got[k] == nil || got[k] == "") {
				t.Errorf("%s: %s missing", want[i], k)
			}
		}
		if want[i] != "properties_reported.json" && (got["templateId"] != tplID || got["applicationId"] != fx["applicationId"]) {
			t.Errorf("%s: templateId %v applicationId %v", want[i], got["templateId"], got["applicationId"])
		}
		for _, k := range []string{"applicationId", "deviceId", "templateId", "enqueuedTime"} {
			if v, ok := fx[k]; ok {
				got[k] = v
			}
		}
		b, _ = json.Marshal(got)
		sameMessage(t, want[i], b)
	}
	h.mu.Lock()
	ct := h.reqs[0].Header.Get("Content-Type")
	h.mu.Unlock()
	if !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
}
