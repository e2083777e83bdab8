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
