package mqttcore

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
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
	// Nobody reads: the write must end with a timeout instead of blocking.
	done := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("stalled"))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("stalled write: %v, want a deadline error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a stalled write was not bounded by the write timeout")
	}
}
