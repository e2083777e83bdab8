package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator"
)

func TestMain(m *testing.M) {
	// azeventhubs' ConsumerClient.Close leaves its $management token
	// renewer running (v2.0.2): a goroutine of the client.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2/internal.(*Namespace).startNegotiateClaimRenewer.func3"))
}

// TestLoopCloses: with no set-up, the backend reads the simulated
// device's telemetry from the built-in endpoint, runs the command through
// the REST API when the temperature passes the threshold, and ends once
// the device's temperature falls back.
func TestLoopCloses(t *testing.T) {
	var out strings.Builder
	err := run(context.Background(), []string{"-interval", "20ms", "-timeout", "1m"}, &syncWriter{b: &out}, &syncWriter{b: &out})
	text := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, text)
	}
	for _, want := range []string{"telemetry from backend-thermostat: temperature 26.0", "ran turnOnFan through the REST API: device answered 200 {\"fan\":\"on\"}", "device: turnOnFan received", "the loop is closed"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}

// TestAgainstARunningEmulator: with -connection-string, -app-url,
// -api-token and -ca-file the backend works against an emulator it did
// not start (here one of the test's, with the simulated device).
func TestAgainstARunningEmulator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	emu, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0", RetryAfter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	var out strings.Builder
	w := &syncWriter{b: &out}
	s := settings{device: "external-thermostat", threshold: 25, interval: 20 * time.Millisecond}
	dev, err := startDevice(ctx, emu, s, w)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close(context.Background())
	cs, _ := emu.EventHubsConnectionString(emu.BuiltinEventHub())
	err = run(ctx, []string{"-connection-string", cs, "-app-url", emu.RESTURL(), "-api-token", emu.APIToken(), "-ca-file", emu.CAFile(),
		"-device", s.device, "-timeout", "1m"}, w, w)
	if err != nil || !strings.Contains(out.String(), "the loop is closed") || strings.Contains(out.String(), "emulator running") {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if err := run(ctx, []string{"-connection-string", cs}, w, w); err == nil {
		t.Fatal("-connection-string without -app-url and -api-token ran")
	}
}
