package emulator

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"
)

func TestWebSocketListenerAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, mqtt, ws string
		want           func(addr string) bool
	}{
		{"ephemeral MQTT makes it ephemeral", "127.0.0.1:0", "", func(a string) bool { _, p, _ := net.SplitHostPort(a); return p != "0" && p != "443" }},
		{"explicit ephemeral", "127.0.0.1:0", "127.0.0.1:0", func(a string) bool { _, p, _ := net.SplitHostPort(a); return p != "0" }},
		{"disabled", "127.0.0.1:0", "-", func(a string) bool { return a == "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := Start(t.Context(), &Options{MQTTAddr: tc.mqtt, WebSocketAddr: tc.ws, RESTAddr: "-", CertDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.Close() })
			if !tc.want(e.WebSocketAddr()) {
				t.Fatalf("WebSocketAddr() = %q", e.WebSocketAddr())
			}
		})
	}
}

func TestWebSocketListenerRefusesPlainRequests(t *testing.T) {
	t.Parallel()
	e, err := Start(t.Context(), &Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for path, want := range map[string]int{
		"/$iothub/websocket": http.StatusUpgradeRequired, // not an upgrade
		"/api/devices":       http.StatusNotFound,        // the REST API has its own listener
	} {
		resp, err := client.Get("https://" + e.WebSocketAddr() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}
