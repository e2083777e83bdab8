package app

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// notifyingTransport hands out sessions that implement ports.DoneNotifier
// and records every session it opened.
type notifyingTransport struct {
	nullTransport
	mu       sync.Mutex
	sessions []*notifyingSession
	opened   chan *notifyingSession
}

func (t *notifyingTransport) Connect(context.Context, ports.HubConnection, ports.EventHandler) (ports.HubSession, error) {
	s := &notifyingSession{nullSession: nullSession{done: make(chan struct{})}}
	t.mu.Lock()
	t.sessions = append(t.sessions, s)
	t.mu.Unlock()
	if t.opened != nil {
		t.opened <- s
	}
	return s, nil
}

type notifyingSession struct {
	nullSession
	mu    sync.Mutex
	ended bool
	after []func()
	err   error
}

func (s *notifyingSession) AfterDone(f func()) func() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		go f()
		return func() bool { return false }
	}
	i := len(s.after)
	s.after = append(s.after, f)
	return func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ended || s.after[i] == nil {
			return false
		}
		s.after[i] = nil
		return true
	}
}

func (s *notifyingSession) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// end drops the session as a dead connection would.
func (s *notifyingSession) end(err error) {
	s.mu.Lock()
	s.ended, s.err = true, err
	after := s.after
	s.mu.Unlock()
	close(s.done)
	for _, f := range after {
		if f != nil {
			go f()
		}
	}
}

// An idle, connected client whose session can call back when it ends
// runs no goroutine of its own; the fallback (a session with only Done)
// would run one per client.
func TestIdleClientRunsNoGoroutine(t *testing.T) {
	const n = 200
	tr := &notifyingTransport{}
	settle := func() int {
		for range 20 {
			runtime.Gosched()
			time.Sleep(time.Millisecond) // let goroutines of earlier work exit (not a timing assertion)
		}
		return runtime.NumGoroutine()
	}
	g0 := settle()
	clients := make([]*Client, n)
	for i := range clients {
		c, err := New(Options{DeviceID: "dev", IDScope: "0ne0", Credential: domain.Credential{Kind: domain.KindDeviceKey, Key: groupKey}, Transports: []ports.Transport{tr}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	g1 := settle()
	for _, c := range clients {
		if err := c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if extra := g1 - g0; extra >= n/2 {
		t.Fatalf("%d idle clients hold %d goroutines, want none of their own", n, extra)
	}
}

// A watched session that ends (told through AfterDone, no goroutine
// waiting on Done) is replaced: the client reconnects and watches the new
// session, again and again.
func TestEndNotificationReconnects(t *testing.T) {
	tr := &notifyingTransport{opened: make(chan *notifyingSession, 4)}
	c, err := New(Options{DeviceID: "dev", IDScope: "0ne0", Credential: domain.Credential{Kind: domain.KindDeviceKey, Key: groupKey},
		Transports: []ports.Transport{tr}, Backoff: domain.Backoff{Base: time.Millisecond, Cap: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.Connect(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	s := <-tr.opened
	for i := range 3 {
		s.end(domain.ErrNotConnected)
		select {
		case s = <-tr.opened:
		case <-time.After(30 * time.Second):
			t.Fatalf("drop %d: the client did not reconnect", i+1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{}`)}); err != nil {
		t.Fatalf("send on the fourth session: %v", err)
	}
}
