package dashboard

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// coreBackend is the dashboard's Backend over the emulator's core; its
// errors are the core's (ErrNotFound is core.ErrNotFound).
type coreBackend struct{ c *core.Core }

var _ Backend = coreBackend{}

// CoreBackend returns the Backend of the emulator's core.
func CoreBackend(c *core.Core) Backend { return coreBackend{c} }

// rawPayload is a command payload as the core takes it: nil for none.
func rawPayload(r json.RawMessage) any {
	if len(r) == 0 {
		return nil
	}
	return r
}

func (b coreBackend) toDevice(d core.Device) Device {
	return Device{
		ID: d.ID, DisplayName: d.DisplayName, ModelID: d.ModelID, Provisioned: d.Provisioned,
		Connected: d.Connected, Enabled: d.Enabled, LastSeen: d.LastActivity, Messages: b.c.MessageCount(d.ID),
	}
}

func (b coreBackend) IDScope() string { return b.c.IDScope() }

func (b coreBackend) Devices() []Device {
	ds := b.c.Devices()
	out := make([]Device, len(ds))
	for i, d := range ds {
		out[i] = b.toDevice(d)
	}
	return out
}

func (b coreBackend) Device(id string) (Device, error) {
	d, err := b.c.Device(id)
	if err != nil {
		return Device{}, err
	}
	return b.toDevice(d), nil
}

func toDashEvent(ev core.Event) Event {
	return Event{Kind: ev.Kind.String(), Protocol: ev.Protocol, Replaced: ev.Replaced, Version: ev.Version, Time: ev.Time}
}

func (b coreBackend) Events(id string) []Event {
	evs := b.c.RecentEvents(id)
	out := make([]Event, len(evs))
	for i, ev := range evs {
		out[i] = toDashEvent(ev)
	}
	return out
}

// WatchEvents converts the core's events on a goroutine that ends with stop.
func (b coreBackend) WatchEvents(id string) (<-chan Event, func()) {
	in, stop := b.c.WatchEvents(id)
	return relay(in, stop, toDashEvent, core.EventWatchBuffer)
}

// relay converts what a core watcher sends on a goroutine that ends with
// the returned stop; a slow reader loses items, as core watchers do.
func relay[In, Out any](in <-chan In, stopIn func(), conv func(In) Out, buf int) (<-chan Out, func()) {
	out := make(chan Out, buf)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case v := <-in:
				select {
				case out <- conv(v):
				default:
				}
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return out, func() {
		once.Do(func() {
			stopIn()
			close(quit)
			<-done
		})
	}
}

func (b coreBackend) Twin(id string) (map[string]any, map[string]any, error) {
	d, r, err := b.c.Twin(id)
	return d, r, err
}

func (b coreBackend) UpdateProperties(ctx context.Context, id, component string, patch map[string]any) error {
	return b.c.UpdateProperties(ctx, id, component, patch)
}

func (b coreBackend) InvokeCommand(ctx context.Context, id, component, name string, payload json.RawMessage, timeout time.Duration) (CommandResult, error) {
	res, err := b.c.InvokeCommand(ctx, id, component, name, rawPayload(payload), 0, timeout)
	if err != nil {
		return CommandResult{}, err
	}
	return CommandResult{Status: res.Status, Body: res.Payload}, nil
}

func (b coreBackend) QueueCommand(ctx context.Context, id, component, name string, payload json.RawMessage) error {
	return b.c.QueueCommand(ctx, id, component, name, rawPayload(payload))
}

func (b coreBackend) TelemetryHistory(id string, limit int) ([]Telemetry, error) {
	ms, err := b.c.TelemetryHistory(id, core.HistoryFilter{Limit: limit})
	if err != nil {
		return nil, err
	}
	out := make([]Telemetry, len(ms))
	for i, m := range ms {
		out[i] = toDashTelemetry(m)
	}
	return out, nil
}

func toDashTelemetry(m core.Telemetry) Telemetry {
	return Telemetry{Component: m.Component, Body: m.Body, Properties: m.Properties, Received: m.Received}
}

// WatchTelemetry converts the core's messages on a goroutine that ends with stop.
func (b coreBackend) WatchTelemetry(id string) (<-chan Telemetry, func()) {
	in, stop := b.c.WatchTelemetry(id)
	return relay(in, stop, toDashTelemetry, core.TelemetryWatchBuffer)
}

func (b coreBackend) Groups() []Group {
	gs := b.c.EnrollmentGroups()
	out := make([]Group, len(gs))
	for i, g := range gs {
		out[i] = Group{ID: g.ID, DisplayName: g.DisplayName, Enabled: g.Enabled, X509: g.IsX509(), PrimaryKey: g.PrimaryKey, SecondaryKey: g.SecondaryKey}
	}
	return out
}
