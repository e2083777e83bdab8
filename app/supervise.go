package app

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// watchResult says why a watched session needs the supervisor.
type watchResult int

const (
	watchDied    watchResult = iota // the session ended
	watchRenewal                    // the token is due for renewal
)

// watch is the supervision of one connected session while nothing needs
// doing: a timer for the token renewal and a notification of the
// session's end. It costs no goroutine when the session implements
// ports.DoneNotifier. When either fires, wake starts a supervisor step
// on a goroutine of its own, which renews the token or reconnects and
// then arms a new watch. All fields are guarded by Client.mu.
type watch struct {
	s        *session
	renewAt  time.Time   // zero for X.509
	timer    *time.Timer // nil for X.509
	stopDone func() bool // stops the end notification
}

// armLocked starts watching s, the current session. Called with c.hold.mu held
// once the client supervises (first Connect, then every step).
func (c *Client) armLocked(s *session) {
	w := &watch{s: s}
	c.watched = w
	if !s.expiry.IsZero() {
		w.renewAt = s.issued.Add(time.Duration(float64(s.expiry.Sub(s.issued)) * renewFraction))
		w.timer = time.AfterFunc(untilCheck(w.renewAt), func() { c.renewalDue(w) })
	}
	if n, ok := s.HubSession.(ports.DoneNotifier); ok {
		w.stopDone = n.AfterDone(func() { c.wake(w, watchDied) })
		return
	}
	// A session that cannot call back is waited for on a goroutine.
	stop := make(chan struct{})
	if !c.goTrackedLocked(func() {
		select {
		case <-s.Done():
			c.wake(w, watchDied)
		case <-stop:
		}
	}) {
		stop = nil
	}
	var once sync.Once
	w.stopDone = func() bool {
		if stop != nil {
			once.Do(func() { close(stop) })
		}
		return true
	}
}

// untilCheck is how long to sleep before looking at the wall clock for a
// renewal due at renewAt (the monotonic clock stops while a machine
// sleeps, so long sleeps are cut into maxRenewCheck pieces).
func untilCheck(renewAt time.Time) time.Duration {
	return max(min(renewAt.Sub(time.Now().Round(0)), maxRenewCheck), 0)
}

// disarmLocked stops w's timer and end notification. Called with c.hold.mu
// held, after w stopped being c.watched.
func (c *Client) disarmLocked(w *watch) {
	if w.timer != nil {
		w.timer.Stop()
	}
	w.stopDone()
}

// renewalDue runs on w's timer: it wakes the supervisor once the renewal
// is due by the wall clock, and otherwise sleeps again.
func (c *Client) renewalDue(w *watch) {
	if time.Now().Round(0).Before(w.renewAt) {
		c.hold.mu.Lock()
		if c.watched == w {
			w.timer.Reset(untilCheck(w.renewAt))
		}
		c.hold.mu.Unlock()
		return
	}
	c.wake(w, watchRenewal)
}

// wake ends w and starts a supervisor step for its session, unless w was
// already ended (the other trigger fired first, or Close).
func (c *Client) wake(w *watch, res watchResult) {
	c.hold.mu.Lock()
	defer c.hold.mu.Unlock()
	if c.watched != w || c.hold.phase != phaseSupervising {
		return
	}
	c.watched = nil
	c.disarmLocked(w)
	c.goTrackedLocked(func() { c.step(w.s, res) })
}

// unwatch ends the current watch, if any (Close).
func (c *Client) unwatch() {
	c.hold.mu.Lock()
	if w := c.watched; w != nil {
		c.watched = nil
		c.disarmLocked(w)
	}
	c.hold.mu.Unlock()
}

// rearm watches s again after a step, unless the client stopped
// supervising meanwhile.
func (c *Client) rearm(s *session) {
	c.hold.mu.Lock()
	if c.hold.phase == phaseSupervising && c.runCtx.Err() == nil {
		c.armLocked(s)
	}
	c.hold.mu.Unlock()
}

