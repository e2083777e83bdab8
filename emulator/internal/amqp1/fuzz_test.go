package amqp1

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

func seedPerformatives(t testing.TB) [][]byte {
	zero := uint32(0)
	perfs := []Performative{
		&Open{ContainerID: "c", MaxFrameSize: 65536, IdleTimeout: 1000, Properties: map[string]any{"p": "v"}},
		&Begin{NextOutgoingID: 0, IncomingWindow: 100, OutgoingWindow: 100},
		&Attach{Name: "n", Handle: 0, Role: RoleSender, Source: &Source{Address: "s"}, Target: &Target{Address: "t"}, InitialDeliveryCount: &zero},
		&Attach{Name: "r", Handle: 1, Role: RoleReceiver, Source: &Source{Address: "c2d", Filter: Map{{Symbol("f"), Described{Symbol("x"), "y"}}}}},
		&Flow{IncomingWindow: 100, NextOutgoingID: 0, OutgoingWindow: 100, Handle: &zero, LinkCredit: u32(10), DeliveryCount: &zero, Drain: true},
		&Transfer{Handle: 0, DeliveryID: &zero, DeliveryTag: []byte{1}, More: true},
		&Disposition{Role: RoleReceiver, First: 0, Settled: true, State: &Rejected{Error: &Error{Condition: ErrCondNotFound}}},
		&Detach{Handle: 0, Closed: true, Error: &Error{Condition: "x", Info: map[string]any{"a": int32(1)}}},
		&End{}, &Close{},
		&SASLInit{Mechanism: "PLAIN", InitialResponse: []byte("\x00u\x00p")},
		&SASLOutcome{Code: SASLCodeOK},
	}
	var out [][]byte
	for _, p := range perfs {
		b, err := Encode(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func FuzzDecode(f *testing.F) {
	for _, s := range seedPerformatives(f) {
		f.Add(s)
	}
	for _, v := range []any{Map{{"k", []any{int64(1), 1.5, UUID{}}}}, []Symbol{"a", "b"}, Array{int32(1)}, time.UnixMilli(5).UTC()} {
		b, _ := Encode(v)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, err := Decode(b)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		// Whatever decodes re-encodes, and the canonical encoding is stable.
		e1, err := Encode(v)
		if err != nil {
			t.Fatalf("Encode(Decode(% x)) = %v", b, err)
		}
		v2, _, err := Decode(e1)
		if err != nil {
			t.Fatalf("Decode(Encode(...)) = %v", err)
		}
		e2, err := Encode(v2)
		if err != nil || !bytes.Equal(e1, e2) {
			t.Fatalf("unstable encoding: % x vs % x (%v)", e1, e2, err)
		}
	})
}

func FuzzDecodePerformative(f *testing.F) {
	for _, s := range seedPerformatives(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePerformative(b)
		if err != nil {
			return
		}
		e, err := Encode(p)
		if err != nil {
			t.Fatalf("Encode(%T) = %v", p, err)
		}
		if _, err := DecodePerformative(e); err != nil {
			t.Fatalf("re-decode %T: %v", p, err)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	for _, s := range seedPerformatives(f) {
		fr, _ := AppendFrame(nil, FrameTypeAMQP, 1, s)
		f.Add(fr)
	}
	f.Add([]byte{0, 0, 0, 8, 2, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 12, 3, 1, 0, 0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			fr, err := ReadFrame(r, 1024)
			if err != nil {
				return
			}
			if len(fr.Body) > 1024-FrameHeaderSize {
				t.Fatalf("body of %d bytes beyond the 1024-byte limit", len(fr.Body))
			}
		}
	})
}

// scriptConn is a net.Conn that reads a fixed input and discards writes.
type scriptConn struct {
	r io.Reader
}

func (c *scriptConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *scriptConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzServe feeds arbitrary frames after a valid header and open to the
// connection engine: it must end (at the end of the input) without panicking.
func FuzzServe(f *testing.F) {
	var prefix []byte
	prefix = append(prefix, headerAMQP[:]...)
	openBody, _ := Encode(&Open{ContainerID: "fuzz"})
	prefix, _ = AppendFrame(prefix, FrameTypeAMQP, 0, openBody)
	seeds := seedPerformatives(f)
	var script []byte
	for _, i := range []int{1, 2, 3, 4, 5, 6, 7} {
		body := seeds[i]
		if i == 5 {
			body = append(append([]byte{}, body...), "payload"...)
		}
		script, _ = AppendFrame(script, FrameTypeAMQP, 0, body)
	}
	f.Add(script)
	f.Add(script[:len(script)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append(append([]byte{}, prefix...), b...)
		cfg := Config{
			IdleTimeout:  -1,
			MaxFrameSize: 4096,
			Handler: HandlerFuncs{
				Attach: func(context.Context, *Link) error { return nil },
			},
		}
		done := make(chan error, 1)
		go func() { done <- Serve(context.Background(), &scriptConn{r: bytes.NewReader(in)}, cfg) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Serve did not return at the end of its input")
		}
	})
}
