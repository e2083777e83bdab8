package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang/mock/gomock"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/mocks"
	"github.com/iotc-go/iotc/ports"
)

// fakeOutbox is a ports.Outbox in memory for the pump's tests, with
// failures on demand. (The real adapters pass internal/outboxtest.)
type fakeOutbox struct {
	mu        sync.Mutex
	limit     int
	entries   []ports.OutboxEntry
	next      uint64
	closed    int
	peekErr   error // returned by Peek while set
	removeErr error // returned by Remove while set (nothing is removed)
	peeks     int
}

func newFakeOutbox(limit int) *fakeOutbox { return &fakeOutbox{limit: limit, next: 1} }

func (f *fakeOutbox) Append(ctx context.Context, m domain.Message, at time.Time) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed > 0 {
		return 0, domain.ErrClosed
	}
	if f.limit > 0 && len(f.entries) >= f.limit {
		return 0, fmt.Errorf("fake: %w", domain.ErrOutboxFull)
	}
	seq := f.next
	f.next++
	f.entries = append(f.entries, ports.OutboxEntry{Seq: seq, Enqueued: at, Message: m})
	return seq, nil
}

func (f *fakeOutbox) Peek(_ context.Context, max int) ([]ports.OutboxEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peeks++
	if f.closed > 0 {
		return nil, domain.ErrClosed
	}
	if f.peekErr != nil {
		return nil, f.peekErr
	}
	return append([]ports.OutboxEntry(nil), f.entries[:min(max, len(f.entries))]...), nil
}

func (f *fakeOutbox) Remove(_ context.Context, through uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed > 0 {
		return domain.ErrClosed
	}
	if f.removeErr != nil {
		return f.removeErr
	}
	for len(f.entries) > 0 && f.entries[0].Seq <= through {
		f.entries = f.entries[1:]
	}
	return nil
}

func (f *fakeOutbox) Len() (int, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b int64
	for _, e := range f.entries {
		b += int64(e.Message.Size())
	}
	return len(f.entries), b
}

func (f *fakeOutbox) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

func (f *fakeOutbox) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.entries {
		out = append(out, e.Message.MessageID)
	}
	return out
}

func (f *fakeOutbox) set(fn func(f *fakeOutbox)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

func msgN(n int) domain.Message {
	return domain.Message{Body: []byte(`{"n":` + strconv.Itoa(n) + `}`), Properties: map[string]string{"seq": strconv.Itoa(n)}}
}

func enqueueN(t *testing.T, c *Client, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := c.EnqueueTelemetry(context.Background(), msgN(i)); err != nil {
			t.Fatalf("EnqueueTelemetry %d: %v", i, err)
		}
	}
}

// receive reads n messages from h and checks they are numbered from, in
// order; it returns them. It waits at most 30 minutes of the bubble's fake
// clock for each (backoffs included).
func receive(t *testing.T, h *hub, from, n int) []domain.Message {
	t.Helper()
	var out []domain.Message
	for i := range n {
		select {
		case m := <-h.sent:
			if got := m.Properties["seq"]; got != strconv.Itoa(from+i) {
				t.Fatalf("message %d: seq %s, want %d", i, got, from+i)
			}
			out = append(out, m)
		case <-time.After(30 * time.Minute):
			t.Fatalf("received %d messages, want %d", i, n)
		}
	}
	return out
}

func noMore(t *testing.T, h *hub) {
	t.Helper()
	synctest.Wait()
	select {
	case m := <-h.sent:
		t.Fatalf("unexpected message %s (%s)", m.Body, m.MessageID)
	default:
	}
}

func (c *Client) pumpRunning() bool {
	c.ob.pumpMu.Lock()
	defer c.ob.pumpMu.Unlock()
	return c.ob.running
}

