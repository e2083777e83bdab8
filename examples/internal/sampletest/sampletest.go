// Package sampletest holds the test helpers of the samples.ini examples:
// an in-process emulator and a samples.ini that reaches it.
package sampletest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator"
)

// StartEmulator runs an in-process emulator on free ports for a test.
func StartEmulator(t testing.TB) *emulator.Emulator {
	t.Helper()
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return emu
}

// WriteINI writes a samples.ini in dir whose [section] reaches emu with
// the given extra lines (credential keys), and returns its path.
func WriteINI(t testing.TB, emu *emulator.Emulator, dir, section, extra string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(emu.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "emulator-ca.pem")
	if err := os.WriteFile(ca, emu.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("[%s]\nScopeId = %s\nProvisioningHost = %s\nPort = %s\nCAFile = emulator-ca.pem\nModelId = dtmi:com:example:Thermostat;1\n%s\n\n[FileLog]\nLogsPath = ./logs\n",
		section, emu.IDScope(), host, port, extra)
	p := filepath.Join(dir, "samples.ini")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runMainEnv tells a test binary to run the program's main instead of the
// tests (MainOr).
const runMainEnv = "IOTC_SAMPLETEST_RUN_MAIN"

// MainOr runs main and exits 0 when the test binary was started by
// RunMain; otherwise it returns and the tests run.
func MainOr(_ *testing.M, main func()) {
	if os.Getenv(runMainEnv) != "1" {
		return
	}
	main()
	os.Exit(0)
}

// RunMain runs the program (the test binary, as MainOr) with args and
// returns its exit code, stdout and stderr. It fails the test when the
// program does not end within a minute.
func RunMain(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%v did not end: %v\n%s", args, err, errOut.String())
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// LastLine is the last non-empty line of s.
func LastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// Buffer is a bytes.Buffer safe for concurrent use: a sample writes its
// console log and status lines from the client's goroutines while it
// prints its own lines, and a test may pass one Buffer as both.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Reset empties the buffer.
func (b *Buffer) Reset() {
	b.mu.Lock()
	b.b.Reset()
	b.mu.Unlock()
}
