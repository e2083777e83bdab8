package app

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/iotc-go/iotc/domain"
)

// holder is the session holder: where the client is in its life and the
// session new operations run on. An operation takes the session with
// wait (waiting while the client connects or reconnects) and gives it
// back with release; drain stops new operations on a session and waits
// for those in flight. Its lock is the client's state lock: Connect, the
// supervisor and Close change phase and session under it.
type holder struct {
	mu      sync.RWMutex  // read-locked only by wait, the hot path of every send
	changed chan struct{} // closed whenever phase or sess changes; nil until someone waits
	sess    *session      // the session new operations use; nil while offline or draining
	// gaveUp is why the supervisor gave up in phaseGaveUp; in the other
	// phases, while no session is open, it is the last failed attempt's
	// error (Err), reset when a session opens.
	gaveUp error

	phase phase // where the client is in its life

	// Guarded by mu too, packed beside phase: Connect's and the
	// supervisor's choices of how to connect next, and Close's stop to new
	// tracked goroutines.
	skipCache bool  // the cached record was refused; provision instead
	untracked bool  // shutdown waits for Client.wg: no new tracked goroutine
	preferred int32 // index of the transport that worked last
}

// broadcastLocked wakes every operation waiting for a session; h.mu is held.
func (h *holder) broadcastLocked() {
	if h.changed != nil {
		close(h.changed)
		h.changed = nil // made again by the next waiter: a client nobody waits on holds no channel
	}
}

// errNobodyConnects: no session is open and none is coming.
var errNobodyConnects = fmt.Errorf("%w: the client is not connected (call Connect)", domain.ErrNotConnected)

// wait returns the session a new operation runs on, counted in flight
// until release. While the client is connecting or reconnecting it waits
// for the next session (other than avoid, a session an operation just
// failed on) within ctx. It fails at once after Close (domain.ErrClosed),
// after the client gave up (domain.ErrClosed wrapping why), when nothing
// is connecting (domain.ErrNotConnected), or with failFast; when ctx
// ends first the error wraps both domain.ErrNotConnected and ctx's error.
func (h *holder) wait(ctx context.Context, avoid *session, failFast bool) (*session, error) {
	for {
		h.mu.RLock()
		switch h.phase {
		case phaseClosed:
			h.mu.RUnlock()
			return nil, domain.ErrClosed
		case phaseGaveUp:
			err := h.gaveUp
			h.mu.RUnlock()
			return nil, fmt.Errorf("%w: %w", domain.ErrClosed, err)
		case phaseIdle:
			h.mu.RUnlock()
			return nil, errNobodyConnects
		}
		if s := h.sess; s != nil && s != avoid && !s.draining.Load() {
			s.ops.Add(1)
			h.mu.RUnlock()
			return s, nil
		}
		if failFast {
			h.mu.RUnlock()
			return nil, fmt.Errorf("%w: the client is reconnecting", domain.ErrNotConnected)
		}
		ch := h.changed
		h.mu.RUnlock()
		if ch == nil {
			h.mu.Lock()
			if h.changed == nil {
				h.changed = make(chan struct{})
			}
			h.mu.Unlock()
			continue // look again: the state may have changed meanwhile
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: waiting for a connection: %w", domain.ErrNotConnected, ctx.Err())
		}
	}
}

// release ends an operation started by wait.
func (h *holder) release(s *session) {
	if s.ops.Add(-1) != 0 || !s.draining.Load() {
		return
	}
	h.mu.Lock()
	if s.idle != nil && s.ops.Load() == 0 {
		close(s.idle)
		s.idle = nil
	}
	h.mu.Unlock()
}

// drain stops new operations on s and waits until those in flight ended,
// up to timeout or until the client closes.
func (h *holder) drain(s *session, timeout time.Duration, log *slog.Logger) {
	h.mu.Lock()
	s.draining.Store(true)
	if h.sess == s {
		h.sess = nil
		h.broadcastLocked()
	}
	if s.ops.Load() == 0 {
		h.mu.Unlock()
		return
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	n := s.ops.Load()
	h.mu.Unlock()
	log.Debug("waiting for operations in flight before closing the session", "count", n)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		log.Warn("operations still in flight after the drain timeout; closing the session", "timeout", timeout)
	case <-s.Done():
	}
}
