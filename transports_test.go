package iotc_test

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

// wsPort is the port of the emulator's WebSocket listener.
func wsPort(t *testing.T, emu *emulator.Emulator) int {
	t.Helper()
	_, p, err := net.SplitHostPort(emu.WebSocketAddr())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// closedPort is a loopback port nothing listens on (connections are refused).
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return port
}

func TestMQTTWebSocketsTransport(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	const id = "ws-device"
	cfg := config(t, emu, id)
	cfg.Transport = iotc.MQTTWebSockets
	cfg.Port = wsPort(t, emu) // Port is the port of Transport
	c := connect(t, cfg, nil)
	if s := c.Status(); s.State != iotc.StateConnected || s.Transport != "mqttws" {
		t.Fatalf("status %+v, want connected over mqttws", s)
	}
	watch, stop := emu.WatchTelemetry(id)
	defer stop()
	if err := c.SendTelemetry(testCtx(t), map[string]any{"temperature": 22.5}, nil); err != nil {
		t.Fatalf("SendTelemetry: %v", err)
	}
	if got := <-watch; string(got.Body) != `{"temperature":22.5}` {
		t.Fatalf("emulator received %q", got.Body)
	}
}

// TestFallbackFromBlockedMQTTPort: 8883 refuses connections, so the
// client provisions and connects over MQTT/WebSockets by itself and says
// so through the status callback.
func TestFallbackFromBlockedMQTTPort(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	const id = "fallback-device"
	var mu sync.Mutex
	var states []iotc.Status
	cfg := config(t, emu, id)
	cfg.Port = closedPort(t)
	cfg.Fallback = []iotc.Transport{iotc.MQTTWebSockets}
	cfg.WebSocketPort = wsPort(t, emu)
	cfg.OnStatus = func(s iotc.Status) { mu.Lock(); states = append(states, s); mu.Unlock() }
	c := connect(t, cfg, nil)
	if s := c.Status(); s.State != iotc.StateConnected || s.Transport != "mqttws" {
		t.Fatalf("status %+v, want connected over mqttws", s)
	}
	watch, stop := emu.WatchTelemetry(id)
	defer stop()
	if err := c.SendTelemetry(testCtx(t), map[string]any{"fallback": true}, nil); err != nil {
		t.Fatalf("SendTelemetry: %v", err)
	}
	if got := <-watch; string(got.Body) != `{"fallback":true}` {
		t.Fatalf("emulator received %q", got.Body)
	}
	if err := c.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	fellBack := false
	for _, s := range states {
		if s.Reason == iotc.ReasonTransportFallback {
			fellBack = true
			if s.Transport != "mqttws" || s.Err == nil {
				t.Errorf("fallback status %+v: want the next transport mqttws and the error that caused it", s)
			}
		}
	}
	if !fellBack {
		t.Errorf("no ReasonTransportFallback status in %v", states)
	}
}

func TestTransportConfigErrors(t *testing.T) {
	t.Parallel()
	good := iotc.Config{DeviceID: "d", IDScope: "0ne00000001", Credential: iotc.DeviceKey("AAECAwQ=")}
	for _, tc := range []struct {
		name string
		edit func(*iotc.Config)
	}{
		{"fallback repeats the transport", func(c *iotc.Config) {
			c.Transport = iotc.MQTTWebSockets
			c.Fallback = []iotc.Transport{iotc.MQTT, iotc.MQTTWebSockets}
		}},
		{"fallback repeats amqp", func(c *iotc.Config) { c.Fallback = []iotc.Transport{iotc.AMQP, iotc.AMQPWebSockets, iotc.AMQP} }},
		{"amqp over websockets with a socks proxy", func(c *iotc.Config) {
			c.Transport = iotc.AMQPWebSockets
			c.Proxy = &url.URL{Scheme: "socks5", Host: "127.0.0.1:1080"}
		}},
		{"bad AMQP port", func(c *iotc.Config) { c.Fallback = []iotc.Transport{iotc.AMQP}; c.AMQPPort = -1 }},
		{"bad WebSocket port", func(c *iotc.Config) { c.Transport = iotc.MQTTWebSockets; c.WebSocketPort = -1 }},
		{"socks proxy", func(c *iotc.Config) {
			c.Transport = iotc.MQTTWebSockets
			c.Proxy = &url.URL{Scheme: "socks5", Host: "127.0.0.1:1080"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tc.edit(&cfg)
			if _, err := iotc.New(cfg); !errors.Is(err, iotc.ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}
