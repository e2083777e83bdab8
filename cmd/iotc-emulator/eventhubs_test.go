package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestEventHubsFlagsAndInfo: --event-hub, --consumer-group and
// --event-hub-partitions reach the emulator, and the info file and the
// start-up text carry every event hub's connection string.
func TestEventHubsFlagsAndInfo(t *testing.T) {
	e, in, out := startCLI(t, t.TempDir(), "-event-hub", "logs", "-event-hub", "audit", "-consumer-group", "backend", "-event-hub-partitions", "2")
	names := e.EventHubNames()
	if strings.Join(names, ",") != e.BuiltinEventHub()+",logs,audit" {
		t.Fatalf("event hubs %v", names)
	}
	for _, n := range names {
		cs, err := e.EventHubsConnectionString(n)
		if err != nil {
			t.Fatal(err)
		}
		if in.EventHubsConnectionStrings[n] != cs || !strings.Contains(out, cs) {
			t.Errorf("connection string of %s not in the info file or the start-up text:\n%s", n, out)
		}
		if !strings.HasPrefix(cs, "Endpoint=sb://localhost:") || !strings.HasSuffix(cs, ";EntityPath="+n) {
			t.Errorf("connection string %q", cs)
		}
		if gs, _ := e.EventHubConsumerGroups(n); strings.Join(gs, ",") != "$Default,backend" {
			t.Errorf("consumer groups of %s: %v", n, gs)
		}
	}
	for _, bad := range [][]string{{"-event-hub", "bad/name"}, {"-event-hub-partitions", "33"}, {"-event-hub", "devices"}} {
		var o, eo bytes.Buffer
		e2, err := start(t.Context(), append(ephemeral(t.TempDir()), bad...), &o, &eo)
		if err == nil {
			_ = e2.Close()
			t.Errorf("start %v succeeded", bad)
		}
	}
}
