package iotc_test

import (
	"context"
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

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

// outboxConfig is a Config that reaches emu (MQTT) with its group key.
func outboxConfig(t *testing.T, emu *emulator.Emulator, deviceID, dir string) iotc.Config {
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
		ProvisioningHost: host,
		Port:             port,
		RootCAs:          emu.CAPool(),
		Outbox:           iotc.OutboxConfig{Dir: dir},
	}
}

func newOutboxEmulator(t *testing.T) *emulator.Emulator {
	t.Helper()
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: time.Millisecond})
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return emu
}

func closeIOTC(t *testing.T, c *iotc.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// Messages enqueued by one client that never connected are delivered, in
// order and with the ids they were stored with, by the next client on the
// same Outbox.Dir, together with what it enqueues itself.
func TestEnqueueTelemetrySurvivesARestart(t *testing.T) {
	emu := newOutboxEmulator(t)
	dir := filepath.Join(t.TempDir(), "outbox")
	cfg := outboxConfig(t, emu, "outbox-restart", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c1, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		if err := c1.EnqueueTelemetry(ctx, map[string]any{"n": i}, &iotc.TelemetryOptions{Properties: map[string]string{"seq": strconv.Itoa(i)}, MessageID: "mid-" + strconv.Itoa(i)}); err != nil {
			t.Fatalf("EnqueueTelemetry %d: %v", i, err)
		}
	}
	if n := c1.OutboxStats().Messages; n != 20 {
		t.Fatalf("OutboxStats().Messages = %d", n)
	}
	closeIOTC(t, c1)

	watch, stop := emu.WatchTelemetry(cfg.DeviceID)
	defer stop()
	c2, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeIOTC(t, c2)
	if n := c2.OutboxStats().Messages; n != 20 {
		t.Fatalf("OutboxStats().Messages after restart = %d, want 20", n)
	}
	if err := c2.EnqueueTelemetry(ctx, map[string]any{"n": 21}, &iotc.TelemetryOptions{Properties: map[string]string{"seq": "21"}, MessageID: "mid-21"}); err != nil {
		t.Fatal(err)
	}
	if err := c2.Connect(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 21; i++ {
		select {
		case m := <-watch:
			if m.Properties["seq"] != strconv.Itoa(i) || m.MessageID != "mid-"+strconv.Itoa(i) {
				t.Fatalf("message %d: seq %s id %s", i, m.Properties["seq"], m.MessageID)
			}
			if m.Properties["iothub-creation-time-utc"] == "" && m.System["iothub-creation-time-utc"] == "" {
				t.Fatalf("message %d has no creation time: %v %v", i, m.Properties, m.System)
			}
		case <-ctx.Done():
			t.Fatalf("received %d of 21 messages", i-1)
		}
	}
	for c2.OutboxStats().Messages != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("OutboxStats().Messages = %d after delivery", c2.OutboxStats().Messages)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if st := c2.OutboxStats(); st.Delivered != 21 || st.Expired != 0 || st.Rejected != 0 {
		t.Fatalf("OutboxStats = %+v", st)
	}
}

func TestOutboxFullThroughTheFacade(t *testing.T) {
	emu := newOutboxEmulator(t)
	for _, dir := range []string{"", filepath.Join(t.TempDir(), "outbox")} {
		cfg := outboxConfig(t, emu, "outbox-full", dir)
		cfg.Outbox.Limit = iotc.OutboxLimit{Messages: 2}
		c, err := iotc.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := range 2 {
			if err := c.EnqueueTelemetry(ctx, map[string]any{"n": i}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.EnqueueTelemetry(ctx, map[string]any{"n": 3}, nil); !errors.Is(err, iotc.ErrOutboxFull) {
			t.Fatalf("dir %q: third EnqueueTelemetry = %v, want ErrOutboxFull", dir, err)
		}
		if n := c.OutboxStats().Messages; n != 2 {
			t.Fatalf("dir %q: OutboxStats().Messages = %d", dir, n)
		}
		if err := c.EnqueueTelemetry(ctx, map[string]any{"n": 1}, &iotc.TelemetryOptions{Properties: map[string]string{"$.bad": "x"}}); !errors.Is(err, iotc.ErrInvalidConfig) {
			t.Fatalf("reserved property: %v", err)
		}
		if err := c.EnqueueTelemetry(ctx, make(chan int), nil); err == nil {
			t.Fatal("a value JSON cannot encode was accepted")
		}
		closeIOTC(t, c)
		if err := c.EnqueueTelemetry(ctx, map[string]any{"n": 1}, nil); !errors.Is(err, iotc.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	}
}

func TestOutboxDirInUse(t *testing.T) {
	emu := newOutboxEmulator(t)
	cfg := outboxConfig(t, emu, "outbox-lock", t.TempDir())
	c1, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iotc.New(cfg); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second New on the same Outbox.Dir: %v", err)
	}
	closeIOTC(t, c1)
	c3, err := iotc.New(cfg) // released by Close
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	closeIOTC(t, c3)
}

func TestOutboxBadConfigReleasesTheDirectory(t *testing.T) {
	emu := newOutboxEmulator(t)
	dir := t.TempDir()
	cfg := outboxConfig(t, emu, "outbox-bad", dir)
	cfg.Outbox.MaxAge = -time.Second
	if _, err := iotc.New(cfg); !errors.Is(err, iotc.ErrInvalidConfig) {
		t.Fatalf("negative OutboxMaxAge: %v", err)
	}
	cfg.Outbox.MaxAge = 0
	cfg.Outbox.Limit = iotc.OutboxLimit{Bytes: -1}
	if _, err := iotc.New(cfg); !errors.Is(err, iotc.ErrInvalidConfig) {
		t.Fatalf("negative OutboxLimit: %v", err)
	}
	cfg.Outbox.Limit = iotc.OutboxLimit{}
	c, err := iotc.New(cfg)
	if err != nil {
		t.Fatalf("New after the failed ones: %v", err)
	}
	closeIOTC(t, c)
}

// A damaged outbox file does not stop the client: New succeeds, the
// damage is logged as an error and counted, and the client works.
func TestCorruptOutboxIsReported(t *testing.T) {
	emu := newOutboxEmulator(t)
	dir := t.TempDir()
	garbage := []byte("\x00\x00\x00\x05garbage, not a record")
	if err := os.WriteFile(filepath.Join(dir, "0000000000000000.seg"), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs outboxLogs
	cfg := outboxConfig(t, emu, "outbox-corrupt", dir)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	c, err := iotc.New(cfg)
	if err != nil {
		t.Fatalf("New on a damaged outbox: %v", err)
	}
	defer closeIOTC(t, c)
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "quarantine") {
		t.Fatalf("the damage was not logged as an error:\n%s", logs.String())
	}
	if st := c.OutboxStats(); st.QuarantinedBytes != int64(len(garbage)) || st.Lost != 0 {
		t.Fatalf("OutboxStats = %+v, want %d bytes quarantined", st, len(garbage))
	}
	if err := c.EnqueueTelemetry(context.Background(), map[string]any{"n": 1}, nil); err != nil {
		t.Fatalf("EnqueueTelemetry on a recovered outbox: %v", err)
	}
}

// recordOffsets returns where each record of a segment file starts: each
// frame is a 4-byte big-endian payload length, a 4-byte CRC, the payload.
func recordOffsets(b []byte) []int {
	var offs []int
	for off := 0; off+8 <= len(b); {
		offs = append(offs, off)
		off += 8 + int(uint32(b[off])<<24|uint32(b[off+1])<<16|uint32(b[off+2])<<8|uint32(b[off+3]))
	}
	return offs
}

// One record damaged in the middle of the outbox: the next client is told
// (OutboxStats.Lost, an Error log line) and delivers every other message.
func TestDamagedOutboxDeliversTheRest(t *testing.T) {
	emu := newOutboxEmulator(t)
	dir := filepath.Join(t.TempDir(), "outbox")
	cfg := outboxConfig(t, emu, "outbox-damaged", dir)
	cfg.Outbox.NoSync = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c1, err := iotc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		if err := c1.EnqueueTelemetry(ctx, map[string]any{"n": i}, &iotc.TelemetryOptions{Properties: map[string]string{"seq": strconv.Itoa(i)}}); err != nil {
			t.Fatalf("EnqueueTelemetry %d: %v", i, err)
		}
	}
	closeIOTC(t, c1)
	seg := filepath.Join(dir, "0000000000000000.seg")
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	offs := recordOffsets(b)
	if len(offs) != 20 {
		t.Fatalf("%d records in the segment", len(offs))
	}
	b[offs[9]+30] ^= 0x04 // inside message 10
	if err := os.WriteFile(seg, b, 0o600); err != nil {
		t.Fatal(err)
	}

	var logs outboxLogs
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	watch, stop := emu.WatchTelemetry(cfg.DeviceID)
	defer stop()
	c2, err := iotc.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer closeIOTC(t, c2)
	if st := c2.OutboxStats(); st.Messages != 19 || st.Lost != 1 || st.Torn != 0 || st.QuarantinedBytes != int64(offs[10]-offs[9]) {
		t.Fatalf("OutboxStats = %+v, want 19 messages, 1 lost, %d bytes quarantined", st, offs[10]-offs[9])
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "lost=1") {
		t.Fatalf("the loss was not logged as an error:\n%s", l)
	}
	if err := c2.Connect(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		if i == 10 {
			continue
		}
		select {
		case m := <-watch:
			if m.Properties["seq"] != strconv.Itoa(i) {
				t.Fatalf("got message %s, want %d", m.Properties["seq"], i)
			}
		case <-ctx.Done():
			t.Fatalf("message %d not delivered", i)
		}
	}
}

// Damage that cannot be moved aside makes New fail with ErrOutboxDamaged,
// naming the file, rather than risk the messages still there.
func TestOutboxDamagedError(t *testing.T) {
	dir := t.TempDir()
	seg := filepath.Join(dir, "0000000000000000.seg")
	if err := os.WriteFile(seg, []byte("not a record at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(seg+".quarantine", 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := iotc.Config{DeviceID: "d", IDScope: "0ne00000000", Credential: iotc.GroupKey("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), Outbox: iotc.OutboxConfig{Dir: dir}}
	c, err := iotc.New(cfg)
	if !errors.Is(err, iotc.ErrOutboxDamaged) || !strings.Contains(err.Error(), seg) {
		if c != nil {
			closeIOTC(t, c)
		}
		t.Fatalf("New = %v, want ErrOutboxDamaged naming %s", err, seg)
	}
}

// outboxLogs is a log sink safe for concurrent writes.
type outboxLogs struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *outboxLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *outboxLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
