// Package sampletest holds the test helpers of the samples.ini examples:
// an in-process emulator and a samples.ini that reaches it.
package sampletest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
