package mqttcore

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Every write is bounded by writeTimeout, whatever deadlines paho sets,
// and a connection left idle for longer than writeTimeout still writes.
func TestGracefulConnBoundsEveryWrite(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	const timeout = 100 * time.Millisecond
	c := newGracefulConn(client, timeout)
	defer c.Close()

	// paho clears or sets deadlines around publishes and CONNECT: the
	// write side is ignored.
	if err := c.SetWriteDeadline(time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeadline(time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	read := make(chan []byte, 1)
	go func() {
		b := make([]byte, 5)
		_, _ = io.ReadFull(server, b)
		read <- b
	}()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatalf("write with a reader: %v", err)
	}
	if got := <-read; string(got) != "hello" {
		t.Fatalf("read %q", got)
	}

	time.Sleep(2 * timeout) // idle past the deadline set by the first write (not a timing assertion)
	go func() {
		b := make([]byte, 4)
		_, _ = io.ReadFull(server, b)
		read <- b
	}()
	if _, err := c.Write([]byte("idle")); err != nil {
		t.Fatalf("write after an idle period: %v", err)
	}
	<-read

	// paho clears the deadline after CONNACK; writes stay bounded.
	if err := c.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	// Nobody reads: the write (inline: no publish in flight) must end with
	// a timeout instead of blocking, and every later Write fails with it.
	if _, err := c.Write([]byte("stalled")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled write: %v, want a deadline error", err)
	}
	if _, err := c.Write([]byte("after")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write after a stalled one: %v, want a deadline error", err)
	}
	// The read side reports the failed write, not the close it caused.
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) || strings.Contains(err.Error(), "use of closed") {
		t.Fatalf("read after the failed write: %v", err)
	}
}

// Behind the connection (several publishes in flight) a stalled write is
// bounded too.
func TestGracefulConnBoundsWritesBehind(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newGracefulConn(client, 100*time.Millisecond)
	defer c.Close()
	c.publishing.Store(2)
	if _, err := c.Write([]byte("stalled")); err != nil {
		t.Fatalf("queueing a write: %v", err)
	}
	if !c.flushed(30 * time.Second) {
		t.Fatal("a stalled write was not bounded by the write timeout")
	}
	if _, err := c.Write([]byte("after")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write after a stalled one: %v, want a deadline error", err)
	}
}

// gateConn is a net.Conn whose writes block until released, recording
// each write.
type gateConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	gate   chan struct{} // receives one value per write allowed through
	closed chan struct{}
	once   sync.Once
}

func newGateConn() *gateConn {
	client, _ := net.Pipe()
	return &gateConn{Conn: client, gate: make(chan struct{}, 100), closed: make(chan struct{})}
}

func (g *gateConn) Write(b []byte) (int, error) {
	select {
	case <-g.gate:
	case <-g.closed:
		return 0, net.ErrClosed
	}
	g.mu.Lock()
	g.writes = append(g.writes, bytes.Clone(b))
	g.mu.Unlock()
	return len(b), nil
}

func (g *gateConn) SetWriteDeadline(time.Time) error { return nil }
func (g *gateConn) Close() error                     { g.once.Do(func() { close(g.closed) }); return nil }

// gated returns a gateConn and a gracefulConn over it with publishing
// publishes in flight (2 or more: writes go behind).
func gated(publishing int32) (*gateConn, *gracefulConn) {
	g := newGateConn()
	c := newGracefulConn(g, time.Minute)
	c.publishing.Store(publishing)
	return g, c
}

// waitTaken waits until the flusher took the buffer (it then waits at the
// gate with it).
func waitTaken(c *gracefulConn) {
	for !func() bool { c.wmu.Lock(); defer c.wmu.Unlock(); return c.buf == nil }() {
		runtime.Gosched()
	}
}

func (g *gateConn) recorded() [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.writes)
}

