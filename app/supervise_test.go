package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang/mock/gomock"

	"github.com/iotc-go/iotc/domain"
)

// connected connects a client with a provisioned (not cached) assignment;
// results script every hub Connect call, the first one must succeed.
func (e *env) connected(edit func(*Options), results ...connResult) *Client {
	e.t.Helper()
	e.provisions(testHub, 1)
	e.hubConnects(results...)
	o := e.options()
	if edit != nil {
		edit(&o)
	}
	c := e.client(o)
	if err := c.Connect(context.Background(), nil); err != nil {
		e.t.Fatalf("Connect: %v", err)
	}
	<-e.conns
	return c
}

func TestTokenRenewalByReconnecting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1, h2 := newHub(e.ctrl, emptyTwin), newHub(e.ctrl, emptyTwin)
		start := time.Now()
		c := e.connected(func(o *Options) { o.TokenTTL = 10 * time.Minute }, connResult{hub: h1}, connResult{hub: h2})
		defer closeClient(t, c)

		conn := <-e.conns // blocks until the supervisor renews
		if elapsed := time.Since(start); elapsed != 8*time.Minute {
			t.Errorf("renewed after %v, want 80%% of the 10 min TTL", elapsed)
		}
		if got := <-h1.renewals; got == "" {
			t.Error("RenewToken got an empty token")
		}
		st := verifyToken(t, conn.Auth.SASToken, domain.HubResource(testHub, testDev), "", derivedKey)
		if want := time.Now().Add(10 * time.Minute); st.Expiry.Unix() != want.Unix() {
			t.Errorf("new token expires %v, want %v", st.Expiry, want)
		}
		if !h1.closed() {
			t.Error("the old session was not closed")
		}
		e.requireStatus(domain.StateReconnecting, domain.ReasonExpiredToken)
		if !c.IsConnected() {
			t.Error("not connected after renewal")
		}
	})
}

func TestTokenRenewalInPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h := newHub(e.ctrl, emptyTwin)
		h.renewErr = nil
		start := time.Now()
		c := e.connected(func(o *Options) { o.TokenTTL = 10 * time.Minute }, connResult{hub: h})
		defer closeClient(t, c)
		for i, want := range []time.Duration{8 * time.Minute, 16 * time.Minute} {
			tok := <-h.renewals
			if elapsed := time.Since(start); elapsed != want {
				t.Errorf("renewal %d after %v, want %v", i, elapsed, want)
			}
			verifyToken(t, tok, domain.HubResource(testHub, testDev), "", derivedKey)
		}
		if h.closed() || e.hasStatus(domain.StateReconnecting, domain.ReasonExpiredToken) {
			t.Error("an in-place renewal reconnected")
		}
	})
}

func TestSessionDeathReconnectsAndResyncsTwin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		// While offline, the operator set "fan"; "mode" was acked before.
		h2 := newHub(e.ctrl, `{"desired":{"$version":4,"fan":true,"mode":"eco"},
			"reported":{"$version":3,"mode":{"value":"eco","ac":200,"av":4}}}`)
		c := e.connected(nil, connResult{hub: h1}, connResult{hub: h2})
		defer closeClient(t, c)
		got := make(chan domain.Property, 8)
		c.OnProperty(func(_ context.Context, p domain.Property) domain.PropertyAck {
			got <- p
			return domain.PropertyAck{}
		})
		h1.kill(errors.New("connection reset by peer"))

		conn := <-e.conns
		if conn.Host != testHub {
			t.Errorf("reconnected to %q", conn.Host)
		}
		if p := <-got; p.Name != "fan" || string(p.Value) != "true" || p.Version != 4 {
			t.Errorf("handler got %+v", p)
		}
		jsonEqual(t, <-h2.reported, `{"fan":{"value":true,"ac":200,"av":4}}`)
		e.requireStatus(domain.StateReconnecting, domain.ReasonCommunicationError)
		e.requireStatus(domain.StateConnected, domain.ReasonDesiredChangedOffline)
		if len(got) != 0 {
			t.Errorf("handler called for an acknowledged property: %+v", <-got)
		}
	})
}

func TestHubDropForExpiredTokenReconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		c := e.connected(nil, connResult{hub: h1}, connResult{hub: newHub(e.ctrl, emptyTwin)})
		defer closeClient(t, c)
		h1.kill(fmt.Errorf("server disconnect: %w", domain.ErrUnauthorized))
		<-e.conns
		e.requireStatus(domain.StateReconnecting, domain.ReasonExpiredToken)
	})
}

