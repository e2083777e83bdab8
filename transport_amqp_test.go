package iotc_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

// amqpPort is the port of the emulator's AMQP/TLS listener.
func amqpPort(t *testing.T, emu *emulator.Emulator) int {
	t.Helper()
	_, p, err := net.SplitHostPort(emu.AMQPAddr())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// TestAMQPTransports provisions with the group key, sends telemetry,
// reports a property, receives a writable property and answers a
// command, over AMQP and AMQP over WebSockets.
func TestAMQPTransports(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	for _, tc := range []struct {
		tr   iotc.Transport
		port func(*testing.T, *emulator.Emulator) int
	}{{iotc.AMQP, amqpPort}, {iotc.AMQPWebSockets, wsPort}} {
		t.Run(tc.tr.String(), func(t *testing.T) {
			t.Parallel()
			id := "facade-" + tc.tr.String()
			cfg := config(t, emu, id)
			cfg.Transport = tc.tr
			cfg.Port = tc.port(t, emu)
			props := make(chan iotc.Property, 1)
			c := connect(t, cfg, func(c *iotc.Client) {
				c.OnProperty(func(_ context.Context, p iotc.Property) iotc.PropertyAck {
					props <- p
					return iotc.PropertyAck{Status: 200}
				})
				c.OnCommand(func(context.Context, iotc.Command) iotc.CommandResponse {
					return iotc.CommandResponse{Status: 200, Payload: map[string]any{"ok": true}}
				})
			})
			if s := c.Status(); s.State != iotc.StateConnected || s.Transport != tc.tr.String() {
				t.Fatalf("status %+v, want connected over %s", s, tc.tr)
			}
			ctx := testCtx(t)
			watch, stop := emu.WatchTelemetry(id)
			defer stop()
			if err := c.SendTelemetry(ctx, map[string]any{"temperature": 20.5}, &iotc.TelemetryOptions{Component: "thermostat1"}); err != nil {
				t.Fatalf("SendTelemetry: %v", err)
			}
			select {
			case got := <-watch:
				if string(got.Body) != `{"temperature":20.5}` || got.Component != "thermostat1" {
					t.Fatalf("emulator received %q component %q", got.Body, got.Component)
				}
			case <-ctx.Done():
				t.Fatal("no telemetry")
			}
			if err := c.ReportProperties(ctx, map[string]any{"maxTemp": 20.5}, nil); err != nil {
				t.Fatalf("ReportProperties: %v", err)
			}
			if err := emu.UpdateProperties(ctx, id, "", map[string]any{"targetTemperature": 23}); err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-props:
				if p.Name != "targetTemperature" {
					t.Fatalf("property %+v", p)
				}
			case <-ctx.Done():
				t.Fatal("no writable property")
			}
			if err := emu.WaitSubscribed(ctx, id, emulator.TopicMethods); err != nil {
				t.Fatal(err)
			}
			res, err := emu.InvokeCommand(ctx, id, "", "reboot", nil, 10*time.Second)
			if err != nil || res.Status != 200 {
				t.Fatalf("InvokeCommand = %+v, %v", res, err)
			}
		})
	}
}

// TestFallbackChainToAMQP: the MQTT and AMQP TLS ports refuse
// connections, so the client falls back from MQTT through AMQP to AMQP
// over WebSockets and says so on each step.
func TestFallbackChainToAMQP(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	const id = "fallback-chain"
	var mu sync.Mutex
	var steps []string
	cfg := config(t, emu, id)
	cfg.Port = closedPort(t)
	cfg.Fallback = []iotc.Transport{iotc.AMQP, iotc.AMQPWebSockets}
	cfg.AMQPPort = closedPort(t)
	cfg.WebSocketPort = wsPort(t, emu)
	cfg.OnStatus = func(s iotc.Status) {
		if s.Reason == iotc.ReasonTransportFallback {
			mu.Lock()
			steps = append(steps, s.Transport)
			mu.Unlock()
		}
	}
	c := connect(t, cfg, nil)
	if s := c.Status(); s.State != iotc.StateConnected || s.Transport != "amqpws" {
		t.Fatalf("status %+v, want connected over amqpws", s)
	}
	if err := c.SendTelemetry(testCtx(t), map[string]any{"chain": true}, nil); err != nil {
		t.Fatalf("SendTelemetry: %v", err)
	}
	if err := c.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(steps) != 2 || steps[0] != "amqp" || steps[1] != "amqpws" {
		t.Fatalf("fallback steps %v, want [amqp amqpws]", steps)
	}
}

// TestAMQPRenewsTokenInPlace: with a 10 s TokenTTL the client renews the
// SAS token over AMQP on the open connection: sends running across the
// first token's expiry all succeed, and the client connects once.
func TestAMQPRenewsTokenInPlace(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	for _, tc := range []struct {
		tr   iotc.Transport
		port func(*testing.T, *emulator.Emulator) int
	}{{iotc.AMQP, amqpPort}, {iotc.AMQPWebSockets, wsPort}} {
		t.Run(tc.tr.String(), func(t *testing.T) {
			t.Parallel()
			id := "renew-" + tc.tr.String()
			var mu sync.Mutex
			var states []iotc.Status
			cfg := config(t, emu, id)
			cfg.Transport = tc.tr
			cfg.Port = tc.port(t, emu)
			cfg.TokenTTL = 10 * time.Second
			cfg.OnStatus = func(s iotc.Status) { mu.Lock(); states = append(states, s); mu.Unlock() }
			c := connect(t, cfg, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			end := time.Now().Add(cfg.TokenTTL + 2*time.Second) // past the first token's expiry
			sent := 0
			for time.Now().Before(end) {
				if err := c.SendTelemetry(ctx, map[string]any{"n": sent}, nil); err != nil {
					t.Fatalf("SendTelemetry %d: %v", sent, err)
				}
				sent++
				timer := time.NewTimer(50 * time.Millisecond)
				select {
				case <-timer.C:
				case <-ctx.Done():
					t.Fatal(ctx.Err())
				}
			}
			if s := c.Status(); s.State != iotc.StateConnected {
				t.Fatalf("status %+v after the first token expired", s)
			}
			if err := c.Close(ctx); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			connected := 0
			for _, s := range states {
				if s.State == iotc.StateConnected {
					connected++
				}
				if s.Reason == iotc.ReasonExpiredToken {
					t.Errorf("status %+v: the token was renewed by reconnecting", s)
				}
			}
			if connected != 1 {
				t.Errorf("connected %d times (statuses %v), want once: renewal reconnected", connected, states)
			}
		})
	}
}
