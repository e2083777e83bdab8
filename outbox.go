package iotc

import (
	"context"
	"log/slog"

	"github.com/iotc-go/iotc/adapters/fileoutbox"
	"github.com/iotc-go/iotc/adapters/memoutbox"
	"github.com/iotc-go/iotc/app"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// ErrOutboxFull: EnqueueTelemetry found the outbox at Config.OutboxLimit.
// The message was not stored and nothing stored was dropped; retry once
// the outbox drained (see Client.OutboxStats).
var ErrOutboxFull = domain.ErrOutboxFull

// ErrOutboxDamaged: New found damaged records in Config.OutboxDir and
// could not move them aside to a quarantine file (the error names the
// segment and the quarantine file), so opening the outbox could destroy
// messages it still holds. Damage that was moved aside is not an error:
// New succeeds, the loss is logged at Error level and counted in
// OutboxStats (Lost, Torn, QuarantinedBytes).
var ErrOutboxDamaged = domain.ErrOutboxDamaged

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
// (older than Config.OutboxMaxAge) and Rejected (refused for good by the
// hub, status 400 or 413). With Config.OutboxDir it also says what New
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
// connection and reconnection, and, with Config.OutboxDir, after a restart
// of the process, with no further call needed. Use it for readings that must not be
// lost across outages and restarts; use SendTelemetry to know that the hub
// has a message. It works before Connect (the messages wait for it) and
// ignores Config.FailFast. The message gets a random id unless
// MessageID is given, and iothub-creation-time-utc (which IoT Central uses
// as the reading's time) set to now unless CreationTime is given.
//
// Errors: ErrOutboxFull at Config.OutboxLimit (nothing is dropped to make
// room, except messages older than Config.OutboxMaxAge);
// ErrMessageTooLarge over IoT Hub's 256 KiB (creation time included);
// ErrInvalidConfig for a reserved property name; ErrClosed after Close or
// once the client gave up; ctx's error; an encoding error; or the outbox
// directory's I/O error (the message is then not stored). A durable
// outbox fsyncs each message before EnqueueTelemetry returns unless
// Config.OutboxNoSync is set. IoT Hub throttles a unit at about 100
// messages per second; the outbox drains at the rate the hub acknowledges.
func (c *Client) EnqueueTelemetry(ctx context.Context, v any, opts ...TelemetryOption) error {
	m, err := domain.NewJSONMessage(v)
	if err != nil {
		return err
	}
	if len(opts) > 0 {
		m = withTelemetryOptions(m, opts)
	}
	return c.app.EnqueueTelemetry(ctx, m)
}

// OutboxLen returns how many messages wait in the outbox.
func (c *Client) OutboxLen() int { return c.app.OutboxStats().Messages }

// OutboxStats returns what waits in the outbox and what became of the
// messages it held since New.
func (c *Client) OutboxStats() OutboxStats { return c.app.OutboxStats() }

// openOutbox builds the outbox Config asks for: durable in OutboxDir, else
// in memory. The client closes it.
func (c Config) openOutbox(logger *slog.Logger) (ports.Outbox, error) {
	if c.OutboxDir == "" {
		return memoutbox.New(c.OutboxLimit)
	}
	o, err := fileoutbox.Open(c.OutboxDir, fileoutbox.Options{
		Limit:  c.OutboxLimit,
		NoSync: c.OutboxNoSync,
		Logger: withAttr(logger, "outbox", "file"),
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}
