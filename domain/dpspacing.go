package domain

import "time"

// DPS request pacing. DPS allows a device DPSRequestLimit requests in
// DPSRequestWindow (its quota for polling operations: 5 per 10 s per
// device); a device that sends more is throttled. A transient answer (429
// or 5xx) is retried after its retry-after, but never sooner than
// MinTransientRetry (the Azure IoT C SDK's lower clamp, PROV_GET_THROTTLE_TIME),
// so that a throttled service is not hammered when it sends retry-after=0.
const (
	DPSRequestLimit   = 5
	DPSRequestWindow  = 10 * time.Second
	MinTransientRetry = time.Second
)

// DPSRetryWait is how long to wait, after a DPS answer with status and
// retryAfter (negative when absent), before the next request: the
// retry-after clamped by ClampPollInterval, and at least MinTransientRetry
// after a 429 or 5xx.
func DPSRetryWait(status int, retryAfter time.Duration) time.Duration {
	d := ClampPollInterval(retryAfter)
	if status == 429 || status >= 500 {
		d = max(d, MinTransientRetry)
	}
	return d
}

// DPSPacer keeps the requests of one registration within DPS's rate: at
// most DPSRequestLimit in any DPSRequestWindow. The zero value is ready.
// It is not safe for concurrent use (one registration runs one loop).
type DPSPacer struct {
	sent [DPSRequestLimit]time.Time // ring of the last send times
	n    int                        // requests recorded
}

// Sent records a request sent at t.
func (p *DPSPacer) Sent(t time.Time) {
	p.sent[p.n%DPSRequestLimit] = t
	p.n++
}

// Wait is how long to wait from now before the next request, given the
// wait the service asked for: the larger of want and the time until the
// oldest of the last DPSRequestLimit requests leaves the window.
func (p *DPSPacer) Wait(now time.Time, want time.Duration) time.Duration {
	want = max(want, 0)
	if p.n < DPSRequestLimit {
		return want
	}
	oldest := p.sent[p.n%DPSRequestLimit]
	return max(want, oldest.Add(DPSRequestWindow).Sub(now))
}
