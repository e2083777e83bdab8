package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/examples/internal/sampletest"
)

func TestMain(m *testing.M) {
	sampletest.MainOr(m, main) // the test binary is the program when a test runs it so
	goleak.VerifyTestMain(m)
}

// TestDeviceKeySample runs the sample against the emulator from a
// samples.ini section and checks what the emulator received.
func TestDeviceKeySample(t *testing.T) {
	emu := sampletest.StartEmulator(t)
	key, err := emu.CreateDevice("sample-devicekey")
	if err != nil {
		t.Fatal(err)
	}
	ini := sampletest.WriteINI(t, emu, t.TempDir(), "DEVICE_M3", "DeviceId = sample-devicekey\nDeviceKey = "+key)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out sampletest.Buffer
	if err := run(ctx, []string{"-config", ini, "-section", "DEVICE_M3", "-count", "2", "-interval", "10ms"}, &out, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "connected as sample-devicekey") {
		t.Errorf("output:\n%s", out.String())
	}
	msgs, err := emu.TelemetryHistory("sample-devicekey", emulator.TelemetryFilter{})
	if err != nil || len(msgs) != 4 {
		t.Fatalf("telemetry: %d messages, %v; want 4", len(msgs), err)
	}
	if msgs[1].Component != "firstcomponent" {
		t.Errorf("second message component %q, want firstcomponent", msgs[1].Component)
	}
	_, reported, err := emu.Twin("sample-devicekey")
	if err != nil || reported["writeableProp"] != float64(50) {
		t.Errorf("reported = %v, %v", reported, err)
	}
	if err := run(ctx, []string{"-config", ini, "-section", "DEVICE_NOPE"}, &out, &out); err == nil || !strings.Contains(err.Error(), "DEVICE_M3") {
		t.Errorf("missing section: %v", err)
	}
}

// TestGroupKeySection runs the sample from a section that holds only the
// group key, as the seed's samples.ini allows.
func TestGroupKeySection(t *testing.T) {
	emu := sampletest.StartEmulator(t)
	ini := sampletest.WriteINI(t, emu, t.TempDir(), "DEVICE_A", "DeviceId = sample-groupkey\nGroupKey = "+emu.GroupKey())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, log sampletest.Buffer
	if err := run(ctx, []string{"-config", ini, "-count", "1", "-interval", "10ms"}, &out, &log); err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	if !strings.Contains(out.String(), "connected as sample-groupkey") {
		t.Errorf("output:\n%s", out.String())
	}
	// The console log is on at the API-only level: connection changes show.
	if !strings.Contains(log.String(), "state=connected") || strings.Contains(log.String(), "level=DEBUG") {
		t.Errorf("console log at the API-only level:\n%s", log.String())
	}
}

// TestHubNameSkipsDPS gives the section a wrong ID scope and the hub's
// name: the sample reaches the hub without DPS, as the seed's MemStorage.
func TestHubNameSkipsDPS(t *testing.T) {
	emu := sampletest.StartEmulator(t)
	key, err := emu.CreateDevice("sample-hubname")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ini := sampletest.WriteINI(t, emu, dir, "DEVICE_A", "DeviceId = sample-hubname\nDeviceKey = "+key+"\nHubName = "+emu.HubHost())
	text, err := os.ReadFile(ini)
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Replace(string(text), "ScopeId = "+emu.IDScope(), "ScopeId = 0ne00NOTDPS", 1)
	if err := os.WriteFile(ini, []byte(wrong), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out sampletest.Buffer
	if err := run(ctx, []string{"-config", ini, "-count", "1", "-interval", "10ms"}, &out, &out); err != nil {
		t.Fatalf("run with HubName: %v\n%s", err, out.String())
	}
	if msgs, err := emu.TelemetryHistory("sample-hubname", emulator.TelemetryFilter{}); err != nil || len(msgs) != 2 {
		t.Errorf("telemetry: %d messages, %v; want 2", len(msgs), err)
	}
}

// TestExitCodes runs the sample as a program: -h exits 0; a refused key
// exits 1 with a one-line reason that names what to check.
func TestExitCodes(t *testing.T) {
	emu := sampletest.StartEmulator(t)
	ini := sampletest.WriteINI(t, emu, t.TempDir(), "DEVICE_A", "DeviceId = sample-refused\nDeviceKey = AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	code, _, stderr := sampletest.RunMain(t, "-h")
	if code != 0 || !strings.Contains(stderr, "-section") {
		t.Errorf("-h: exit %d, stderr:\n%s", code, stderr)
	}
	code, _, stderr = sampletest.RunMain(t, "-config", ini)
	last := sampletest.LastLine(stderr)
	if code != 1 || !strings.HasPrefix(last, "devicekey: ") || !strings.Contains(last, "check the ID scope") {
		t.Errorf("refused key: exit %d, last line %q; stderr:\n%s", code, last, stderr)
	}
}
