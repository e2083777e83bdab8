package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang/mock/gomock"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// batchHub is a hub session that batches: every SendTelemetryBatch call
// is recorded; failNext makes the next call fail with its error.
type batchHub struct {
	*hub
	mu       sync.Mutex
	batches  [][]domain.Message
	failNext error
}

func (b *batchHub) SendTelemetryBatch(_ context.Context, ms []domain.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.failNext; err != nil {
		b.failNext = nil
		return err
	}
	b.batches = append(b.batches, append([]domain.Message(nil), ms...))
	return nil
}

func (b *batchHub) recorded() [][]domain.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]domain.Message(nil), b.batches...)
}

var _ ports.BatchSender = (*batchHub)(nil)

// connectsTo scripts the hub Connect calls to answer the batching
// sessions in order.
func (e *env) connectsTo(sessions ...*batchHub) {
	var mu sync.Mutex
	i := 0
	e.tr.EXPECT().Connect(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, conn ports.HubConnection, ev ports.EventHandler) (ports.HubSession, error) {
			mu.Lock()
			s := sessions[i]
			i++
			mu.Unlock()
			e.conns <- conn
			e.events <- &wire{EventHandler: ev, h: s.hub}
			return s, nil
		}).Times(len(sessions))
}

func batchOf(n int) []domain.Message {
	ms := make([]domain.Message, n)
	for i := range ms {
		ms[i] = domain.Message{Body: []byte(fmt.Sprintf(`{"n":%d}`, i)), Component: fmt.Sprintf("c%d", i%2), Properties: map[string]string{"i": fmt.Sprint(i)}}
	}
	return ms
}

// TestSendTelemetryBatchOneCall: a batching session gets the whole batch
// in one call, each message with its own id, component and properties;
// when the session dies under it, the batch goes whole to the next
// session with the same ids.
func TestSendTelemetryBatchOneCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		b1 := &batchHub{hub: newHub(e.ctrl, emptyTwin), failNext: dropErr}
		b2 := &batchHub{hub: newHub(e.ctrl, emptyTwin)}
		e.provisions(testHub, 1)
		e.connectsTo(b1, b2)
		c := e.client(e.options())
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := c.SendTelemetryBatch(ctx, batchOf(5)); err != nil {
			t.Fatal(err)
		}
		got := b2.recorded()
		if len(got) != 1 || len(got[0]) != 5 || len(b1.recorded()) != 0 {
			t.Fatalf("batches %d on the second session (first %d), want 1 of 5", len(got), len(b1.recorded()))
		}
		ids := map[string]bool{}
		for i, m := range got[0] {
			if m.MessageID == "" || ids[m.MessageID] || m.Component != fmt.Sprintf("c%d", i%2) || m.Properties["i"] != fmt.Sprint(i) || m.ContentType == "" {
				t.Errorf("message %d: %+v", i, m)
			}
			ids[m.MessageID] = true
		}
		// Nothing is sent when one message is too large.
		big := batchOf(3)
		big[2].Body = make([]byte, domain.MaxTelemetrySize+1)
		if err := c.SendTelemetryBatch(ctx, big); !errors.Is(err, domain.ErrMessageTooLarge) {
			t.Fatalf("oversized message: %v", err)
		}
		if len(b2.recorded()) != 1 {
			t.Fatal("a batch with an oversized message was sent")
		}
		if err := c.SendTelemetryBatch(ctx, nil); err != nil {
			t.Fatalf("empty batch: %v", err)
		}
	})
}

// TestSendTelemetryBatchWithoutBatching: a session that cannot batch gets
// the messages one by one, in order.
func TestSendTelemetryBatchWithoutBatching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		c := e.client(e.options())
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		if err := c.SendTelemetryBatch(context.Background(), batchOf(4)); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			if m := <-h.sent; m.Properties["i"] != fmt.Sprint(i) {
				t.Fatalf("message %d: %+v", i, m)
			}
		}
	})
}

// TestOutboxDeliversInBatches: on a batching session the pump delivers
// the waiting messages in one batch, in order, and empties the outbox.
func TestOutboxDeliversInBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		b := &batchHub{hub: newHub(e.ctrl, emptyTwin)}
		e.provisions(testHub, 1)
		e.connectsTo(b)
		o := e.options()
		ob := newFakeOutbox(0)
		o.Outbox = ob
		c := e.client(o)
		defer closeClient(t, c)
		for i := range 10 {
			if err := c.EnqueueTelemetry(context.Background(), domain.Message{Body: []byte(fmt.Sprintf(`{"n":%d}`, i)), MessageID: fmt.Sprintf("m%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		got := b.recorded()
		if len(got) != 1 || len(got[0]) != 10 {
			t.Fatalf("%d batches, want one of 10", len(got))
		}
		for i, m := range got[0] {
			if m.MessageID != fmt.Sprintf("m%d", i) {
				t.Fatalf("message %d has id %s", i, m.MessageID)
			}
		}
		if st := c.OutboxStats(); st.Messages != 0 || st.Delivered != 10 {
			t.Fatalf("outbox stats %+v", st)
		}
	})
}
