package iotc

import (
	"context"
	"fmt"

	"github.com/iotc-go/iotc/domain"
)

// BatchMessage is one message of SendTelemetryBatch: a payload sent as
// JSON and its own options (Component, Properties, MessageID, ...).
type BatchMessage struct {
	// Payload is encoded with encoding/json, as SendTelemetry's v.
	Payload any
	// Options adjust this message only; nil selects the defaults (see
	// TelemetryOptions).
	Options *TelemetryOptions
}

// SendTelemetryBatch sends many telemetry messages with as few
// acknowledgements as the transport allows, and returns when the hub
// acknowledged all of them: over AMQP one batched message (message format
// 0x80013700, one disposition) per at most 256 KiB and 500 messages; over
// MQTT the messages are published at QoS 1 one after the other without
// waiting (pipelined), then every PUBACK is awaited. Each message keeps
// its own message id, component and properties. Every message is
// encoded and checked before anything is sent (ErrMessageTooLarge over
// 256 KiB, ErrInvalidConfig for a reserved property key). Like
// SendTelemetry it waits for a connection and, when a session dies under
// it, sends the whole batch again on the next one with the same message
// ids (at least once). An empty batch does nothing.
func (c *Client) SendTelemetryBatch(ctx context.Context, msgs []BatchMessage) error {
	ms := make([]domain.Message, len(msgs))
	for i, bm := range msgs {
		m, err := domain.NewJSONMessage(bm.Payload)
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		m = withTelemetryOptions(m, bm.Options)
		ms[i] = m
	}
	return c.app.SendTelemetryBatch(ctx, ms)
}
