package ports

import (
	"context"

	"github.com/iotc-go/iotc/domain"
)

// BatchSender is the optional capability of a HubSession to send many
// telemetry messages with fewer acknowledgements than messages: one per
// batched message over AMQP, pipelined publishes over MQTT. A session
// without it gets the messages one SendTelemetry at a time.
type BatchSender interface {
	// SendTelemetryBatch sends ms in order, at least once each, and
	// returns when the hub acknowledged all of them. Every message is
	// checked before anything is sent (domain.ErrMessageTooLarge,
	// domain.ErrInvalidConfig). A session that died first gives an error
	// wrapping domain.ErrNotConnected: an unknown prefix may have arrived,
	// so the caller sends the whole batch again with the same message ids.
	SendTelemetryBatch(ctx context.Context, ms []domain.Message) error
}
