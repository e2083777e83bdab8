package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang/mock/gomock"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

var dropErr = fmt.Errorf("%w: connection reset", domain.ErrNotConnected)

func TestSendWaitsForTheReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1, h2 := newHub(e.ctrl, emptyTwin), newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h1}, connResult{err: dialErr}, connResult{err: dialErr}, connResult{hub: h2})
		c := e.client(e.options())
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		<-e.conns
		h1.kill(dropErr)
		synctest.Wait()
		if c.IsConnected() {
			t.Fatal("still connected to a dead session")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{"t":1}`)}); err != nil {
			t.Fatalf("SendTelemetry while reconnecting = %v, want it to wait for the next session", err)
		}
		if m := <-h2.sent; string(m.Body) != `{"t":1}` {
			t.Errorf("sent %s", m.Body)
		}
		if err := c.ReportProperties(ctx, "", map[string]any{"a": 1}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSendContextEndsWhileOffline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h1})
		e.tr.EXPECT().Connect(gomock.Any(), gomock.Any(), gomock.Any()).Return(nil, dialErr).AnyTimes()
		c := e.client(e.options())
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		h1.kill(dropErr)
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{}`)})
		if !errors.Is(err, domain.ErrNotConnected) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("SendTelemetry offline until the deadline = %v, want ErrNotConnected and DeadlineExceeded", err)
		}
		if waited := time.Since(start); waited != 3*time.Second {
			t.Errorf("returned after %v, want at the 3 s deadline", waited)
		}
		if _, err := c.FetchTwin(ctx); !errors.Is(err, domain.ErrNotConnected) {
			t.Errorf("FetchTwin after the deadline = %v", err)
		}
	})
}

func TestFailFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		tries := 0
		h1.sendHook = func(domain.Message) error {
			tries++
			h1.kill(dropErr)
			return dropErr
		}
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h1})
		e.tr.EXPECT().Connect(gomock.Any(), gomock.Any(), gomock.Any()).Return(nil, dialErr).AnyTimes()
		o := e.options()
		o.FailFast = true
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{}`)}); !errors.Is(err, domain.ErrNotConnected) || tries != 1 {
			t.Fatalf("FailFast send on a dying session = %v after %d tries, want ErrNotConnected after 1", err, tries)
		}
		synctest.Wait()
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{}`)}); !errors.Is(err, domain.ErrNotConnected) {
			t.Fatalf("FailFast send while reconnecting = %v, want ErrNotConnected at once", err)
		}
	})
}

func TestSendFailsAtOnceWhenNobodyConnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		c := e.client(e.options())
		ctx := context.Background()
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{}`)}); !errors.Is(err, domain.ErrNotConnected) {
			t.Errorf("before Connect: %v", err)
		}
		closeClient(t, c)
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{}`)}); !errors.Is(err, domain.ErrClosed) {
			t.Errorf("after Close: %v", err)
		}
		if err := c.ReportProperties(ctx, "", map[string]any{"a": 1}); !errors.Is(err, domain.ErrClosed) {
			t.Errorf("report after Close: %v", err)
		}
	})
}

func TestSendWaitingForAReconnectFailsWhenTheClientGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		refused := fmt.Errorf("connack 5: %w", domain.ErrUnauthorized)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h1}, connResult{err: refused})
		c := e.client(e.options())
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		h1.kill(dropErr)
		err := c.SendTelemetry(context.Background(), domain.Message{Body: []byte(`{}`)})
		if !errors.Is(err, domain.ErrClosed) || !errors.Is(err, domain.ErrUnauthorized) {
			t.Fatalf("send while the client gives up = %v, want ErrClosed wrapping the refusal", err)
		}
	})
}

