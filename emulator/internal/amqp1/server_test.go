package amqp1

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer runs Serve for every connection accepted on a loopback listener.
type testServer struct {
	addr string
	errs chan error // Serve results, one per connection
}

func startServer(t *testing.T, cfg Config, wrap func(net.Conn) net.Conn) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{addr: ln.Addr().String(), errs: make(chan error, 16)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if wrap != nil {
				nc = wrap(nc)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ts.errs <- Serve(ctx, nc, cfg)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		cancel()
		wg.Wait()
	})
	return ts
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, ts *testServer, opts *amqp.ConnOptions) *amqp.Conn {
	t.Helper()
	c, err := amqp.Dial(testCtx(t), "amqp://"+ts.addr, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newSession(t *testing.T, c *amqp.Conn) *amqp.Session {
	t.Helper()
	s, err := c.NewSession(testCtx(t), nil)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	return s
}

// linkSink is a Handler that accepts every link, publishes it by address and
// records messages and detaches.
type linkSink struct {
	links    chan *Link
	msgs     chan *Delivery
	detached chan error
	outcome  func(d *Delivery) Outcome
	opened   chan *Conn
}

func newSink() *linkSink {
	return &linkSink{links: make(chan *Link, 16), msgs: make(chan *Delivery, 64), detached: make(chan error, 16), opened: make(chan *Conn, 4)}
}

func (s *linkSink) OnOpen(_ context.Context, c *Conn) error {
	s.opened <- c
	return nil
}

func (s *linkSink) OnAttach(_ context.Context, l *Link) error {
	if l.Address() == "refuse" {
		return &Error{Condition: ErrCondUnauthorizedAccess, Description: "no token"}
	}
	l.SetProperties(map[string]any{"server": "yes"})
	s.links <- l
	return nil
}

func (s *linkSink) OnMessage(_ context.Context, _ *Link, d *Delivery) Outcome {
	s.msgs <- d
	if s.outcome != nil {
		return s.outcome(d)
	}
	return &Accepted{}
}

func (s *linkSink) OnDetach(_ *Link, err error) { s.detached <- err }

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting on channel")
		panic("unreachable")
	}
}

func TestConnectWithoutSASL(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink, ContainerID: "emu"}, nil)
	c := dial(t, ts, &amqp.ConnOptions{ContainerID: "dev-1", HostName: "hub.local"})
	conn := recv(t, sink.opened)
	if conn.ContainerID() != "dev-1" || conn.Hostname() != "hub.local" || conn.SASLMechanism() != "" {
		t.Errorf("conn = %q %q %q", conn.ContainerID(), conn.Hostname(), conn.SASLMechanism())
	}
	newSession(t, c)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := recv(t, ts.errs); err != nil {
		t.Errorf("Serve after a clean client close = %v, want nil", err)
	}
}

