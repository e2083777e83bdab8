package faults

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The short fault runs: every connection cut every 2 s (one sender, then
// twenty), the device dropped by the hub every 2 s, and a 10 s token
// renewed by reconnecting. Nothing acknowledged may be lost and, with a
// 5 s context per send, no send may fail. bench/faultbench runs the long
// versions and prints the recovery times.
func TestNoLossNoFailureUnderFaults(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
	}{
		{"KillEvery2s/1Sender", Config{Senders: 1, KillEvery: 2 * time.Second, Duration: 9 * time.Second}},
		{"KillEvery2s/20Senders", Config{Senders: 20, KillEvery: 2 * time.Second, Duration: 9 * time.Second}},
		{"DisconnectEvery2s/20Senders", Config{Senders: 20, DisconnectEvery: 2 * time.Second, Duration: 9 * time.Second}},
		{"TokenTTL10s/20Senders", Config{Senders: 20, TokenTTL: 10 * time.Second, Duration: 20 * time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
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