func TestRenewalDrainsInFlightSendsBeforeReconnecting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1, h2 := newHub(e.ctrl, emptyTwin), newHub(e.ctrl, emptyTwin)
		release := make(chan struct{})
		inFlight := make(chan struct{})
		h1.sendHook = func(m domain.Message) error {
			close(inFlight)
			<-release // the PUBACK is slow to come
			if h1.closed() {
				return dropErr
			}
			h1.sent <- m
			return nil
		}
		c := e.connected(func(o *Options) { o.TokenTTL = 10 * time.Minute }, connResult{hub: h1}, connResult{hub: h2})
		defer closeClient(t, c)
		first := make(chan error, 1)
		time.Sleep(8*time.Minute - time.Second)
		go func() { first <- c.SendTelemetry(context.Background(), domain.Message{Body: []byte(`{"n":1}`)}) }()
		<-inFlight
		time.Sleep(2 * time.Second) // the renewal is due now
		synctest.Wait()
		if h1.closed() {
			t.Fatal("the renewal closed the session with a send in flight")
		}
		second := make(chan error, 1)
		go func() { second <- c.SendTelemetry(context.Background(), domain.Message{Body: []byte(`{"n":2}`)}) }()
		synctest.Wait()
		if len(h1.sent) != 0 || len(h2.sent) != 0 || len(second) != 0 {
			t.Fatal("a new send went out while the old session drained")
		}
		close(release)
		if err := <-first; err != nil {
			t.Fatalf("send in flight during the renewal = %v", err)
		}
		if err := <-second; err != nil {
			t.Fatalf("send during the renewal = %v", err)
		}
		if m := <-h1.sent; string(m.Body) != `{"n":1}` {
			t.Errorf("old session got %s", m.Body)
		}
		if m := <-h2.sent; string(m.Body) != `{"n":2}` {
			t.Errorf("new session got %s", m.Body)
		}
		<-e.conns
		if !h1.closed() {
			t.Error("old session not closed after the drain")
		}
	})
}

func TestStaleAckNeverReplacesANewerVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c, h, ev := liveEnv(t)
		defer closeClient(t, c)
		got := make(chan domain.Property, 4)
		release := make(chan struct{})
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			got <- p
			if string(p.Value) == "2" {
				<-release
				return domain.PropertyAck{Status: 200, Description: "v2 applied"}
			}
			return domain.PropertyAck{Status: 202}
		})
		h.desire(ev, `{"target":1}`) // version 2
		p1 := <-got
		jsonEqual(t, <-h.reported, `{"target":{"value":1,"ac":202,"av":2}}`)
		h.desire(ev, `{"target":2}`) // version 3, its handler blocks
		p2 := <-got
		if p2.Version != p1.Version+1 {
			t.Fatalf("versions %d then %d", p1.Version, p2.Version)
		}
		// The late final answer for version 2 arrives while 3 is handled.
		err := c.AckProperty(context.Background(), p1, domain.PropertyAck{Status: 200, Description: "v1 done"})
		if !errors.Is(err, domain.ErrSuperseded) {
			t.Fatalf("AckProperty for the older version = %v, want domain.ErrSuperseded", err)
		}
		close(release)
		jsonEqual(t, <-h.reported, `{"target":{"value":2,"ac":200,"av":3,"ad":"v2 applied"}}`)
		synctest.Wait()
		if len(h.reported) != 0 {
			t.Errorf("another report went out: %s", <-h.reported)
		}
	})
}

// countGets counts the twin reads of h.
func countGets(h *hub) *atomic.Int64 {
	var n atomic.Int64
	h.getErr = func() error { n.Add(1); return nil }
	return &n
}

func TestDesiredVersionGapResyncsOnTheLiveSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		gets := countGets(h)
		c := e.connected(nil, connResult{hub: h})
		defer closeClient(t, c)
		ev := <-e.events
		got := make(chan domain.Property, 8)
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			got <- p
			return domain.PropertyAck{}
		})
		synctest.Wait()
		base := gets.Load()
		h.desire(ev, `{"a":1}`) // version 2, delivered
		if p := <-got; p.Name != "a" {
			t.Fatalf("got %+v", p)
		}
		<-h.reported
		// Version 3 is lost on the way; version 4 arrives.
		h.mu.Lock()
		h.desired["b"] = 2.0
		h.desired["$version"] = 3.0
		h.desired["$metadata"].(map[string]any)["b"] = map[string]any{"$lastUpdatedVersion": 3.0}
		h.mu.Unlock()
		h.desire(ev, `{"c":3}`) // version 4
		names := map[string]bool{}
		for range 2 {
			names[(<-got).Name] = true
		}
		if !names["b"] || !names["c"] {
			t.Fatalf("after the gap the handler got %v, want the missed b and c", names)
		}
		if gets.Load() != base+1 {
			t.Errorf("twin reads after the gap = %d, want 1", gets.Load()-base)
		}
		if c.Status().State != domain.StateConnected {
			t.Errorf("status %v", c.Status())
		}
	})
}

