package domain

import (
	"fmt"
)

// OutboxDamage is what a durable outbox found damaged when it was opened,
// and what it lost since. The zero value means nothing was damaged.
type OutboxDamage struct {
	// Lost counts messages the outbox had accepted and can no longer
	// deliver: records damaged on disk, counted by the gap in sequence
	// numbers around the damage, and records that stopped reading back
	// intact after opening. Damage at the very end of the outbox, with no
	// intact record after it, cannot be counted this way: it shows as
	// Torn or QuarantinedBytes only.
	Lost uint64
	// Torn counts message records cut short at the end of the newest
	// segment: a write that a crash interrupted (its Append may not have
	// returned, and then nothing accepted was lost) or the end of the file
	// lost with the power.
	Torn uint64
	// QuarantinedBytes is how many damaged bytes were moved out of the
	// segment files into quarantine files.
	QuarantinedBytes int64
	// Quarantine lists the quarantine files written, each beside the
	// segment it came from; they are never read again by the outbox and
	// may be deleted once inspected.
	Quarantine []string
}

// Any reports whether d records any damage.
func (d OutboxDamage) Any() bool {
	return d.Lost > 0 || d.Torn > 0 || d.QuarantinedBytes > 0
}

// Default bounds of an outbox (OutboxLimit's zero fields).
const (
	// DefaultOutboxMessages is how many messages an outbox holds by
	// default: 10,000, about 2 h 45 min of one message per second.
	DefaultOutboxMessages = 10_000
	// DefaultOutboxBytes is how many message bytes (Message.Size: body and
	// properties) an outbox holds by default: 16 MiB.
	DefaultOutboxBytes = 16 << 20
)

// OutboxLimit bounds an outbox of telemetry not yet acknowledged. Zero
// fields select DefaultOutboxMessages and DefaultOutboxBytes; a negative
// field is refused (ErrInvalidConfig).
type OutboxLimit struct {
	// Messages is the most messages stored at once.
	Messages int
	// Bytes is the most message bytes stored at once, counted as
	// Message.Size (what IoT Hub counts against its 256 KiB limit), not
	// the space the store takes on disk.
	Bytes int64
}

// WithDefaults returns l with zero fields set to the defaults.
func (l OutboxLimit) WithDefaults() OutboxLimit {
	if l.Messages == 0 {
		l.Messages = DefaultOutboxMessages
	}
	if l.Bytes == 0 {
		l.Bytes = DefaultOutboxBytes
	}
	return l
}

// Validate returns an error wrapping ErrInvalidConfig for a negative field.
func (l OutboxLimit) Validate() error {
	if l.Messages < 0 || l.Bytes < 0 {
		return fmt.Errorf("%w: negative outbox limit (messages %d, bytes %d)", ErrInvalidConfig, l.Messages, l.Bytes)
	}
	return nil
}

// Admit returns nil when a message of size bytes fits in an outbox that
// holds messages messages of bytes bytes, and an error wrapping
// ErrOutboxFull otherwise. l must have its defaults applied.
func (l OutboxLimit) Admit(messages int, bytes int64, size int) error {
	if messages+1 > l.Messages {
		return fmt.Errorf("%w: %d messages stored (limit %d)", ErrOutboxFull, messages, l.Messages)
	}
	if bytes+int64(size) > l.Bytes {
		return fmt.Errorf("%w: %d of %d bytes stored, the message has %d", ErrOutboxFull, bytes, l.Bytes, size)
	}
	return nil
}
