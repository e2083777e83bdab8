package mqttcore

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
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
	deadlineMu   sync.Mutex
	deadline     time.Time // the write deadline set on Conn; zero for none
	once         sync.Once
	err          error
	readOnce     sync.Once
	readEnd      chan struct{} // closed once a Read failed (EOF included)
}

func newGracefulConn(c net.Conn, writeTimeout time.Duration) *gracefulConn {
	return &gracefulConn{Conn: c, writeTimeout: writeTimeout, readEnd: make(chan struct{})}
}

// SetWriteDeadline ignores paho's deadlines: Write keeps its own.
func (c *gracefulConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only (paho bounds CONNECT with it and
// clears it after CONNACK); Write keeps its own deadline.
func (c *gracefulConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

func (c *gracefulConn) Write(b []byte) (int, error) {
	if c.writeTimeout > 0 {
		c.deadlineMu.Lock()
		now := time.Now()
		if c.deadline.Sub(now) < c.writeTimeout-c.writeTimeout/16 {
			c.deadline = now.Add(c.writeTimeout)
			if err := c.Conn.SetWriteDeadline(c.deadline); err != nil {
				c.deadline = time.Time{}
				c.deadlineMu.Unlock()
				return 0, err
			}
		}
		c.deadlineMu.Unlock()
	}
	return c.Conn.Write(b)
}

func (c *gracefulConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.readOnce.Do(func() { close(c.readEnd) })
	}
	return n, err
}

func (c *gracefulConn) Close() error {
	c.once.Do(func() {
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
