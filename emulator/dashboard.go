package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/dashboard"
)

// DashboardURL is the address of the web dashboard on the REST listener,
// with the API token in the URL fragment so that opening it logs in (the
// browser never sends a fragment to the server); "" when the REST listener
// is disabled. Treat it as a secret, like APIToken.
func (e *Emulator) DashboardURL() string {
	if e.restURL == "" {
		return ""
	}
	return e.restURL + "/#token=" + url.PathEscape(e.cfg.apiToken)
}

// dashBackend adapts *Emulator to dashboard.Backend.
type dashBackend struct{ e *Emulator }

var _ dashboard.Backend = dashBackend{}

// Stats implements dashboard.Backend.
func (b dashBackend) Stats() dashboard.Stats {
	st := b.e.Stats()
	return dashboard.Stats{Connections: st.Connections, Refusals: st.Refusals, LimitHits: st.LimitHits, MQTTPreLoginBytes: st.MQTTPreLoginBytes}
}

func dashErr(err error) error {
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %w", dashboard.ErrNotFound, err)
	}
	return err
}

func (b dashBackend) toDevice(d Device) dashboard.Device {
	return dashboard.Device{
		ID: d.ID, DisplayName: d.DisplayName, ModelID: d.ModelID, Provisioned: d.Provisioned,
		Connected: d.Connected, Enabled: d.Enabled, LastSeen: d.LastActivity, Messages: b.e.core.MessageCount(d.ID),
	}
}

func (b dashBackend) IDScope() string { return b.e.IDScope() }

func (b dashBackend) Devices() []dashboard.Device {
	ds := b.e.Devices()
	out := make([]dashboard.Device, len(ds))
	for i, d := range ds {
		out[i] = b.toDevice(d)
	}
	return out
}

func (b dashBackend) Device(id string) (dashboard.Device, error) {
	d, err := b.e.Device(id)
	if err != nil {
		return dashboard.Device{}, dashErr(err)
	}
	return b.toDevice(d), nil
}

func toDashEvent(ev core.Event) dashboard.Event {
	return dashboard.Event{Kind: ev.Kind.String(), Protocol: ev.Protocol, Replaced: ev.Replaced, Version: ev.Version, Time: ev.Time}
}

func (b dashBackend) Events(id string) []dashboard.Event {
	evs := b.e.core.RecentEvents(id)
	out := make([]dashboard.Event, len(evs))
	for i, ev := range evs {
		out[i] = toDashEvent(ev)
	}
	return out
}

// WatchEvents converts the core's events on a goroutine that ends with stop.
func (b dashBackend) WatchEvents(id string) (<-chan dashboard.Event, func()) {
	in, stopIn := b.e.core.WatchEvents(id)
	out := make(chan dashboard.Event, core.EventWatchBuffer)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case ev := <-in:
				select {
				case out <- toDashEvent(ev):
				default: // a slow reader loses events, as core watchers do
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

func (b dashBackend) Twin(id string) (map[string]any, map[string]any, error) {
	d, r, err := b.e.Twin(id)
	return d, r, dashErr(err)
}

func (b dashBackend) UpdateProperties(ctx context.Context, id, component string, patch map[string]any) error {
	return dashErr(b.e.UpdateProperties(ctx, id, component, patch))
}

func (b dashBackend) InvokeCommand(ctx context.Context, id, component, name string, payload json.RawMessage, timeout time.Duration) (dashboard.CommandResult, error) {
	res, err := b.e.core.InvokeCommand(ctx, id, component, name, rawPayload(payload), 0, timeout)
	if err != nil {
		return dashboard.CommandResult{}, dashErr(err)
	}
	return dashboard.CommandResult{Status: res.Status, Body: res.Payload}, nil
}

func (b dashBackend) QueueCommand(ctx context.Context, id, component, name string, payload json.RawMessage) error {
	return dashErr(b.e.QueueCommand(ctx, id, component, name, rawPayload(payload)))
}

func (b dashBackend) TelemetryHistory(id string, limit int) ([]dashboard.Telemetry, error) {
	ms, err := b.e.TelemetryHistory(id, TelemetryFilter{Limit: limit})
	if err != nil {
		return nil, dashErr(err)
	}
	out := make([]dashboard.Telemetry, len(ms))
	for i, m := range ms {
		out[i] = toDashTelemetry(m)
	}
	return out, nil
}

func toDashTelemetry(m Telemetry) dashboard.Telemetry {
	return dashboard.Telemetry{Component: m.Component, Body: m.Body, Properties: m.Properties, Received: m.Received}
}

// WatchTelemetry converts the core's messages on a goroutine that ends with stop.
func (b dashBackend) WatchTelemetry(id string) (<-chan dashboard.Telemetry, func()) {
	in, stopIn := b.e.WatchTelemetry(id)
	out := make(chan dashboard.Telemetry, TelemetryWatchBuffer)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-in:
				select {
				case out <- toDashTelemetry(m):
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

func (b dashBackend) Groups() []dashboard.Group {
	gs := b.e.EnrollmentGroups()
	out := make([]dashboard.Group, len(gs))
	for i, g := range gs {
		out[i] = dashboard.Group{ID: g.ID, DisplayName: g.DisplayName, Enabled: g.Enabled, X509: g.IsX509(), PrimaryKey: g.PrimaryKey, SecondaryKey: g.SecondaryKey}
	}
	return out
}
