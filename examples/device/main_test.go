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
	args := []string{"-device", "example-dev", "-dps", host, "-port", port, "-ca", ca, "-interval", "10ms", "-count", "2",
		"-credentials", filepath.Join(t.TempDir(), "creds.json")}
	if err := run(args); err != nil {
		t.Fatalf("run: %v", err)
	}
	for range 2 {
		if m := <-watch; !strings.Contains(string(m.Body), "temperature") {
			t.Errorf("telemetry %s", m.Body)
		}
	}
}

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
