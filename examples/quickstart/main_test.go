package main

import (
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc"
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

// TestQuickstart runs the whole quickstart over each transport: emulator,
// provisioning, telemetry, reported and writable properties, a command.
func TestQuickstart(t *testing.T) {
	for _, tr := range []iotc.Transport{iotc.MQTT, iotc.MQTTWebSockets, iotc.AMQP, iotc.AMQPWebSockets} {
		t.Run(tr.String(), func(t *testing.T) {
			if err := run(tr); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := transport("carrier-pigeon"); err == nil {
		t.Error("an unknown transport was accepted")
	}
}
