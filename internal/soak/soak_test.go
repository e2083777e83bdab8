package soak

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/internal/longtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTallyCounts feeds the tally a known history and checks every count:
// an acknowledged message received once, one received twice, one never
// received (lost), a failed send that arrived anyway (extra), a failed one
// that did not, and an accepted enqueue delivered after a fault.
func TestTallyCounts(t *testing.T) {
	tl := NewTally(2)
	t0 := time.Now()
	boom := errors.New("boom")
	tl.Sent(0, PathSend, 1, t0, nil)
	tl.Sent(0, PathSend, 2, t0, nil)
	tl.Sent(0, PathSend, 3, t0, nil)
	tl.Sent(1, PathSend, 1, t0, boom)
	tl.Sent(1, PathSend, 2, t0, boom)
	tl.Sent(1, PathEnqueue, 1, t0, nil)
	tl.Received(0, PathSend, 1, "a")
	tl.Received(0, PathSend, 2, "b")
	tl.Received(0, PathSend, 2, "b") // resent with its id: at least once
	tl.Received(1, PathSend, 1, "c") // failed, yet it arrived
	if got := tl.Missing(); got != 2 {
		t.Fatalf("Missing = %d, want 2 (send 0/3 and enqueue 1/1)", got)
	}
	tl.Received(1, PathEnqueue, 1, "d")
	tl.Received(1, PathEnqueue, 1, "e") // twice, under another id: a bug
	sent, acked, failed, received := tl.Snapshot()
	if sent != 6 || acked != 4 || failed != 2 || received != 4 {
		t.Fatalf("Snapshot = %d %d %d %d, want 6 4 2 4", sent, acked, failed, received)
	}
	s := tl.Summarize()
	want := Counts{Sent: 5, Acked: 3, Failed: 2, Received: 3, Lost: 1, Duplicated: 1, Extra: 1}
	if got := s.ByPath[PathSend]; got != want {
		t.Errorf("send counts = %+v, want %+v", got, want)
	}
	wantE := Counts{Sent: 1, Acked: 1, Received: 1, Duplicated: 1, NewID: 1}
	if got := s.ByPath[PathEnqueue]; got != wantE {
		t.Errorf("enqueue counts = %+v, want %+v", got, wantE)
	}
	if s.Total.Sent != 6 || s.Total.Lost != 1 || s.Total.Duplicated != 2 || s.Total.NewID != 1 {
		t.Errorf("total = %+v", s.Total)
	}
	if len(s.LostSample) != 1 || s.LostSample[0] != (LostMessage{0, PathSend, 3}) {
		t.Errorf("lost sample = %+v", s.LostSample)
	}
	if len(s.DupSample) != 2 || s.DupSample[0] != (LostMessage{0, PathSend, 2}) || s.DupSample[1] != (LostMessage{1, PathEnqueue, 1}) {
		t.Errorf("duplicate sample = %+v", s.DupSample)
	}
	if s.Errors["send: boom"] != 2 {
		t.Errorf("errors = %v", s.Errors)
	}
}

// TestTallyRecovery checks that a fault is recovered only once every
// device acknowledged a SendTelemetry started after it, that enqueues and
// earlier sends do not count, and that an open fault is unrecovered.
func TestTallyRecovery(t *testing.T) {
	tl := NewTally(2)
	before := time.Now().Add(-time.Second)
	at := time.Now()
	tl.Fault(FaultKillTCP, at, time.Millisecond)
	after := at.Add(time.Millisecond)
	tl.Sent(0, PathSend, 1, before, nil)   // started before the fault
	tl.Sent(0, PathEnqueue, 1, after, nil) // not a send
	tl.Sent(0, PathSend, 2, after, errors.New("x"))
	tl.Sent(0, PathSend, 3, after, nil)
	if rs := tl.Summarize().Recoveries; len(rs) != 1 || rs[0].Recovered {
		t.Fatalf("recovered with device 1 silent: %+v", rs)
	}
	tl.Sent(1, PathSend, 1, after, nil)
	tl.Fault(FaultRestart, time.Now(), 2*time.Millisecond)
	rs := tl.Summarize().Recoveries
	if len(rs) != 2 || !rs[0].Recovered || rs[0].Kind != FaultKillTCP || rs[0].Took <= 0 || rs[1].Recovered {
		t.Fatalf("recoveries = %+v", rs)
	}
	if MaxInject(rs, "") != 2*time.Millisecond || MaxInject(rs, FaultKillTCP) != time.Millisecond {
		t.Fatalf("MaxInject = %v, %v", MaxInject(rs, ""), MaxInject(rs, FaultKillTCP))
	}
	n, p50, mx, un := RecoveryStats(rs, "")
	if n != 1 || p50 != rs[0].Took || mx != rs[0].Took || un != 1 {
		t.Fatalf("RecoveryStats = %d %v %v %d", n, p50, mx, un)
	}
	if n, _, _, un := RecoveryStats(rs, FaultThrottle); n != 0 || un != 0 {
		t.Fatalf("RecoveryStats(throttle) = %d, %d", n, un)
	}
}

