package emulator

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/iotc-go/iotc/emulator/internal/export"
)

type exportHook struct {
	srv  *httptest.Server
	mu   sync.Mutex
	msgs []map[string]any
}

func newExportHook(t *testing.T) *exportHook {
	h := &exportHook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if json.Unmarshal(b, &m) == nil {
			h.mu.Lock()
			h.msgs = append(h.msgs, m)
			h.mu.Unlock()
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// waitFor waits for a message of source and type.
func (h *exportHook) waitFor(t *testing.T, source, typ string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		for _, m := range h.msgs {
			if m["messageSource"] == source && (typ == "" || m["messageType"] == typ) {
				h.mu.Unlock()
				return m
			}
		}
		h.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %s %s message exported", source, typ)
	return nil
}

func exportDefinitions(url string) []byte {
	return []byte(`{"destinations":{"hook":{"displayName":"Hook","type":"webhook@v1","url":"` + url + `"}},
		"exports":{
			"life":{"displayName":"Lifecycle","enabled":true,"source":"deviceLifecycle","destinations":[{"id":"hook"}],
				"enrichments":{"site":{"value":"lab"}}},
			"conn":{"displayName":"Connectivity","enabled":true,"source":"deviceConnectivity","destinations":[{"id":"hook"}]},
			"tel":{"displayName":"Telemetry","enabled":true,"source":"telemetry","destinations":[{"id":"hook"}]}}}`)
}

// TestDataExportFromOptionsWithAnMQTTDevice configures the export through
// Options and exports a real device's lifecycle, connection and telemetry.
func TestDataExportFromOptionsWithAnMQTTDevice(t *testing.T) {
	h := newExportHook(t)
	const app = "6e93df53-1ce5-45e4-ad61-3eb0d684b3a5"
	e := startEmu(t, &Options{DataExport: DataExportOptions{Definitions: exportDefinitions(h.srv.URL), ApplicationID: app}})
	key, err := e.CreateDevice("dev1")
	if err != nil {
		t.Fatal(err)
	}
	m := h.waitFor(t, "deviceLifecycle", "registered")
	if m["deviceId"] != "dev1" || m["applicationId"] != app || m["enrichments"].(map[string]any)["site"] != "lab" {
		t.Errorf("lifecycle message %v", m)
	}
	d := connectHub(t, e, "dev1", key, true)
	defer d.client.close()
	h.waitFor(t, "deviceConnectivity", "connected")
	d.client.publish("devices/dev1/messages/events/k=v", 1, []byte(`{"temperature":21.5}`))
	m = h.waitFor(t, "telemetry", "")
	if tel, _ := m["telemetry"].(map[string]any); tel["temperature"] != 21.5 || m["messageProperties"].(map[string]any)["k"] != "v" {
		t.Errorf("telemetry message %v", m)
	}
}

func TestDataExportDefinitionsRefusedAndKept(t *testing.T) {
	bad := []byte(`{"exports":{"e":{"displayName":"E","enabled":true,"source":"telemetry","destinations":[{"id":"missing"}]}}}`)
	_, err := Start(t.Context(), &Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", CertDir: t.TempDir(),
		DataExport: DataExportOptions{Definitions: bad}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"missing"`) {
		t.Fatalf("Start with an export to an unknown destination: %v", err)
	}
	// Definitions are kept in the data directory.
	dir := t.TempDir()
	e := startEmu(t, &Options{DataDir: dir, DataExport: DataExportOptions{Definitions: exportDefinitions("http://127.0.0.1:1/x")}})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := startEmu(t, &Options{DataDir: dir, RESTAddr: "127.0.0.1:0"})
	req, _ := http.NewRequestWithContext(t.Context(), "GET", e2.RESTURL()+"/api/dataExport/exports?api-version="+DataExportAPIVersion, nil)
	req.Header.Set("Authorization", e2.APIToken())
	tr := &http.Transport{TLSClientConfig: amqpTLS(e2)}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var list struct {
		Value []struct {
			ID string `json:"id"`
		} `json:"value"`
	}
	if err := json.NewDecoder(res.Body).Decode(&list); err != nil || res.StatusCode != 200 || len(list.Value) != 3 {
		t.Fatalf("exports after restart: %d %+v %v", res.StatusCode, list, err)
	}
}

// TestDataExportToTheEmbeddedEventHub exports telemetry and connectivity
// to an event hub of the emulator's own Event Hubs-compatible endpoint
// and reads them back with the official consumer client.
func TestDataExportToTheEmbeddedEventHub(t *testing.T) {
	e := startEmu(t, &Options{EventHubs: EventHubsOptions{Entities: []string{"exports"}}})
	cs, err := e.EventHubsConnectionString("exports")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.export.PutDestination(export.Destination{ID: "eh", DisplayName: "EH", Type: export.TypeEventHubs,
		Authorization: &export.Authorization{Type: "connectionString", ConnectionString: cs}}); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{export.SourceTelemetry, export.SourceDeviceConnectivity} {
		if _, err := e.export.PutExport(export.Export{ID: src, DisplayName: src, Enabled: true, Source: src,
			Destinations: []export.DestinationRef{{ID: "eh"}}}); err != nil {
			t.Fatal(err)
		}
	}
	before := time.Now().Add(-time.Minute)
	ehSend(t, e, "dev1", 3) // connected, 3 messages, disconnected
	c := ehConsumer(t, e, "exports", azeventhubs.DefaultConsumerGroup)
	parts := nonEmptyPartitions(t, c)
	if len(parts) != 1 {
		t.Fatalf("a device's exported messages are in %d partitions, want 1", len(parts))
	}
	var pid string
	for p := range parts {
		pid = p
	}
	evs := readPartition(t, c, pid, azeventhubs.StartPosition{EnqueuedTime: &before}, 5)
	want := []struct{ source, typ string }{{"deviceConnectivity", "connected"}, {"telemetry", ""}, {"telemetry", ""}, {"telemetry", ""},
		{"deviceConnectivity", "disconnected"}}
	n := 0
	for i, ev := range evs {
		var m map[string]any
		if err := json.Unmarshal(ev.Body, &m); err != nil {
			t.Fatalf("event %d: %v: %s", i, err, ev.Body)
		}
		if m["messageSource"] != want[i].source || (want[i].typ != "" && m["messageType"] != want[i].typ) || m["deviceId"] != "dev1" {
			t.Errorf("event %d = %s, want %v", i, ev.Body, want[i])
		}
		if ev.Properties[export.PropDeviceID] != "dev1" || ev.Properties[export.PropMessageSource] != want[i].source ||
			ev.Properties[export.PropApplicationID] != e.export.ApplicationID() {
			t.Errorf("event %d properties %v", i, ev.Properties)
		}
		if ev.ContentType == nil || *ev.ContentType != "application/json" {
			t.Errorf("event %d content type %v", i, ev.ContentType)
		}
		if tel, ok := m["telemetry"].(map[string]any); ok {
			if tel["i"] != float64(n) {
				t.Errorf("telemetry %d out of order: %s", n, ev.Body)
			}
			n++
		}
	}
	deadline := time.Now().Add(wait)
	for {
		d, err := e.export.Destination("eh")
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.Status == "healthy" {
			if !strings.Contains(d.Authorization.ConnectionString, "SharedAccessKey="+export.Mask) {
				t.Errorf("connection string shown as %q", d.Authorization.ConnectionString)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination status %+v", d.Status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
