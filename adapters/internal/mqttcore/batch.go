package mqttcore

import (
	"context"
	"errors"
	"fmt"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// The sessions Connect returns batch (app uses ports.BatchSender when the
// session has it).
var _ ports.BatchSender = (*Session)(nil)

// SendTelemetryBatch implements ports.BatchSender over MQTT, which has no
// batch: every message is validated first (nothing is sent when one is
// invalid), then published at QoS 1 one after the other without waiting
// (pipelined, in order), then every PUBACK is awaited. It returns when the
// hub acknowledged all of them; a session that died first gives an error
// wrapping domain.ErrNotConnected (an unknown prefix of the batch may have
// arrived: send the batch again, with the same message ids).
func (s *Session) SendTelemetryBatch(ctx context.Context, ms []domain.Message) error {
	topics := make([]string, len(ms))
	for i, m := range ms {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("message %d of the batch: %w", i, err)
		}
		t, err := m.EncodeTopic(s.telemetryPrefix)
		if err != nil {
			return fmt.Errorf("message %d of the batch: %w", i, err)
		}
		topics[i] = t
	}
	s.mu.Lock()
	if s.ended || s.closed {
		s.mu.Unlock()
		return s.deadErr()
	}
	s.pubs.Add(1)
	s.mu.Unlock()
	s.raw.publishing.Add(1)
	toks := make([]paho.Token, 0, len(ms))
	for i, m := range ms {
		if ctx.Err() != nil {
			break
		}
		toks = append(toks, s.handOver(ctx, topics[i], 1, m.Body))
	}
	s.pubs.Done()
	defer s.raw.publishing.Add(-1)
	if len(toks) < len(ms) {
		return ctx.Err()
	}
	for _, tok := range toks {
		err := wait(ctx, tok, s.done, errConnLost)
		switch {
		case err == nil:
			continue
		case errors.Is(err, errConnLost):
			return s.deadErr()
		case ctx.Err() != nil:
			return err
		}
		return fmt.Errorf("%w: mqtt publish: %w", domain.ErrNotConnected, scrub(err))
	}
	return nil
}
