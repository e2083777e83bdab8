package iotc_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

// duplicateKeys returns the keys that occur more than once in one JSON
// object of line (at any depth), and every key seen.
func duplicateKeys(t *testing.T, line []byte) (dups, keys []string) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	type frame struct {
		obj  bool
		seen map[string]bool
		key  bool // the next string token of this object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				if top != nil && top.obj {
					top.key = true
				}
				stack = append(stack, &frame{obj: true, seen: map[string]bool{}, key: true})
			case '[':
				if top != nil && top.obj {
					top.key = true
				}
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
			}
		default:
			if top == nil || !top.obj {
				continue
			}
			if top.key {
				k, _ := v.(string)
				keys = append(keys, k)
				if top.seen[k] {
					dups = append(dups, k)
				}
				top.seen[k] = true
				top.key = false
			} else {
				top.key = true
			}
		}
	}
	return dups, keys
}

// TestLogKeysOnceAndSnakeCase runs a device through provisioning,
// telemetry and a property over every transport with every log line as
// JSON, and checks that no line carries a key twice (such as "transport"
// from both the facade and the adapter) and that keys are snake_case
// ("device_id", never "deviceId").
func TestLogKeysOnceAndSnakeCase(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	for _, tc := range []struct {
		tr   iotc.Transport
		port func(*testing.T, *emulator.Emulator) int
	}{{iotc.MQTT, nil}, {iotc.MQTTWebSockets, wsPort}, {iotc.AMQP, amqpPort}, {iotc.AMQPWebSockets, wsPort}} {
		t.Run(tc.tr.String(), func(t *testing.T) {
			var buf syncBuffer
			cfg := config(t, emu, "logkeys-"+tc.tr.String())
			cfg.Transport = tc.tr
			if tc.port != nil {
				cfg.Port = tc.port(t, emu)
			}
			cfg.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			cfg.LogLevel = slog.LevelDebug
			c := connect(t, cfg, nil)
			if err := c.SendTelemetry(testCtx(t), map[string]int{"n": 1}, nil); err != nil {
				t.Fatal(err)
			}
			if err := c.ReportProperties(testCtx(t), map[string]any{"p": 1}, nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			lines := bytes.Split(bytes.TrimSpace([]byte(buf.String())), []byte("\n"))
			if len(lines) < 3 {
				t.Fatalf("only %d log lines", len(lines))
			}
			sawTransport := false
			for _, line := range lines {
				dups, keys := duplicateKeys(t, line)
				if len(dups) > 0 {
					t.Errorf("duplicate keys %v in %s", dups, line)
				}
				for _, k := range keys {
					if k == "transport" {
						sawTransport = true
					}
					if k != strings.ToLower(k) {
						t.Errorf("key %q is not snake_case in %s", k, line)
					}
				}
			}
			if !sawTransport {
				t.Error("no line names the transport")
			}
		})
	}
}

// TestDuplicateKeysDetector proves the detector sees a duplicate.
func TestDuplicateKeysDetector(t *testing.T) {
	dups, _ := duplicateKeys(t, []byte(`{"a":1,"b":{"a":2,"c":[{"x":1}]},"a":3}`))
	if len(dups) != 1 || dups[0] != "a" {
		t.Fatalf("dups = %v, want [a]", dups)
	}
	if dups, _ := duplicateKeys(t, []byte(`{"a":{"a":1},"b":[1,{"b":2}]}`)); len(dups) != 0 {
		t.Fatalf("dups = %v, want none", dups)
	}
}

// TestErrorTextsOnce: a refused device gets an error that says "iotc:"
// once and names no internal package, over every transport.
func TestErrorTextsOnce(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	for _, tc := range []struct {
		tr   iotc.Transport
		port func(*testing.T, *emulator.Emulator) int
	}{{iotc.MQTT, nil}, {iotc.MQTTWebSockets, wsPort}, {iotc.AMQP, amqpPort}, {iotc.AMQPWebSockets, wsPort}} {
		t.Run(tc.tr.String(), func(t *testing.T) {
			cfg := config(t, emu, "errtext-"+tc.tr.String())
			cfg.Transport = tc.tr
			if tc.port != nil {
				cfg.Port = tc.port(t, emu)
			}
			cfg.Credential = iotc.GroupKey("d3JvbmcgZ3JvdXAga2V5IG9mIDMyIGJ5dGVzISEhISE=")
			c, err := iotc.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(testCtx(t))
			err = c.Connect(testCtx(t), nil)
			if !errors.Is(err, iotc.ErrUnauthorized) {
				t.Fatalf("Connect = %v, want ErrUnauthorized", err)
			}
			msg := err.Error()
			if n := strings.Count(msg, "iotc:"); n != 1 {
				t.Errorf("%q says \"iotc:\" %d times, want once", msg, n)
			}
			for _, internal := range []string{"mqttcore", "amqp1", "emulator", "restapi", "core:"} {
				if strings.Contains(msg, internal) {
					t.Errorf("%q names the internal %q", msg, internal)
				}
			}
			t.Log(msg)
		})
	}
}
