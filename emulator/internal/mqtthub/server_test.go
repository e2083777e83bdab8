package mqtthub

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestRedactHandler: mochi's packet dumps (which hold passwords and
// payloads) never reach the log; its Info chatter is dropped.
func TestRedactHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(redactHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})}).With("component", "mochi")
	log.Warn("bad packet", "pk", "password=SharedAccessSignature sig=secret", "packet", "secret-body", "will", "secret-will", "client", "dev1")
	log.Info("client connected", "client", "dev1")
	log.Warn("", "client", "dev1")
	out := buf.String()
	if strings.Contains(out, "secret") {
		t.Fatalf("a packet dump reached the log: %s", out)
	}
	if !strings.Contains(out, "bad packet") || !strings.Contains(out, "client=dev1") || strings.Count(out, "<redacted>") != 3 {
		t.Fatalf("warning lost or not redacted: %s", out)
	}
	if strings.Contains(out, "client connected") || strings.Count(out, "\n") != 1 {
		t.Fatalf("Info chatter or empty message logged: %s", out)
	}
	g := slog.New(redactHandler{slog.NewTextHandler(&buf, nil)}).WithGroup("g")
	buf.Reset()
	g.Error("e", "packet", "secret")
	if strings.Contains(buf.String(), "secret") {
		t.Fatalf("redaction lost under a group: %s", buf.String())
	}
}

// TestPerClientAllocations: the queue and read buffer mochi allocates for
// every connection are the emulator's small sizes, not mochi's defaults
// (a 8192-slot channel, 64 KiB, and a 2 KiB buffer per connection).
func TestPerClientAllocations(t *testing.T) {
	s, err := New(Config{Addr: "-", MaxTelemetryBody: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o := s.srv.Options
	if got := o.Capabilities.MaximumClientWritesPending; got != clientWritesPending || got > 16 {
		t.Errorf("MaximumClientWritesPending = %d, want %d (at most 16)", got, clientWritesPending)
	}
	if got := o.ClientNetReadBufferSize; got != clientReadBuffer || got > 1024 {
		t.Errorf("ClientNetReadBufferSize = %d, want %d (at most 1024)", got, clientReadBuffer)
	}
	if got := o.Capabilities.MaximumPacketSize; got < 256<<10 {
		t.Errorf("MaximumPacketSize = %d, below the telemetry limit", got)
	}
}
