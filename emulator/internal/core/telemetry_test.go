package core

import (
	"fmt"
	"testing"
	"time"
)

func TestHistoryKeepsTheNewestDefault(t *testing.T) {
	c := New(Config{IDScope: "0ne1", HubHost: "h"})
	defer c.Close()
	if _, err := c.CreateDevice("d"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range DefaultTelemetryHistory + 5 {
		c.StoreTelemetry(Telemetry{DeviceID: "d", Body: fmt.Appendf(nil, "%d", i), Received: t0.Add(time.Duration(i) * time.Second)})
	}
	h, err := c.TelemetryHistory("d", HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != DefaultTelemetryHistory || string(h[0].Body) != "5" || string(h[len(h)-1].Body) != fmt.Sprint(DefaultTelemetryHistory+4) {
		t.Fatalf("history: %d messages, first %s last %s", len(h), h[0].Body, h[len(h)-1].Body)
	}
	since, _ := c.TelemetryHistory("d", HistoryFilter{Since: t0.Add(time.Duration(DefaultTelemetryHistory+2) * time.Second)})
	if len(since) != 2 {
		t.Fatalf("since: %d messages, want 2", len(since))
	}
	// Telemetry of an unknown device is not kept and does not panic.
	c.StoreTelemetry(Telemetry{DeviceID: "ghost"})
	if _, err := c.TelemetryHistory("ghost", HistoryFilter{}); err == nil {
		t.Fatal("history of an unknown device")
	}
}
