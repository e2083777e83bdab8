package faults

import (
	"context"
	"flag"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/internal/longtest"
)

// TestMain runs up to 8 tests at once unless -parallel says otherwise:
// the fault tests spend their time waiting for faults and reconnects, not
// on the CPU, so the default of one per CPU only makes them queue.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", "8")
	}
	goleak.VerifyTestMain(m)
}

// The short fault runs: every connection cut every 2 s (one sender, then
// twenty), the device dropped by the hub every 2 s, and a 10 s token
// renewed by reconnecting. Nothing acknowledged may be lost and, with a
// 5 s context per send, no send may fail. bench/faultbench runs the long
// versions and prints the recovery times.
func TestNoLossNoFailureUnderFaults(t *testing.T) {
	t.Parallel() // the top-level tests wait on faults together
	cases := []struct {
		name string
		cfg  Config
		long bool // only with IOTC_LONG_TESTS=1 (internal/longtest)
	}{
		{"KillEvery2s/1Sender", Config{Senders: 1, KillEvery: 2 * time.Second, Duration: 9 * time.Second}, false},
		{"KillEvery2s/20Senders", Config{Senders: 20, KillEvery: 2 * time.Second, Duration: 9 * time.Second}, true},
		{"DisconnectEvery2s/20Senders", Config{Senders: 20, DisconnectEvery: 2 * time.Second, Duration: 9 * time.Second}, true},
		{"TokenTTL10s/20Senders", Config{Senders: 20, TokenTTL: 10 * time.Second, Duration: 20 * time.Second}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long {
				longtest.Require(t)
			}
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := Run(ctx, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res)
			if err := res.Check(); err != nil {
				t.Fatal(err)
			}
			if tc.cfg.KillEvery > 0 || tc.cfg.DisconnectEvery > 0 {
				if res.Faults == 0 || res.Reconnects == 0 {
					t.Fatalf("no fault took effect: %v", res)
				}
			}
			if tc.cfg.TokenTTL > 0 && res.Reconnects == 0 {
				t.Fatalf("the token was never renewed: %v", res)
			}
		})
	}
}
