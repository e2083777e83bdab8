package fleet

import (
	"math"
	"sync/atomic"
	"time"
)

// histBuckets and histGrowth size the latency histogram: bucket i holds
// durations in [histBase*histGrowth^i, histBase*histGrowth^(i+1)), from
// 1 µs up to beyond 10 minutes, so a percentile is within 2 % of the truth.
const (
	histBase    = time.Microsecond
	histGrowth  = 1.02
	histBuckets = 1100
)

// Histogram counts durations in logarithmic buckets; it is safe for
// concurrent use and allocates nothing per observation.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64
}

func bucketOf(d time.Duration) int {
	if d < histBase {
		return 0
	}
	i := int(math.Log(float64(d)/float64(histBase)) / math.Log(histGrowth))
	return min(max(i, 0), histBuckets-1)
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	h.counts[bucketOf(d)].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// HistSnapshot is a copy of a Histogram's counts.
type HistSnapshot struct {
	counts [histBuckets]uint64
	// Max is the largest duration observed (since the histogram started,
	// also in a Sub).
	Max time.Duration
}

// Snapshot copies the counts.
func (h *Histogram) Snapshot() HistSnapshot {
	var s HistSnapshot
	for i := range h.counts {
		s.counts[i] = h.counts[i].Load()
	}
	s.Max = time.Duration(h.max.Load())
	return s
}

// Sub returns the observations of s not in the earlier snapshot prev.
func (s HistSnapshot) Sub(prev HistSnapshot) HistSnapshot {
	out := HistSnapshot{Max: s.Max}
	for i := range s.counts {
		out.counts[i] = s.counts[i] - prev.counts[i]
	}
	return out
}

// Count is the number of observations.
func (s HistSnapshot) Count() uint64 {
	var n uint64
	for _, c := range s.counts {
		n += c
	}
	return n
}

// Quantile returns the q-quantile (0 < q <= 1), as the geometric middle
// of its bucket (at most Max), or 0 without observations.
func (s HistSnapshot) Quantile(q float64) time.Duration {
	n := s.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			lo := float64(histBase) * math.Pow(histGrowth, float64(i))
			mid := time.Duration(lo * math.Sqrt(histGrowth))
			if s.Max > 0 && mid > s.Max {
				return s.Max
			}
			return mid
		}
	}
	return s.Max
}
