package iotc_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

// TestSendTelemetryBatch sends batches over every transport: the hub
// receives every message, in order, with its own id, component and
// properties; over AMQP a batch larger than 256 KiB is split and still
// arrives whole.
func TestSendTelemetryBatch(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	for _, tc := range []struct {
		name      string
		transport iotc.Transport
		n, size   int
	}{
		{"mqtt", iotc.MQTT, 120, 100},
		{"amqp", iotc.AMQP, 120, 100},
		{"amqp-large", iotc.AMQP, 7, 100 << 10}, // 700 KiB: several batched messages
		{"amqpws", iotc.AMQPWebSockets, 30, 100},
		{"mqttws", iotc.MQTTWebSockets, 30, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "batch-" + tc.name
			cfg := config(t, emu, id)
			cfg.Transport = tc.transport
			switch tc.transport {
			case iotc.AMQP:
				cfg.Port = amqpPort(t, emu)
			case iotc.AMQPWebSockets, iotc.MQTTWebSockets:
				cfg.Port = wsPort(t, emu)
			}
			c := connect(t, cfg, nil)
			msgs := make([]iotc.BatchMessage, tc.n)
			for i := range msgs {
				opts := &iotc.TelemetryOptions{MessageID: fmt.Sprintf("%s-%d", id, i), Properties: map[string]string{"i": fmt.Sprint(i)}}
				if i%3 == 0 {
					opts.Component = "thermostat1"
				}
				msgs[i] = iotc.BatchMessage{Payload: map[string]any{"i": i, "pad": strings.Repeat("x", tc.size)}, Options: opts}
			}
			if err := c.SendTelemetryBatch(testCtx(t), msgs); err != nil {
				t.Fatalf("SendTelemetryBatch: %v", err)
			}
			hist, err := emu.TelemetryHistory(id, emulator.TelemetryFilter{})
			if err != nil || len(hist) != tc.n {
				t.Fatalf("the hub has %d messages (%v), want %d", len(hist), err, tc.n)
			}
			for i, m := range hist {
				comp := ""
				if i%3 == 0 {
					comp = "thermostat1"
				}
				if m.MessageID != fmt.Sprintf("%s-%d", id, i) || m.Properties["i"] != fmt.Sprint(i) || m.Component != comp || !strings.Contains(string(m.Body), fmt.Sprintf(`"i":%d`, i)) {
					t.Fatalf("message %d: id %s props %v component %q", i, m.MessageID, m.Properties, m.Component)
				}
			}
		})
	}
}

// TestSendTelemetryBatchTooLarge: a message over 256 KiB fails the batch
// before anything is sent.
func TestSendTelemetryBatchTooLarge(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	cfg := config(t, emu, "batch-big")
	cfg.Transport, cfg.Port = iotc.AMQP, amqpPort(t, emu)
	c := connect(t, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := c.SendTelemetryBatch(ctx, []iotc.BatchMessage{{Payload: 1}, {Payload: strings.Repeat("x", 300<<10)}})
	if !errors.Is(err, iotc.ErrMessageTooLarge) {
		t.Fatalf("SendTelemetryBatch: %v, want ErrMessageTooLarge", err)
	}
	if hist, _ := emu.TelemetryHistory("batch-big", emulator.TelemetryFilter{}); len(hist) != 0 {
		t.Fatalf("%d messages sent", len(hist))
	}
}

// TestOutboxOverAMQPInBatches: messages enqueued before Connect reach the
// hub over AMQP in order with their ids (the pump sends them in batches).
func TestOutboxOverAMQPInBatches(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	cfg := config(t, emu, "batch-outbox")
	cfg.Transport, cfg.Port = iotc.AMQP, amqpPort(t, emu)
	cfg.Outbox.Dir = t.TempDir()
	c, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	const n = 70
	for i := range n {
		if err := c.EnqueueTelemetry(testCtx(t), map[string]any{"i": i}, &iotc.TelemetryOptions{MessageID: fmt.Sprintf("ob-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Connect(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for c.OutboxStats().Messages != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("%d messages still in the outbox", c.OutboxStats().Messages)
		case <-time.After(10 * time.Millisecond):
		}
	}
	hist, err := emu.TelemetryHistory("batch-outbox", emulator.TelemetryFilter{})
	if err != nil || len(hist) != n {
		t.Fatalf("the hub has %d messages (%v), want %d", len(hist), err, n)
	}
	for i, m := range hist {
		if m.MessageID != fmt.Sprintf("ob-%d", i) {
			t.Fatalf("message %d has id %s", i, m.MessageID)
		}
	}
	if st := c.OutboxStats(); st.Delivered != n {
		t.Fatalf("outbox stats %+v", st)
	}
}
