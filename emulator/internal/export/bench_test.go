package export

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// BenchmarkWebhookExport measures telemetry exported to a local webhook
// per second, through the core, the export and net/http; the baseline
// posts the same bodies straight to the same server, so the ratio of the
// two is the export's cost.
func BenchmarkWebhookExport(b *testing.B) {
	c := core.New(core.Config{IDScope: "0ne1", HubHost: "h"})
	defer c.Close()
	if _, err := c.CreateDevice("d"); err != nil {
		b.Fatal(err)
	}
	var delivered atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		delivered.Add(1)
	}))
	defer srv.Close()
	m, err := New(c, Options{MaxQueue: 1 << 20}) // the benchmark queues b.N messages at once
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if _, err := m.PutDestination(Destination{ID: "hook", DisplayName: "Hook", Type: TypeWebhook, URL: srv.URL}); err != nil {
		b.Fatal(err)
	}
	if _, err := m.PutExport(Export{ID: "e", DisplayName: "E", Enabled: true, Source: SourceTelemetry, Destinations: []DestinationRef{{ID: "hook"}}}); err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"temperature":21.5,"humidity":40}`)
	b.Run("export", func(b *testing.B) {
		start := delivered.Load()
		for range b.N {
			if err := c.StoreTelemetry(telemetryOf("d", body)); err != nil {
				b.Fatal(err)
			}
		}
		for delivered.Load()-start < int64(b.N) {
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("baseline-post", func(b *testing.B) {
		cl := &http.Client{}
		for i := range b.N {
			res, err := cl.Post(srv.URL, "application/json", bytes.NewReader(fmt.Appendf(nil, `{"n":%d}`, i)))
			if err != nil {
				b.Fatal(err)
			}
			res.Body.Close()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

func telemetryOf(dev string, body []byte) core.Telemetry {
	return core.Telemetry{DeviceID: dev, Body: body, Received: time.Now().UTC()}
}
