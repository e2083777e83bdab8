package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator"
)

const runMainEnv = "IOTC_FLEET_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" { // a test runs the binary as the program
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMain runs iotc-fleet (this test binary) with args and returns its
// exit code, stdout and stderr.
func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "IOTC_ID_SCOPE=", "IOTC_EMULATOR_API_TOKEN=")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if ctx.Err() != nil || err != nil && !errors.As(err, &ee) {
		t.Fatalf("%v: %v\n%s", args, err, stderr.String())
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestExitCodesAndToken(t *testing.T) {
	if code, _, stderr := runMain(t, "-h"); code != 0 || !strings.Contains(stderr, "-shard") || !strings.Contains(stderr, "-emulator-info") {
		t.Errorf("-h: exit %d\n%s", code, stderr)
	}
	code, _, stderr := runMain(t, "-shard", "4/4")
	if lines := strings.Split(strings.TrimSpace(stderr), "\n"); code != 2 || len(lines) != 1 || !strings.Contains(lines[0], "-shard") {
		t.Errorf("-shard 4/4: exit %d\n%s", code, stderr)
	}
	code, _, stderr = runMain(t, "-emulator-info", "/nonexistent/info.json")
	if lines := strings.Split(strings.TrimSpace(stderr), "\n"); code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "emulator info") {
		t.Errorf("a missing -emulator-info: exit %d\n%s", code, stderr)
	}
	// The API token given is the one the emulator takes, and it is printed
	// with the dashboard's address.
	code, stdout, stderr := runMain(t, "-devices", "1", "-duration", "200ms", "-rate", "0", "-emulator", "inproc", "-api-token", "SharedAccessSignature sr=test&sig=fleet-token")
	if code != 0 || !strings.Contains(stdout, "API token SharedAccessSignature sr=test&sig=fleet-token") || !strings.Contains(stdout, "dashboard https://") {
		t.Errorf("exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// TestExitOnNoDeviceConnecting: against an emulator whose group key the
// info file gets wrong, every device is refused; the fleet stops at once
// with exit status 1 and a last line that says why.
func TestExitOnNoDeviceConnecting(t *testing.T) {
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", WebSocketAddr: "-", AMQPAddr: "-"})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	dir := t.TempDir()
	info, _ := json.Marshal(map[string]any{"idScope": emu.IDScope(), "groupKey": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		"caFile": emu.CAFile(), "mqttAddr": emu.MQTTAddr(), "hubHost": emu.HubHost()})
	file := filepath.Join(dir, "info.json")
	if err := os.WriteFile(file, info, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runMain(t, "-emulator-info", file, "-devices", "2", "-ramp", "0")
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	if code != 1 || !strings.Contains(last, "no device could connect") || !strings.Contains(last, "check the ID scope") {
		t.Errorf("exit %d, last line %q\n%s", code, last, stderr)
	}
}
