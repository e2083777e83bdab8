package core

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeLink is a Link that records what the core asks of it.
type fakeLink struct {
	mu       sync.Mutex
	subs     map[Feature]bool
	notified int
	dropped  error
	desired  [][]byte
	answer   func(ctx context.Context) (int, []byte, error)
}

func newFakeLink(fs ...Feature) *fakeLink {
	l := &fakeLink{subs: map[Feature]bool{}}
	for _, f := range fs {
		l.subs[f] = true
	}
	return l
}

func (l *fakeLink) Protocol() string { return "fake" }
func (l *fakeLink) Subscribed(f Feature) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.subs[f]
}
func (l *fakeLink) PushDesired(b []byte, _ int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.desired = append(l.desired, b)
	return nil
}
func (l *fakeLink) InvokeMethod(ctx context.Context, _ string, _ []byte) (int, []byte, error) {
	if l.answer != nil {
		return l.answer(ctx)
	}
	<-ctx.Done()
	return 0, nil, ctx.Err()
}
func (l *fakeLink) NotifyC2D() {
	l.mu.Lock()
	l.notified++
	l.mu.Unlock()
}
func (l *fakeLink) Drop(err error) {
	l.mu.Lock()
	l.dropped = err
	l.mu.Unlock()
}

func newCoreWithDevice(t *testing.T, id string) *Core {
	t.Helper()
	c := New(Config{IDScope: "0ne1", HubHost: "h"})
	t.Cleanup(c.Close)
	if _, err := c.CreateDevice(id); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestC2DSettlement(t *testing.T) {
	c := newCoreWithDevice(t, "d")
	ctx := t.Context()
	for _, b := range []string{"one", "two", "three"} {
		if err := c.SendCloudToDevice(ctx, "d", []byte(b), map[string]string{"k": b}); err != nil {
			t.Fatal(err)
		}
	}
	l := newFakeLink(FeatureC2D)
	if _, ok := c.NextC2D("d", l); ok {
		t.Fatal("NextC2D handed a message to a link that is not the device's")
	}
	if prev, err := c.Attach("d", l, ""); err != nil || prev != nil {
		t.Fatalf("Attach = %v, %v", prev, err)
	}
	m1, ok1 := c.NextC2D("d", l)
	m2, ok2 := c.NextC2D("d", l)
	m3, ok3 := c.NextC2D("d", l)
	if _, ok := c.NextC2D("d", l); !ok1 || !ok2 || !ok3 || ok {
		t.Fatal("NextC2D should hand out the three messages once each")
	}
	if string(m1.Body) != "one" || m1.Properties["k"] != "one" || m1.Redelivered || m1.To != "/devices/d/messages/devicebound" {
		t.Fatalf("first message %+v", m1)
	}
	for _, s := range []struct {
		id string
		o  Outcome
	}{{m1.MessageID, Complete}, {m2.MessageID, Abandon}, {m3.MessageID, Reject}} {
		if err := c.SettleC2D("d", l, s.id, s.o); err != nil {
			t.Fatalf("SettleC2D %v: %v", s.o, err)
		}
	}
	if n := c.PendingC2D("d"); n != 1 {
		t.Fatalf("%d pending after complete, abandon, reject; want 1 (the abandoned one)", n)
	}
	again, ok := c.NextC2D("d", l)
	if !ok || again.MessageID != m2.MessageID || !again.Redelivered {
		t.Fatalf("the abandoned message is not redelivered: %+v %v", again, ok)
	}
	if dl := c.DeadLetters("d"); len(dl) != 1 || dl[0].MessageID != m3.MessageID {
		t.Fatalf("dead letters %+v", dl)
	}
	// Settling an unknown message, or settling from a link the message is
	// not in flight on (a stale lock token), changes nothing and is refused.
	other := newFakeLink()
	if err := c.SettleC2D("d", l, "no-such-id", Complete); !errors.Is(err, ErrNotFound) {
		t.Fatalf("settling an unknown message: %v, want ErrNotFound", err)
	}
	for _, o := range []Outcome{Abandon, Complete, Reject} {
		if err := c.SettleC2D("d", other, again.MessageID, o); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%v from another link: %v, want ErrNotFound", o, err)
		}
	}
	if n := c.PendingC2D("d"); n != 1 {
		t.Fatalf("%d pending after settlements from another link, want 1", n)
	}
	if _, ok := c.NextC2D("d", l); ok {
		t.Fatal("an abandon from another link released the message")
	}
	// A replaced link keeps its messages until it detaches (its device may
	// have settled them a moment ago); then they go to the new link.
	if prev, err := c.Attach("d", other, ""); err != nil || prev != l {
		t.Fatalf("Attach(other) = %v, %v; want the old link", prev, err)
	}
	if m, ok := c.NextC2D("d", other); ok {
		t.Fatalf("the new link got %q while the replaced link still held it", m.MessageID)
	}
	c.Detach("d", l)
	back, ok := c.NextC2D("d", other)
	if !ok || back.MessageID != again.MessageID {
		t.Fatal("the message in flight on the replaced link was not released when it detached")
	}
	// Detaching the current link releases its messages; a late Detach of the old one is harmless.
	c.Detach("d", other)
	c.Detach("d", l)
	if d, _ := c.Device("d"); d.Connected {
		t.Fatal("still connected after Detach")
	}
	if err := c.WaitPendingC2D(ctx, "d", 1); err != nil {
		t.Fatal(err)
	}
}