// step is the supervisor's work when a watched session needs it: renew
// its token in place, or replace it (reconnecting with backoff), then
// watch the session that results. At most one step runs at a time (a
// watch wakes one step, and only a step arms the next watch); it ends
// when the client closes or gives up.
func (c *Client) step(s *session, res watchResult) {
	if c.runCtx.Err() != nil {
		return
	}
	var err error
	if res == watchRenewal {
		var done bool
		if res, done, err = c.renew(s); !done {
			c.rearm(s) // renewed in place: s lives on
			return
		}
	} else {
		err = s.Err()
		if err == nil {
			err = fmt.Errorf("%w: session closed by the transport", domain.ErrNotConnected)
		}
		c.log.Warn("hub session ended", "err", err)
	}
	// sup.failures counts consecutive failed attempts (MaxAttempts);
	// sup.backoff is the exponent of the next delay, reset once a session
	// stayed up for StableAfter, so that a connection that keeps dropping
	// right after it opened still backs off.
	reason := domain.ReasonCommunicationError
	if res == watchRenewal || errors.Is(err, domain.ErrUnauthorized) {
		reason = domain.ReasonExpiredToken
	}
	if res == watchRenewal {
		// A planned renewal: no new operation on the old session, and
		// those in flight get their acknowledgements before it closes.
		c.hold.drain(s, c.opts.DrainTimeout, c.log)
	}
	stable := time.Since(s.connectedAt) >= c.opts.StableAfter
	c.hold.mu.Lock()
	s.draining.Store(true)
	if c.hold.sess == s {
		c.hold.sess = nil
		c.hold.broadcastLocked()
	}
	c.hold.gaveUp = err
	c.setStatusLocked(domain.Status{State: domain.StateReconnecting, Reason: reason, Err: err, Transport: s.transport})
	old := s
	// A drained session closes cleanly before the new one opens; a
	// dead one is closed in the background so that reconnecting does
	// not wait for its transport to wind down.
	if res == watchRenewal || !c.goTrackedLocked(func() { c.closeSession(old) }) {
		c.hold.mu.Unlock()
		c.closeSession(old)
	} else {
		c.hold.mu.Unlock()
	}
	// The first attempt after a renewal, or after the loss of a session
	// that had been stable, is immediate: a single drop is most often
	// cured by reconnecting at once. Later ones back off with jitter.
	immediate := res == watchRenewal || stable
	if stable {
		c.sup.backoff = 0
	}
	ns, err := c.reconnect(&c.sup.failures, &c.sup.backoff, immediate)
	if err != nil {
		if c.runCtx.Err() == nil {
			c.giveUp(err)
		}
		return
	}
	if !stable {
		c.sup.backoff++ // the next quick drop waits longer
	}
	c.rearm(ns)
}

func (c *Client) closeSession(s *session) {
	if err := s.Close(); err != nil {
		c.log.Debug("close session", "err", err)
	}
}

// giveUp ends supervision after an error that retrying cannot fix.
func (c *Client) giveUp(err error) {
	reason := reasonFor(err)
	if errors.Is(err, errGaveUp) {
		reason = domain.ReasonRetryExpired
	}
	c.log.Error("giving up reconnecting", "err", err)
	c.hold.mu.Lock()
	if c.hold.phase == phaseSupervising {
		c.hold.gaveUp = err
		c.hold.phase = phaseGaveUp
		c.hold.broadcastLocked()
		c.setStatusLocked(domain.Status{State: domain.StateClosed, Reason: reason, Err: err})
	}
	c.hold.mu.Unlock()
}

// renew presents a fresh SAS token on s. done is false when the token was
// renewed in place and s lives on.
func (c *Client) renew(s *session) (res watchResult, done bool, err error) {
	issued := time.Now()
	c.hold.mu.Lock()
	a := c.assign
	c.hold.mu.Unlock()
	auth, expiry, err := c.auth(domain.HubResource(a.hub, a.deviceID), "")
	if err != nil {
		return watchRenewal, true, err
	}
	err = s.RenewToken(c.runCtx, auth.SASToken)
	switch {
	case err == nil:
		c.log.Info("SAS token renewed in place")
		s.issued, s.expiry = issued.Round(0), expiry.Round(0)
		return 0, false, nil
	case errors.Is(err, domain.ErrNotSupported):
		c.log.Info("renewing the SAS token by reconnecting")
		return watchRenewal, true, nil
	default:
		c.log.Warn("SAS token renewal failed; reconnecting", "err", err)
		return watchRenewal, true, err
	}
}

// reconnect opens a new session with backoff. It returns an error when the
// client closes, a non-retryable error occurs or MaxAttempts consecutive
// attempts failed.
func (c *Client) reconnect(failures, backoff *int32, immediate bool) (*session, error) {
	for {
		if !immediate {
			if err := c.sleep(c.runCtx, c.opts.Backoff.Delay(int(*backoff), randFloat())); err != nil {
				return nil, err
			}
		}
		immediate = false
		s, err := c.establish(c.runCtx, false)
		if err == nil {
			*failures = 0
			return s, nil
		}
		if c.runCtx.Err() != nil {
			return nil, domain.ErrClosed
		}
		if !domain.IsRetryable(err) {
			return nil, err
		}
		*failures++
		*backoff++
		if c.opts.MaxAttempts > 0 && int(*failures) >= c.opts.MaxAttempts {
			return nil, fmt.Errorf("%w after %d attempts: %w", errGaveUp, *failures, err)
		}
		c.attemptFailed(domain.Status{State: domain.StateReconnecting, Reason: reasonFor(err), Err: err})
	}
}
