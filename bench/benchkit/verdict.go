package benchkit

import (
	"fmt"
	"math"
)

// Targets are the limits an SDK path must meet against its raw baseline
// (issue 17): ratios for RSS, heap and connect-all time, a difference for
// goroutines per device.
type Targets struct {
	RSS, Heap, ConnectAll float64 // at most this times the baseline's
	Goroutines            float64 // at most the baseline's plus this
}

// DefaultTargets are issue 17's: RSS and heap at most 1.15x raw, goroutines
// at most raw + 2, connect-all at most 1.1x.
var DefaultTargets = Targets{RSS: 1.15, Heap: 1.15, ConnectAll: 1.1, Goroutines: 2}

// verdict is "ok" or "over".
func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "over"
}

// RatioVerdict formats v/base with two decimals and "ok" when that printed
// ratio is at most limit, else "over": "1.51x over". A non-positive base
// gives "n/a" (no ratio to speak of).
func RatioVerdict(v, base, limit float64) string {
	if base <= 0 || math.IsNaN(v) || math.IsNaN(base) {
		return "n/a"
	}
	r := math.Round(v/base*100) / 100
	return fmt.Sprintf("%.2fx %s", r, verdict(r <= limit))
}

// DiffVerdict formats v-base with a sign and one decimal and "ok" when that
// printed difference is at most limit, else "over": "+5.0 over".
func DiffVerdict(v, base, limit float64) string {
	if math.IsNaN(v) || math.IsNaN(base) {
		return "n/a"
	}
	d := math.Round((v-base)*10) / 10
	if d == 0 {
		d = 0 // no "-0.0"
	}
	return fmt.Sprintf("%+.1f %s", d, verdict(d <= limit))
}

// KiB formats bytes as KiB with one decimal.
func KiB(bytes float64) string { return fmt.Sprintf("%.1f KiB", bytes/1024) }

// MiB formats bytes as MiB with one decimal.
func MiB(bytes float64) string { return fmt.Sprintf("%.1f MiB", bytes/(1<<20)) }
