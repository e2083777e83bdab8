// Package thermostat is the logic of a thermostat device, written against
// *iotc.Client and nothing else, so that it runs unchanged against IoT
// Central, the emulator and, in its unit tests, iotctest's in-memory hub.
//
// The device follows the IoT Plug and Play thermostat model: component
// "thermostat1" with telemetry "temperature", the writable property
// "targetTemperature" (5 to 35 °C; anything else is refused with 400),
// the read-only "maxTempSinceLastReboot" and the command
// "getMaxMinReport".
package thermostat

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/iotc-go/iotc"
)

// Component is the IoT Plug and Play component the thermostat lives in.
const Component = "thermostat1"

// ModelID is the model the device announces.
const ModelID = "dtmi:com:example:TemperatureController;2"

// Limits of targetTemperature, in °C.
const (
	MinTarget = 5.0
	MaxTarget = 35.0
)

// Thermostat is the device state. Its methods are safe for concurrent use.
type Thermostat struct {
	mu          sync.Mutex
	temperature float64
	target      float64
	min, max    float64
	since       time.Time
	reportedMax float64
}

// New returns a thermostat at temperature °C, targeting it.
func New(temperature float64) *Thermostat {
	return &Thermostat{temperature: temperature, target: temperature, min: temperature, max: temperature, since: time.Now().UTC(), reportedMax: math.NaN()}
}

// Attach registers the thermostat's handlers on c. Call it before Connect.
func (t *Thermostat) Attach(c *iotc.Client) {
	c.HandleProperty(Component, "targetTemperature", t.onTarget)
	c.HandleCommand(Component, "getMaxMinReport", t.onMaxMinReport)
}

// Target returns the target temperature.
func (t *Thermostat) Target() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.target
}

func (t *Thermostat) onTarget(_ context.Context, p iotc.Property) iotc.PropertyAck {
	var v float64
	if err := p.Unmarshal(&v); err != nil {
		return iotc.PropertyAck{Status: 400, Description: "targetTemperature must be a number"}
	}
	if v < MinTarget || v > MaxTarget {
		return iotc.PropertyAck{Status: 400, Description: fmt.Sprintf("targetTemperature must be between %g and %g", MinTarget, MaxTarget)}
	}
	t.mu.Lock()
	t.target = v
	t.mu.Unlock()
	return iotc.PropertyAck{Status: 200, Description: "target applied"}
}

// Report is the getMaxMinReport answer.
type Report struct {
	MaxTemp   float64   `json:"maxTemp"`
	MinTemp   float64   `json:"minTemp"`
	AvgTemp   float64   `json:"avgTemp"`
	StartTime time.Time `json:"startTime"`
	EndTime   time.Time `json:"endTime"`
}

func (t *Thermostat) onMaxMinReport(_ context.Context, cmd iotc.Command) iotc.CommandResponse {
	since := time.Time{}
	if len(cmd.Payload) > 0 {
		if err := cmd.Unmarshal(&since); err != nil {
			return iotc.CommandResponse{Status: 400, Payload: map[string]string{"error": "the payload must be an RFC 3339 time"}}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	start := t.since
	if since.After(start) {
		start = since
	}
	return iotc.CommandResponse{Status: 200, Payload: Report{
		MaxTemp: t.max, MinTemp: t.min, AvgTemp: (t.max + t.min) / 2,
		StartTime: start, EndTime: time.Now().UTC(),
	}}
}

// Step moves the temperature half a degree toward the target and returns
// the new reading.
func (t *Thermostat) Step() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch d := t.target - t.temperature; {
	case d > 0.5:
		t.temperature += 0.5
	case d < -0.5:
		t.temperature -= 0.5
	default:
		t.temperature = t.target
	}
	t.min = math.Min(t.min, t.temperature)
	t.max = math.Max(t.max, t.temperature)
	return t.temperature
}

// Run sends a temperature reading every interval, and reports
// maxTempSinceLastReboot when it changed, until ctx ends or count
// readings were sent (count 0: no limit). It returns ctx's error, nil
// after count readings, or the first send that failed.
func (t *Thermostat) Run(ctx context.Context, c *iotc.Client, interval time.Duration, count int) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; count == 0 || n < count; n++ {
		temp := t.Step()
		if err := c.SendTelemetry(ctx, map[string]float64{"temperature": temp}, &iotc.TelemetryOptions{Component: Component}); err != nil {
			return fmt.Errorf("send temperature: %w", err)
		}
		t.mu.Lock()
		max, changed := t.max, t.max != t.reportedMax
		t.mu.Unlock()
		if changed {
			if err := c.ReportProperties(ctx, map[string]any{"maxTempSinceLastReboot": max}, &iotc.ReportOptions{Component: Component}); err != nil {
				return fmt.Errorf("report maxTempSinceLastReboot: %w", err)
			}
			t.mu.Lock()
			t.reportedMax = max
			t.mu.Unlock()
		}
		if count != 0 && n == count-1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