func TestSessionDeathMidSendResendsOnTheNextSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1, h2 := newHub(e.ctrl, emptyTwin), newHub(e.ctrl, emptyTwin)
		var first domain.Message
		h1.sendHook = func(m domain.Message) error {
			first = m
			h1.kill(errors.New("connection reset"))
			return fmt.Errorf("publish: %w", domain.ErrNotConnected)
		}
		c := e.connected(nil, connResult{hub: h1}, connResult{hub: h2})
		defer closeClient(t, c)
		ctx := context.Background()
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{"t":1}`)}); err != nil {
			t.Fatalf("SendTelemetry across a dying session = %v, want it resent and acknowledged", err)
		}
		m := <-h2.sent
		if string(m.Body) != `{"t":1}` || m.MessageID == "" || m.MessageID != first.MessageID {
			t.Errorf("resent %s with id %q, first try had id %q", m.Body, m.MessageID, first.MessageID)
		}
		if err := c.SendTelemetry(ctx, domain.Message{Body: []byte(`{"t":2}`)}); err != nil {
			t.Fatalf("SendTelemetry after the reconnect: %v", err)
		}
		if m := <-h2.sent; string(m.Body) != `{"t":2}` {
			t.Errorf("sent %s", m.Body)
		}
	})
}

func TestReconnectRefusedFreshCredentialsGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		refused := fmt.Errorf("connack 5: %w", domain.ErrUnauthorized)
		c := e.connected(nil, connResult{hub: h1}, connResult{err: refused})
		defer closeClient(t, c)
		h1.kill(errors.New("connection reset"))
		<-e.conns
		e.requireStatus(domain.StateClosed, domain.ReasonBadCredential)
		if err := c.Err(); !errors.Is(err, domain.ErrUnauthorized) {
			t.Errorf("Err() = %v", err)
		}
		if err := c.SendTelemetry(context.Background(), domain.Message{Body: []byte("{}")}); !errors.Is(err, domain.ErrClosed) {
			t.Errorf("SendTelemetry after giving up = %v", err)
		}
		if err := c.Connect(context.Background(), nil); !errors.Is(err, domain.ErrClosed) {
			t.Errorf("Connect after giving up = %v", err)
		}
	})
}

func TestReconnectRefusedCachedCredentialsReprovision(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.cache("stale.azure-devices.net")
		h1 := newHub(e.ctrl, emptyTwin)
		e.hubConnects(connResult{hub: h1}, connResult{err: &domain.HubError{Op: "connect", Status: 404}}, connResult{hub: newHub(e.ctrl, emptyTwin)})
		e.provisions(testHub, 1)
		e.store.EXPECT().Save(gomock.Any(), gomock.Any()).Return(nil)
		o := e.options()
		o.Store = e.store
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		<-e.conns
		h1.kill(errors.New("connection reset"))
		if a, b := <-e.conns, <-e.conns; a.Host != "stale.azure-devices.net" || b.Host != testHub {
			t.Errorf("reconnected to %q then %q", a.Host, b.Host)
		}
		e.requireStatus(domain.StateConnecting, domain.ReasonReprovisioned)
		if !c.IsConnected() {
			t.Error("not connected")
		}
	})
}

func TestReconnectBacksOffAndGivesUpAfterMaxAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		c := e.connected(func(o *Options) {
			o.MaxAttempts = 4
			o.Backoff = domain.Backoff{Base: time.Second, Cap: 4 * time.Second}
		}, connResult{hub: h1}, connResult{err: dialErr}, connResult{err: dialErr}, connResult{err: dialErr}, connResult{err: dialErr})
		defer closeClient(t, c)
		start := time.Now()
		h1.kill(errors.New("connection reset"))
		for range 4 {
			<-e.conns
		}
		// Full jitter: each of the 4 waits (one before every attempt) is
		// below its ceiling: 1 s, 2 s, 4 s, then the 4 s cap.
		if elapsed := time.Since(start); elapsed >= (1+2+4+4)*time.Second {
			t.Errorf("backoff waited %v in total, above the ceilings", elapsed)
		}
		e.requireStatus(domain.StateReconnecting, domain.ReasonNoNetwork)
		e.requireStatus(domain.StateClosed, domain.ReasonRetryExpired)
		if !errors.Is(c.Err(), dialErr) {
			t.Errorf("Err() = %v", c.Err())
		}
	})
}

// While connections keep failing the wait between attempts grows: with
// the jitter pinned at one half, each wait is twice the one before, until
// the cap. A backoff that never grows would hammer the hub in an outage.
func TestReconnectBackoffGrows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h1}, connResult{err: dialErr}, connResult{err: dialErr}, connResult{err: dialErr}, connResult{err: dialErr}, connResult{err: dialErr}, connResult{err: dialErr})
		o := e.options()
		o.MaxAttempts = 6
		o.Backoff = domain.Backoff{Base: time.Second, Cap: 8 * time.Second}
		defer func(f func() float64) { randFloat = f }(randFloat)
		randFloat = func() float64 { return 0.5 }
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		<-e.conns
		h1.kill(errors.New("connection reset"))
		var at []time.Time
		for range 6 {
			<-e.conns
			at = append(at, time.Now()) // the bubble's clock: the attempt's time
		}
		var gaps []time.Duration
		for i := 1; i < len(at); i++ {
			gaps = append(gaps, at[i].Sub(at[i-1]))
		}
		// Half of each ceiling: 1 s, 2 s, 4 s, 8 s, 8 s (the cap), in turn
		// from wherever the count stood after the drop.
		for i := 1; i < len(gaps); i++ {
			want := min(2*gaps[i-1], 4*time.Second)
			if gaps[i] != want || gaps[i] == 0 {
				t.Fatalf("waits between attempts %v: want each twice the one before, up to half the 8 s cap", gaps)
			}
		}
		e.requireStatus(domain.StateClosed, domain.ReasonRetryExpired)
	})
}

func TestCloseWhileReconnecting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: h1})
		e.tr.EXPECT().Connect(gomock.Any(), gomock.Any(), gomock.Any()).Return(nil, dialErr).AnyTimes()
		c := e.client(e.options())
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		h1.kill(errors.New("connection reset"))
		time.Sleep(10 * time.Minute) // fake clock: several attempts go by
		synctest.Wait()
		if c.IsConnected() {
			t.Fatal("connected to a dead hub")
		}
		closeClient(t, c)
		closeClient(t, c) // idempotent
		if err := c.Connect(context.Background(), nil); !errors.Is(err, domain.ErrClosed) {
			t.Errorf("Connect after Close = %v", err)
		}
		if st := c.Status(); st.State != domain.StateClosed || st.Reason != domain.ReasonClientClose {
			t.Errorf("status %v", st)
		}
		last := e.status()[len(e.status())-1]
		if last.State != domain.StateClosed {
			t.Errorf("last status delivered %v", last)
		}
	})
}

func TestStatusCallbackDoesNotBlockTheClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: newHub(e.ctrl, emptyTwin)})
		release := make(chan struct{})
		var got []domain.State
		o := e.options()
		o.OnStatus = func(s domain.Status) {
			<-release
			got = append(got, s.State)
		}
		c := e.client(o)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		if !c.IsConnected() {
			t.Fatal("not connected")
		}
		close(release)
		closeClient(t, c) // waits for the status goroutine
		want := []domain.State{domain.StateConnecting, domain.StateConnected, domain.StateClosed}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("statuses %v, want %v", got, want)
		}
	})
}

// TestReconnectKeepsTheCauseAndNeverRetriesAnUntrustedServer: while the
// client reconnects, Err() and Status() carry the last attempt's cause (a
// refused connection, retried); a server certificate that fails
// verification ends the retries at once.
func TestReconnectKeepsTheCauseAndNeverRetriesAnUntrustedServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		h1 := newHub(e.ctrl, emptyTwin)
		refused := domain.DiagnoseNetwork(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
		untrusted := domain.DiagnoseNetwork(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}})
		c := e.connected(func(o *Options) {
			o.Backoff = domain.Backoff{Base: time.Second, Cap: time.Second}
		}, connResult{hub: h1}, connResult{err: refused}, connResult{err: untrusted})
		defer closeClient(t, c)
		h1.kill(errors.New("connection reset"))
		<-e.conns // the refused attempt
		e.requireStatus(domain.StateReconnecting, domain.ReasonNoNetwork)
		if err := c.Err(); !errors.Is(err, domain.ErrConnectionRefused) {
			t.Errorf("Err() while reconnecting = %v, want the refused connection", err)
		}
		if st := c.Status(); st.State != domain.StateReconnecting || !errors.Is(st.Err, domain.ErrConnectionRefused) {
			t.Errorf("Status() while reconnecting = %v", st)
		}
		<-e.conns // the untrusted attempt: the last one hubConnects allows
		e.requireStatus(domain.StateClosed, domain.ReasonUntrustedServer)
		if err := c.Err(); !errors.Is(err, domain.ErrUntrustedServer) {
			t.Errorf("Err() after an untrusted server = %v", err)
		}
	})
}
