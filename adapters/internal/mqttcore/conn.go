package mqttcore

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// lingerTimeout bounds how long closing a connection waits for the server
// to close its side after DISCONNECT.
const lingerTimeout = time.Second

// gracefulConn closes its connection the polite way, so that the socket
// never closes with unread data: a socket closed with unread data sends
// RST, and a server receiving RST may drop what it had not read yet, such
// as the last PUBACK (a settled cloud-to-device message, which would come
// again). Where the stream can half-close (TLS over TCP) it sends
// close_notify and FIN and reads until the server closes; elsewhere
// (WebSockets) it waits for the reader to see the server close, which
// servers do right after DISCONNECT. Either wait is bounded by
// lingerTimeout.
//
// It writes behind: Write copies the packet into a buffer and returns, and
// a flusher goroutine (running only while there is something to write)
// writes whatever has gathered in one write. paho writes every packet on
// its own (one TLS record and one system call per PUBLISH); with many
// publishes in flight the packets that arrive while a write is in progress
// go out together in the next one. Write blocks only while maxPending
// bytes wait (the connection does not keep up); Congested reports that
// state before it is reached, so that a publish can avoid blocking in
// paho. The first failed write fails every later Write and closes the
// connection, so that paho's reader sees the loss at once. Close first
// lets the flusher write what is buffered (DISCONNECT included), bounded
// by lingerTimeout.
//
// It also owns the write deadline. paho sets one of its WriteTimeout
// (kept short, because it also bounds how long a Publish waits to hand
// its packet to paho's writer) around each publish write and clears it
// after; gracefulConn ignores those calls and bounds every write itself
// (pings, acknowledgements and subscriptions included) by writeTimeout:
// before a write it moves the deadline to now+writeTimeout when less than
// 15/16 of that is left, so a write always has at least 15/16 of
// writeTimeout and the socket's deadline is touched once every
// writeTimeout/16 of writing instead of twice per publish.
type gracefulConn struct {
	net.Conn
	writeTimeout time.Duration
	deadline     time.Time // the write deadline set on Conn, by the one write in progress; zero for none

	// publishing counts the publishes waiting for their acknowledgement
	// on the connection (the session keeps it): with at most one, nothing
	// would gather behind a write, and Write writes on the caller's
	// goroutine (a device sending one message at a time pays no handoff).
	publishing atomic.Int32
	// writeSince is when the write in progress began (UnixNano), 0 when
	// none runs.
	writeSince atomic.Int64

	wmu      sync.Mutex
	buf      *[]byte       // bytes waiting for the flusher; nil while none (an idle connection holds no buffer)
	flushing bool          // a flusher goroutine runs
	werr     error         // the first failed write's error
	wake     chan struct{} // made by a waiter, closed by the flusher when it took the buffer or stopped

	once     sync.Once
	err      error
	readOnce sync.Once
	readEnd  chan struct{} // closed once a Read failed (EOF included)
}

const (
	// maxPending is how many bytes may wait for the flusher before Write
	// blocks (a single larger packet is taken when nothing waits).
	maxPending = 64 << 10
	// congestedPending is where Congested starts to report true.
	congestedPending = maxPending / 2
	// stallAfter is how long a write may take before Congested reports
	// the connection stalled.
	stallAfter = 100 * time.Millisecond
	// keptBuffer is the largest buffer returned to the pool.
	keptBuffer = 64 << 10
)

// writeBuffers recycles the flusher's buffers across connections.
var writeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func newGracefulConn(c net.Conn, writeTimeout time.Duration) *gracefulConn {
	return &gracefulConn{Conn: c, writeTimeout: writeTimeout, readEnd: make(chan struct{})}
}

