package core

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestParseFaultProperties(t *testing.T) {
	cases := []struct {
		name  string
		props map[string]string
		want  Fault
		ok    bool
		err   bool
	}{
		{"none", map[string]string{"a": "b"}, Fault{}, false, false},
		{"kill tcp defaults", map[string]string{PropFaultType: "KillTcp"}, Fault{Kind: FaultKillTCP, Duration: DefaultFaultDuration}, true, false},
		{"graceful, any case", map[string]string{"azIotHub_faultOperationType": "killamqpsession", PropFaultReason: "ByeBye", PropFaultDelay: "2", PropFaultDuration: "7"},
			Fault{Kind: FaultKillAMQPSession, Graceful: true, Delay: 2 * time.Second, Duration: 7 * time.Second}, true, false},
		{"boom", map[string]string{PropFaultType: "InvokeThrottling", PropFaultReason: "boom", PropFaultDuration: "0.5"},
			Fault{Kind: FaultThrottling, Duration: 500 * time.Millisecond}, true, false},
		{"unknown type", map[string]string{PropFaultType: "Explode"}, Fault{}, true, true},
		{"emulator-only type refused", map[string]string{PropFaultType: "RevokeKey"}, Fault{}, true, true},
		{"negative delay", map[string]string{PropFaultType: "KillTcp", PropFaultDelay: "-1"}, Fault{}, true, true},
		{"NaN duration", map[string]string{PropFaultType: "KillTcp", PropFaultDuration: "NaN"}, Fault{}, true, true},
		{"huge duration", map[string]string{PropFaultType: "KillTcp", PropFaultDuration: "1e9"}, Fault{}, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := ParseFaultProperties(tc.props)
			if ok != tc.ok || (err != nil) != tc.err {
				t.Fatalf("ok=%v err=%v, want ok=%v err=%v", ok, err, tc.ok, tc.err)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseFaultProperties(f *testing.F) {
	f.Add("KillTcp", "boom", "1", "2")
	f.Add("x", "", "1e400", "-0")
	f.Fuzz(func(t *testing.T, typ, reason, delay, duration string) {
		fl, ok, err := ParseFaultProperties(map[string]string{PropFaultType: typ, PropFaultReason: reason, PropFaultDelay: delay, PropFaultDuration: duration})
		if !ok {
			t.Fatal("a fault type was given")
		}
		if err == nil && (fl.Delay < 0 || fl.Duration <= 0 || fl.Delay > MaxFaultDelay || fl.Duration > MaxFaultDuration) {
			t.Fatalf("out of bounds: %+v", fl)
		}
	})
}

// TestThrottleShapesThenRefuses uses a throttle window set in the past
// and future directly, so no test waits on the clock.
func TestThrottleShapesThenRefuses(t *testing.T) {
	c := New(Config{})
	defer c.Close()
	if _, err := c.CreateDevice("d"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c.faults.mu.Lock()
	df := c.faults.getLocked("d")
	df.shapeFrom, df.shapeTill, df.throttleUntil = now.Add(-time.Second), now.Add(-time.Millisecond), now.Add(time.Hour)
	c.faults.mu.Unlock()
	if err := c.Admit(context.Background(), "d", OpTwin); !errors.Is(err, ErrThrottled) {
		t.Fatalf("refusal phase: %v", err)
	}
	if err := c.AdmitConnection("d"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("connection in refusal phase: %v", err)
	}
	if err := c.Admit(context.Background(), "other", OpTwin); err != nil {
		t.Fatalf("another device: %v", err)
	}
	// Shaping phase: admitted after a delay, cancelled with ctx.
	c.faults.mu.Lock()
	df.shapeFrom, df.shapeTill = now.Add(-time.Hour), now.Add(time.Hour)
	c.faults.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Admit(ctx, "d", OpTelemetry); !errors.Is(err, context.Canceled) {
		t.Fatalf("shaping with a cancelled ctx: %v", err)
	}
	if err := c.AdmitConnection("d"); err != nil {
		t.Fatalf("connections are admitted while shaping: %v", err)
	}
	c.ClearFaults("d")
	if err := c.Admit(context.Background(), "d", OpTelemetry); err != nil {
		t.Fatalf("after clear: %v", err)
	}
}

func TestQuotaAndAuthFault(t *testing.T) {
	c := New(Config{HubHost: "h"})
	defer c.Close()
	if _, err := c.CreateDevice("d"); err != nil {
		t.Fatal(err)
	}
	if err := c.InjectFault("d", Fault{Kind: FaultMaxMessageQuota, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := c.Admit(context.Background(), "d", OpTelemetry); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("telemetry over quota: %v", err)
	}
	if err := c.Admit(context.Background(), "d", OpTwin); err != nil {
		t.Fatalf("twin over quota: %v", err)
	}
	if err := c.InjectFault("d", Fault{Kind: FaultAuthError, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := c.checkHubAuthFault("d", "k", time.Now().Add(time.Hour)); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("auth fault: %v", err)
	}
	if err := c.InjectFault("d", Fault{Kind: FaultKillTCP, Delay: -time.Second}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative delay: %v", err)
	}
	c.Close()
	if err := c.InjectFault("d", Fault{Kind: FaultKillTCP}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