func TestEnqueueBeforeConnectDeliversInOrderAfterConnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, ob, c := outboxClient(t, 0)
		defer closeClient(t, c)
		enqueueN(t, c, 1, 40) // more than one Peek batch
		synctest.Wait()
		if c.pumpRunning() {
			t.Fatal("a pump runs before Connect: an idle client must start no goroutine")
		}
		if st := c.OutboxStats(); st.Messages != 40 || st.Bytes == 0 || st.Delivered != 0 {
			t.Fatalf("OutboxStats before Connect = %+v", st)
		}
		stored := ob.ids()
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		got := receive(t, h, 1, 40)
		for i, m := range got {
			if m.MessageID == "" || m.MessageID != stored[i] {
				t.Fatalf("message %d sent with id %q, stored as %q", i, m.MessageID, stored[i])
			}
			if m.CreationTime.IsZero() {
				t.Fatalf("message %d has no creation time", i)
			}
		}
		noMore(t, h)
		if st := c.OutboxStats(); st.Messages != 0 || st.Bytes != 0 || st.Delivered != 40 {
			t.Fatalf("OutboxStats after delivery = %+v", st)
		}
		if c.pumpRunning() {
			t.Fatal("the pump still runs with nothing to deliver")
		}
		// New messages start it again.
		enqueueN(t, c, 41, 42)
		receive(t, h, 41, 2)
		synctest.Wait()
		if c.pumpRunning() {
			t.Fatal("the pump still runs with nothing to deliver")
		}
	})
}

func TestEnqueueKeepsTheCallersIDAndTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		ob := newFakeOutbox(0)
		o := e.options()
		o.Outbox = ob
		c := e.client(o)
		defer closeClient(t, c)
		at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
		m := msgN(1)
		m.MessageID, m.CreationTime = "mine", at
		if err := c.EnqueueTelemetry(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		es, _ := ob.Peek(context.Background(), 1)
		if es[0].Message.MessageID != "mine" || !es[0].Message.CreationTime.Equal(at) || es[0].Message.ContentType != domain.DefaultContentType {
			t.Fatalf("stored %+v", es[0].Message)
		}
		if !es[0].Enqueued.Equal(time.Now()) {
			t.Fatalf("Enqueued = %v, want now (%v)", es[0].Enqueued, time.Now())
		}
	})
}

func TestEnqueueValidates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		ob := newFakeOutbox(0)
		o := e.options()
		o.Outbox = ob
		c := e.client(o)
		defer closeClient(t, c)
		ctx := context.Background()
		big := domain.Message{Body: bytes.Repeat([]byte("a"), domain.MaxTelemetrySize)}
		if err := c.EnqueueTelemetry(ctx, big); !errors.Is(err, domain.ErrMessageTooLarge) {
			t.Fatalf("oversized: %v", err)
		}
		for _, k := range []string{"$.mid", "iothub-connection-device-id", ""} {
			if err := c.EnqueueTelemetry(ctx, domain.Message{Body: []byte("{}"), Properties: map[string]string{k: "x"}}); !errors.Is(err, domain.ErrInvalidConfig) {
				t.Fatalf("property %q: %v", k, err)
			}
		}
		if n, _ := ob.Len(); n != 0 {
			t.Fatalf("%d invalid messages stored", n)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := c.EnqueueTelemetry(cctx, msgN(1)); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled context: %v", err)
		}
	})
}

func TestEnqueueWithoutOutbox(t *testing.T) {
	e := newEnv(t)
	c := e.client(e.options())
	defer closeClient(t, c)
	if err := c.EnqueueTelemetry(context.Background(), msgN(1)); !errors.Is(err, domain.ErrInvalidConfig) {
		t.Fatalf("EnqueueTelemetry without an outbox: %v", err)
	}
	if st := c.OutboxStats(); st != (OutboxStats{}) {
		t.Fatalf("OutboxStats = %+v", st)
	}
}

func TestNegativeOutboxMaxAge(t *testing.T) {
	e := newEnv(t)
	o := e.options()
	o.OutboxMaxAge = -time.Second
	if _, err := New(o); !errors.Is(err, domain.ErrInvalidConfig) {
		t.Fatalf("New: %v", err)
	}
}

func TestOutboxFullLosesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, ob, c := outboxClient(t, 3)
		defer closeClient(t, c)
		enqueueN(t, c, 1, 3)
		before := ob.ids()
		if err := c.EnqueueTelemetry(context.Background(), msgN(4)); !errors.Is(err, domain.ErrOutboxFull) {
			t.Fatalf("EnqueueTelemetry on a full outbox: %v, want ErrOutboxFull", err)
		}
		if after := ob.ids(); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Fatalf("the outbox changed: %v -> %v", before, after)
		}
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		receive(t, h, 1, 3)
		noMore(t, h)
	})
}