func TestSASL(t *testing.T) {
	t.Parallel()
	sink := newSink()
	cert := &x509.Certificate{Raw: []byte{1}}
	cfg := Config{Handler: sink, SASL: SASLPolicy{
		CheckPlain: func(_ context.Context, p PlainCredentials) error {
			if p.Username == "dev@sas.hub" && p.Password == "SharedAccessSignature sr=x" {
				return nil
			}
			return errors.New("bad credentials")
		},
	}}
	ts := startServer(t, cfg, nil)
	cfgExt := cfg
	cfgExt.PeerCertificates = []*x509.Certificate{cert}
	tsExt := startServer(t, cfgExt, nil)

	t.Run("anonymous", func(t *testing.T) {
		c := dial(t, ts, &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()})
		if m := recv(t, sink.opened).SASLMechanism(); m != SASLAnonymous {
			t.Errorf("mechanism %q", m)
		}
		newSession(t, c)
	})
	t.Run("plain good", func(t *testing.T) {
		c := dial(t, ts, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain("dev@sas.hub", "SharedAccessSignature sr=x")})
		conn := recv(t, sink.opened)
		if conn.SASLMechanism() != SASLPlain || conn.SASLIdentity() != "dev@sas.hub" {
			t.Errorf("mechanism %q identity %q", conn.SASLMechanism(), conn.SASLIdentity())
		}
		newSession(t, c)
	})
	t.Run("plain bad", func(t *testing.T) {
		_, err := amqp.Dial(testCtx(t), "amqp://"+ts.addr, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain("dev@sas.hub", "wrong")})
		if err == nil {
			t.Fatal("Dial with a bad password succeeded")
		}
		// Earlier subtests' connections may end first; look for the failure.
		for {
			serr := recv(t, ts.errs)
			if errors.Is(serr, ErrSASLFailed) {
				break
			}
			if serr != nil {
				t.Fatalf("Serve = %v, want ErrSASLFailed", serr)
			}
		}
	})
	t.Run("external without certificate", func(t *testing.T) {
		_, err := amqp.Dial(testCtx(t), "amqp://"+ts.addr, &amqp.ConnOptions{SASLType: amqp.SASLTypeExternal("")})
		if err == nil {
			t.Fatal("EXTERNAL without a client certificate succeeded")
		}
	})
	t.Run("external with certificate", func(t *testing.T) {
		c := dial(t, tsExt, &amqp.ConnOptions{SASLType: amqp.SASLTypeExternal("")})
		conn := recv(t, sink.opened)
		if conn.SASLMechanism() != SASLExternal || len(conn.PeerCertificates()) != 1 {
			t.Errorf("mechanism %q certs %d", conn.SASLMechanism(), len(conn.PeerCertificates()))
		}
		newSession(t, c)
	})
}

func TestSASLRequiredRefusesPlainHeader(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{SASL: SASLPolicy{Required: true}}, nil)
	if _, err := amqp.Dial(testCtx(t), "amqp://"+ts.addr, nil); err == nil {
		t.Fatal("Dial without SASL succeeded although SASL is required")
	}
	if err := recv(t, ts.errs); !errors.Is(err, ErrProtocolHeader) {
		t.Errorf("Serve = %v, want ErrProtocolHeader", err)
	}
}

