package amqpcore

import (
	"context"
	"fmt"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// BatchFormat is the AMQP message-format of a batch: each data section
// holds one encoded message (the Azure SDKs' AMQP_BATCHING_FORMAT_CODE).
const BatchFormat = 0x80013700

// MaxBatchBytes bounds the encoded messages of one batched AMQP message:
// IoT Hub's 256 KiB device-to-cloud limit applies to the whole batch.
const MaxBatchBytes = domain.MaxTelemetrySize

// MaxBatchMessages bounds the messages of one batched AMQP message.
const MaxBatchMessages = 500

// batchOverhead is what the data section of one encoded message costs in
// the batch (its descriptor and length), counted against MaxBatchBytes.
const batchOverhead = 8

// The sessions Connect returns batch (app uses ports.BatchSender when the
// session has it).
var _ ports.BatchSender = (*Session)(nil)

// SendTelemetryBatch implements ports.BatchSender: every message is
// validated first (nothing is sent when one is invalid), then the
// messages are packed, in order, into as few batched messages as fit
// (message-format BatchFormat, at most MaxBatchBytes and
// MaxBatchMessages each), each sent with one transfer and settled by one
// disposition; message ids, components and properties stay per message.
// It returns when the hub accepted every batch. Errors are those of
// SendTelemetry; after a failure an unknown prefix of the batches may
// have arrived (send again, with the same message ids).
func (s *Session) SendTelemetryBatch(ctx context.Context, ms []domain.Message) error {
	encoded := make([][]byte, len(ms))
	for i, m := range ms {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("message %d of the batch: %w", i, err)
		}
		msg := goamqp.Message{Data: [][]byte{m.Body}, Properties: &goamqp.MessageProperties{}}
		fillTelemetry(&msg, m)
		b, err := msg.MarshalBinary()
		if err != nil {
			return fmt.Errorf("%w: message %d of the batch: %w", domain.ErrInvalidConfig, i, err)
		}
		if len(b)+batchOverhead > MaxBatchBytes {
			return fmt.Errorf("%w: message %d of the batch encodes to %d bytes, over IoT Hub's %d", domain.ErrMessageTooLarge, i, len(b), MaxBatchBytes)
		}
		encoded[i] = b
	}
	if err := s.alive(); err != nil {
		return err
	}
	for _, part := range pack(encoded) {
		batch := &goamqp.Message{Format: BatchFormat, Data: part}
		if err := s.tel.Send(ctx, batch, nil); err != nil {
			return s.opError(ctx, "telemetry batch", err)
		}
	}
	return nil
}

// pack splits encoded messages, in order, into as few batches as fit
// MaxBatchBytes and MaxBatchMessages (each message fits alone).
func pack(encoded [][]byte) [][][]byte {
	var out [][][]byte
	for start := 0; start < len(encoded); {
		end, size := start, 0
		for end < len(encoded) && end-start < MaxBatchMessages && size+len(encoded[end])+batchOverhead <= MaxBatchBytes {
			size += len(encoded[end]) + batchOverhead
			end++
		}
		out = append(out, encoded[start:end])
		start = end
	}
	return out
}
