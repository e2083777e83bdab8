package main

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
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