// Close lets an outbox delivery in flight finish before it cancels
// anything: the hub's acknowledgement arrives, the message is removed and
// counted delivered, so it is not delivered again after a restart.
func TestCloseDrainsADeliveryInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		started, release := make(chan struct{}, 1), make(chan struct{})
		h.sendCtxHook = func(ctx context.Context, m domain.Message) error {
			started <- struct{}{}
			select {
			case <-release:
				h.sent <- m
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		ob := newFakeOutbox(0)
		o := e.options()
		o.Outbox = ob
		c := e.client(o)
		enqueueN(t, c, 1, 1)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		<-started
		closed := make(chan error, 1)
		go func() { closed <- c.Close(context.Background()) }()
		synctest.Wait() // Close is waiting for the delivery; nothing was cancelled
		close(release)
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		receive(t, h, 1, 1)
		ob.mu.Lock()
		left := len(ob.entries)
		ob.mu.Unlock()
		if st := c.OutboxStats(); left != 0 || st.Delivered != 1 {
			t.Fatalf("after Close: %d entries left, %d delivered; want the delivery in flight finished", left, st.Delivered)
		}
	})
}

// A session that dies under a delivery: the message goes again, with its
// id, on the next session, and the order holds.
func TestDeliveryRidesOverAReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1, h2 := newHub(e.ctrl, emptyTwin), newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h1}, connResult{err: dialErr}, connResult{hub: h2})
		var lostID string
		n := 0
		h1.sendHook = func(m domain.Message) error {
			n++
			if n == 3 { // the third message is sent but its ack is lost
				lostID = m.MessageID
				h1.kill(dropErr)
				return fmt.Errorf("%w: no PUBACK", domain.ErrNotConnected)
			}
			if h1.closed() {
				return dropErr
			}
			h1.sent <- m
			return nil
		}
		ob := newFakeOutbox(0)
		o := e.options()
		o.Outbox = ob
		c := e.client(o)
		defer closeClient(t, c)
		enqueueN(t, c, 1, 5)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		receive(t, h1, 1, 2)
		got := receive(t, h2, 3, 3)
		if got[0].MessageID != lostID {
			t.Fatalf("resent with id %q, first sent as %q", got[0].MessageID, lostID)
		}
		noMore(t, h2)
		if st := c.OutboxStats(); st.Messages != 0 || st.Delivered != 5 {
			t.Fatalf("OutboxStats = %+v", st)
		}
	})
}

// A reconnect loop that goes on for a while: the pump waits, then
// delivers after the reconnect, FailFast or not.
func TestDeliveryAfterEveryReconnectIgnoresFailFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1, h2 := newHub(e.ctrl, emptyTwin), newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h1}, connResult{err: dialErr}, connResult{err: dialErr}, connResult{hub: h2})
		ob := newFakeOutbox(0)
		o := e.options()
		o.Outbox = ob
		o.FailFast = true
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		h1.kill(dropErr)
		synctest.Wait()
		enqueueN(t, c, 1, 3) // while reconnecting
		receive(t, h2, 1, 3)
	})
}

func TestRetryableFailureRetriesWithTheSameID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		var ids []string
		var times []time.Time
		h.sendHook = func(m domain.Message) error {
			ids = append(ids, m.MessageID)
			times = append(times, time.Now())
			if len(ids) <= 2 {
				return &domain.HubError{Op: "telemetry", Status: 429}
			}
			h.sent <- m
			return nil
		}
		ob := newFakeOutbox(0)
		o := e.options()
		o.Outbox = ob
		o.Backoff = domain.Backoff{Base: time.Second, Cap: time.Second}
		c := e.client(o)
		defer closeClient(t, c)
		enqueueN(t, c, 1, 1)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		receive(t, h, 1, 1)
		if len(ids) != 3 || ids[0] != ids[1] || ids[1] != ids[2] {
			t.Fatalf("attempts with ids %v", ids)
		}
		if !times[1].After(times[0]) {
			t.Fatal("retried without waiting")
		}
	})
}

func TestRejectedMessageIsDroppedAndCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		h.sendHook = func(m domain.Message) error {
			if m.Properties["seq"] == "2" {
				return &domain.HubError{Op: "telemetry", Status: 400, Message: "bad"}
			}
			h.sent <- m
			return nil
		}
		var logs bytes.Buffer
		var logMu sync.Mutex
		ob := newFakeOutbox(0)
		o := e.options()
		o.Outbox = ob
		o.Logger = slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))
		c := e.client(o)
		defer closeClient(t, c)
		enqueueN(t, c, 1, 3)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		receive(t, h, 1, 1)
		receive(t, h, 3, 1)
		synctest.Wait()
		if st := c.OutboxStats(); st.Rejected != 1 || st.Delivered != 2 || st.Messages != 0 {
			t.Fatalf("OutboxStats = %+v", st)
		}
		logMu.Lock()
		defer logMu.Unlock()
		if !strings.Contains(logs.String(), "refused a message for good") {
			t.Fatalf("no log line for the rejected message:\n%s", logs.String())
		}
	})
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestMaxAgeDropsOldMessagesWithALogLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		var logs bytes.Buffer
		var logMu sync.Mutex
		ob := newFakeOutbox(4)
		o := e.options()
		o.Outbox = ob
		o.OutboxMaxAge = time.Hour
		o.Logger = slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))
		c := e.client(o)
		defer closeClient(t, c)
		enqueueN(t, c, 1, 3)
		time.Sleep(30 * time.Minute)
		enqueueN(t, c, 4, 4)
		time.Sleep(31 * time.Minute) // 1-3 are 61 min old, 4 is 31 min old
		// The outbox is full: the expired messages make room.
		enqueueN(t, c, 5, 5)
		if st := c.OutboxStats(); st.Expired != 3 || st.Messages != 2 {
			t.Fatalf("OutboxStats = %+v", st)
		}
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		receive(t, h, 4, 2)
		noMore(t, h)
		logMu.Lock()
		defer logMu.Unlock()
		if !strings.Contains(logs.String(), "older than the maximum age") || !strings.Contains(logs.String(), "count=3") {
			t.Fatalf("no log line for the expired messages:\n%s", logs.String())
		}
	})
}

// A message that expires while the pump waits for a session is not sent.
func TestMaxAgeWhileWaitingForASession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1, h2 := newHub(e.ctrl, emptyTwin), newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		gate := make(chan struct{})
		var mu sync.Mutex
		calls := 0
		e.tr.EXPECT().Connect(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
			func(ctx context.Context, _ ports.HubConnection, _ ports.EventHandler) (ports.HubSession, error) {
				mu.Lock()
				calls++
				n := calls
				mu.Unlock()
				if n == 1 {
					return h1, nil
				}
				<-gate // the hub is unreachable for a while
				return h2, nil
			}).Times(2)
		ob := newFakeOutbox(0)
		o := e.options()
		o.Outbox = ob
		o.OutboxMaxAge = 10 * time.Minute
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		h1.kill(dropErr)
		synctest.Wait()
		enqueueN(t, c, 1, 1)
		time.Sleep(20 * time.Minute)
		enqueueN(t, c, 2, 2)
		close(gate)
		receive(t, h2, 2, 1)
		noMore(t, h2)
		if st := c.OutboxStats(); st.Expired != 1 || st.Delivered != 1 {
			t.Fatalf("OutboxStats = %+v", st)
		}
	})
}

func TestPeekErrorIsRetriedWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, ob, c := outboxClient(t, 0)
		defer closeClient(t, c)
		enqueueN(t, c, 1, 2)
		ob.set(func(f *fakeOutbox) { f.peekErr = errors.New("disk: I/O error") })
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		var peeks int
		ob.set(func(f *fakeOutbox) { peeks = f.peeks; f.peekErr = nil })
		if peeks > 10 {
			t.Fatalf("%d reads in 10 s: the pump spins on a failing outbox", peeks)
		}
		time.Sleep(5 * time.Minute) // past the longest backoff
		receive(t, h, 1, 2)
	})
}

