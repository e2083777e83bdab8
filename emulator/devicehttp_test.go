package emulator

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// deviceHTTP sends one request of the device HTTPS API to the hub host
// (the WebSocket listener), TLS verified against the emulator's CA.
func deviceHTTP(t *testing.T, e *Emulator, method, path, auth string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, "https://"+e.WebSocketAddr()+path+"?api-version=2021-04-12", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, b
}

// TestDeviceHTTPSOnTheHubHost: the hub host serves the device HTTPS API
// beside the service API; telemetry reaches the history; a pulled
// message's lock expires after Options.C2DLockTimeout; the device stays
// disconnected in the registry.
func TestDeviceHTTPSOnTheHubHost(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{C2DLockTimeout: 20 * time.Millisecond})
	key, err := e.CreateDevice("h1")
	if err != nil {
		t.Fatal(err)
	}
	tok := hubSAS(t, e, "h1", key, time.Hour)
	if st, _, b := deviceHTTP(t, e, "POST", "/devices/h1/messages/events", tok, []byte(`{"t":1}`)); st != http.StatusNoContent {
		t.Fatalf("telemetry: %d %s", st, b)
	}
	h, err := e.TelemetryHistory("h1", TelemetryFilter{})
	if err != nil || len(h) != 1 || string(h[0].Body) != `{"t":1}` {
		t.Fatalf("history %+v %v", h, err)
	}
	// A device token does not open the service API (no device twin over HTTPS).
	if st, _, b := deviceHTTP(t, e, "GET", "/twins/h1", tok, nil); st != http.StatusUnauthorized {
		t.Fatalf("twin with a device token: %d %s", st, b)
	}
	st, _, dev := service(t, e, "registryRead", "GET", "/devices/h1", nil)
	if st != http.StatusOK || dev["connectionState"] != "Disconnected" {
		t.Fatalf("registry: %d %v", st, dev)
	}
	if err := e.SendCloudToDevice(ctxT(t), "h1", []byte("c2d"), nil); err != nil {
		t.Fatal(err)
	}
	st, hdr, b := deviceHTTP(t, e, "GET", "/devices/h1/messages/devicebound", tok, nil)
	if st != http.StatusOK || string(b) != "c2d" || hdr.Get("iothub-deliverycount") != "1" {
		t.Fatalf("receive: %d %v %q", st, hdr, b)
	}
	waitFor(t, func() bool {
		st, hdr, _ = deviceHTTP(t, e, "GET", "/devices/h1/messages/devicebound", tok, nil)
		return st == http.StatusOK
	})
	if hdr.Get("iothub-deliverycount") != "2" {
		t.Fatalf("after the lock expired: delivery count %q", hdr.Get("iothub-deliverycount"))
	}
}

// TestDeviceHTTPSFailedAuthenticationsAreRateLimited: the hub host's
// failure limiter covers the device HTTPS API.
func TestDeviceHTTPSFailedAuthenticationsAreRateLimited(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{Limits: Limits{AuthFailures: 3, AuthFailureWindow: time.Hour}})
	key, err := e.CreateDevice("h2")
	if err != nil {
		t.Fatal(err)
	}
	var codes []int
	for range 4 {
		st, _, _ := deviceHTTP(t, e, "POST", "/devices/h2/messages/events", hubSAS(t, e, "h2", key, -time.Minute), []byte("x"))
		codes = append(codes, st)
	}
	st, _, _ := deviceHTTP(t, e, "POST", "/devices/h2/messages/events", hubSAS(t, e, "h2", key, time.Hour), []byte("x"))
	codes = append(codes, st)
	if fmt.Sprint(codes) != "[401 401 401 429 429]" {
		t.Errorf("statuses %v, want [401 401 401 429 429]", codes)
	}
}

// TestDeviceHTTPSAcrossARestart: with a data directory, a queued message
// keeps its correlation id, user id and delivery count; its HTTPS lock is
// not kept, so it is visible again after the restart.
func TestDeviceHTTPSAcrossARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := func() *Options {
		return &Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", DataDir: dir, CertDir: dir + "/certs"}
	}
	e1, err := Start(t.Context(), opts())
	if err != nil {
		t.Fatal(err)
	}
	key, err := e1.CreateDevice("h3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e1.core.SendServiceC2D(ctxT(t), "h3", core.ServiceC2D{MessageID: "kept", CorrelationID: "corr", UserID: "user", Body: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	if st, _, b := deviceHTTP(t, e1, "GET", "/devices/h3/messages/devicebound", hubSAS(t, e1, "h3", key, time.Hour), nil); st != http.StatusOK {
		t.Fatalf("receive: %d %s", st, b)
	}
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := startEmu(t, opts())
	st, hdr, b := deviceHTTP(t, e2, "GET", "/devices/h3/messages/devicebound", hubSAS(t, e2, "h3", key, time.Hour), nil)
	if st != http.StatusOK || hdr.Get("iothub-messageid") != "kept" || hdr.Get("iothub-correlationid") != "corr" ||
		hdr.Get("iothub-userid") != "user" || hdr.Get("iothub-deliverycount") != "2" || string(b) != "b" {
		t.Fatalf("after the restart: %d %v %q", st, hdr, b)
	}
}
