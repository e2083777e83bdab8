package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/iotc-go/iotc/emulator"
)

// eventHubFlags registers the Event Hubs-compatible endpoint's flags on fs;
// the options are complete once fs is parsed.
func eventHubFlags(fs *flag.FlagSet) *emulator.EventHubsOptions {
	o := &emulator.EventHubsOptions{}
	fs.Func("event-hub", `name of a plain event hub for producers, e.g. "logs" (repeatable; the built-in endpoint, named after the hub, always exists)`, func(v string) error {
		o.Entities = append(o.Entities, v)
		return nil
	})
	fs.Func("consumer-group", "consumer group made on every event hub besides $Default (repeatable)", func(v string) error {
		o.ConsumerGroups = append(o.ConsumerGroups, v)
		return nil
	})
	fs.IntVar(&o.Partitions, "event-hub-partitions", emulator.DefaultEventHubPartitions, "partitions of every event hub (1 to 32); a device's messages always go to the same one")
	fs.IntVar(&o.RetentionCount, "event-hub-retention-count", emulator.DefaultEventHubRetentionCount, "events each partition keeps (the oldest go first)")
	fs.BoolVar(&o.TwinChangeEvents, "twin-change-events", false, "add IoT Hub's twin change events (desired and reported property changes) to the built-in endpoint")
	fs.BoolVar(&o.LifecycleEvents, "device-lifecycle-events", false, "add IoT Hub's device lifecycle events (device created or deleted) to the built-in endpoint")
	fs.DurationVar(&o.RetentionAge, "event-hub-retention", emulator.DefaultEventHubRetention, "how long an event is kept")
	return o
}

// eventHubsInfo returns the connection string of every event hub (for the
// info file) and the lines printed at start.
func eventHubsInfo(e *emulator.Emulator) (map[string]string, string, error) {
	out := map[string]string{}
	var b strings.Builder
	for _, n := range e.EventHubNames() {
		cs, err := e.EventHubsConnectionString(n)
		if err != nil {
			return nil, "", err
		}
		out[n] = cs
		what := "event hub"
		if n == e.BuiltinEventHub() {
			what = "built-in endpoint"
		}
		fmt.Fprintf(&b, "  %-17s %s (%s)\n", n, cs, what)
	}
	return out, b.String(), nil
}
