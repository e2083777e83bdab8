package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freePort returns a TCP port nothing listens on at the moment.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestReadmeX509Flow runs the X.509 flow of docs/tools.md (the block
// between <!-- x509-flow --> markers) with bash, as written, except for its
// directory and its MQTT_PORT and REST_PORT, which become free ports.
func TestReadmeX509Flow(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "awk", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed by this test (CI installs it): %v", tool, err)
		}
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "docs", "tools.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- x509-flow -->\n```sh\n")
	block, _, ok2 := strings.Cut(rest, "```\n<!-- /x509-flow -->")
	if !ok || !ok2 {
		t.Fatal("docs/tools.md has no x509-flow block")
	}
	dir := t.TempDir()
	const ports = "MQTT_PORT=8883 REST_PORT=8443"
	if !strings.Contains(block, ports) {
		t.Fatalf("the x509-flow block does not set %q", ports)
	}
	script := strings.NewReplacer("/tmp/x509-demo", dir, ports, "MQTT_PORT="+freePort(t)+" REST_PORT="+freePort(t)).Replace(block)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "IOTC_GROUP_KEY=", "IOTC_DEVICE_KEY=", "IOTC_CONNECTION_STRING=", "IOTC_SAMPLES_INI=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// On timeout, end the whole group: the script's emulator included.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // nothing may outlive the test
	}
	if err != nil {
		t.Fatalf("the X.509 flow of docs/tools.md failed: %v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), `{"sent":`); n != 2 {
		t.Errorf("%d messages sent, want 2:\n%s", n, out.String())
	}
}