func TestClientSenderOutcomes(t *testing.T) {
	t.Parallel()
	sink := newSink()
	sink.outcome = func(d *Delivery) Outcome {
		if d.Message.ApplicationProperties["reject"] == true {
			return &Rejected{Error: &Error{Condition: ErrCondResourceLimitExceeded, Description: "too big"}}
		}
		return &Accepted{}
	}
	ts := startServer(t, Config{Handler: sink}, nil)
	s := newSession(t, dial(t, ts, nil))
	ctx := testCtx(t)

	snd, err := s.NewSender(ctx, "/devices/d1/messages/events", &amqp.SenderOptions{
		Properties: map[string]any{"com.microsoft:client-version": "test/1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	if l.Role() != RoleReceiver || l.Address() != "/devices/d1/messages/events" || l.Properties()["com.microsoft:client-version"] != "test/1" {
		t.Errorf("link role %v address %q props %v", l.Role(), l.Address(), l.Properties())
	}

	msg := amqp.NewMessage([]byte(`{"t":21.5}`))
	msg.Properties = &amqp.MessageProperties{MessageID: "m1"}
	msg.ApplicationProperties = map[string]any{"k": "v"}
	if err := snd.Send(ctx, msg, nil); err != nil {
		t.Fatalf("Send (accepted): %v", err)
	}
	d := recv(t, sink.msgs)
	if d.Settled || string(d.Message.GetData()) != `{"t":21.5}` || d.Message.Properties.MessageID != "m1" || d.Message.ApplicationProperties["k"] != "v" {
		t.Errorf("delivery %+v message %+v", d, d.Message)
	}

	rej := amqp.NewMessage([]byte("x"))
	rej.ApplicationProperties = map[string]any{"reject": true}
	err = snd.Send(ctx, rej, nil)
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Condition != amqp.ErrCondResourceLimitExceeded || aerr.Description != "too big" {
		t.Fatalf("Send (rejected) = %v, want amqp:resource-limit-exceeded", err)
	}
	recv(t, sink.msgs)

	// Many unsettled messages: more than the link credit, so credit must be topped up.
	for i := range 3 * defaultLinkCredit {
		if err := snd.Send(ctx, amqp.NewMessage([]byte{byte(i)}), nil); err != nil {
			t.Fatalf("Send #%d: %v", i, err)
		}
		if got := recv(t, sink.msgs).Message.GetData(); !bytes.Equal(got, []byte{byte(i)}) {
			t.Fatalf("message #%d = %v", i, got)
		}
	}

	if err := snd.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, sink.detached); err != nil {
		t.Errorf("OnDetach after a clean client detach = %v, want nil", err)
	}
}

func TestClientSenderPresettled(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	s := newSession(t, dial(t, ts, nil))
	ctx := testCtx(t)
	snd, err := s.NewSender(ctx, "/devices/d1/twin", &amqp.SenderOptions{SettlementMode: amqp.SenderSettleModeSettled.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	if l := recv(t, sink.links); l.SndSettleMode() != SenderSettleModeSettled {
		t.Errorf("snd-settle-mode %v", l.SndSettleMode())
	}
	for i := range 5 {
		if err := snd.Send(ctx, amqp.NewMessage([]byte{byte(i)}), nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		d := recv(t, sink.msgs)
		if !d.Settled || !bytes.Equal(d.Message.GetData(), []byte{byte(i)}) {
			t.Errorf("delivery %d: settled %v data %v", i, d.Settled, d.Message.GetData())
		}
	}
}

func TestServerSenderOutcomes(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	s := newSession(t, dial(t, ts, nil))
	ctx := testCtx(t)
	rcv, err := s.NewReceiver(ctx, "/devices/d1/messages/devicebound", &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	if l.Role() != RoleSender || l.Address() != "/devices/d1/messages/devicebound" {
		t.Fatalf("role %v address %q", l.Role(), l.Address())
	}
	if _, err := l.Send(ctx, nil); err == nil {
		t.Error("Send(nil) succeeded")
	}

	type result struct {
		out Outcome
		err error
	}
	cases := []struct {
		settle func(m *amqp.Message) error
		check  func(o Outcome) bool
	}{
		{func(m *amqp.Message) error { return rcv.AcceptMessage(ctx, m) }, func(o Outcome) bool { _, ok := o.(*Accepted); return ok }},
		{func(m *amqp.Message) error {
			return rcv.RejectMessage(ctx, m, &amqp.Error{Condition: "amqp:not-allowed", Description: "nope"})
		}, func(o Outcome) bool {
			r, ok := o.(*Rejected)
			return ok && r.Error != nil && r.Error.Condition == ErrCondNotAllowed && r.Error.Description == "nope"
		}},
		{func(m *amqp.Message) error { return rcv.ReleaseMessage(ctx, m) }, func(o Outcome) bool { _, ok := o.(*Released); return ok }},
		{func(m *amqp.Message) error {
			return rcv.ModifyMessage(ctx, m, &amqp.ModifyMessageOptions{DeliveryFailed: true})
		}, func(o Outcome) bool { m, ok := o.(*Modified); return ok && m.DeliveryFailed }},
	}
	for i, tc := range cases {
		res := make(chan result, 1)
		go func() {
			m := amqp.NewMessage([]byte{byte(i)})
			m.ApplicationProperties = map[string]any{"iothub-ack": "full"}
			out, err := l.Send(ctx, m)
			res <- result{out, err}
		}()
		m, err := rcv.Receive(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.GetData(), []byte{byte(i)}) || m.ApplicationProperties["iothub-ack"] != "full" {
			t.Errorf("case %d: received %v %v", i, m.GetData(), m.ApplicationProperties)
		}
		if err := tc.settle(m); err != nil {
			t.Fatal(err)
		}
		r := recv(t, res)
		if r.err != nil || !tc.check(r.out) {
			t.Errorf("case %d: Send = %#v, %v", i, r.out, r.err)
		}
	}
}

func TestServerSenderPresettled(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	s := newSession(t, dial(t, ts, nil))
	ctx := testCtx(t)
	rcv, err := s.NewReceiver(ctx, "/devices/d1/twin", &amqp.ReceiverOptions{
		Credit: 10, RequestedSenderSettleMode: amqp.SenderSettleModeSettled.Ptr(),
	})
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	out, err := l.Send(ctx, amqp.NewMessage([]byte("twin")))
	if err != nil || out != nil {
		t.Fatalf("presettled Send = %v, %v; want nil, nil", out, err)
	}
	m, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.GetData()) != "twin" {
		t.Errorf("data %q", m.GetData())
	}
}

func TestCreditAndDrain(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	s := newSession(t, dial(t, ts, nil))
	ctx := testCtx(t)
	rcv, err := s.NewReceiver(ctx, "c2d", &amqp.ReceiverOptions{Credit: -1})
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	sent := make(chan error, 1)
	go func() {
		_, err := l.Send(ctx, amqp.NewMessage([]byte("hello")))
		sent <- err
	}()
	// Without credit nothing arrives.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = rcv.Receive(short, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive without credit = %v, want deadline exceeded", err)
	}
	if c := l.Credit(); c != 0 {
		t.Errorf("server credit %d before any flow", c)
	}
	if err := rcv.IssueCredit(1); err != nil {
		t.Fatal(err)
	}
	m, err := rcv.Receive(ctx, nil)
	if err != nil || string(m.GetData()) != "hello" {
		t.Fatalf("Receive = %v, %v", m, err)
	}
	if err := rcv.AcceptMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, sent); err != nil {
		t.Fatalf("Send = %v", err)
	}

	// Drain: the server has nothing to send, so it gives all credit back.
	if err := rcv.IssueCredit(5); err != nil {
		t.Fatal(err)
	}
	if err := rcv.DrainCredit(ctx, nil); err != nil {
		t.Fatalf("DrainCredit: %v", err)
	}
	if c := l.Credit(); c != 0 {
		t.Errorf("server credit %d after drain, want 0", c)
	}
}

func TestLargeMessagesBothWays(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	// A small client max-frame-size forces the server to split outgoing transfers finely.
	s := newSession(t, dial(t, ts, &amqp.ConnOptions{MaxFrameSize: 4096}))
	ctx := testCtx(t)
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}

	snd, err := s.NewSender(ctx, "/devices/d1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, sink.links)
	if err := snd.Send(ctx, amqp.NewMessage(big), nil); err != nil {
		t.Fatalf("client Send 300 KiB: %v", err)
	}
	if got := recv(t, sink.msgs).Message.GetData(); !bytes.Equal(got, big) {
		t.Fatalf("server received %d bytes, want the 300 KiB sent", len(got))
	}

	rcv, err := s.NewReceiver(ctx, "/devices/d1/messages/devicebound", &amqp.ReceiverOptions{Credit: 1})
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	res := make(chan error, 1)
	go func() {
		out, err := l.Send(ctx, amqp.NewMessage(big))
		if err == nil {
			if _, ok := out.(*Accepted); !ok {
				err = errors.New("outcome not accepted")
			}
		}
		res <- err
	}()
	m, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.GetData(), big) {
		t.Fatalf("client received %d bytes, want the 300 KiB sent", len(m.GetData()))
	}
	if err := rcv.AcceptMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, res); err != nil {
		t.Fatalf("server Send 300 KiB: %v", err)
	}
}

