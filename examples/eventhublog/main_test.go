package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/examples/internal/sampletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testKey = "c2VuZC1rZXktZm9yLXRlc3Rz"

// fakeEventHub checks each request's SAS token like Event Hubs and keeps
// the forwarded records.
type fakeEventHub struct {
	t       *testing.T
	mu      sync.Mutex
	records []map[string]any
}

func (h *fakeEventHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/device-logs/messages" || r.Header.Get("Content-Type") != "application/vnd.microsoft.servicebus.json" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "SharedAccessSignature ")
	q, err := url.ParseQuery(tok)
	if err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	sr := url.QueryEscape(q.Get("sr"))
	mac := hmac.New(sha256.New, []byte(testKey))
	mac.Write([]byte(sr + "\n" + q.Get("se")))
	if q.Get("skn") != "send" || !hmac.Equal([]byte(q.Get("sig")), []byte(base64.StdEncoding.EncodeToString(mac.Sum(nil)))) ||
		!strings.HasSuffix(q.Get("sr"), "/device-logs") {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var events []struct{ Body string }
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &events); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range events {
		var rec map[string]any
		if err := json.Unmarshal([]byte(e.Body), &rec); err != nil {
			h.t.Errorf("event body is not a JSON record: %q", e.Body)
		}
		h.records = append(h.records, rec)
	}
	w.WriteHeader(http.StatusCreated)
}

// TestEventHubLogSample runs the sample against the emulator with a fake
// Event Hub and checks that the SDK's records arrive, signed, without keys.
func TestEventHubLogSample(t *testing.T) {
	fake := &fakeEventHub{t: t}
	srv := httptest.NewTLSServer(fake)
	defer srv.Close()
	emu := sampletest.StartEmulator(t)
	dir := t.TempDir()
	ini := sampletest.WriteINI(t, emu, dir, "DEVICE_A", "DeviceId = sample-eventhub\nGroupKey = "+emu.GroupKey())
	host := strings.TrimPrefix(srv.URL, "https://")
	extra := "\n[EventHub]\nConnectionString = Endpoint=sb://" + host + "/;SharedAccessKeyName=send;SharedAccessKey=" + testKey + "\nEventHubName = device-logs\n"
	f, err := os.OpenFile(ini, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(extra)
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out sampletest.Buffer
	hc := srv.Client()
	defer hc.CloseIdleConnections()
	if err := run(ctx, []string{"-config", ini, "-count", "1", "-interval", "10ms", "-v"}, &out, &out, hc); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	saw := false
	for _, r := range fake.records {
		if r["msg"] == "provisioned" && r["device_id"] == "sample-eventhub" {
			saw = true
		}
	}
	if len(fake.records) < 3 || !saw {
		t.Errorf("%d records forwarded, provisioned line %v\n%s", len(fake.records), saw, out.String())
	}
	if !strings.Contains(out.String(), "dropped 0") {
		t.Errorf("output: %s", out.String())
	}
	b, _ := json.Marshal(fake.records)
	if strings.Contains(string(b), emu.GroupKey()) || strings.Contains(out.String(), testKey) {
		t.Error("a key was forwarded or printed")
	}
}

func TestParseEventHub(t *testing.T) {
	h, err := parseEventHub("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=k;EntityPath=logs", "")
	if err != nil || h.entity != "logs" || h.endpoint.String() != "https://ns.servicebus.windows.net/" {
		t.Fatalf("%v, %v", h, err)
	}
	if strings.Contains(h.String(), "k;") {
		t.Error("String prints the key")
	}
	for _, bad := range []string{"", "Endpoint=sb://ns/;SharedAccessKeyName=send", "SharedAccessKeyName=a;SharedAccessKey=b"} {
		if _, err := parseEventHub(bad, "hub"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
