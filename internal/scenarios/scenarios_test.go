package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/adapters/mqtt"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/iotctest"
	"github.com/iotc-go/iotc/ports"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestScenariosInMemory(t *testing.T) { Run(t, &memOp{h: iotctest.New()}) }

// TestChecksInMemory and TestChecksEmulator run the same connection checks
// against iotctest and the emulator: both are the emulator's core.
func TestChecksInMemory(t *testing.T) { RunChecks(t, &memOp{h: iotctest.New()}) }

func TestChecksEmulator(t *testing.T) {
	e, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", WebSocketAddr: "-", AMQPAddr: "-", RetryAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	RunChecks(t, &emuOp{e: e})
}

func TestScenariosEmulator(t *testing.T) {
	e, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", WebSocketAddr: "-", AMQPAddr: "-", RetryAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	Run(t, &emuOp{e: e})
}

// memOp drives an iotctest.Hub.
type memOp struct{ h *iotctest.Hub }

func (o *memOp) Config(_ *testing.T, id string) iotc.Config { return o.h.Config(id) }

func (o *memOp) SetProperty(ctx context.Context, id, component, name string, value any) (Ack, error) {
	a, err := o.h.SetProperty(ctx, id, component, name, value)
	return Ack{Value: a.Value, Status: a.Status, Version: a.Version, Description: a.Description}, err
}

func (o *memOp) InvokeCommand(ctx context.Context, id, component, name string, payload any) (int, json.RawMessage, error) {
	r, err := o.h.InvokeCommand(ctx, id, component, name, payload)
	return r.Status, r.Payload, err
}

func (o *memOp) QueueCommand(_ context.Context, id, component, name string, payload any) error {
	return o.h.QueueCommand(id, component, name, payload)
}

func (o *memOp) Telemetry(ctx context.Context, id string, n int) ([]Telemetry, error) {
	ms, err := o.h.WaitTelemetry(ctx, id, n)
	var out []Telemetry
	for _, m := range ms {
		out = append(out, Telemetry{Component: m.Component, Body: m.Body, Properties: m.Properties, MessageID: m.MessageID})
	}
	return out, err
}

func (o *memOp) Reported(_ context.Context, id string) (map[string]any, error) {
	return o.h.Reported(id), nil
}

func (o *memOp) Drop(id string) error { return o.h.Drop(id) }

func (o *memOp) Transport(*testing.T) ports.Transport { return o.h }
func (o *memOp) ProvisioningHost() string             { return "" }
func (o *memOp) IDScope() string                      { return iotctest.IDScope }
func (o *memOp) GroupKey() string                     { return iotctest.GroupKey }

// emuOp drives the emulator through its Go methods.
type emuOp struct {
	e    *emulator.Emulator
	mu   sync.Mutex
	seen map[string][]Telemetry // what each device sent, from Config on
}

func (o *emuOp) Config(t *testing.T, id string) iotc.Config {
	ch, stop := o.e.WatchTelemetry(id)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case m := <-ch:
				o.mu.Lock()
				if o.seen == nil {
					o.seen = map[string][]Telemetry{}
				}
				o.seen[id] = append(o.seen[id], Telemetry{Component: m.Component, Body: m.Body, Properties: m.Properties, MessageID: m.MessageID})
				o.mu.Unlock()
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() { close(done); <-finished; stop() })
	port := 0
	if _, p, ok := cutPort(o.e.MQTTAddr()); ok {
		port = p
	}
	return iotc.Config{
		DeviceID: id, IDScope: o.e.IDScope(), Credential: iotc.GroupKey(o.e.GroupKey()),
		ProvisioningHost: "localhost", Port: port, RootCAs: o.e.CAPool(),
	}
}

func cutPort(addr string) (string, int, bool) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			var p int
			_, err := fmt.Sscanf(addr[i+1:], "%d", &p)
			return addr[:i], p, err == nil
		}
	}
	return addr, 0, false
}

// poll calls f until it reports done or ctx ends (the emulator has no
// "wait for the acknowledgement" method; this is a bounded wait, not a
// timing assertion).
func poll(ctx context.Context, f func() (bool, error)) error {
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNoAck, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (o *emuOp) SetProperty(ctx context.Context, id, component, name string, value any) (Ack, error) {
	if err := o.e.UpdateProperties(ctx, id, component, map[string]any{name: value}); err != nil {
		return Ack{}, err
	}
	desired, _, err := o.e.Twin(id)
	if err != nil {
		return Ack{}, err
	}
	version, _ := toInt(desired["$version"])
	var ack Ack
	err = poll(ctx, func() (bool, error) {
		_, rep, err := o.e.Twin(id)
		if err != nil {
			return false, err
		}
		sec := rep
		if component != "" {
			sec, _ = rep[component].(map[string]any)
		}
		b, _ := json.Marshal(sec[name])
		var a Ack
		if json.Unmarshal(b, &a) == nil && a.Version >= version && a.Status != 0 && a.Status != 202 {
			ack = a
			return true, nil
		}
		return false, nil
	})
	return ack, err
}

func toInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case float64:
		return int64(n), true
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case int:
		return int64(n), true
	}
	return 0, false
}

func (o *emuOp) InvokeCommand(ctx context.Context, id, component, name string, payload any) (int, json.RawMessage, error) {
	r, err := o.e.InvokeCommand(ctx, id, component, name, payload, 10*time.Second)
	if err != nil {
		return 0, nil, err
	}
	return r.Status, r.Payload, nil
}

func (o *emuOp) QueueCommand(ctx context.Context, id, component, name string, payload any) error {
	return o.e.QueueCommand(ctx, id, component, name, payload)
}

func (o *emuOp) Telemetry(ctx context.Context, id string, n int) ([]Telemetry, error) {
	var out []Telemetry
	err := poll(ctx, func() (bool, error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		out = append([]Telemetry(nil), o.seen[id]...)
		return len(out) >= n, nil
	})
	return out, err
}

func (o *emuOp) Reported(_ context.Context, id string) (map[string]any, error) {
	_, rep, err := o.e.Twin(id)
	if err != nil {
		return nil, err
	}
	delete(rep, "$version")
	delete(rep, "$metadata")
	return rep, nil
}

func (o *emuOp) Drop(id string) error { return o.e.DisconnectDevice(id) }

func (o *emuOp) Transport(*testing.T) ports.Transport {
	_, port, _ := cutPort(o.e.MQTTAddr())
	return mqtt.New(&mqtt.Options{Port: port, RootCAs: o.e.CAPool()})
}
func (o *emuOp) ProvisioningHost() string { return "localhost" }
func (o *emuOp) IDScope() string          { return o.e.IDScope() }
func (o *emuOp) GroupKey() string         { return o.e.GroupKey() }
