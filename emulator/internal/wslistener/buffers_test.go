package wslistener

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// hijackResult is what a handler saw after smallBuffers.Hijack.
type hijackResult struct {
	readSize, writeSize int
	extra               string
	err                 error
}

// hijackWith serves one raw request (request, then extra bytes the client
// sent at once after it) through smallBuffers.Hijack and returns what the
// handler saw.
func hijackWith(t *testing.T, extra string) hijackResult {
	t.Helper()
	got := make(chan hijackResult, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c, brw, err := smallBuffers{w}.Hijack()
		if err != nil {
			got <- hijackResult{err: err}
			return
		}
		defer c.Close()
		r := hijackResult{readSize: brw.Reader.Size(), writeSize: brw.Writer.Size()}
		b := make([]byte, len(extra))
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, r.err = io.ReadFull(brw.Reader, b)
		r.extra = string(b)
		got <- r
	}))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"+extra); err != nil {
		t.Fatal(err)
	}
	return <-got
}

// TestHijackSwapsInSmallBuffers: an upgraded connection keeps a 512-byte
// reader and a 1 KiB writer, not net/http's 4 KiB ones.
func TestHijackSwapsInSmallBuffers(t *testing.T) {
	r := hijackWith(t, "")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.readSize != wsReadBuffer || r.writeSize != wsWriteBuffer {
		t.Fatalf("hijacked buffers are %d (read) and %d (write) bytes, want %d and %d", r.readSize, r.writeSize, wsReadBuffer, wsWriteBuffer)
	}
	if bufio.NewReader(nil).Size() <= wsReadBuffer {
		t.Fatal("the small read buffer is not smaller than bufio's default")
	}
}

// TestHijackKeepsBytesAlreadyRead: bytes the client sent right behind its
// request, which net/http may have read already, still reach the reader.
func TestHijackKeepsBytesAlreadyRead(t *testing.T) {
	r := hijackWith(t, "first websocket frame")
	if r.err != nil || r.extra != "first websocket frame" {
		t.Fatalf("read %q, %v after the request, want the bytes sent behind it", r.extra, r.err)
	}
}
