package iotc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startEmulator runs an emulator on ephemeral ports for one test.
func startEmulator(t *testing.T) *emulator.Emulator {
	t.Helper()
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: time.Millisecond})
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return emu
}

// config is a Config that reaches emu with its group key.
func config(t *testing.T, emu *emulator.Emulator, deviceID string) iotc.Config {
	t.Helper()
	host, portStr, err := net.SplitHostPort(emu.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	return iotc.Config{
		DeviceID:         deviceID,
		IDScope:          emu.IDScope(),
		Credential:       iotc.GroupKey(emu.GroupKey()),
		ModelID:          "dtmi:com:example:Thermostat;1",
		ProvisioningHost: host,
		Port:             port,
		RootCAs:          emu.CAPool(),
	}
}

func connect(t *testing.T, cfg iotc.Config, setup func(*iotc.Client)) *iotc.Client {
	t.Helper()
	c, err := iotc.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	if setup != nil {
		setup(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Connect(ctx, nil); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := iotc.Config{DeviceID: "d", IDScope: "0ne00000001", Credential: iotc.DeviceKey("AAECAwQ=")}
	for _, tc := range []struct {
		name string
		edit func(*iotc.Config)
		want error
	}{
		{"transport listed twice", func(c *iotc.Config) { c.Fallback = []iotc.Transport{iotc.MQTT} }, iotc.ErrInvalidConfig},
		{"bad amqp port", func(c *iotc.Config) { c.Transport = iotc.AMQP; c.AMQPPort = 70000 }, iotc.ErrInvalidConfig},
		{"unknown fallback transport", func(c *iotc.Config) { c.Fallback = []iotc.Transport{iotc.AMQPWebSockets, 42} }, iotc.ErrInvalidConfig},
		{"unknown transport", func(c *iotc.Config) { c.Transport = 42 }, iotc.ErrInvalidConfig},
		{"no credential", func(c *iotc.Config) { c.Credential = iotc.Credential{} }, iotc.ErrInvalidConfig},
		{"key not base64", func(c *iotc.Config) { c.Credential = iotc.GroupKey("secret!!") }, iotc.ErrInvalidKey},
		{"no scope", func(c *iotc.Config) { c.IDScope = "" }, iotc.ErrInvalidConfig},
		{"bad port", func(c *iotc.Config) { c.Port = 70000 }, iotc.ErrInvalidConfig},
		{"missing x509 files", func(c *iotc.Config) {
			c.Credential = iotc.X509Files(filepath.Join(t.TempDir(), "no.pem"), filepath.Join(t.TempDir(), "no-key.pem"), "")
		}, iotc.ErrInvalidConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			if _, err := iotc.New(cfg); !errors.Is(err, tc.want) {
				t.Fatalf("New = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := iotc.New(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
	if s := iotc.GroupKey("c2VjcmV0").String(); strings.Contains(s, "c2VjcmV0") {
		t.Errorf("Credential.String leaks the key: %s", s)
	}
}

func TestDeviceAgainstEmulator(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	const id = "facade-device"
	props := make(chan iotc.Property, 4)
	queued := make(chan iotc.Command, 4)
	messages := make(chan iotc.CloudMessage, 4)
	c := connect(t, config(t, emu, id), func(c *iotc.Client) {
		c.OnProperty(func(_ context.Context, p iotc.Property) iotc.PropertyAck {
			props <- p
			return iotc.PropertyAck{Status: 202, Description: "working"}
		})
		c.OnCommand(func(_ context.Context, cmd iotc.Command) iotc.CommandResponse {
			var in map[string]int
			if err := cmd.Unmarshal(&in); err != nil {
				return iotc.CommandResponse{Status: 400, Payload: map[string]string{"error": err.Error()}}
			}
			return iotc.CommandResponse{Status: 201, Payload: map[string]any{"component": cmd.Component, "name": cmd.Name, "delay": in["delay"]}}
		})
		c.OnQueuedCommand(func(_ context.Context, cmd iotc.Command) iotc.Outcome { queued <- cmd; return iotc.Complete })
		c.OnCloudMessage(func(_ context.Context, m iotc.CloudMessage) iotc.Outcome { messages <- m; return iotc.Complete })
	})
	ctx := testCtx(t)
	if !c.IsConnected() || c.Status().State != iotc.StateConnected || c.DeviceID() != id {
		t.Fatalf("after Connect: %v %v %q", c.IsConnected(), c.Status(), c.DeviceID())
	}

	// Telemetry with every option.
	watch, stop := emu.WatchTelemetry(id)
	defer stop()
	created := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	err := c.SendTelemetry(ctx, map[string]any{"temperature": 21.5},
		&iotc.TelemetryOptions{
			Component:     "thermostat1",
			Properties:    map[string]string{"alert": "high"},
			MessageID:     "m-1",
			CorrelationID: "c-1",
			CreationTime:  created,
		})
	if err != nil {
		t.Fatalf("SendTelemetry: %v", err)
	}
	got := <-watch
	if string(got.Body) != `{"temperature":21.5}` || got.Component != "thermostat1" || got.Properties["alert"] != "high" ||
		got.MessageID != "m-1" || got.CorrelationID != "c-1" || got.ContentType != "application/json" || got.ContentEncoding != "utf-8" {
		t.Errorf("emulator received %+v", got)
	}
	if err := c.SendTelemetry(ctx, make([]byte, 256<<10+1), nil); !errors.Is(err, iotc.ErrMessageTooLarge) {
		t.Errorf("oversized telemetry: %v", err)
	}

	// Reported properties, root and component.
	if err := c.ReportProperties(ctx, map[string]any{"serialNumber": "SN-1"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.ReportProperties(ctx, map[string]any{"maxTempSinceLastReboot": 30.1}, &iotc.ReportOptions{Component: "thermostat1"}); err != nil {
		t.Fatal(err)
	}
	_, reported, err := emu.Twin(id)
	if err != nil {
		t.Fatal(err)
	}
	comp, _ := reported["thermostat1"].(map[string]any)
	if reported["serialNumber"] != "SN-1" || comp["__t"] != "c" || comp["maxTempSinceLastReboot"] != 30.1 {
		t.Errorf("reported %v", reported)
	}

	// A writable property: 202 from the handler, then the final ack.
	if err := emu.UpdateProperties(ctx, id, "thermostat1", map[string]any{"targetTemperature": 25.0}); err != nil {
		t.Fatal(err)
	}
	p := <-props
	if p.Component != "thermostat1" || p.Name != "targetTemperature" || string(p.Value) != "25" {
		t.Errorf("property %+v", p)
	}
	// The handler's 202 reaches the twin; then the final ack follows.
	eventually(t, func() bool {
		_, reported, err := emu.Twin(id)
		ack, _ := reported["thermostat1"].(map[string]any)["targetTemperature"].(map[string]any)
		return err == nil && ack["ac"] == 202.0
	})
	if err := c.AckProperty(ctx, p, iotc.PropertyAck{Status: 200, Description: "done"}); err != nil {
		t.Fatal(err)
	}
	twin, err := c.FetchTwin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ack, _ := twin.Reported["thermostat1"].(map[string]any)["targetTemperature"].(map[string]any)
	if ack["ac"] != json.Number("200") || ack["ad"] != "done" || ack["av"] != json.Number(strconv.FormatInt(p.Version, 10)) {
		t.Errorf("final ack %v", ack)
	}
	if pending := twin.PendingDesired(); len(pending) != 0 {
		t.Errorf("pending after ack: %+v", pending)
	}

	// A component command.
	if err := emu.WaitSubscribed(ctx, id, emulator.TopicMethods); err != nil {
		t.Fatal(err)
	}
	res, err := emu.InvokeCommand(ctx, id, "thermostat1", "reboot", map[string]int{"delay": 3}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 201 {
		t.Errorf("command status %d", res.Status)
	}
	var body map[string]any
	if err := json.Unmarshal(res.Payload, &body); err != nil || body["component"] != "thermostat1" || body["name"] != "reboot" || body["delay"] != 3.0 {
		t.Errorf("command payload %s (%v)", res.Payload, err)
	}

	// A queued command and a plain cloud-to-device message.
	if err := emu.QueueCommand(ctx, id, "thermostat1", "setLed", map[string]bool{"on": true}); err != nil {
		t.Fatal(err)
	}
	q := <-queued
	if !q.Queued || q.Component != "thermostat1" || q.Name != "setLed" || string(q.Payload) != `{"on":true}` {
		t.Errorf("queued command %+v (%s)", q, q.Payload)
	}
	if err := emu.SendCloudToDevice(ctx, id, []byte("hello"), map[string]string{"color": "red"}); err != nil {
		t.Fatal(err)
	}
	m := <-messages
	if string(m.Body) != "hello" || m.Properties["color"] != "red" {
		t.Errorf("cloud message %+v", m)
	}

	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.SendTelemetry(ctx, 1, nil); !errors.Is(err, iotc.ErrClosed) {
		t.Errorf("SendTelemetry after Close: %v", err)
	}
}

// eventually polls cond, for state only visible by asking the emulator.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	ctx := testCtx(t)
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("condition not met before the deadline")
		}
	}
}

func TestCredentialsFileSkipsDPSOnRestart(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	file := filepath.Join(t.TempDir(), "creds.json")
	cfg := config(t, emu, "cached-device")
	cfg.CredentialStore = iotc.CredentialsFile(file)
	first := connect(t, cfg, nil)
	if err := first.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("credentials file: %v", err)
	}
	if strings.Contains(string(b), emu.GroupKey()) {
		t.Error("the credentials file holds the group key")
	}
	// DPS is now unreachable: a restart must reach the hub from the cache.
	cfg.ProvisioningHost = "dps.invalid"
	cfg.MaxAttempts = 1
	second := connect(t, cfg, nil)
	if !second.IsConnected() {
		t.Error("not connected from the cache")
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogLevelsAndNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	for _, tc := range []struct {
		level     slog.Leveler
		wantInfo  bool
		wantDebug bool
	}{
		{slog.LevelError + 1, false, false}, // above every level the client logs at: silent
		{nil, true, false},                  // default: slog.LevelInfo
		{slog.LevelInfo, true, false},
		{slog.LevelDebug, true, true},
	} {
		var buf syncBuffer
		name := "default"
		if tc.level != nil {
			name = strconv.Itoa(int(tc.level.Level()))
		}
		id := "log-device-" + strings.ReplaceAll(name, "-", "m")
		cfg := config(t, emu, id)
		cfg.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg.LogLevel = tc.level
		c := connect(t, cfg, nil)
		if err := c.SendTelemetry(testCtx(t), map[string]int{"n": 1}, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		if got := strings.Contains(out, "level=INFO"); got != tc.wantInfo {
			t.Errorf("level %s: info lines present = %v", name, got)
		}
		if got := strings.Contains(out, "level=DEBUG"); got != tc.wantDebug {
			t.Errorf("level %s: debug lines present = %v", name, got)
		}
		key, _ := iotc.DeriveDeviceKey(emu.GroupKey(), id)
		for _, secret := range []string{emu.GroupKey(), key, "SharedAccessSignature", "sig="} {
			if strings.Contains(out, secret) {
				t.Errorf("level %s: a secret (%.6s...) is in the logs", name, secret)
			}
		}
	}
}

func TestStatusCallbackAndRefusedKey(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	var mu sync.Mutex
	var states []iotc.Status
	cfg := config(t, emu, "refused-device")
	cfg.Credential = iotc.GroupKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=") // not the emulator's key
	cfg.OnStatus = func(s iotc.Status) { mu.Lock(); states = append(states, s); mu.Unlock() }
	c, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Connect(testCtx(t), nil)
	if !errors.Is(err, iotc.ErrUnauthorized) {
		t.Fatalf("Connect with a wrong key = %v, want ErrUnauthorized", err)
	}
	if err := c.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var refused bool
	for _, s := range states {
		refused = refused || (s.State == iotc.StateDisconnected && s.Reason == iotc.ReasonBadCredential)
	}
	if !refused || states[len(states)-1].State != iotc.StateClosed {
		t.Errorf("statuses %v", states)
	}
}
