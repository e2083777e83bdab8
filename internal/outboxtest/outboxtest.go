// Package outboxtest is the contract suite of ports.Outbox: every outbox
// adapter runs Run from its tests, so that the memory and the file outbox
// behave the same way.
package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// Factory opens an outbox for one test.
type Factory struct {
	// Open returns a new, empty outbox bounded by limit. The suite closes
	// it.
	Open func(t *testing.T, limit domain.OutboxLimit) ports.Outbox
	// Reopen, for durable outboxes, closes o and opens the same store
	// again with limit; nil for outboxes that keep nothing across a
	// restart.
	Reopen func(t *testing.T, o ports.Outbox, limit domain.OutboxLimit) ports.Outbox
}

// Msg returns a test message numbered n, with a body of size bytes.
func Msg(n, size int) domain.Message {
	body := make([]byte, size)
	for i := range body {
		body[i] = byte('a' + (n+i)%26)
	}
	return domain.Message{
		Body:            body,
		ContentType:     domain.DefaultContentType,
		ContentEncoding: domain.DefaultContentEncoding,
		MessageID:       "id-" + strconv.Itoa(n),
		CorrelationID:   "corr-" + strconv.Itoa(n),
		CreationTime:    time.Date(2026, 1, 2, 3, 4, 5, n, time.UTC),
		Component:       "thermostat1",
		Properties:      map[string]string{"seq": strconv.Itoa(n), "k": "v"},
	}
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// Equal reports how a differs from b, or "".
func Equal(a, b domain.Message) string {
	switch {
	case string(a.Body) != string(b.Body):
		return "body"
	case a.ContentType != b.ContentType, a.ContentEncoding != b.ContentEncoding:
		return "content type or encoding"
	case a.MessageID != b.MessageID:
		return fmt.Sprintf("message id %q != %q", a.MessageID, b.MessageID)
	case a.CorrelationID != b.CorrelationID:
		return "correlation id"
	case !a.CreationTime.Equal(b.CreationTime):
		return fmt.Sprintf("creation time %v != %v", a.CreationTime, b.CreationTime)
	case a.Component != b.Component:
		return "component"
	case len(a.Properties) != len(b.Properties):
		return "properties"
	}
	for k, v := range a.Properties {
		if bv, ok := b.Properties[k]; !ok || bv != v {
			return "property " + k
		}
	}
	return ""
}

func mustAppend(t *testing.T, o ports.Outbox, m domain.Message) uint64 {
	t.Helper()
	seq, err := o.Append(context.Background(), m, t0)
	if err != nil {
		t.Fatalf("Append %s: %v", m.MessageID, err)
	}
	return seq
}

func peekAll(t *testing.T, o ports.Outbox) []ports.OutboxEntry {
	t.Helper()
	es, err := o.Peek(context.Background(), 1<<30)
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	return es
}

// expectIDs checks that o holds the messages numbered want, in order.
func expectIDs(t *testing.T, o ports.Outbox, want ...int) {
	t.Helper()
	es := peekAll(t, o)
	if len(es) != len(want) {
		t.Fatalf("outbox holds %d entries, want %d", len(es), len(want))
	}
	for i, e := range es {
		if d := Equal(e.Message, Msg(want[i], 10)); d != "" {
			t.Fatalf("entry %d: %s differs from message %d", i, d, want[i])
		}
		if i > 0 && e.Seq <= es[i-1].Seq {
			t.Fatalf("entry %d: seq %d after %d", i, e.Seq, es[i-1].Seq)
		}
	}
	if n, _ := o.Len(); n != len(want) {
		t.Fatalf("Len = %d, want %d", n, len(want))
	}
}

// Run runs the contract suite against f.
func Run(t *testing.T, f Factory) {
	open := func(t *testing.T, l domain.OutboxLimit) ports.Outbox {
		o := f.Open(t, l)
		t.Cleanup(func() { _ = o.Close() })
		return o
	}
	reopen := func(t *testing.T, o ports.Outbox, l domain.OutboxLimit) ports.Outbox {
		o = f.Reopen(t, o, l)
		t.Cleanup(func() { _ = o.Close() })
		return o
	}

	t.Run("Empty", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{})
		if es := peekAll(t, o); len(es) != 0 {
			t.Fatalf("new outbox holds %d entries", len(es))
		}
		if n, b := o.Len(); n != 0 || b != 0 {
			t.Fatalf("Len = %d, %d", n, b)
		}
		if err := o.Remove(context.Background(), 100); err != nil {
			t.Fatalf("Remove on empty: %v", err)
		}
	})

	t.Run("AppendPeekInOrder", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{})
		var last uint64
		for i := 1; i <= 5; i++ {
			seq := mustAppend(t, o, Msg(i, 10))
			if seq == 0 || seq <= last {
				t.Fatalf("seq %d after %d", seq, last)
			}
			last = seq
		}
		expectIDs(t, o, 1, 2, 3, 4, 5)
		es, err := o.Peek(context.Background(), 2)
		if err != nil || len(es) != 2 || es[0].Message.MessageID != "id-1" || es[1].Message.MessageID != "id-2" {
			t.Fatalf("Peek(2) = %d entries, %v", len(es), err)
		}
		if !es[0].Enqueued.Equal(t0) {
			t.Fatalf("Enqueued = %v, want %v", es[0].Enqueued, t0)
		}
		expectIDs(t, o, 1, 2, 3, 4, 5) // Peek removes nothing
	})

	t.Run("RemovePrefix", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{})
		var seqs []uint64
		for i := 1; i <= 5; i++ {
			seqs = append(seqs, mustAppend(t, o, Msg(i, 10)))
		}
		ctx := context.Background()
		if err := o.Remove(ctx, seqs[1]); err != nil {
			t.Fatal(err)
		}
		expectIDs(t, o, 3, 4, 5)
		if err := o.Remove(ctx, seqs[0]); err != nil { // already gone
			t.Fatal(err)
		}
		expectIDs(t, o, 3, 4, 5)
		mustAppend(t, o, Msg(6, 10))
		if err := o.Remove(ctx, seqs[4]); err != nil {
			t.Fatal(err)
		}
		expectIDs(t, o, 6)
		if err := o.Remove(ctx, ^uint64(0)); err != nil {
			t.Fatal(err)
		}
		expectIDs(t, o)
		if _, b := o.Len(); b != 0 {
			t.Fatalf("bytes = %d after removing everything", b)
		}
	})

	t.Run("LenCountsMessageSize", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{})
		want := int64(Msg(1, 100).Size() + Msg(2, 7).Size())
		mustAppend(t, o, Msg(1, 100))
		mustAppend(t, o, Msg(2, 7))
		if n, b := o.Len(); n != 2 || b != want {
			t.Fatalf("Len = %d, %d; want 2, %d", n, b, want)
		}
	})

	t.Run("FullByCountDropsNothing", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{Messages: 3})
		for i := 1; i <= 3; i++ {
			mustAppend(t, o, Msg(i, 10))
		}
		_, err := o.Append(context.Background(), Msg(4, 10), t0)
		if !errors.Is(err, domain.ErrOutboxFull) {
			t.Fatalf("Append over the limit: %v, want ErrOutboxFull", err)
		}
		expectIDs(t, o, 1, 2, 3)
		es := peekAll(t, o)
		if err := o.Remove(context.Background(), es[0].Seq); err != nil {
			t.Fatal(err)
		}
		mustAppend(t, o, Msg(4, 10)) // room again
		expectIDs(t, o, 2, 3, 4)
	})

	t.Run("FullByBytesDropsNothing", func(t *testing.T) {
		size := int64(Msg(1, 100).Size())
		o := open(t, domain.OutboxLimit{Bytes: 2*size + int64(Msg(3, 10).Size())})
		mustAppend(t, o, Msg(1, 100))
		mustAppend(t, o, Msg(2, 100))
		if _, err := o.Append(context.Background(), Msg(3, 100), t0); !errors.Is(err, domain.ErrOutboxFull) {
			t.Fatalf("Append over the byte limit: %v, want ErrOutboxFull", err)
		}
		if _, err := o.Append(context.Background(), Msg(3, 10), t0); err != nil {
			t.Fatalf("a small message that fits: %v", err)
		}
		if n, _ := o.Len(); n != 3 {
			t.Fatalf("Len = %d, want 3", n)
		}
	})

	t.Run("StoresACopy", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{})
		m := Msg(1, 10)
		mustAppend(t, o, m)
		m.Body[0] = 'X'
		m.Properties["seq"] = "changed"
		expectIDs(t, o, 1)
	})

	t.Run("CancelledContextStoresNothing", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := o.Append(ctx, Msg(1, 10), t0); !errors.Is(err, context.Canceled) {
			t.Fatalf("Append with a cancelled context: %v", err)
		}
		expectIDs(t, o)
	})

	t.Run("ConcurrentAppends", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{})
		const writers, each = 8, 50
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if _, err := o.Append(context.Background(), Msg(w*each+i, 10), t0); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		es := peekAll(t, o)
		if len(es) != writers*each {
			t.Fatalf("%d entries, want %d", len(es), writers*each)
		}
		seen := map[string]bool{}
		lastOf := map[int]int{} // writer -> last message number seen
		for i, e := range es {
			if i > 0 && e.Seq <= es[i-1].Seq {
				t.Fatalf("entries out of order at %d", i)
			}
			seen[e.Message.MessageID] = true
			n, _ := strconv.Atoi(e.Message.Properties["seq"])
			w := n / each
			if prev, ok := lastOf[w]; ok && n <= prev {
				t.Fatalf("writer %d: message %d after %d", w, n, prev)
			}
			lastOf[w] = n
		}
		if len(seen) != writers*each {
			t.Fatalf("%d distinct messages, want %d", len(seen), writers*each)
		}
	})

	t.Run("ClosedFails", func(t *testing.T) {
		o := f.Open(t, domain.OutboxLimit{})
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
		if err := o.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		ctx := context.Background()
		if _, err := o.Append(ctx, Msg(1, 10), t0); !errors.Is(err, domain.ErrClosed) {
			t.Fatalf("Append after Close: %v", err)
		}
		if _, err := o.Peek(ctx, 1); !errors.Is(err, domain.ErrClosed) {
			t.Fatalf("Peek after Close: %v", err)
		}
		if err := o.Remove(ctx, 1); !errors.Is(err, domain.ErrClosed) {
			t.Fatalf("Remove after Close: %v", err)
		}
	})

	if f.Reopen == nil {
		return
	}

	t.Run("Durable/SurvivesReopen", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{})
		var seqs []uint64
		for i := 1; i <= 5; i++ {
			seqs = append(seqs, mustAppend(t, o, Msg(i, 10)))
		}
		if err := o.Remove(context.Background(), seqs[1]); err != nil {
			t.Fatal(err)
		}
		o = reopen(t, o, domain.OutboxLimit{})
		expectIDs(t, o, 3, 4, 5)
		es := peekAll(t, o)
		for i, e := range es {
			if e.Seq != seqs[i+2] {
				t.Fatalf("entry %d: seq %d after reopening, was %d", i, e.Seq, seqs[i+2])
			}
			if !e.Enqueued.Equal(t0) {
				t.Fatalf("Enqueued = %v after reopening", e.Enqueued)
			}
		}
		if seq := mustAppend(t, o, Msg(6, 10)); seq <= seqs[4] {
			t.Fatalf("seq %d after reopening, not above %d", seq, seqs[4])
		}
		expectIDs(t, o, 3, 4, 5, 6)
	})

	t.Run("Durable/SeqGrowsAfterEmptied", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{})
		s1 := mustAppend(t, o, Msg(1, 10))
		if err := o.Remove(context.Background(), s1); err != nil {
			t.Fatal(err)
		}
		o = reopen(t, o, domain.OutboxLimit{})
		expectIDs(t, o)
		if s2 := mustAppend(t, o, Msg(2, 10)); s2 <= s1 {
			t.Fatalf("seq %d after reopening an emptied outbox, not above %d", s2, s1)
		}
	})

	t.Run("Durable/LimitAppliesAfterReopen", func(t *testing.T) {
		o := open(t, domain.OutboxLimit{})
		for i := 1; i <= 4; i++ {
			mustAppend(t, o, Msg(i, 10))
		}
		// A smaller limit than what is stored keeps everything and
		// refuses new messages.
		o = reopen(t, o, domain.OutboxLimit{Messages: 2})
		expectIDs(t, o, 1, 2, 3, 4)
		if _, err := o.Append(context.Background(), Msg(5, 10), t0); !errors.Is(err, domain.ErrOutboxFull) {
			t.Fatalf("Append: %v, want ErrOutboxFull", err)
		}
	})
}
