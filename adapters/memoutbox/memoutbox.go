// Package memoutbox is an outbox (ports.Outbox) kept in memory: bounded,
// ordered, lost when the process ends. It is the client's default when no
// outbox directory is configured; adapters/fileoutbox is the durable one.
package memoutbox

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// Outbox is an in-memory outbox. It is safe for concurrent use.
type Outbox struct {
	limit domain.OutboxLimit

	mu      sync.Mutex
	entries []ports.OutboxEntry // entries[head:] are stored
	head    int
	bytes   int64
	next    uint64
	closed  bool
}

var _ ports.Outbox = (*Outbox)(nil)

// New returns an empty outbox bounded by limit (zero fields: the defaults
// of domain.OutboxLimit). It fails with domain.ErrInvalidConfig for a
// negative limit.
func New(limit domain.OutboxLimit) (*Outbox, error) {
	if err := limit.Validate(); err != nil {
		return nil, err
	}
	return &Outbox{limit: limit.WithDefaults(), next: 1}, nil
}

// Append stores a copy of m (the caller may reuse its body and
// properties). Errors: domain.ErrOutboxFull over the limit,
// domain.ErrClosed after Close, ctx's error.
func (o *Outbox) Append(ctx context.Context, m domain.Message, enqueued time.Time) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	size := m.Size()
	m.Body = append([]byte(nil), m.Body...)
	m.Properties = maps.Clone(m.Properties)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, domain.ErrClosed
	}
	if err := o.limit.Admit(len(o.entries)-o.head, o.bytes, size); err != nil {
		return 0, fmt.Errorf("memoutbox: %w", err)
	}
	seq := o.next
	o.next++
	o.entries = append(o.entries, ports.OutboxEntry{Seq: seq, Enqueued: enqueued, Message: m})
	o.bytes += int64(size)
	return seq, nil
}

// Peek returns up to max of the oldest entries. Errors: domain.ErrClosed
// after Close, ctx's error.
func (o *Outbox) Peek(ctx context.Context, max int) ([]ports.OutboxEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, domain.ErrClosed
	}
	live := o.entries[o.head:]
	n := min(max, len(live))
	if n <= 0 {
		return nil, nil
	}
	return append([]ports.OutboxEntry(nil), live[:n]...), nil
}

// Remove deletes the entries with Seq at most through. Errors:
// domain.ErrClosed after Close, ctx's error.
func (o *Outbox) Remove(ctx context.Context, through uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return domain.ErrClosed
	}
	for o.head < len(o.entries) && o.entries[o.head].Seq <= through {
		o.bytes -= int64(o.entries[o.head].Message.Size())
		o.entries[o.head] = ports.OutboxEntry{}
		o.head++
	}
	// Compact once the removed prefix is most of the slice, so memory
	// follows what is stored.
	if o.head > 64 && o.head*2 >= len(o.entries) {
		o.entries = append([]ports.OutboxEntry(nil), o.entries[o.head:]...)
		o.head = 0
	}
	return nil
}

// Len returns how many messages are stored and their bytes.
func (o *Outbox) Len() (int, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries) - o.head, o.bytes
}

// Close drops the entries; later calls fail with domain.ErrClosed. It is
// idempotent.
func (o *Outbox) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	o.entries, o.head, o.bytes = nil, 0, 0
	return nil
}