// SetWriteDeadline ignores paho's deadlines: Write keeps its own.
func (c *gracefulConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only (paho bounds CONNECT with it and
// clears it after CONNACK); Write keeps its own deadline.
func (c *gracefulConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// Write queues b for the flusher and returns len(b), or the error of an
// earlier failed write. It blocks while maxPending bytes wait. With at
// most one publish in flight and nothing queued it writes b itself.
func (c *gracefulConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	for {
		if c.werr != nil {
			err := c.werr
			c.wmu.Unlock()
			return 0, err
		}
		if c.buf == nil && !c.flushing && c.publishing.Load() <= 1 {
			return c.writeInline(b)
		}
		if c.buf == nil || len(*c.buf)+len(b) <= maxPending {
			break
		}
		wake := c.waitLocked()
		c.wmu.Unlock()
		<-wake // the flusher takes the buffer or fails: the write deadline bounds the wait
		c.wmu.Lock()
	}
	if c.buf == nil {
		c.buf = writeBuffers.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, b...)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	c.wmu.Unlock()
	return len(b), nil
}

// writeInline writes b on the caller's goroutine. Called with c.wmu held;
// it releases it.
func (c *gracefulConn) writeInline(b []byte) (int, error) {
	c.flushing = true // a Write meanwhile queues behind this one
	c.wmu.Unlock()
	err := c.write(b)
	c.wmu.Lock()
	c.flushing = false
	if err != nil {
		c.werr = err
	} else if c.buf != nil {
		c.flushing = true
		go c.flush()
	}
	c.wakeLocked()
	c.wmu.Unlock()
	if err != nil {
		_ = c.Conn.Close() // as flush does
		return 0, err
	}
	return len(b), nil
}

// Congested reports whether the connection is not keeping up with what
// is written to it: half of maxPending waits, a write has been running
// for stallAfter, or a write failed.
func (c *gracefulConn) Congested() bool {
	if since := c.writeSince.Load(); since != 0 && time.Since(time.Unix(0, since)) >= stallAfter {
		return true
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.werr != nil || (c.buf != nil && len(*c.buf) >= congestedPending)
}

// waitLocked returns a channel the flusher closes when it took the buffer
// or stopped. Called with c.wmu held.
func (c *gracefulConn) waitLocked() <-chan struct{} {
	if c.wake == nil {
		c.wake = make(chan struct{})
	}
	return c.wake
}

// wakeLocked wakes the waiters. Called with c.wmu held.
func (c *gracefulConn) wakeLocked() {
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
}

// flush writes the buffer until nothing is left, then stops.
func (c *gracefulConn) flush() {
	var out *[]byte
	for {
		c.wmu.Lock()
		if out != nil {
			if cap(*out) <= keptBuffer {
				*out = (*out)[:0]
				writeBuffers.Put(out)
			}
			out = nil
		}
		if c.werr != nil || c.buf == nil {
			c.flushing = false
			c.wakeLocked()
			c.wmu.Unlock()
			return
		}
		out, c.buf = c.buf, nil
		c.wakeLocked()
		c.wmu.Unlock()
		if err := c.write(*out); err != nil {
			c.wmu.Lock()
			c.werr = err
			c.wmu.Unlock()
			_ = c.Conn.Close() // paho's reader sees the loss now, not at the next write
		}
	}
}

// write writes b under the write deadline. One write runs at a time (the
// flushing flag), so the deadline needs no lock.
func (c *gracefulConn) write(b []byte) error {
	now := time.Now()
	c.writeSince.Store(now.UnixNano())
	defer c.writeSince.Store(0)
	if c.writeTimeout > 0 {
		if c.deadline.Sub(now) < c.writeTimeout-c.writeTimeout/16 {
			c.deadline = now.Add(c.writeTimeout)
			if err := c.Conn.SetWriteDeadline(c.deadline); err != nil {
				c.deadline = time.Time{}
				return err
			}
		}
	}
	_, err := c.Conn.Write(b)
	return err
}

// flushed waits until the flusher wrote everything or failed, up to
// timeout; it reports whether it did.
func (c *gracefulConn) flushed(timeout time.Duration) bool {
	var t *time.Timer
	for {
		c.wmu.Lock()
		if !c.flushing {
			c.wmu.Unlock()
			return true
		}
		wake := c.waitLocked()
		c.wmu.Unlock()
		if t == nil {
			t = time.NewTimer(timeout)
			defer t.Stop()
		}
		select {
		case <-wake:
		case <-t.C:
			return false
		}
	}
}

// Read reads from the connection. Once a write failed (which closed the
// connection), a failed Read returns that write's error: paho takes the
// "use of closed network connection" the close causes for a close of its
// own (after DISCONNECT) and would not report the connection lost.
func (c *gracefulConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.readOnce.Do(func() { close(c.readEnd) })
		c.wmu.Lock()
		werr := c.werr
		c.wmu.Unlock()
		if werr != nil {
			err = &writeFailed{werr}
		}
	}
	return n, err
}

// writeFailed is the error reads return after a failed write.
type writeFailed struct{ err error }

func (e *writeFailed) Error() string {
	msg := e.err.Error()
	if strings.Contains(msg, "use of closed network connection") {
		msg = "the connection was closed" // paho must not take it for a close of its own
	}
	return "write failed: " + msg
}

func (e *writeFailed) Unwrap() error { return e.err }

// Close writes what is buffered (up to lingerTimeout), then closes
// gracefully; a connection whose writes failed or stalled is closed at
// once.
func (c *gracefulConn) Close() error {
	c.once.Do(func() {
		ok := c.flushed(lingerTimeout)
		c.wmu.Lock()
		failed := c.werr != nil
		c.wmu.Unlock()
		if !ok || failed {
			c.err = c.Conn.Close()
			return
		}
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
			_, _ = io.Copy(io.Discard, c.Conn)
		} else {
			t := time.NewTimer(lingerTimeout)
			select {
			case <-c.readEnd:
			case <-t.C:
			}
			t.Stop()
		}
		c.err = c.Conn.Close()
	})
	return c.err
}

// noStore is a paho Store that keeps nothing. The adapter never reuses a
// paho client across connections (a session ends with its connection), so
// paho's in-memory store only cost a map insert per publish and kept the
// payloads of publishes that timed out.
type noStore struct{}

func (noStore) Open()                             {}
func (noStore) Put(string, packets.ControlPacket) {}
func (noStore) Get(string) packets.ControlPacket  { return nil }
func (noStore) All() []string                     { return nil }
func (noStore) Del(string)                        {}
func (noStore) Close()                            {}
func (noStore) Reset()                            {}

// scrubbed is an error whose text leaves out network addresses (a
// *net.OpError prints the local and remote address) while errors.Is and
// errors.As still see the original.
type scrubbed struct {
	msg string
	err error
}

func (s *scrubbed) Error() string { return s.msg }
func (s *scrubbed) Unwrap() error { return s.err }

// scrub returns err with the addresses of any *net.OpError in its text
// removed: "write tcp 10.0.0.2:50123->10.0.0.1:8883: connection reset by
// peer" becomes "write: connection reset by peer".
func scrub(err error) error {
	var op *net.OpError
	if err == nil || !errors.As(err, &op) {
		return err
	}
	text := err.Error()
	full := op.Error()
	short := op.Op
	if op.Err != nil {
		short += ": " + op.Err.Error()
	}
	return &scrubbed{msg: strings.Replace(text, full, short, 1), err: err}
}
