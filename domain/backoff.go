package domain

import (
	"fmt"
	"time"
)

// Default reconnect backoff: the first retry waits up to 1 s, doubling to
// at most 2 minutes; a connection that stayed up for 1 minute resets it.
const (
	DefaultBackoffBase   = time.Second
	DefaultBackoffCap    = 2 * time.Minute
	DefaultBackoffStable = time.Minute
)

// Backoff is exponential backoff with full jitter: the delay before retry
// n (0-based) is uniform in [0, min(Cap, Base*2^n)).
type Backoff struct {
	Base time.Duration // first ceiling; 0 means DefaultBackoffBase
	Cap  time.Duration // largest ceiling; 0 means DefaultBackoffCap
}

// Validate returns an error wrapping ErrInvalidConfig for negative values
// or a cap below the base.
func (b Backoff) Validate() error {
	b = b.withDefaults()
	if b.Base < 0 || b.Cap < 0 || b.Cap < b.Base {
		return fmt.Errorf("%w: backoff base %v, cap %v", ErrInvalidConfig, b.Base, b.Cap)
	}
	return nil
}

func (b Backoff) withDefaults() Backoff {
	if b.Base == 0 {
		b.Base = DefaultBackoffBase
	}
	if b.Cap == 0 {
		b.Cap = DefaultBackoffCap
	}
	return b
}

// Ceiling is the upper bound of the delay before retry n.
func (b Backoff) Ceiling(n int) time.Duration {
	b = b.withDefaults()
	if n < 0 {
		n = 0
	}
	d := b.Base
	for i := 0; i < n && d < b.Cap; i++ {
		if d > b.Cap/2 {
			return b.Cap // doubling would pass the cap (or overflow)
		}
		d *= 2
	}
	return min(d, b.Cap)
}

// Delay is the delay before retry n given a uniform random number r in
// [0, 1): r*Ceiling(n). Out-of-range r is clamped (NaN counts as 0), so
// the delay is never negative nor above the ceiling.
func (b Backoff) Delay(n int, r float64) time.Duration {
	c := b.Ceiling(n)
	switch {
	case !(r > 0): // zero, negative or NaN
		return 0
	case r >= 1:
		return c
	}
	// r < 1, so the product is below 2^63 even for the largest ceiling.
	return min(time.Duration(r*float64(c)), c)
}
