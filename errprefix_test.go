package iotc_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/iotc-go/iotc"
)

// TestEveryErrorSaysIotcOnce: the errors the client returns, whether made
// by the client, a sentinel returned as it is or an encoding error, start
// with "iotc: " and say it once, and still match their sentinels.
func TestEveryErrorSaysIotcOnce(t *testing.T) {
	ctx := context.Background()
	_, err := iotc.New(iotc.Config{DeviceID: "d", Credential: iotc.GroupKey("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")}) // no IDScope
	check(t, "New without IDScope", err, iotc.ErrInvalidConfig)

	c, err := iotc.New(iotc.Config{DeviceID: "d", IDScope: "0ne00000000", Credential: iotc.GroupKey("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")})
	if err != nil {
		t.Fatal(err)
	}
	check(t, "SendTelemetry before Connect", c.SendTelemetry(ctx, map[string]int{"n": 1}, nil), iotc.ErrNotConnected)
	check(t, "SendTelemetry of a channel", c.SendTelemetry(ctx, make(chan int), nil), nil)
	check(t, "EnqueueTelemetry of a channel", c.EnqueueTelemetry(ctx, make(chan int), nil), nil)
	_, err = c.FetchTwin(ctx)
	check(t, "FetchTwin before Connect", err, iotc.ErrNotConnected)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	check(t, "Connect after Close", c.Connect(ctx, nil), iotc.ErrClosed)
	check(t, "ReportProperties after Close", c.ReportProperties(ctx, map[string]any{"a": 1}, nil), iotc.ErrClosed)
	check(t, "EnqueueTelemetry after Close", c.EnqueueTelemetry(ctx, map[string]int{"n": 1}, nil), iotc.ErrClosed)
}

func check(t *testing.T, what string, err, want error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "iotc: ") || strings.Count(msg, "iotc:") != 1 {
		t.Errorf("%s: %q does not start with \"iotc: \" exactly once", what, msg)
	}
	if want != nil && !errors.Is(err, want) {
		t.Errorf("%s: %v does not match %v", what, err, want)
	}
}