func TestMessageSizeLimitAdvertised(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink, MaxMessageSize: 1000}, nil)
	s := newSession(t, dial(t, ts, nil))
	ctx := testCtx(t)
	snd, err := s.NewSender(ctx, "events", nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, sink.links)
	if snd.MaxMessageSize() != 1000 {
		t.Errorf("client sees max-message-size %d, want 1000", snd.MaxMessageSize())
	}
	if err := snd.Send(ctx, amqp.NewMessage(make([]byte, 2000)), nil); err == nil {
		t.Error("client sent a message above the advertised max-message-size")
	}
}

func TestRefusedAttachAndServerDetach(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	s := newSession(t, dial(t, ts, nil))
	ctx := testCtx(t)

	_, err := s.NewSender(ctx, "refuse", nil)
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("refused NewSender = %v, want amqp:unauthorized-access", err)
	}
	_, err = s.NewReceiver(ctx, "refuse", nil)
	if !errors.As(err, &aerr) || aerr.Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("refused NewReceiver = %v, want amqp:unauthorized-access", err)
	}

	rcv, err := s.NewReceiver(ctx, "/devices/d1/methods/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	if err := l.Detach(&Error{Condition: ErrCondUnauthorizedAccess, Description: "token expired"}); err != nil {
		t.Fatal(err)
	}
	_, err = rcv.Receive(ctx, nil)
	var lerr *amqp.LinkError
	if !errors.As(err, &lerr) || lerr.RemoteErr == nil || lerr.RemoteErr.Condition != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("Receive after server detach = %v, want *amqp.LinkError with amqp:unauthorized-access", err)
	}
	var derr *Error
	if got := recv(t, sink.detached); !errors.As(got, &derr) || derr.Condition != ErrCondUnauthorizedAccess {
		t.Errorf("OnDetach err = %v", got)
	}
	if _, err := l.Send(ctx, amqp.NewMessage(nil)); !errors.Is(err, ErrLinkDetached) {
		t.Errorf("Send on a detached link = %v, want ErrLinkDetached", err)
	}

	// The session still works after the detach.
	if _, err := s.NewSender(ctx, "events", nil); err != nil {
		t.Fatalf("NewSender after detach: %v", err)
	}
}

