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

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/examples/internal/sampletest"
)

func TestMain(m *testing.M) {
	sampletest.MainOr(m, main) // the test binary is the program when a test runs it so
	goleak.VerifyTestMain(m)
}

// TestHelpExitsZero runs the program with -h: usage, exit status 0.
func TestHelpExitsZero(t *testing.T) {
	if code, _, stderr := sampletest.RunMain(t, "-h"); code != 0 || !strings.Contains(stderr, "-transport") {
		t.Errorf("-h: exit %d\n%s", code, stderr)
	}
}

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

// TestPropertyHandlerPerComponent: a thermostat1 target changes only
// thermostat1; the root keeps its own, unknown components get 404.
func TestPropertyHandlerPerComponent(t *testing.T) {
	d := newDevice()
	ctx := context.Background()
	ack := d.onProperty(ctx, iotc.Property{Component: "thermostat1", Name: "targetTemperature", Value: []byte("30"), Version: 2})
	if ack.Status != 200 {
		t.Fatalf("thermostat1 ack %+v", ack)
	}
	if got := d.thermostats["thermostat1"].target; got != 30 {
		t.Errorf("thermostat1 target %v, want 30", got)
	}
	if got := d.thermostats[""].target; got != 21 {
		t.Errorf("root target %v changed, want 21", got)
	}
	if ack := d.onProperty(ctx, iotc.Property{Component: "fan", Name: "targetTemperature", Value: []byte("1")}); ack.Status != 404 {
		t.Errorf("unknown component ack %+v, want 404", ack)
	}
	if ack := d.onProperty(ctx, iotc.Property{Name: "targetTemperature", Value: []byte(`"hot"`)}); ack.Status != 400 {
		t.Errorf("bad value ack %+v, want 400", ack)
	}
}

// TestDeviceFallbackFlag: with 8883 refused, -fallback mqttws reaches the
// emulator over WebSockets; bad -fallback and -proxy values are refused.
func TestDeviceFallbackFlag(t *testing.T) {
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
	t.Setenv("IOTC_DEVICE_KEY", "")
	t.Setenv("IOTC_CONNECTION_STRING", "")
	// A port with nothing listening stands for a blocked 8883.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closed, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	_, wsPort, _ := net.SplitHostPort(emu.WebSocketAddr())
	id := "example-fallback"
	watch, stop := emu.WatchTelemetry(id)
	defer stop()
	args := []string{"-device", id, "-dps", "127.0.0.1", "-port", closed, "-ca", ca, "-fallback", "mqttws", "-interval", "10ms", "-count", "1"}
	if err := run(append(args, "-ws-port", wsPort)); err != nil {
		t.Fatalf("run: %v", err)
	}
	select {
	case <-watch:
	case <-time.After(waitLimit):
		t.Fatal("no telemetry over the fallback")
	}
	for _, bad := range [][]string{
		{"-device", "d", "-fallback", "mqtt,pigeon"},
		{"-device", "d", "-proxy", "::not a url"},
	} {
		if err := run(bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
