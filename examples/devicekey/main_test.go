package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/examples/internal/sampletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
	var out bytes.Buffer
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