// When removing a delivered message fails, the pump does not send it again
// in this process (after a restart it may come again, same id).
func TestRemoveFailureDoesNotResend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		ob := newFakeOutbox(0)
		ob.removeErr = errors.New("disk full")
		o := e.options()
		o.Outbox = ob
		c := e.client(o)
		defer closeClient(t, c)
		enqueueN(t, c, 1, 3)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		receive(t, h, 1, 3)
		noMore(t, h)
		ob.set(func(f *fakeOutbox) { f.removeErr = nil })
		enqueueN(t, c, 4, 4)
		receive(t, h, 4, 1)
		noMore(t, h)
		if n, _ := ob.Len(); n != 0 {
			t.Fatalf("%d entries left: the next removal did not take the earlier ones", n)
		}
	})
}

func TestCloseStopsThePumpAndKeepsWhatIsStored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		release := make(chan struct{})
		h.sendHook = func(m domain.Message) error {
			if m.Properties["seq"] == "2" {
				<-release // the hub is slow to acknowledge message 2
			}
			h.sent <- m
			return nil
		}
		ob := newFakeOutbox(0)
		o := e.options()
		o.Outbox = ob
		c := e.client(o)
		enqueueN(t, c, 1, 5)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		receive(t, h, 1, 1)
		synctest.Wait() // message 2 is in flight, waiting for its acknowledgement
		closed := make(chan error, 1)
		go func() { closed <- c.Close(context.Background()) }()
		synctest.Wait()
		close(release) // acknowledged while Close drains
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		receive(t, h, 2, 1)
		noMore(t, h)
		if got := ob.ids(); len(got) != 3 {
			t.Fatalf("the outbox holds %d messages after Close, want 3 (3..5)", len(got))
		}
		if ob.closed != 1 {
			t.Fatalf("outbox closed %d times", ob.closed)
		}
		if err := c.EnqueueTelemetry(context.Background(), msgN(6)); !errors.Is(err, domain.ErrClosed) {
			t.Fatalf("EnqueueTelemetry after Close: %v", err)
		}
		if c.pumpRunning() {
			t.Fatal("the pump survived Close")
		}
	})
}

// The pump ends when Connect fails, and starts again with the next one.
func TestPumpEndsWhenConnectFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{err: &domain.HubError{Op: "connect", Status: 401}}, connResult{hub: h})
		ob := newFakeOutbox(0)
		o := e.options()
		o.Outbox = ob
		c := e.client(o)
		defer closeClient(t, c)
		enqueueN(t, c, 1, 2)
		if err := c.Connect(context.Background(), nil); err == nil {
			t.Fatal("Connect succeeded")
		}
		synctest.Wait()
		if c.pumpRunning() {
			t.Fatal("a pump runs after Connect failed")
		}
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		receive(t, h, 1, 2)
	})
}

// The generated mock of the port: an outbox whose Append fails with an
// I/O error gives that error, wrapped, and stores nothing.
func TestAppendIOErrorIsReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		ob := mocks.NewMockOutbox(e.ctrl)
		ioErr := errors.New("write: no space left on device")
		ob.EXPECT().Append(gomock.Any(), gomock.Any(), gomock.Any()).Return(uint64(0), ioErr)
		ob.EXPECT().Len().Return(0, int64(0)).AnyTimes()
		ob.EXPECT().Close().Return(nil)
		o := e.options()
		o.Outbox = ob
		c := e.client(o)
		if err := c.EnqueueTelemetry(context.Background(), msgN(1)); !errors.Is(err, ioErr) {
			t.Fatalf("EnqueueTelemetry: %v", err)
		}
		closeClient(t, c)
	})
}

// outboxClient builds a client over a fake outbox holding at most limit
// messages (0: no limit), provisioned once onto hub h, not connected yet.
func outboxClient(t *testing.T, limit int) (*hub, *fakeOutbox, *Client) {
	t.Helper()
	e := newEnv(t)
	h := newHub(e.ctrl, emptyTwin)
	e.provisions(testHub, 1)
	e.hubConnects(connResult{hub: h})
	ob := newFakeOutbox(limit)
	o := e.options()
	o.Outbox = ob
	return h, ob, e.client(o)
}