// TestRequestResponse runs a CBS-like exchange: OnMessage on one link replies
// through Send on another link of the same session, which needs OnMessage to
// run off the frame-reading goroutine.
func TestRequestResponse(t *testing.T) {
	t.Parallel()
	var replies sync.Map // reply-to address -> *Link
	var h HandlerFuncs
	h.Attach = func(_ context.Context, l *Link) error {
		if l.Role() == RoleSender {
			replies.Store(l.Target().Address, l)
		}
		return nil
	}
	h.Message = func(ctx context.Context, _ *Link, d *Delivery) Outcome {
		p := d.Message.Properties
		v, ok := replies.Load(*p.ReplyTo)
		if !ok {
			return &Rejected{Error: &Error{Condition: ErrCondNotFound}}
		}
		resp := &amqp.Message{
			Properties:            &amqp.MessageProperties{CorrelationID: p.MessageID},
			ApplicationProperties: map[string]any{"status-code": int32(200), "status-description": "OK"},
		}
		if _, err := v.(*Link).Send(ctx, resp); err != nil {
			return &Rejected{Error: &Error{Condition: ErrCondInternalError, Description: err.Error()}}
		}
		return &Accepted{}
	}
	ts := startServer(t, Config{Handler: h}, nil)
	s := newSession(t, dial(t, ts, nil))
	ctx := testCtx(t)
	snd, err := s.NewSender(ctx, "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(ctx, "$cbs", &amqp.ReceiverOptions{TargetAddress: "cbs-reply", Credit: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		replyTo := "cbs-reply"
		req := &amqp.Message{
			Properties:            &amqp.MessageProperties{MessageID: uint64(i), ReplyTo: &replyTo},
			ApplicationProperties: map[string]any{"operation": "put-token"},
			Value:                 "SharedAccessSignature sr=x",
		}
		// The request's disposition follows the response's settlement
		// (OnMessage waits for Send's outcome), so send asynchronously.
		sent := make(chan error, 1)
		go func() { sent <- snd.Send(ctx, req, nil) }()
		resp, err := rcv.Receive(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Properties.CorrelationID != uint64(i) || resp.ApplicationProperties["status-code"] != int32(200) {
			t.Errorf("response %d: %+v %v", i, resp.Properties, resp.ApplicationProperties)
		}
		if err := rcv.AcceptMessage(ctx, resp); err != nil {
			t.Fatal(err)
		}
		if err := recv(t, sent); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
}

func TestSessionsAndEnd(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	c := dial(t, ts, nil)
	ctx := testCtx(t)
	var sessions []*amqp.Session
	for range 3 {
		s := newSession(t, c)
		sessions = append(sessions, s)
		if _, err := s.NewSender(ctx, "events", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.NewReceiver(ctx, "c2d", nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 6 {
		recv(t, sink.links)
	}
	// Ending a session ends its two links.
	if err := sessions[1].Close(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := recv(t, sink.detached); !errors.Is(err, ErrLinkDetached) {
			t.Errorf("OnDetach after end = %v", err)
		}
	}
	// The other sessions still work.
	snd, err := sessions[2].NewSender(ctx, "events", nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, sink.links)
	if err := snd.Send(ctx, amqp.NewMessage([]byte("x")), nil); err != nil {
		t.Fatal(err)
	}
	recv(t, sink.msgs)
	// Closing the connection ends the remaining five links.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := recv(t, sink.detached); !errors.Is(err, ErrConnClosed) {
			t.Errorf("OnDetach after connection close = %v", err)
		}
	}
}

// beatCounter counts empty frames written by the server.
type beatCounter struct {
	net.Conn
	beats *atomic.Int32
	seen  chan struct{}
	want  int32
}

func (b *beatCounter) Write(p []byte) (int, error) {
	if bytes.Equal(p, []byte{0, 0, 0, 8, 2, 0, 0, 0}) {
		if b.beats.Add(1) == b.want {
			close(b.seen)
		}
	}
	return b.Conn.Write(p)
}

func TestIdleTimeoutHeartbeatsKeepConnectionAlive(t *testing.T) {
	t.Parallel()
	sink := newSink()
	var beats atomic.Int32
	seen := make(chan struct{})
	// Short enough to keep the test quick, long enough not to trip under -race on a loaded machine.
	const idle = 400 * time.Millisecond
	ts := startServer(t, Config{Handler: sink, IdleTimeout: idle}, func(nc net.Conn) net.Conn {
		return &beatCounter{Conn: nc, beats: &beats, seen: seen, want: 5}
	})
	c := dial(t, ts, &amqp.ConnOptions{IdleTimeout: idle})
	s := newSession(t, c)
	ctx := testCtx(t)
	snd, err := s.NewSender(ctx, "events", nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, sink.links)
	// Five server heartbeats at half the client's idle timeout span more
	// than twice both idle timeouts with no other traffic.
	select {
	case <-seen:
	case <-c.Done():
		t.Fatalf("connection dropped while idle: %v", c.Err())
	case <-time.After(20 * time.Second):
		t.Fatalf("only %d heartbeats", beats.Load())
	}
	if err := snd.Send(ctx, amqp.NewMessage([]byte("still here")), nil); err != nil {
		t.Fatalf("Send after idling: %v", err)
	}
	if string(recv(t, sink.msgs).Message.GetData()) != "still here" {
		t.Error("wrong message after idling")
	}
}

// rawClient speaks the protocol by hand for the cases go-amqp will not produce.
type rawClient struct {
	t  *testing.T
	nc net.Conn
}

func rawDial(t *testing.T, ts *testServer) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{t: t, nc: nc}
}

func (r *rawClient) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) frame(typ uint8, p Performative) {
	r.t.Helper()
	body, err := Encode(p)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := WriteFrame(r.nc, typ, 0, body); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) header() [8]byte {
	r.t.Helper()
	var h [8]byte
	if _, err := readFull(r.nc, h[:]); err != nil {
		r.t.Fatalf("read header: %v", err)
	}
	return h
}

func readFull(nc net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := nc.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (r *rawClient) next() Performative {
	r.t.Helper()
	for {
		f, err := ReadFrame(r.nc, 1<<20)
		if err != nil {
			r.t.Fatalf("read frame: %v", err)
		}
		if len(f.Body) == 0 {
			continue
		}
		p, err := DecodePerformative(f.Body)
		if err != nil {
			r.t.Fatal(err)
		}
		return p
	}
}

// open performs the no-SASL handshake.
func (r *rawClient) open() *Open {
	r.t.Helper()
	r.write(headerAMQP[:])
	if h := r.header(); h != headerAMQP {
		r.t.Fatalf("header % x", h)
	}
	r.frame(FrameTypeAMQP, &Open{ContainerID: "raw", MaxFrameSize: 65536, ChannelMax: 10})
	o, ok := r.next().(*Open)
	if !ok {
		r.t.Fatal("no open")
	}
	return o
}

func (r *rawClient) expectClose(cond Symbol) {
	r.t.Helper()
	cl, ok := r.next().(*Close)
	if !ok || cl.Error == nil || cl.Error.Condition != cond {
		r.t.Fatalf("got %#v, want close with %s", cl, cond)
	}
}

func TestSilentPeerIsDropped(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{IdleTimeout: 50 * time.Millisecond}, nil)
	r := rawDial(t, ts)
	o := r.open()
	if o.IdleTimeout != 50 {
		t.Errorf("server idle-time-out %d ms, want 50", o.IdleTimeout)
	}
	r.expectClose(ErrCondResourceLimitExceeded)
	if err := recv(t, ts.errs); !errors.Is(err, ErrIdleTimeout) {
		t.Errorf("Serve = %v, want ErrIdleTimeout", err)
	}
}

func TestMalformedInput(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{MaxFrameSize: 1024}, nil)

	t.Run("bad header", func(t *testing.T) {
		r := rawDial(t, ts)
		r.write([]byte("HTTP/1.1"))
		if h := r.header(); h != headerAMQP {
			t.Errorf("answer % x, want the AMQP header", h)
		}
		if err := recv(t, ts.errs); !errors.Is(err, ErrProtocolHeader) {
			t.Errorf("Serve = %v", err)
		}
	})
	t.Run("frame too large", func(t *testing.T) {
		r := rawDial(t, ts)
		r.open()
		r.write([]byte{0, 0, 0x10, 0, 2, 0, 0, 0})
		r.expectClose(ErrCondFramingError)
		if err := recv(t, ts.errs); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("Serve = %v", err)
		}
	})
	t.Run("garbage performative", func(t *testing.T) {
		r := rawDial(t, ts)
		r.open()
		if err := WriteFrame(r.nc, FrameTypeAMQP, 0, []byte{0x00, 0x53, 0x11, 0xd0, 0xff, 0xff, 0xff, 0xff}); err != nil {
			t.Fatal(err)
		}
		r.expectClose(ErrCondDecodeError)
		if err := recv(t, ts.errs); !errors.Is(err, ErrDecode) {
			t.Errorf("Serve = %v", err)
		}
	})
	t.Run("frame on a channel without session", func(t *testing.T) {
		r := rawDial(t, ts)
		r.open()
		r.frame(FrameTypeAMQP, &Flow{IncomingWindow: 1})
		r.expectClose(ErrCondIllegalState)
		recv(t, ts.errs)
	})
	t.Run("transfer without credit", func(t *testing.T) {
		r := rawDial(t, ts)
		r.open()
		r.frame(FrameTypeAMQP, &Begin{IncomingWindow: 10, OutgoingWindow: 10})
		if _, ok := r.next().(*Begin); !ok {
			t.Fatal("no begin")
		}
		// No handler: the attach is refused with amqp:not-found.
		zero := uint32(0)
		r.frame(FrameTypeAMQP, &Attach{Name: "x", Handle: 0, Role: RoleSender, Target: &Target{Address: "nowhere"}, InitialDeliveryCount: &zero})
		a, ok := r.next().(*Attach)
		if !ok || a.Target != nil {
			t.Fatalf("attach reply %#v, want a null target", a)
		}
		d, ok := r.next().(*Detach)
		if !ok || d.Error == nil || d.Error.Condition != ErrCondNotFound {
			t.Fatalf("got %#v, want detach amqp:not-found", d)
		}
	})
	t.Run("SASL mechanisms offered", func(t *testing.T) {
		r := rawDial(t, ts)
		r.write(headerSASL[:])
		if h := r.header(); h != headerSASL {
			t.Fatalf("header % x", h)
		}
		m, ok := r.next().(*SASLMechanisms)
		if !ok || len(m.Mechanisms) != 4 || m.Mechanisms[0] != SASLMSSBCBS {
			t.Fatalf("mechanisms %#v", m)
		}
		r.frame(FrameTypeSASL, &SASLInit{Mechanism: SASLMSSBCBS})
		if o, ok := r.next().(*SASLOutcome); !ok || o.Code != SASLCodeOK {
			t.Fatalf("outcome %#v", o)
		}
		r.write(headerAMQP[:])
		if h := r.header(); h != headerAMQP {
			t.Fatalf("second header % x", h)
		}
	})
}

