package devicehttp

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// BenchmarkTelemetry sends a small message over the device HTTPS API (TLS,
// keep-alive, SAS checked per request) beside the baseline of storing the
// same message in the core directly; compare the two as a ratio.
func BenchmarkTelemetry(b *testing.B) {
	body := []byte(`{"temperature":21.5,"humidity":40}`)
	b.Run("baseline=core", func(b *testing.B) {
		c := core.New(core.Config{IDScope: "0ne00000001", HubHost: host})
		defer c.Close()
		if _, err := c.CreateDevice("d1"); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			t := core.Telemetry{DeviceID: "d1", Body: bytes.Clone(body), Properties: map[string]string{"color": "red"}, System: map[string]string{}}
			if err := c.StoreTelemetry(t); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("https", func(b *testing.B) {
		e := newEnv(b, Options{})
		e.device("d1")
		tok := e.token("d1", time.Hour)
		client := e.srv.Client()
		url := e.srv.URL + "/devices/d1/messages/events?api-version=2021-04-12"
		for b.Loop() {
			req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
			req.Header.Set("Authorization", tok)
			req.Header.Set("iothub-app-color", "red")
			res, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusNoContent {
				b.Fatalf("status %d", res.StatusCode)
			}
		}
	})
}
