package fleet

import (
	"context"
	"sync"
	"time"
)

// Limiter lets at most one caller through every 1/rate: callers are
// spaced evenly, in the order they asked, with no burst. A nil *Limiter or
// a rate <= 0 never waits. It is safe for concurrent use.
type Limiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

// NewLimiter admits perSecond callers per second; perSecond <= 0 returns nil
// (no limit).
func NewLimiter(perSecond float64) *Limiter {
	if perSecond <= 0 {
		return nil
	}
	return &Limiter{interval: time.Duration(float64(time.Second) / perSecond)}
}

// Wait returns when the caller may go, or ctx's error if ctx ends first
// (the slot it held is then given back only if no later caller took one).
func (l *Limiter) Wait(ctx context.Context) error {
	if l == nil {
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	now := time.Now()
	at := l.next
	if at.Before(now) {
		at = now
	}
	l.next = at.Add(l.interval)
	l.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		if l.next.Equal(at.Add(l.interval)) {
			l.next = at
		}
		l.mu.Unlock()
		return ctx.Err()
	}
}