func TestServeStopsOnContextCancel(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, server, Config{}) }()
	c, err := amqp.NewConn(testCtx(t), client, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cancel()
	if err := recv(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("Serve = %v, want context.Canceled", err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client connection still open after server shutdown")
	}
	var cerr *amqp.ConnError
	if err := c.Err(); !errors.As(err, &cerr) {
		t.Errorf("client Err = %v, want *amqp.ConnError", err)
	}
}

// TestReceiverSettleModeSecond covers the two-step settlement in both
// directions: the receiver states the outcome unsettled, the sender settles.
func TestReceiverSettleModeSecond(t *testing.T) {
	t.Parallel()
	sink := newSink()
	ts := startServer(t, Config{Handler: sink}, nil)
	s := newSession(t, dial(t, ts, nil))
	ctx := testCtx(t)

	snd, err := s.NewSender(ctx, "events", &amqp.SenderOptions{RequestedReceiverSettleMode: amqp.ReceiverSettleModeSecond.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	if l := recv(t, sink.links); l.RcvSettleMode() != ReceiverSettleModeSecond {
		t.Errorf("rcv-settle-mode %v", l.RcvSettleMode())
	}
	if err := snd.Send(ctx, amqp.NewMessage([]byte("two-step")), nil); err != nil {
		t.Fatalf("Send: %v", err)
	}
	recv(t, sink.msgs)

	rcv, err := s.NewReceiver(ctx, "c2d", &amqp.ReceiverOptions{Credit: 1, SettlementMode: amqp.ReceiverSettleModeSecond.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	l := recv(t, sink.links)
	res := make(chan error, 1)
	go func() {
		out, err := l.Send(ctx, amqp.NewMessage([]byte("c2d")))
		if _, ok := out.(*Accepted); err == nil && !ok {
			err = errors.New("outcome not accepted")
		}
		res <- err
	}()
	m, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// In mode second AcceptMessage returns only after the server settled.
	if err := rcv.AcceptMessage(ctx, m); err != nil {
		t.Fatalf("AcceptMessage: %v", err)
	}
	if err := recv(t, res); err != nil {
		t.Fatalf("server Send: %v", err)
	}
}
