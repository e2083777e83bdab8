package amqp1

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
)

// chFrame sends p (and payload) on channel ch.
func (r *rawClient) chFrame(ch uint16, p Performative, payload []byte) error {
	body, err := Encode(p)
	if err != nil {
		r.t.Fatal(err)
	}
	f, err := AppendFrame(nil, FrameTypeAMQP, ch, append(body, payload...))
	if err != nil {
		r.t.Fatal(err)
	}
	_, err = r.nc.Write(f)
	return err
}

// nextClose reads until a close arrives and returns its error condition.
func (r *rawClient) nextClose() Symbol {
	r.t.Helper()
	for {
		p := r.next()
		if cl, ok := p.(*Close); ok {
			if cl.Error == nil {
				return ""
			}
			return cl.Error.Condition
		}
	}
}

func (r *rawClient) begin(ch uint16) {
	r.t.Helper()
	if err := r.chFrame(ch, &Begin{NextOutgoingID: 0, IncomingWindow: 1000, OutgoingWindow: 1000, HandleMax: 1000}, nil); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) attachSender(ch uint16, handle uint32, addr string) {
	r.t.Helper()
	if err := r.chFrame(ch, &Attach{Name: addr + string(rune('a'+handle%26)), Handle: handle, Role: RoleSender, Target: &Target{Address: addr}}, nil); err != nil {
		r.t.Fatal(err)
	}
}

func cbsOnly(l *Link) bool { return l.Address() == "$cbs" }

func TestLoginDeadlineClosesWithUnauthorizedAccess(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Login: LoginPolicy{Required: true, Deadline: 50 * time.Millisecond}}, nil)
	r := rawDial(t, ts)
	r.open()
	if cond := r.nextClose(); cond != ErrCondUnauthorizedAccess {
		t.Errorf("close %q, want %s", cond, ErrCondUnauthorizedAccess)
	}
	if err := recv(t, ts.errs); !errors.Is(err, ErrLoginTimeout) {
		t.Errorf("Serve = %v, want ErrLoginTimeout", err)
	}
}

func TestLoggedInConnectionOutlivesTheDeadline(t *testing.T) {
	t.Parallel()
	opened := make(chan *Conn, 1)
	ts := startServer(t, Config{
		Login: LoginPolicy{Required: true, Deadline: 50 * time.Millisecond},
		Handler: HandlerFuncs{Open: func(_ context.Context, c *Conn) error {
			c.SetLoggedIn()
			opened <- c
			return nil
		}},
	}, nil)
	c := dial(t, ts, nil)
	recv(t, opened)
	time.Sleep(150 * time.Millisecond) // three deadlines
	s := newSession(t, c)
	_ = s.Close(testCtx(t))
}

func TestBeforeLoginOnlyAllowedLinksAttach(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink, Login: LoginPolicy{Required: true, Allow: cbsOnly}}, nil)
	c := dial(t, ts, nil)
	s := newSession(t, c)
	snd, err := s.NewSender(testCtx(t), "$cbs", nil)
	if err != nil {
		t.Fatalf("$cbs refused: %v", err)
	}
	recv(t, sink.links)
	_ = snd.Close(testCtx(t))
	_, err = s.NewSender(testCtx(t), "devices/d1/messages/events", nil)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("telemetry link before login: %v, want unauthorized-access", err)
	}
	select {
	case l := <-sink.links:
		t.Errorf("handler saw link %q before login", l.Address())
	default:
	}
}

func TestSessionCapClosesTheConnection(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Login: LoginPolicy{Required: true, MaxSessions: 2}}, nil)
	r := rawDial(t, ts)
	r.open()
	for ch := range uint16(3) {
		r.begin(ch)
	}
	if cond := r.nextClose(); cond != ErrCondResourceLimitExceeded {
		t.Errorf("close %q, want resource-limit-exceeded", cond)
	}
	if err := recv(t, ts.errs); !errors.Is(err, ErrTooManySessions) || !errors.Is(err, ErrLimitExceeded) {
		t.Errorf("Serve = %v, want ErrTooManySessions", err)
	}
}

func TestLinkCapClosesTheConnection(t *testing.T) {
	t.Parallel()
	// Before login: 255 sessions x 255 links cost the old engine 108 MiB.
	ts := startServer(t, Config{Handler: newSink(), Login: LoginPolicy{Required: true, Allow: cbsOnly}}, nil)
	r := rawDial(t, ts)
	r.open()
	r.begin(0)
	for h := range uint32(DefaultLoginMaxLinks + 1) {
		r.attachSender(0, h, "$cbs")
	}
	if cond := r.nextClose(); cond != ErrCondResourceLimitExceeded {
		t.Errorf("close %q, want resource-limit-exceeded", cond)
	}
	if err := recv(t, ts.errs); !errors.Is(err, ErrTooManyLinks) {
		t.Errorf("Serve = %v, want ErrTooManyLinks", err)
	}
}