func TestAbsurdDesiredVersionDoesNotSwitchOffLaterPatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c, h, ev := liveEnv(t)
		defer closeClient(t, c)
		got := make(chan domain.Property, 8)
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			got <- p
			return domain.PropertyAck{}
		})
		synctest.Wait()
		ev.OnDesiredPatch([]byte(`{"$version":9223372036854775807,"evil":1}`))
		synctest.Wait()
		for len(got) > 0 {
			<-got
		}
		for len(h.reported) > 0 {
			<-h.reported
		}
		h.desire(ev, `{"fan":true}`)
		if p := <-got; p.Name != "fan" {
			t.Fatalf("after an absurd $version the next patch gave %+v", p)
		}
	})
}

func TestFailedTwinGetIsRetriedOnTheLiveSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, `{"desired":{"$version":5,"fan":true},"reported":{}}`)
		var fails atomic.Int64
		h.getErr = func() error {
			if fails.Add(1) <= 3 {
				return &domain.HubError{Op: "twin get", Status: 503}
			}
			return nil
		}
		got := make(chan domain.Property, 4)
		o := e.options()
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h})
		c := e.client(o)
		defer closeClient(t, c)
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			got <- p
			return domain.PropertyAck{}
		})
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		if p := <-got; p.Name != "fan" || p.Version != 5 {
			t.Fatalf("got %+v", p)
		}
		if n := fails.Load(); n != 4 {
			t.Errorf("twin reads = %d, want 3 failures and a success", n)
		}
		if h.closed() {
			t.Error("the session was dropped to retry the twin read")
		}
	})
}

func TestFullPropertyQueueResyncs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		c := e.connected(func(o *Options) { o.QueueLimit = 1 }, connResult{hub: h})
		defer closeClient(t, c)
		ev := <-e.events
		release := make(chan struct{})
		got := make(chan string, 16)
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			got <- p.Name
			if p.Name == "a" {
				<-release
			}
			return domain.PropertyAck{}
		})
		synctest.Wait()
		h.desire(ev, `{"a":1}`) // handled; the handler blocks
		<-got
		h.desire(ev, `{"b":1}`) // waits in the queue (limit 1)
		h.desire(ev, `{"c":1}`) // dropped: the queue is full
		close(release)
		seen := map[string]bool{}
		deadline := time.After(time.Minute)
		for !seen["b"] || !seen["c"] {
			select {
			case n := <-got:
				seen[n] = true
			case <-deadline:
				t.Fatalf("after a full queue the handler saw %v, want b and c", seen)
			}
		}
		if h.closed() {
			t.Error("the session was dropped")
		}
	})
}

func TestFullCommandAndMessageQueues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		c := e.connected(func(o *Options) { o.QueueLimit = 1 }, connResult{hub: h})
		defer closeClient(t, c)
		ev := <-e.events
		release := make(chan struct{})
		c.OnCommand(func(context.Context, domain.Command) domain.CommandResponse {
			<-release
			return domain.CommandResponse{Status: 200}
		})
		c.OnCloudMessage(func(context.Context, domain.CloudMessage) domain.Outcome {
			<-release
			return domain.Complete
		})
		ev.OnMethod(ports.MethodRequest{Method: "a", RequestID: "1"})
		synctest.Wait()
		ev.OnMethod(ports.MethodRequest{Method: "b", RequestID: "2"})
		ev.OnMethod(ports.MethodRequest{Method: "c", RequestID: "3"})
		if r := <-h.responses; r.rid != "3" || r.status != 503 {
			t.Fatalf("third command answered %+v, want 503", r)
		}
		var settled []string
		var mu sync.Mutex
		settle := func(id string) func(domain.Outcome) {
			return func(o domain.Outcome) { mu.Lock(); settled = append(settled, id+" "+o.String()); mu.Unlock() }
		}
		ev.OnCloudMessage(domain.CloudMessage{Body: []byte("1")}, settle("1"))
		synctest.Wait()
		ev.OnCloudMessage(domain.CloudMessage{Body: []byte("2")}, settle("2"))
		ev.OnCloudMessage(domain.CloudMessage{Body: []byte("3")}, settle("3"))
		close(release)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(settled, ",") != "1 complete,2 complete" {
			t.Errorf("settled %v, want the third left unsettled for redelivery", settled)
		}
	})
}

func TestCloudMessageCutOffByCloseStaysUnsettled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c, _, ev := liveEnv(t)
		started := make(chan struct{})
		c.OnCloudMessage(func(ctx context.Context, _ domain.CloudMessage) domain.Outcome {
			close(started)
			<-ctx.Done() // interrupted by Close
			return domain.Complete
		})
		var settled atomic.Bool
		ev.OnCloudMessage(domain.CloudMessage{Body: []byte("x")}, func(domain.Outcome) { settled.Store(true) })
		<-started
		closeClient(t, c)
		if settled.Load() {
			t.Fatal("a message whose handler was cut off by Close was settled")
		}
	})
}

