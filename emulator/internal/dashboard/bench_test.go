package dashboard

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// fleet is a fake backend with n devices.
func fleet(n int) *fake {
	f := newFake()
	f.devices = make([]Device, n)
	for i := range f.devices {
		f.devices[i] = Device{ID: fmt.Sprintf("device-%04d", i), ModelID: "dtmi:com:example:Thermostat;1", Provisioned: true, Connected: i%3 == 0, LastSeen: time.Unix(int64(i), 0), Messages: uint64(i)}
	}
	return f
}

// BenchmarkDevicesPage1000 renders the devices page of a 1,000-device fleet.
func BenchmarkDevicesPage1000(b *testing.B) {
	h, err := New(fleet(1000), token, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var size int
	for b.Loop() {
		w := do(h, "GET", "/", "", authed)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
		size = w.Body.Len()
	}
	b.ReportMetric(float64(size), "page-bytes")
}

// BenchmarkTelemetryEvent is the server's cost per telemetry message on a
// device page's live stream (decode the numeric fields, write the event).
func BenchmarkTelemetryEvent(b *testing.B) {
	s := &sse{w: discardWriter{}, f: nil}
	m := Telemetry{Component: "thermostat1", Body: []byte(`{"temperature":21.5,"humidity":40,"mode":"eco","pressure":1013.25}`), Received: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.send("telemetry", toRaw(m)); err != nil {
			b.Fatal(err)
		}
	}
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(p []byte) (int, error) { return io.Discard.Write(p) }
func (discardWriter) WriteHeader(int)             {}