func TestUnfinishedMessagesBeforeLoginAreBounded(t *testing.T) {
	t.Parallel()
	// One connection, many $cbs links, each holding an unfinished message:
	// the old engine buffered up to 1 MiB per link.
	ts := startServer(t, Config{Handler: newSink(), Login: LoginPolicy{Required: true, Allow: cbsOnly}}, nil)
	r := rawDial(t, ts)
	r.open()
	r.begin(0)
	chunk := bytes.Repeat([]byte{0x42}, 16<<10)
	sent := 0
	closed := false // a write failed: the server closed the connection
	for h := uint32(0); h < 4 && !closed; h++ {
		attach := &Attach{Name: "$cbs" + string(rune('a'+h)), Handle: h, Role: RoleSender, Target: &Target{Address: "$cbs"}}
		if r.chFrame(0, attach, nil) != nil {
			break
		}
		for i := range uint32(4) {
			id := h
			tr := &Transfer{Handle: h, More: true}
			if i == 0 {
				tr.DeliveryID, tr.DeliveryTag = &id, []byte{byte(h)}
			}
			if r.chFrame(0, tr, chunk) != nil {
				closed = true
				break
			}
			sent += len(chunk)
		}
	}
	if cond := r.nextClose(); cond != ErrCondResourceLimitExceeded {
		t.Errorf("close %q, want resource-limit-exceeded", cond)
	}
	if err := recv(t, ts.errs); !errors.Is(err, ErrTooManyUnsettledBytes) {
		t.Errorf("Serve = %v after %d bytes, want ErrTooManyUnsettledBytes", err, sent)
	}
}

func TestSettledMessagesReleaseTheirBytes(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink, MaxUnsettledBytes: 8 << 10}, nil)
	c := dial(t, ts, nil)
	s := newSession(t, c)
	snd, err := s.NewSender(testCtx(t), "events", nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, sink.links)
	body := bytes.Repeat([]byte{'x'}, 2<<10)
	for i := range 20 { // 40 KiB in all, 2 KiB at a time
		if err := snd.Send(testCtx(t), amqp.NewMessage(body), nil); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		recv(t, sink.msgs)
	}
}

func TestMultiFrameMessageIsJoinedExactly(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	c := dial(t, ts, &amqp.ConnOptions{MaxFrameSize: 4096})
	s := newSession(t, c)
	snd, err := s.NewSender(testCtx(t), "events", nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, sink.links)
	body := bytes.Repeat([]byte("0123456789"), 5000)
	if err := snd.Send(testCtx(t), amqp.NewMessage(body), nil); err != nil {
		t.Fatal(err)
	}
	d := recv(t, sink.msgs)
	if !bytes.Equal(d.Message.GetData(), body) || cap(d.Payload) != len(d.Payload) {
		t.Errorf("payload %d bytes (cap %d), body ok=%v", len(d.Payload), cap(d.Payload), bytes.Equal(d.Message.GetData(), body))
	}
}

func TestUnsettledCapAfterLogin(t *testing.T) {
	t.Parallel()
	// No login policy: the connection is logged in from the start and
	// Config.MaxUnsettledBytes applies.
	ts := startServer(t, Config{Handler: newSink(), MaxUnsettledBytes: 32 << 10}, nil)
	r := rawDial(t, ts)
	r.open()
	r.begin(0)
	r.attachSender(0, 0, "events")
	chunk := bytes.Repeat([]byte{1}, 16<<10)
	id := uint32(0)
	for i := range 4 {
		tr := &Transfer{Handle: 0, More: true}
		if i == 0 {
			tr.DeliveryID, tr.DeliveryTag = &id, []byte{0}
		}
		if r.chFrame(0, tr, chunk) != nil {
			break
		}
	}
	if cond := r.nextClose(); cond != ErrCondResourceLimitExceeded {
		t.Errorf("close %q, want resource-limit-exceeded", cond)
	}
	if err := recv(t, ts.errs); !errors.Is(err, ErrTooManyUnsettledBytes) {
		t.Errorf("Serve = %v, want ErrTooManyUnsettledBytes", err)
	}
}