func TestCloseFromCallbacks(t *testing.T) {
	t.Run("CommandHandler", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, c, h, ev := liveEnv(t)
			closed := make(chan error, 1)
			c.OnCommand(func(ctx context.Context, _ domain.Command) domain.CommandResponse {
				closed <- c.Close(ctx) // a "reboot" command
				return domain.CommandResponse{Status: 200}
			})
			ev.OnMethod(ports.MethodRequest{Method: "reboot", RequestID: "1"})
			if err := <-closed; err != nil {
				t.Fatalf("Close from a command handler = %v", err)
			}
			closeClient(t, c) // from outside: waits for the end
			if !h.closed() {
				t.Error("session not closed")
			}
		})
	})
	t.Run("StatusCallback", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t)
			h := newHub(e.ctrl, emptyTwin)
			e.provisions(testHub, 1)
			e.hubConnects(connResult{hub: h})
			var c *Client
			closed := make(chan error, 1)
			o := e.options()
			o.OnStatus = func(s domain.Status) {
				if s.State == domain.StateConnected {
					closed <- c.Close(context.Background())
				}
			}
			c = e.client(o)
			// The callback may close the client before Connect returns.
			if err := c.Connect(context.Background(), nil); err != nil && !errors.Is(err, domain.ErrClosed) {
				t.Fatal(err)
			}
			if err := <-closed; err != nil {
				t.Fatalf("Close from OnStatus = %v", err)
			}
			closeClient(t, c)
			if !h.closed() {
				t.Error("session not closed")
			}
		})
	})
	t.Run("CloudMessageHandler", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, c, _, ev := liveEnv(t)
			closed := make(chan error, 1)
			c.OnCloudMessage(func(ctx context.Context, _ domain.CloudMessage) domain.Outcome {
				closed <- c.Close(context.Background())
				return domain.Complete
			})
			ev.OnCloudMessage(domain.CloudMessage{}, func(domain.Outcome) {})
			if err := <-closed; err != nil {
				t.Fatal(err)
			}
			closeClient(t, c)
		})
	})
}

func TestCloseWaitsForConnectInProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		entered := make(chan struct{})
		e.tr.EXPECT().Provision(gomock.Any(), gomock.Any()).DoAndReturn(func(ctx context.Context, _ ports.ProvisioningRequest) (domain.Assignment, error) {
			close(entered)
			<-ctx.Done()
			time.Sleep(time.Second) // the transport takes a moment to wind down
			return domain.Assignment{}, ctx.Err()
		})
		c := e.client(e.options())
		connectDone := make(chan error, 1)
		go func() { connectDone <- c.Connect(context.Background(), nil) }()
		<-entered
		start := time.Now()
		closeClient(t, c)
		if waited := time.Since(start); waited < time.Second {
			t.Fatalf("Close returned after %v while Connect was still winding down (1 s)", waited)
		}
		if err := <-connectDone; !errors.Is(err, domain.ErrClosed) {
			t.Errorf("Connect interrupted by Close = %v, want ErrClosed", err)
		}
	})
}

// A failed Connect leaves no goroutine: synctest.Test panics when the
// bubble still has goroutines blocked at its end, and this test never
// calls Close.
func TestFailedConnectLeavesNoGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		refused := fmt.Errorf("connack 5: %w", domain.ErrUnauthorized)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{err: refused}, connResult{err: refused})
		statuses := make(chan domain.Status, 8)
		o := e.options()
		o.OnStatus = func(s domain.Status) { statuses <- s }
		c := e.client(o)
		for range 2 {
			if err := c.Connect(context.Background(), nil); !errors.Is(err, domain.ErrUnauthorized) {
				t.Fatalf("Connect = %v", err)
			}
		}
		synctest.Wait()
		if len(statuses) == 0 {
			t.Error("no status delivered")
		}
	})
}

func TestMaxAttemptsCountsConsecutiveFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		hubs := []*hub{newHub(e.ctrl, emptyTwin), newHub(e.ctrl, emptyTwin), newHub(e.ctrl, emptyTwin)}
		// connect, drop, fail, reconnect, drop, fail, reconnect: with
		// MaxAttempts 2, a count that never restarted would give up.
		c := e.connected(func(o *Options) { o.MaxAttempts = 2 },
			connResult{hub: hubs[0]}, connResult{err: dialErr}, connResult{hub: hubs[1]},
			connResult{err: dialErr}, connResult{hub: hubs[2]})
		defer closeClient(t, c)
		for i := range 2 {
			hubs[i].kill(dropErr)
			<-e.conns // the failure
			<-e.conns // the success
		}
		synctest.Wait()
		if !c.IsConnected() || c.Err() != nil {
			t.Fatalf("gave up after non-consecutive failures: connected=%v err=%v", c.IsConnected(), c.Err())
		}
	})
}

func TestStableAfterDecidesTheFirstReconnectDelay(t *testing.T) {
	for _, tc := range []struct {
		name      string
		upFor     time.Duration
		immediate bool
	}{
		{"Stable", 2 * time.Second, true},
		{"Flapping", 100 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				h1, h2 := newHub(e.ctrl, emptyTwin), newHub(e.ctrl, emptyTwin)
				c := e.connected(func(o *Options) {
					o.StableAfter = time.Second
					o.Backoff = domain.Backoff{Base: 10 * time.Second, Cap: time.Minute}
				}, connResult{hub: h1}, connResult{hub: h2})
				defer closeClient(t, c)
				time.Sleep(tc.upFor)
				dropped := time.Now()
				h1.kill(dropErr)
				<-e.conns
				waited := time.Since(dropped)
				if tc.immediate && waited != 0 {
					t.Errorf("reconnected %v after the loss of a stable session, want at once", waited)
				}
				if !tc.immediate && waited == 0 {
					t.Error("a session that dropped right after opening was reconnected without backoff")
				}
			})
		})
	}
}

func TestConnectOptions(t *testing.T) {
	t.Run("ForceProvisioning", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t)
			e.cache(testHub) // a valid cache that would skip DPS
			e.store.EXPECT().Save(gomock.Any(), gomock.Any()).Return(nil)
			e.provisions("hub2.azure-devices.net", 1)
			e.hubConnects(connResult{hub: newHub(e.ctrl, emptyTwin)})
			o := e.options()
			o.Store = e.store
			c := e.client(o)
			defer closeClient(t, c)
			if err := c.Connect(context.Background(), &ConnectOptions{ForceProvisioning: true}); err != nil {
				t.Fatal(err)
			}
			if conn := <-e.conns; conn.Host != "hub2.azure-devices.net" {
				t.Errorf("connected to %q, want the hub DPS assigned", conn.Host)
			}
		})
	})
	t.Run("ProvisioningPayload", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t)
			var sent map[string]any
			e.tr.EXPECT().Provision(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, r ports.ProvisioningRequest) (domain.Assignment, error) {
				body, _ := r.Registration.Body()
				var b struct{ Payload map[string]any }
				_ = json.Unmarshal(body, &b)
				sent = b.Payload
				return domain.Assignment{Hub: testHub, DeviceID: testDev, Payload: json.RawMessage(`{"zone":"eu"}`)}, nil
			})
			e.hubConnects(connResult{hub: newHub(e.ctrl, emptyTwin)})
			o := e.options()
			o.ProvisioningPayload = map[string]any{"site": "lab"}
			c := e.client(o)
			defer closeClient(t, c)
			if err := c.Connect(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			if sent["site"] != "lab" || sent["modelId"] != testModel {
				t.Errorf("DPS payload %v", sent)
			}
			if got := string(c.ProvisioningPayload()); got != `{"zone":"eu"}` {
				t.Errorf("ProvisioningPayload() = %s", got)
			}
		})
	})
	t.Run("SyncAllDesired", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t)
			h := newHub(e.ctrl, `{"desired":{"$version":4,"fan":true,"mode":"eco"},
				"reported":{"$version":3,"mode":{"value":"eco","ac":200,"av":4}}}`)
			e.provisions(testHub, 1)
			e.hubConnects(connResult{hub: h})
			o := e.options()
			o.SyncAllDesired = true
			c := e.client(o)
			defer closeClient(t, c)
			got := make(chan string, 4)
			c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
				got <- p.Name
				return domain.PropertyAck{}
			})
			if err := c.Connect(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			names := map[string]bool{<-got: true, <-got: true}
			if !names["fan"] || !names["mode"] {
				t.Errorf("handler got %v, want the whole desired document", names)
			}
			jsonEqual(t, <-h.reported, `{"fan":{"value":true,"ac":200,"av":4}}`)
		})
	})
}

