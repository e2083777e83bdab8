package iotc

import (
	"context"
	"log/slog"
	"time"

	"github.com/iotc-go/iotc/adapters/fileoutbox"
	"github.com/iotc-go/iotc/adapters/memoutbox"
	"github.com/iotc-go/iotc/app"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// OutboxConfig configures the outbox of EnqueueTelemetry.
type OutboxConfig struct {
	// Dir makes the outbox durable: messages are kept in this directory
	// (created mode 0700, files 0600) until the hub acknowledged them,
	// across crashes, kill -9 and (unless NoSync) power loss, and
	// delivered after a restart. One client at a time may use a directory
	// (New fails otherwise); Close releases it. Damaged records are moved
	// to quarantine files beside the segments, every intact record is
	// recovered, and the loss is logged at Error level and counted in
	// OutboxStats; New fails when the directory cannot be used, or with
	// ErrOutboxDamaged when damage cannot be moved aside. Default "": the
	// outbox is in memory and lost when the process ends.
	Dir string
	// Limit bounds the outbox; when it is full EnqueueTelemetry fails with
	// ErrOutboxFull. Default 10,000 messages and 16 MiB.
	Limit OutboxLimit
	// MaxAge drops outbox messages older than this, oldest first (before
	// delivering, and to make room when the outbox is full), each drop
	// logged and counted in OutboxStats.Expired. Default 0: never.
	MaxAge time.Duration
	// NoSync skips the fsync that makes each EnqueueTelemetry durable on
	// disk before it returns: messages then survive the process being
	// killed but not a power loss, and enqueueing is tens of times faster
	// (measured in docs/reliability.md). Default false.
	NoSync bool
}

// OutboxLimit bounds the outbox of EnqueueTelemetry: Messages (default
// DefaultOutboxMessages, 10,000) and Bytes (default DefaultOutboxBytes,
// 16 MiB, counted as what IoT Hub counts: body and properties). Zero
// fields select the defaults; negative ones make New fail with
// ErrInvalidConfig.
type OutboxLimit = domain.OutboxLimit

// Default outbox bounds.
const (
	// DefaultOutboxMessages is the default OutboxLimit.Messages: 10,000.
	DefaultOutboxMessages = domain.DefaultOutboxMessages
	// DefaultOutboxBytes is the default OutboxLimit.Bytes: 16 MiB.
	DefaultOutboxBytes = domain.DefaultOutboxBytes
)

// OutboxStats says what waits in the outbox (Messages, Bytes) and, since
// New, how many messages were Delivered (acknowledged by the hub), Expired
// (older than Config.Outbox.MaxAge) and Rejected (refused for good by the
// hub, status 400 or 413). With Config.Outbox.Dir it also says what New
// found damaged on disk: Lost (accepted messages whose records were
// damaged, and records damaged since), Torn (a last record cut short by a
// crash or power loss) and QuarantinedBytes (damaged bytes moved to
// NAME.seg.quarantine files beside the segments). Every drop and every
// loss is also logged, losses at Error level.
type OutboxStats = app.OutboxStats

// EnqueueTelemetry validates v (encoded as SendTelemetry does), stores it
// in the outbox and returns without waiting for the hub: the client
// delivers the outbox in order, at least once, each message with the id it
// was given here, whenever it is connected: from the first moment of every
// connection and reconnection, and, with Config.Outbox.Dir, after a restart
// of the process, with no further call needed. Use it for readings that must not be
// lost across outages and restarts; use SendTelemetry to know that the hub
// has a message. It works before Connect (the messages wait for it) and
// ignores Config.FailFast. The message gets a random id unless
// MessageID is given, and iothub-creation-time-utc (which IoT Central uses
// as the reading's time) set to now unless CreationTime is given.
//
// Errors: ErrOutboxFull at Config.Outbox.Limit (nothing is dropped to make
// room, except messages older than Config.Outbox.MaxAge);
// ErrMessageTooLarge over IoT Hub's 256 KiB (creation time included);
// ErrInvalidConfig for a reserved property name; ErrClosed after Close or
// once the client gave up; ctx's error; an encoding error; or the outbox
// directory's I/O error (the message is then not stored). A durable
// outbox fsyncs each message before EnqueueTelemetry returns unless
// Config.Outbox.NoSync is set. IoT Hub throttles a unit at about 100
// messages per second; the outbox drains at the rate the hub acknowledges.
func (c *Client) EnqueueTelemetry(ctx context.Context, v any, opts *TelemetryOptions) error {
	m, err := domain.NewJSONMessage(v)
	if err != nil {
		return prefixed(err)
	}
	m = withTelemetryOptions(m, opts)
	return prefixed(c.app.EnqueueTelemetry(ctx, m))
}

// OutboxStats returns what waits in the outbox and what became of the
// messages it held since New.
func (c *Client) OutboxStats() OutboxStats { return c.app.OutboxStats() }

// open builds the outbox c asks for: durable in Dir, else
// in memory. The client closes it.
func (c OutboxConfig) open(logger *slog.Logger) (ports.Outbox, error) {
	if c.Dir == "" {
		return memoutbox.New(c.Limit)
	}
	o, err := fileoutbox.Open(c.Dir, fileoutbox.Options{
		Limit:  c.Limit,
		NoSync: c.NoSync,
		Logger: withAttr(logger, "outbox", "file"),
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}
