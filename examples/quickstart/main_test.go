package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
