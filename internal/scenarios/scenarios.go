// Package scenarios runs the same device scenarios against any hub an
// operator can drive: the in-memory iotctest.Hub and the emulator. Both
// must answer alike (versions, acknowledgement shape, command results,
// queued commands, telemetry), so that a device unit-tested with iotctest
// behaves the same against the emulator and IoT Central.
package scenarios

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/iotc-go/iotc"
)

// Ack is a reported writable-property acknowledgement.
type Ack struct {
	Value       json.RawMessage `json:"value"`
	Status      int             `json:"ac"`
	Version     int64           `json:"av"`
	Description string          `json:"ad,omitempty"`
}

// Telemetry is one message as the hub received it.
type Telemetry struct {
	Component  string
	Body       json.RawMessage
	Properties map[string]string
	MessageID  string
}

// Operator drives a hub as the tests' IoT Central operator.
type Operator interface {
	// Config is a client configuration for a new device id on the hub.
	Config(t *testing.T, id string) iotc.Config
	// SetProperty writes one desired property and waits for the device's
	// final acknowledgement at that version.
	SetProperty(ctx context.Context, id, component, name string, value any) (Ack, error)
	// InvokeCommand calls a command and returns the device's answer.
	InvokeCommand(ctx context.Context, id, component, name string, payload any) (status int, response json.RawMessage, err error)
	// QueueCommand queues a command for a possibly offline device.
	QueueCommand(ctx context.Context, id, component, name string, payload any) error
	// Telemetry waits for the device's n-th message (1 is the first) and
	// returns the first n.
	Telemetry(ctx context.Context, id string, n int) ([]Telemetry, error)
	// Reported returns the reported properties (no $version, $metadata).
	Reported(ctx context.Context, id string) (map[string]any, error)
	// Drop cuts the device's connection.
	Drop(id string) error
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// device connects a thermostat-like device that handles targetTemperature
// (400 outside 5..35), a getMaxMinReport command and a queued reboot.
func device(t *testing.T, op Operator, id string) (*iotc.Client, chan iotc.Command) {
	t.Helper()
	cfg := op.Config(t, id)
	cfg.ModelID = "dtmi:com:example:Thermostat;1"
	c, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	queued := make(chan iotc.Command, 4)
	c.HandleProperty("thermostat1", "targetTemperature", func(_ context.Context, p iotc.Property) iotc.PropertyAck {
		var v float64
		if err := p.Unmarshal(&v); err != nil || v < 5 || v > 35 {
			return iotc.PropertyAck{Status: 400, Description: "out of range"}
		}
		return iotc.PropertyAck{Status: 200, Description: "set"}
	})
	c.HandleCommand("thermostat1", "getMaxMinReport", func(_ context.Context, cmd iotc.Command) iotc.CommandResponse {
		return iotc.CommandResponse{Status: 200, Payload: map[string]any{"maxTemp": 30, "since": json.RawMessage(cmd.Payload)}}
	})
	c.OnQueuedCommand(func(_ context.Context, cmd iotc.Command) iotc.Outcome {
		queued <- cmd
		return iotc.Complete
	})
	if err := c.Connect(ctxFor(t), nil); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return c, queued
}

// Run runs every scenario against op.
func Run(t *testing.T, op Operator) {
	t.Run("WritablePropertyVersionsAndAcks", func(t *testing.T) {
		ctx := ctxFor(t)
		device(t, op, "props")
		ack, err := op.SetProperty(ctx, "props", "thermostat1", "targetTemperature", 21.5)
		if err != nil {
			t.Fatal(err)
		}
		// A fresh twin's desired section is at version 1; the first write is 2.
		if ack.Status != 200 || ack.Version != 2 || ack.Description != "set" || string(ack.Value) != "21.5" {
			t.Errorf("first ack %+v, want 200 at version 2 with value 21.5", ack)
		}
		ack, err = op.SetProperty(ctx, "props", "thermostat1", "targetTemperature", 99)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Status != 400 || ack.Version != 3 || ack.Description != "out of range" {
			t.Errorf("second ack %+v, want 400 at version 3", ack)
		}
		rep, err := op.Reported(ctx, "props")
		if err != nil {
			t.Fatal(err)
		}
		comp, _ := rep["thermostat1"].(map[string]any)
		if comp["__t"] != "c" {
			t.Errorf("reported component %v lacks __t: c", comp)
		}
	})
	t.Run("Command", func(t *testing.T) {
		ctx := ctxFor(t)
		device(t, op, "cmd")
		status, resp, err := op.InvokeCommand(ctx, "cmd", "thermostat1", "getMaxMinReport", "2026-01-01T00:00:00Z")
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		if err := json.Unmarshal(resp, &body); err != nil {
			t.Fatalf("response %s: %v", resp, err)
		}
		if status != 200 || body["maxTemp"] != 30.0 || body["since"] != "2026-01-01T00:00:00Z" {
			t.Errorf("command answered %d %s", status, resp)
		}
		status, _, err = op.InvokeCommand(ctx, "cmd", "", "unknown", nil)
		if err != nil {
			t.Fatal(err)
		}
		if status != 501 {
			t.Errorf("a command nobody handles answered %d, want 501", status)
		}
	})
	t.Run("TelemetryAndReported", func(t *testing.T) {
		ctx := ctxFor(t)
		c, _ := device(t, op, "tel")
		if err := c.SendTelemetry(ctx, map[string]any{"temperature": 21.5}, &iotc.TelemetryOptions{Component: "thermostat1", Properties: map[string]string{"unit": "C"}, MessageID: "m-1"}); err != nil {
			t.Fatal(err)
		}
		got, err := op.Telemetry(ctx, "tel", 1)
		if err != nil {
			t.Fatal(err)
		}
		m := got[0]
		if m.Component != "thermostat1" || m.Properties["unit"] != "C" || m.MessageID != "m-1" || string(m.Body) != `{"temperature":21.5}` {
			t.Errorf("hub got %+v", m)
		}
		if err := c.ReportProperties(ctx, map[string]any{"serialNumber": "X1"}, &iotc.ReportOptions{Component: "deviceInformation"}); err != nil {
			t.Fatal(err)
		}
		rep, err := op.Reported(ctx, "tel")
		if err != nil {
			t.Fatal(err)
		}
		di, _ := rep["deviceInformation"].(map[string]any)
		if di["serialNumber"] != "X1" || di["__t"] != "c" {
			t.Errorf("reported %v", rep)
		}
	})
	t.Run("QueuedCommandAfterReconnect", func(t *testing.T) {
		ctx := ctxFor(t)
		c, queued := device(t, op, "queued")
		if err := op.QueueCommand(ctx, "queued", "thermostat1", "reboot", map[string]int{"delay": 5}); err != nil {
			t.Fatal(err)
		}
		select {
		case cmd := <-queued:
			var in map[string]int
			if !cmd.Queued || cmd.Component != "thermostat1" || cmd.Name != "reboot" || cmd.Unmarshal(&in) != nil || in["delay"] != 5 {
				t.Errorf("queued command %+v", cmd)
			}
		case <-ctx.Done():
			t.Fatal("the queued command never reached the device")
		}
		// Dropped: the client reconnects by itself and sends again.
		if err := op.Drop("queued"); err != nil {
			t.Fatal(err)
		}
		if err := c.SendTelemetry(ctx, map[string]int{"after": 1}, nil); err != nil {
			t.Fatalf("send after the drop: %v", err)
		}
		if _, err := op.Telemetry(ctx, "queued", 1); err != nil {
			t.Fatal(err)
		}
	})
}

// ErrNoAck is returned by operators that saw no acknowledgement.
var ErrNoAck = errors.New("scenarios: no acknowledgement")
