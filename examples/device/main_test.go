package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDeviceAgainstEmulator runs the program as a user would against the
// emulator: configuration from the environment and flags, CA from a file.
func TestDeviceAgainstEmulator(t *testing.T) {
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	host, port, _ := net.SplitHostPort(emu.MQTTAddr())
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IOTC_ID_SCOPE", emu.IDScope())
	t.Setenv("IOTC_GROUP_KEY", emu.GroupKey())
	watch, stop := emu.WatchTelemetry("example-dev")
	defer stop()
	creds := filepath.Join(t.TempDir(), "creds.json")
	args := []string{"-device", "example-dev", "-dps", host, "-port", port, "-ca", ca, "-interval", "10ms", "-count", "2",
		"-credentials", creds}
	// Every wait is bounded: a hang fails with a message instead of
	// running into the package timeout.
	done := make(chan error, 1)
	go func() { done <- run(args) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("run did not return within %v", waitLimit)
	}
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for i := range 2 {
		select {
		case m := <-watch:
			if !strings.Contains(string(m.Body), "temperature") {
				t.Errorf("telemetry %d: %s", i, m.Body)
			}
		case <-timeout.C:
			t.Fatalf("the emulator received %d of 2 telemetry messages within %v", i, waitLimit)
		}
	}
	if b, err := os.ReadFile(creds); err != nil || !strings.Contains(string(b), `"deviceId": "example-dev"`) {
		t.Errorf("credentials cache %q: %s, %v", creds, b, err)
	}
}

// waitLimit bounds each wait of the tests (not a timing assertion: a
// healthy run takes well under a second).
const waitLimit = 30 * time.Second

func TestDeviceRejectsAmbiguousOrMissingCredentials(t *testing.T) {
	t.Setenv("IOTC_GROUP_KEY", "")
	t.Setenv("IOTC_DEVICE_KEY", "")
	t.Setenv("IOTC_CONNECTION_STRING", "")
	if err := run([]string{"-scope", "0ne00000001", "-device", "d"}); err == nil || !strings.Contains(err.Error(), "no credential") {
		t.Errorf("no credential: %v", err)
	}
	t.Setenv("IOTC_GROUP_KEY", "AAECAwQ=")
	t.Setenv("IOTC_DEVICE_KEY", "AAECAwQ=")
	if err := run([]string{"-scope", "0ne00000001", "-device", "d"}); err == nil || !strings.Contains(err.Error(), "more than one") {
		t.Errorf("two credentials: %v", err)
	}
	t.Setenv("IOTC_DEVICE_KEY", "")
	if err := run([]string{"-scope", "0ne00000001", "-device", "d", "-transport", "carrier-pigeon"}); err == nil || !strings.Contains(err.Error(), "unknown transport") {
		t.Errorf("unknown transport: %v", err)
	}
}

// TestDeviceOverAMQP runs the program with -transport amqp and amqpws.
func TestDeviceOverAMQP(t *testing.T) {
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IOTC_ID_SCOPE", emu.IDScope())
	t.Setenv("IOTC_GROUP_KEY", emu.GroupKey())
	for tr, addr := range map[string]string{"amqp": emu.AMQPAddr(), "amqpws": emu.WebSocketAddr()} {
		host, port, _ := net.SplitHostPort(addr)
		id := "example-" + tr
		watch, stop := emu.WatchTelemetry(id)
		args := []string{"-device", id, "-dps", host, "-port", port, "-ca", ca, "-transport", tr, "-interval", "10ms", "-count", "1"}
		if err := run(args); err != nil {
			stop()
			t.Fatalf("run -transport %s: %v", tr, err)
		}
		select {
		case m := <-watch:
			if !strings.Contains(string(m.Body), "temperature") {
				t.Errorf("%s telemetry %s", tr, m.Body)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("no %s telemetry reached the emulator", tr)
		}
		stop()
	}
}
