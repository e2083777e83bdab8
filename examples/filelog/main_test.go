package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/examples/internal/sampletest"
)

// lumberjack v2.2.1 starts one goroutine per Logger that compresses and
// prunes old files and never ends, even after Close (its issue #56): one
// per process in this sample, so it is ignored here and nothing else is.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
}

// TestFileLogSample runs with a group key and -v and checks the rotating
// log file: JSON lines from the SDK, without the key.
func TestFileLogSample(t *testing.T) {
	emu := sampletest.StartEmulator(t)
	dir := t.TempDir()
	ini := sampletest.WriteINI(t, emu, dir, "DEVICE_A", "DeviceId = sample-filelog\nGroupKey = "+emu.GroupKey())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out sampletest.Buffer
	if err := run(ctx, []string{"-config", ini, "-count", "1", "-interval", "10ms", "-v"}, &out, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "logs", "iotc.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), emu.GroupKey()) {
		t.Fatal("the group key is in the log file")
	}
	lines, sawProvisioned := 0, false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		lines++
		if rec["msg"] == "provisioned" && rec["device_id"] == "sample-filelog" {
			sawProvisioned = true
		}
	}
	if lines < 3 || !sawProvisioned {
		t.Errorf("%d lines, provisioned line %v:\n%s", lines, sawProvisioned, b)
	}
}