func TestC2DLimits(t *testing.T) {
	c := newCoreWithDevice(t, "d")
	ctx := t.Context()
	if err := c.SendCloudToDevice(ctx, "d", make([]byte, MaxC2DBody+1), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	if err := c.SendCloudToDevice(ctx, "d", nil, map[string]string{"": "x"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty property name: %v", err)
	}
	if err := c.SendCloudToDevice(ctx, "ghost", nil, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
	for range MaxC2DQueue {
		if err := c.SendCloudToDevice(ctx, "d", []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SendCloudToDevice(ctx, "d", []byte("x"), nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("queue full: %v", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.WaitPendingC2D(wctx, "d", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitPendingC2D on a cancelled context: %v", err)
	}
}

func TestInvokeCommandOutcomes(t *testing.T) {
	c := newCoreWithDevice(t, "d")
	ctx := t.Context()
	if _, err := c.InvokeCommand(ctx, "d", "", "ping", nil, 0, time.Minute); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("offline: %v", err)
	}
	l := newFakeLink(FeatureMethods)
	if _, err := c.Attach("d", l, ""); err != nil {
		t.Fatal(err)
	}
	l.answer = func(context.Context) (int, []byte, error) { return 201, []byte("not json"), nil }
	res, err := c.InvokeCommand(ctx, "d", "c1", "ping", map[string]int{"a": 1}, 0, time.Minute)
	if err != nil || res.Status != 201 || string(res.Payload) != `"not json"` {
		t.Fatalf("answer %+v, %v", res, err)
	}
	l.answer = func(context.Context) (int, []byte, error) { return 0, nil, errors.New("link gone") }
	if _, err := c.InvokeCommand(ctx, "d", "", "ping", nil, 0, time.Minute); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("link error: %v", err)
	}
	// The timeout is the link's context deadline, reported as ErrTimeout.
	l.answer = func(ctx context.Context) (int, []byte, error) { <-ctx.Done(); return 0, nil, ctx.Err() }
	if _, err := c.InvokeCommand(ctx, "d", "", "ping", nil, 0, time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("timeout: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.InvokeCommand(cctx, "d", "", "ping", nil, 0, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := c.InvokeCommand(ctx, "d", "", "bad/name", nil, 0, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	// Close ends a pending invocation with ErrClosed.
	started := make(chan struct{})
	l.answer = func(ctx context.Context) (int, []byte, error) { close(started); <-ctx.Done(); return 0, nil, ctx.Err() }
	done := make(chan error, 1)
	go func() {
		_, err := c.InvokeCommand(ctx, "d", "", "ping", nil, 0, time.Minute)
		done <- err
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the invocation never reached the link")
	}
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the pending invocation")
	}
}
