package domain

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"
)

// wantCeiling is min(cap, base*2^n), computed with big integers so that
// it overflows nowhere (independent of Backoff.Ceiling's loop).
func wantCeiling(base, cap time.Duration, n int) time.Duration {
	v := new(big.Int).Lsh(big.NewInt(int64(base)), uint(max(n, 0)))
	if v.Cmp(big.NewInt(int64(cap))) > 0 {
		return cap
	}
	return time.Duration(v.Int64())
}

// TestBackoffJitterBounds draws many delays with a fixed random source for
// a grid of bases, caps and attempts, and checks each delay from below and
// from above: r*ceiling (to the nanosecond), inside [0, ceiling), spread
// over the whole range. A delay that is always zero, always 0.999 of the
// ceiling, or ignores r fails.
func TestBackoffJitterBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	bases := []time.Duration{time.Millisecond, 100 * time.Millisecond, time.Second, 3 * time.Second}
	caps := []time.Duration{time.Second, 10 * time.Second, 2 * time.Minute, 24 * time.Hour, math.MaxInt64}
	const draws = 2000
	for _, base := range bases {
		for _, cp := range caps {
			if cp < base {
				continue
			}
			b := Backoff{Base: base, Cap: cp}
			for _, n := range []int{0, 1, 2, 5, 10, 40, 62, 63, 64, 1000, 1 << 30} {
				ceil := wantCeiling(base, cp, n)
				if got := b.Ceiling(n); got != ceil {
					t.Fatalf("Backoff{%v, %v}.Ceiling(%d) = %v, want %v", base, cp, n, got, ceil)
				}
				lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
				var sum float64
				for range draws {
					r := rng.Float64()
					d := b.Delay(n, r)
					want := r * float64(ceil)
					// One nanosecond of slack for the float rounding.
					if float64(d) < want-1 || float64(d) > want+1 {
						t.Fatalf("Backoff{%v, %v}.Delay(%d, %v) = %v, want %v (r × ceiling %v)", base, cp, n, r, d, time.Duration(want), ceil)
					}
					if d < 0 || d >= ceil {
						t.Fatalf("Backoff{%v, %v}.Delay(%d, %v) = %v, outside [0, %v)", base, cp, n, r, d, ceil)
					}
					lo, hi = min(lo, d), max(hi, d)
					sum += float64(d) / float64(ceil)
				}
				// Uniform over [0, ceiling): with 2000 draws the smallest is
				// below 2 % and the largest above 98 % of the ceiling, and the
				// mean is near one half (binomial and CLT bounds: these fail
				// far less than once in 10^9 for a correct implementation; the
				// source is fixed anyway).
				if float64(lo) > 0.02*float64(ceil) || float64(hi) < 0.98*float64(ceil) {
					t.Errorf("Backoff{%v, %v}.Delay(%d, ·) ranges over [%v, %v] of [0, %v)", base, cp, n, lo, hi, ceil)
				}
				if mean := sum / draws; mean < 0.45 || mean > 0.55 {
					t.Errorf("Backoff{%v, %v}.Delay(%d, ·) has mean %.3f of the ceiling, want about 0.5", base, cp, n, mean)
				}
			}
		}
	}
}

// TestBackoffDelayEdges checks r at and beyond the ends of [0, 1).
func TestBackoffDelayEdges(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: 8 * time.Second}
	tests := []struct {
		r    float64
		want time.Duration
	}{
		{0, 0},
		{math.SmallestNonzeroFloat64, 0},
		{0.25, time.Second},
		{math.Nextafter(1, 0), 4*time.Second - 1},
		{1, 4 * time.Second},
		{7, 4 * time.Second},
		{math.Inf(1), 4 * time.Second},
		{-0.5, 0},
		{math.Inf(-1), 0},
		{math.NaN(), 0},
	}
	for _, tt := range tests {
		if got := b.Delay(2, tt.r); got != tt.want {
			t.Errorf("Delay(2, %v) = %v, want %v", tt.r, got, tt.want)
		}
	}
	// Defaults: 1 s doubling to 2 minutes.
	for n, want := range map[int]time.Duration{0: time.Second, 1: 2 * time.Second, 6: 64 * time.Second, 7: 2 * time.Minute, 100: 2 * time.Minute, -3: time.Second} {
		if got := (Backoff{}).Ceiling(n); got != want {
			t.Errorf("default Ceiling(%d) = %v, want %v", n, got, want)
		}
	}
}
