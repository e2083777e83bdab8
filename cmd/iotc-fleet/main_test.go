package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
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
