package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// SendTelemetryBatch sends ms with as few acknowledgements as the
// session's transport allows (ports.BatchSender: one per batched message
// of at most 256 KiB over AMQP, pipelined QoS 1 publishes over MQTT; one
// message at a time otherwise) and returns when the hub acknowledged
// every message. Each message keeps its own message id (one is made when
// empty), component and properties. Every message is checked before
// anything is sent. It rides over reconnects as SendTelemetry does: a
// batch cut by a dead session is sent again whole on the next one, with
// the same message ids (at least once). Errors are those of
// SendTelemetry; an empty batch does nothing.
func (c *Client) SendTelemetryBatch(ctx context.Context, ms []domain.Message) error {
	if len(ms) == 0 {
		return nil
	}
	batch := make([]domain.Message, len(ms))
	for i, m := range ms {
		if m.MessageID == "" {
			m.MessageID = newMessageID()
		}
		m = m.WithDefaults()
		if err := m.Validate(); err != nil {
			return fmt.Errorf("iotc: send telemetry batch: message %d: %w", i, err)
		}
		batch[i] = m
	}
	err := c.onSession(ctx, func(s *session) error { return sendBatch(ctx, s.HubSession, batch) })
	if err != nil {
		return fmt.Errorf("iotc: send telemetry batch: %w", err)
	}
	if c.log.Enabled(ctx, slog.LevelDebug) {
		c.log.Debug("telemetry batch sent", "messages", len(batch))
	}
	return nil
}

// sendBatch sends ms on hs, batched when hs can.
func sendBatch(ctx context.Context, hs ports.HubSession, ms []domain.Message) error {
	if bs, ok := hs.(ports.BatchSender); ok {
		return bs.SendTelemetryBatch(ctx, ms)
	}
	for _, m := range ms {
		if err := hs.SendTelemetry(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// deliverRun delivers the head of es on s, with the entries after it in
// one SendTelemetryBatch when s batches (ports.BatchSender), and returns
// how many entries were delivered. A batch the hub refuses for good
// (one of its messages is wrong) is not retried as a batch: the head is
// delivered alone, so the pump drops only the message the hub refuses.
func (p *outboxPump) deliverRun(s *session, es []ports.OutboxEntry) (int, error) {
	bs, ok := s.HubSession.(ports.BatchSender)
	if !ok || len(es) == 1 {
		return 1, p.deliver(s, es[0])
	}
	ms := make([]domain.Message, len(es))
	for i, e := range es {
		ms[i] = e.Message
	}
	ctx, cancel := context.WithTimeout(p.c.runCtx, outboxSendTimeout)
	err := bs.SendTelemetryBatch(ctx, ms)
	cancel()
	if err == nil {
		p.c.log.Debug("outbox: telemetry batch delivered", "messages", len(ms))
		return len(es), nil
	}
	if isRejected(err) {
		p.c.log.Warn("outbox: the hub refused a batch; delivering its messages one by one", "err", err)
		return 1, p.deliver(s, es[0])
	}
	return 0, err
}