// Packets written while a write is in progress go out together in the
// next write, in order; an idle connection keeps no buffer and no
// goroutine.
func TestGracefulConnCoalescesWrites(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g, c := gated(2)                                // several publishes in flight: writes go behind
	if _, err := c.Write([]byte("a")); err != nil { // taken by the flusher, which waits at the gate
		t.Fatal(err)
	}
	waitTaken(c)
	for _, p := range []string{"b", "c", "d"} {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	g.gate <- struct{}{}
	g.gate <- struct{}{}
	if !c.flushed(time.Minute) {
		t.Fatal("not flushed")
	}
	got := g.recorded()
	if len(got) != 2 || string(got[0]) != "a" || string(got[1]) != "bcd" {
		t.Fatalf("writes %q, want [a bcd]", got)
	}
	c.wmu.Lock()
	idle := c.buf == nil && !c.flushing
	c.wmu.Unlock()
	if !idle {
		t.Fatal("an idle connection keeps a buffer or a flusher")
	}
	_ = g.Close()
}

// Write blocks once maxPending bytes wait, Congested reports the state
// from half of that, and both clear when the connection writes again.
func TestGracefulConnBackpressure(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g, c := gated(2)
	if _, err := c.Write([]byte("first")); err != nil { // the flusher holds it at the gate
		t.Fatal(err)
	}
	waitTaken(c)
	if c.Congested() {
		t.Fatal("congested with nothing waiting")
	}
	half := make([]byte, congestedPending)
	if _, err := c.Write(half); err != nil {
		t.Fatal(err)
	}
	if !c.Congested() {
		t.Fatalf("not congested with %d bytes waiting", congestedPending)
	}
	if _, err := c.Write(make([]byte, maxPending-congestedPending)); err != nil { // exactly full
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { _, err := c.Write([]byte("over")); blocked <- err }()
	select {
	case err := <-blocked:
		t.Fatalf("a write past maxPending returned (%v) while the connection stalled", err)
	case <-time.After(50 * time.Millisecond): // it must still be waiting (a lower bound, not a timing assertion on speed)
	}
	g.gate <- struct{}{} // "first" goes; the flusher takes the full buffer
	if err := <-blocked; err != nil {
		t.Fatalf("blocked write: %v", err)
	}
	g.gate <- struct{}{}
	g.gate <- struct{}{}
	if !c.flushed(time.Minute) {
		t.Fatal("not flushed")
	}
	if c.Congested() {
		t.Fatal("still congested after the connection caught up")
	}
	var n int
	for _, w := range g.recorded() {
		n += len(w)
	}
	if want := len("first") + maxPending + len("over"); n != want {
		t.Fatalf("wrote %d bytes, want %d", n, want)
	}
	_ = g.Close()
}

// Close writes what is buffered before it closes: the last packets
// (DISCONNECT, a settlement's PUBACK) reach the server.
func TestGracefulConnCloseFlushes(t *testing.T) {
	client, server := net.Pipe()
	c := newGracefulConn(client, time.Minute)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(server)
		got <- b
		server.Close()
	}()
	for _, p := range []string{"puback", "disconnect"} {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.Close()
	if b := <-got; string(b) != "pubackdisconnect" {
		t.Fatalf("server read %q", b)
	}
}

// A failed write closes the connection (the reader sees the loss at once)
// and fails every later Write with its error.
func TestGracefulConnFailedWriteClosesTheConnection(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g, c := gated(2)
	_ = g.Close() // every write fails
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("queueing: %v", err)
	}
	c.flushed(time.Minute)
	if _, err := c.Write([]byte("y")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after a failed one: %v, want net.ErrClosed", err)
	}
	if !c.Congested() {
		t.Fatal("a failed connection is not reported congested")
	}
	_ = c.Close()
}

// With at most one publish in flight a write is made on the caller's
// goroutine (it returns once the connection took the bytes, and its
// error is the write's); with more, it goes behind.
func TestGracefulConnWritesInlineWithOnePublish(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g, c := gated(1)
	done := make(chan error, 1)
	go func() { _, err := c.Write([]byte("one")); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("Write returned (%v) before the connection took the bytes", err)
	case <-time.After(50 * time.Millisecond): // it must still be waiting (a lower bound)
	}
	g.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.publishing.Store(2)
	if _, err := c.Write([]byte("two")); err != nil { // queued: returns while the gate is shut
		t.Fatal(err)
	}
	g.gate <- struct{}{}
	if !c.flushed(time.Minute) {
		t.Fatal("not flushed")
	}
	if got := g.recorded(); len(got) != 2 || string(got[0]) != "one" || string(got[1]) != "two" {
		t.Fatalf("writes %q", got)
	}
	_ = g.Close()
	c.publishing.Store(0)
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("inline write on a closed connection: %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("y")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("later write: %v", err)
	}
}

// A write that does not complete makes the connection congested, so that
// publishes stop handing over on the caller's goroutine.
func TestGracefulConnStalledWriteIsCongestion(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g, c := gated(1)
	if c.Congested() {
		t.Fatal("congested before any write")
	}
	done := make(chan error, 1)
	go func() { _, err := c.Write([]byte("stuck")); done <- err }()
	deadline := time.Now().Add(30 * time.Second)
	for !c.Congested() {
		if time.Now().After(deadline) {
			t.Fatal("a write stuck for 30 s is not reported as congestion")
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.Congested() {
		t.Fatal("still congested after the write completed")
	}
	_ = g.Close()
}