func TestRecoveryStatsMedian(t *testing.T) {
	var rs []Recovery
	for _, s := range []int{5, 1, 3, 2, 4} {
		rs = append(rs, Recovery{Kind: "k", Took: time.Duration(s) * time.Second, Recovered: true})
	}
	if n, p50, mx, _ := RecoveryStats(rs, "k"); n != 5 || p50 != 3*time.Second || mx != 5*time.Second {
		t.Fatalf("RecoveryStats = %d %v %v", n, p50, mx)
	}
}

func TestParseSeq(t *testing.T) {
	for _, tc := range []struct {
		in   string
		p    Path
		n    int
		okay bool
	}{
		{"s1", PathSend, 1, true}, {"e42", PathEnqueue, 42, true},
		{"", 0, 0, false}, {"s", 0, 0, false}, {"x1", 0, 0, false}, {"s0", 0, 0, false}, {"s-1", 0, 0, false}, {"sx", 0, 0, false},
	} {
		p, n, ok := ParseSeq(tc.in)
		if ok != tc.okay || (ok && (p != tc.p || n != tc.n)) {
			t.Errorf("ParseSeq(%q) = %v %d %v", tc.in, p, n, ok)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Run(ctx, Config{Transport: iotc.Transport(9)}); !errors.Is(err, ErrConfig) {
		t.Errorf("bad transport: %v", err)
	}
	if _, err := Run(ctx, Config{Faults: []string{"meteor"}}); !errors.Is(err, ErrConfig) {
		t.Errorf("bad fault: %v", err)
	}
}

// TestShortSoak runs every transport for a few seconds with a few devices
// and every fault kind once (the restart included), and requires that
// nothing acknowledged was lost, nothing failed, both paths delivered and
// every fault recovered.
func TestShortSoak(t *testing.T) {
	for _, tr := range []iotc.Transport{iotc.MQTT, iotc.MQTTWebSockets, iotc.AMQP, iotc.AMQPWebSockets} {
		t.Run(tr.String(), func(t *testing.T) {
			if tr != iotc.MQTT {
				longtest.Require(t) // the default run soaks MQTT only
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var progress bytes.Buffer
			rep, err := Run(ctx, Config{
				Transport: tr, Devices: 3, Duration: 12 * time.Second, Interval: 200 * time.Millisecond,
				FaultEvery: 2 * time.Second, ThrottleFor: time.Second, DataDir: t.TempDir(),
				Progress: &progress, ProgressEvery: 3 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := rep.Write(&out); err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + out.String())
			if !strings.Contains(progress.String(), "["+tr.String()+"]") {
				t.Errorf("no progress line: %q", progress.String())
			}
			for _, p := range []Path{PathSend, PathEnqueue} {
				c := rep.ByPath[p]
				if c.Acked == 0 || c.Received == 0 {
					t.Errorf("%s delivered nothing: %+v", p, c)
				}
			}
			if rep.Total.Lost != 0 || rep.Total.NewID != 0 || rep.ByPath[PathEnqueue].Failed != 0 {
				t.Errorf("lost, or failed an enqueue: %+v", rep.Total)
			}
			// The one failure a send may see: over AMQP the emulator
			// refuses a throttled message (429 server-busy) and the SDK
			// returns that to the caller instead of retrying it.
			for e := range rep.Errors {
				if tr == iotc.MQTT || tr == iotc.MQTTWebSockets || !strings.Contains(e, "status 429") {
					t.Errorf("unexpected send failure over %v: %s", tr, e)
				}
			}
			if rep.Restarts == 0 {
				t.Errorf("the emulator never restarted")
			}
			kinds := map[string]bool{}
			for _, rc := range rep.Recoveries {
				kinds[rc.Kind] = true
				// Only a fault in the last seconds may find the run over.
				if !rc.Recovered && rc.At.Before(rep.Ended.Add(-3*time.Second)) {
					t.Errorf("fault %s at %v never recovered", rc.Kind, rc.At)
				}
			}
			for _, k := range DefaultMix {
				if !kinds[k] {
					t.Errorf("fault %s never injected (%v)", k, kinds)
				}
			}
			if rep.OutboxLeft != 0 {
				t.Errorf("outbox left %d", rep.OutboxLeft)
			}
		})
	}
}
