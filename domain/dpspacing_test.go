package domain

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestDPSPacerKeepsTheRate runs a poll loop on a simulated clock with
// random retry-after values (a fixed source) and checks, from the history
// alone, that no 10 s window holds more than 5 requests, that every wait
// honours the retry-after, and that no wait is longer than needed.
func TestDPSPacerKeepsTheRate(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for run := range 50 {
		var p DPSPacer
		now := time.Unix(1767225600, 0)
		var sent []time.Time
		for i := range 60 {
			want := time.Duration(rng.IntN(4000)) * time.Millisecond
			if run%5 == 0 {
				want = 0 // a service that always says retry-after=0
			}
			w := p.Wait(now, want)
			// What the rules allow, from the history only.
			need := want
			if len(sent) >= DPSRequestLimit {
				need = max(need, sent[len(sent)-DPSRequestLimit].Add(DPSRequestWindow).Sub(now))
			}
			if w != need {
				t.Fatalf("run %d request %d: Wait = %v, want %v (retry-after %v)", run, i, w, need, want)
			}
			now = now.Add(w)
			p.Sent(now)
			sent = append(sent, now)
		}
		for i := DPSRequestLimit; i < len(sent); i++ {
			if gap := sent[i].Sub(sent[i-DPSRequestLimit]); gap < DPSRequestWindow {
				t.Fatalf("run %d: requests %d..%d within %v", run, i-DPSRequestLimit, i, gap)
			}
		}
	}
}

func TestDPSPacerFirstRequestsAndNegativeWant(t *testing.T) {
	var p DPSPacer
	now := time.Unix(100, 0)
	for i := range DPSRequestLimit {
		if w := p.Wait(now, 0); w != 0 {
			t.Fatalf("request %d: Wait = %v, want 0 (under the limit)", i, w)
		}
		p.Sent(now)
	}
	if w := p.Wait(now, 0); w != DPSRequestWindow {
		t.Fatalf("sixth request at once: Wait = %v, want %v", w, DPSRequestWindow)
	}
	if w := p.Wait(now.Add(4*time.Second), 0); w != 6*time.Second {
		t.Fatalf("sixth request 4 s later: Wait = %v, want 6s", w)
	}
	if w := p.Wait(now.Add(time.Minute), time.Second); w != time.Second {
		t.Fatalf("a minute later: Wait = %v, want the retry-after 1s", w)
	}
	var q DPSPacer
	if w := q.Wait(now, -time.Second); w != 0 {
		t.Fatalf("negative want: Wait = %v", w)
	}
}

func TestDPSRetryWait(t *testing.T) {
	tests := []struct {
		status     int
		retryAfter time.Duration
		want       time.Duration
	}{
		{202, 3 * time.Second, 3 * time.Second},
		{202, 0, 0},
		{202, -1, 2 * time.Second},                 // absent: the SDKs' default
		{202, time.Hour, 5 * time.Minute},          // absurd: the C SDK's cap
		{200, 7 * time.Second, 7 * time.Second},    // (a final answer is not waited on)
		{429, 0, time.Second},                      // throttled: at least 1 s
		{429, 500 * time.Millisecond, time.Second}, //
		{429, 4 * time.Second, 4 * time.Second},    //
		{429, -1, 2 * time.Second},                 //
		{503, 0, time.Second},                      // 5xx: as 429
		{500, 10 * time.Minute, 5 * time.Minute},   //
		{404, 0, 0},                                // (a hard error is not retried)
		{202, 1500 * time.Millisecond, 1500 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := DPSRetryWait(tt.status, tt.retryAfter); got != tt.want {
			t.Errorf("DPSRetryWait(%d, %v) = %v, want %v", tt.status, tt.retryAfter, got, tt.want)
		}
	}
}