func TestAckWhileTheHandlersReportIsInFlightWaitsAndFollowsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		c := e.connected(nil, connResult{hub: h})
		defer closeClient(t, c)
		ev := <-e.events
		got := make(chan domain.Property, 1)
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			got <- p
			return domain.PropertyAck{Status: 202}
		})
		synctest.Wait()
		// The hub is slow to answer the handler's report.
		h.reported = make(chan string) // unbuffered: PatchReported waits for the test
		h.desire(ev, `{"target":5}`)
		p := <-got
		synctest.Wait() // the handler returned; its report waits for the hub
		done := make(chan error, 1)
		go func() {
			done <- c.AckProperty(context.Background(), p, domain.PropertyAck{Status: 200, Description: "final"})
		}()
		synctest.Wait()
		if len(done) != 0 {
			t.Fatal("AckProperty returned before the handler's own answer was reported")
		}
		jsonEqual(t, <-h.reported, `{"target":{"value":5,"ac":202,"av":2}}`)
		jsonEqual(t, <-h.reported, `{"target":{"value":5,"ac":200,"av":2,"ad":"final"}}`)
		if err := <-done; err != nil {
			t.Fatalf("AckProperty = %v", err)
		}
		// A bad acknowledgement is refused before anything is sent.
		if err := c.AckProperty(context.Background(), p, domain.PropertyAck{Status: 200, Value: make(chan int)}); err == nil {
			t.Error("AckProperty with an unencodable value succeeded")
		}
	})
}

// The reconnect delays the client really sleeps follow the backoff's full
// jitter: uniform in [0, ceiling). 60 draws keep the mean within 0.3..0.7
// of the ceiling except with a probability under one in a million, and a
// delay stuck at the ceiling or at zero is far outside it.
func TestReconnectDelaysAreJittered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h1})
		attempts := make(chan time.Time, 1000)
		e.tr.EXPECT().Connect(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
			func(context.Context, ports.HubConnection, ports.EventHandler) (ports.HubSession, error) {
				select {
				case attempts <- time.Now():
				default:
				}
				return nil, dialErr
			}).AnyTimes()
		o := e.options()
		o.Backoff = domain.Backoff{Base: time.Second, Cap: time.Second} // every ceiling is 1 s
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		<-e.conns
		time.Sleep(10 * time.Millisecond) // a session too short to count as stable
		h1.kill(dropErr)
		prev := <-attempts
		var sum time.Duration
		for range 60 {
			at := <-attempts
			d := at.Sub(prev)
			prev = at
			if d < 0 || d >= time.Second {
				t.Fatalf("delay %v outside [0, 1 s)", d)
			}
			sum += d
		}
		if mean := sum / 60; mean < 300*time.Millisecond || mean > 700*time.Millisecond {
			t.Fatalf("mean reconnect delay %v over 60 attempts, want about 0.5 s (full jitter)", mean)
		}
	})
}

// A throttled (429) or failed (5xx) send is tried again on the same
// session after the backoff, within its context; FailFast returns it.
func TestThrottledSendIsRetried(t *testing.T) {
	for _, failFast := range []bool{false, true} {
		t.Run(fmt.Sprint("FailFast=", failFast), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				h := newHub(e.ctrl, emptyTwin)
				var tries atomic.Int64
				h.sendHook = func(m domain.Message) error {
					switch tries.Add(1) {
					case 1:
						return &domain.HubError{Op: "telemetry", Status: 429, Message: "com.microsoft:server-busy"}
					case 2:
						return &domain.HubError{Op: "telemetry", Status: 503}
					}
					h.sent <- m
					return nil
				}
				c := e.connected(func(o *Options) { o.FailFast = failFast }, connResult{hub: h})
				defer closeClient(t, c)
				err := c.SendTelemetry(context.Background(), domain.Message{Body: []byte(`{}`)})
				if failFast {
					if !errors.Is(err, domain.ErrThrottled) || tries.Load() != 1 {
						t.Fatalf("FailFast: %v after %d tries, want the 429 at once", err, tries.Load())
					}
					return
				}
				if err != nil || tries.Load() != 3 || len(h.sent) != 1 {
					t.Fatalf("throttled send = %v after %d tries, want it delivered on the third", err, tries.Load())
				}
				if h.closed() {
					t.Error("throttling closed the session")
				}
			})
		})
	}
}
