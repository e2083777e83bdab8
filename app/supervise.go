package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/iotc-go/iotc/domain"
)

// watchResult says why watch returned.
type watchResult int

const (
	watchClosed  watchResult = iota // the client is closing
	watchDied                       // the session ended
	watchRenewal                    // the token must be renewed by reconnecting
)

// supervise is the single reconnect loop. It runs from the first
// successful Connect until Close, or until it gives up.
func (c *Client) supervise(s *session) {
	defer c.wg.Done()
	// failures counts consecutive failed attempts (MaxAttempts); backoff is
	// the exponent of the next delay, reset once a session stayed up for
	// StableAfter, so that a connection that keeps dropping right after it
	// opened still backs off.
	failures, backoff := 0, 0
	for {
		res, err := c.watch(s)
		if res == watchClosed {
			return
		}
		reason := domain.ReasonCommunicationError
		if res == watchRenewal || errors.Is(err, domain.ErrUnauthorized) {
			reason = domain.ReasonExpiredToken
		}
		if res == watchRenewal {
			// A planned renewal: no new operation on the old session, and
			// those in flight get their acknowledgements before it closes.
			c.drain(s, c.opts.DrainTimeout)
		}
		stable := time.Since(s.connectedAt) >= c.opts.StableAfter
		c.mu.Lock()
		s.draining = true
		if c.sess == s {
			c.sess = nil
			c.broadcastLocked()
		}
		c.setStatusLocked(domain.ConnectionStatus{State: domain.StateReconnecting, Reason: reason, Err: err, Transport: s.transport})
		old := s
		// A drained session closes cleanly before the new one opens; a
		// dead one is closed in the background so that reconnecting does
		// not wait for its transport to wind down.
		if res == watchRenewal || !c.goTrackedLocked(func() { c.closeSession(old) }) {
			c.mu.Unlock()
			c.closeSession(old)
		} else {
			c.mu.Unlock()
		}
		// The first attempt after a renewal, or after the loss of a session
		// that had been stable, is immediate: a single drop is most often
		// cured by reconnecting at once. Later ones back off with jitter.
		immediate := res == watchRenewal || stable
		if stable {
			backoff = 0
		}
		ns, err := c.reconnect(&failures, &backoff, immediate)
		if err != nil {
			if c.runCtx.Err() == nil {
				c.giveUp(err)
			}
			return
		}
		if !stable {
			backoff++ // the next quick drop waits longer
		}
		s = ns
	}
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
	c.mu.Lock()
	if c.phase == phaseSupervising {
		c.gaveUp = err
		c.phase = phaseGaveUp
		c.broadcastLocked()
		c.setStatusLocked(domain.ConnectionStatus{State: domain.StateClosed, Reason: reason, Err: err})
	}
	c.mu.Unlock()
}

// watch waits until s ends, its token is due for renewal over a transport
// that cannot renew in place, or the client closes. A token is renewed in
// place (RenewToken) when the transport can.
func (c *Client) watch(s *session) (watchResult, error) {
	for {
		var timerC <-chan time.Time
		var timer *time.Timer
		var renewAt time.Time
		if !s.expiry.IsZero() {
			renewAt = s.issued.Add(time.Duration(float64(s.expiry.Sub(s.issued)) * renewFraction))
			d := min(renewAt.Sub(time.Now().Round(0)), maxRenewCheck)
			timer = time.NewTimer(max(d, 0))
			timerC = timer.C
		}
		fired := false
		select {
		case <-c.runCtx.Done():
		case <-s.Done():
		case <-timerC:
			fired = true
		}
		if timer != nil {
			timer.Stop()
		}
		if c.runCtx.Err() != nil {
			return watchClosed, nil
		}
		if !fired {
			err := s.Err()
			if err == nil {
				err = fmt.Errorf("%w: session closed by the transport", domain.ErrNotConnected)
			}
			c.log.Warn("hub session ended", "err", err)
			return watchDied, err
		}
		if time.Now().Round(0).Before(renewAt) {
			continue // woke up only to look at the wall clock again
		}
		if res, done, err := c.renew(s); done {
			return res, err
		}
	}
}

// renew presents a fresh SAS token on s. done is false when the token was
// renewed in place and s lives on.
func (c *Client) renew(s *session) (res watchResult, done bool, err error) {
	issued := time.Now()
	c.mu.Lock()
	a := c.assign
	c.mu.Unlock()
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
func (c *Client) reconnect(failures, backoff *int, immediate bool) (*session, error) {
	for {
		if !immediate {
			if err := c.sleep(c.runCtx, c.opts.Backoff.Delay(*backoff, randFloat())); err != nil {
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
		if c.opts.MaxAttempts > 0 && *failures >= c.opts.MaxAttempts {
			return nil, fmt.Errorf("%w after %d attempts: %w", errGaveUp, *failures, err)
		}
		c.setStatus(domain.ConnectionStatus{State: domain.StateReconnecting, Reason: reasonFor(err), Err: err})
	}
}
