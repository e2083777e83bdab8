package faults

import (
	"context"
	"testing"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/internal/longtest"
)

// TestAMQPNoLossNoFailureUnderFaults runs the short fault matrix over
// AMQP. There a 10 s token is renewed in place: no reconnect at all.
func TestAMQPNoLossNoFailureUnderFaults(t *testing.T) {
	t.Parallel() // the top-level tests wait on faults together
	cases := []struct {
		name string
		cfg  Config
		long bool // only with IOTC_LONG_TESTS=1 (internal/longtest)
	}{
		{"KillEvery2s/20Senders", Config{Senders: 20, KillEvery: 2 * time.Second, Duration: 9 * time.Second}, false},
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
			tc.cfg.Transport = iotc.AMQP
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
			if tc.cfg.TokenTTL > 0 && res.Reconnects != 0 {
				t.Fatalf("the token was renewed by reconnecting %d times, want in place: %v", res.Reconnects, res)
			}
		})
	}
}
