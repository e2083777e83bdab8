package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator"
)

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" { // a test runs the binary as the program
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

const runMainEnv = "IOTC_DEVICE_TEST_RUN_MAIN"

// runMain runs the program (this test binary) with args and env and
// returns its exit code and stderr.
func runMain(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), runMainEnv+"=1", "XDG_CACHE_HOME="+t.TempDir()), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%v did not end: %s", args, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestExitCodesAndReasons runs iotc-device as a program: -h exits 0; a
// permanent error exits 1 at once with a one-line reason; a refused port
// is retried (each change printed) until -timeout, then exits 1 naming it.
func TestExitCodesAndReasons(t *testing.T) {
	emu := startEmulator(t)
	host, port, _ := net.SplitHostPort(emu.MQTTAddr())
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, emu.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"IOTC_SAMPLES_INI=", "IOTC_DEVICE_KEY=", "IOTC_CONNECTION_STRING=", "IOTC_ID_SCOPE=" + emu.IDScope(), "IOTC_PROVISIONING_HOST=" + host}
	for _, args := range [][]string{{"-h"}, {"send", "-h"}} {
		if code, stderr := runMain(t, base, args...); code != 0 {
			t.Errorf("%v: exit %d\n%s", args, code, stderr)
		}
	}
	cases := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"wrong key", []string{"IOTC_GROUP_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}, []string{"send", "-device", "d1", "-port", port, "-ca", ca, "-timeout", "1m", "{}"}, []string{"provisioning refused", "check the ID scope"}},
		{"untrusted CA", []string{"IOTC_GROUP_KEY=" + emu.GroupKey()}, []string{"send", "-device", "d2", "-port", port, "-timeout", "1m", "{}"}, []string{"not trusted", "RootCAs"}},
		{"refused port", []string{"IOTC_GROUP_KEY=" + emu.GroupKey()}, []string{"send", "-device", "d3", "-port", "1", "-ca", ca, "-timeout", "300ms", "{}"}, []string{"not connected", "connection refused", "port"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := runMain(t, append(append([]string{}, base...), tc.env...), tc.args...)
			last := lastLine(stderr)
			if code != 1 || !strings.HasPrefix(last, "iotc-device: ") {
				t.Fatalf("exit %d, last line %q\n%s", code, last, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(last, w) {
					t.Errorf("last line %q does not say %q", last, w)
				}
			}
			if !strings.Contains(stderr, "iotc-device: connecting") {
				t.Errorf("the connection changes are not printed:\n%s", stderr)
			}
			if strings.Contains(stderr, "context deadline exceeded") && !strings.Contains(last, "connection refused") {
				t.Errorf("a deadline without its cause:\n%s", stderr)
			}
		})
	}
}

const waitLimit = 30 * time.Second

func startEmulator(t *testing.T) *emulator.Emulator {
	t.Helper()
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return emu
}

// writeINI writes a samples.ini with [DEVICE_A] for emu and the group key.
func writeINI(t *testing.T, emu *emulator.Emulator, id string) string {
	t.Helper()
	dir := t.TempDir()
	host, port, _ := net.SplitHostPort(emu.MQTTAddr())
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), emu.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	ini := fmt.Sprintf("[DEVICE_A]\nScopeId = %s\nDeviceId = %s\nGroupKey = %s\nProvisioningHost = %s\nPort = %s\nCAFile = ca.pem\n", emu.IDScope(), id, emu.GroupKey(), host, port)
	p := filepath.Join(dir, "samples.ini")
	if err := os.WriteFile(p, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func clearEnv(t *testing.T) {
	for _, k := range []string{"IOTC_GROUP_KEY", "IOTC_DEVICE_KEY", "IOTC_CONNECTION_STRING", "IOTC_SAMPLES_INI", "IOTC_ID_SCOPE", "IOTC_DEVICE_ID", "IOTC_CERT_FILE", "IOTC_KEY_FILE", "IOTC_CA_FILE", "IOTC_PROVISIONING_HOST"} {
		t.Setenv(k, "")
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // the default credentials cache
	t.Setenv("IOTC_CREDENTIALS_FILE", "")
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// TestSendReportTwin: send from the argument and from stdin lines (with a
// component and properties), report, then read the twin, configured from a
// samples.ini section.
func TestSendReportTwin(t *testing.T) {
	clearEnv(t)
	emu := startEmulator(t)
	ini := writeINI(t, emu, "cli-dev")
	var out, errb bytes.Buffer
	if err := run(ctxT(t), []string{"send", "-config", ini, `{"temperature": 21.5}`}, nil, &out, &errb); err != nil {
		t.Fatalf("send: %v\n%s", err, errb.String())
	}
	stdin := strings.NewReader("{\"temperature\": 1}\n\n{\"temperature\": 2}\n")
	if err := run(ctxT(t), []string{"send", "-config", ini, "-component", "thermostat1", "-prop", "alert=yes"}, stdin, &out, &errb); err != nil {
		t.Fatalf("send stdin: %v\n%s", err, errb.String())
	}
	msgs, err := emu.TelemetryHistory("cli-dev", emulator.TelemetryFilter{})
	if err != nil || len(msgs) != 3 {
		t.Fatalf("telemetry %d, %v; want 3", len(msgs), err)
	}
	if msgs[2].Component != "thermostat1" || msgs[2].Properties["alert"] != "yes" || !strings.Contains(string(msgs[2].Body), "2") {
		t.Errorf("last message %+v", msgs[2])
	}
	if err := run(ctxT(t), []string{"report", "-config", ini, "-component", "thermostat1", `{"maxTemp": 30}`}, nil, &out, &errb); err != nil {
		t.Fatalf("report: %v", err)
	}
	_, reported, err := emu.Twin("cli-dev")
	if err != nil {
		t.Fatal(err)
	}
	comp, _ := reported["thermostat1"].(map[string]any)
	if comp["maxTemp"] != float64(30) || comp["__t"] != "c" {
		t.Errorf("reported %v", reported)
	}
	out.Reset()
	if err := run(ctxT(t), []string{"twin", "-config", ini}, nil, &out, &errb); err != nil {
		t.Fatalf("twin: %v", err)
	}
	var tw struct{ Reported map[string]any }
	if err := json.Unmarshal(out.Bytes(), &tw); err != nil || tw.Reported["thermostat1"] == nil {
		t.Errorf("twin output %q: %v", out.String(), err)
	}
	if strings.Contains(out.String()+errb.String(), emu.GroupKey()) {
		t.Error("the group key was printed")
	}
}

// syncBuf is a buffer the watch handlers and the test share.
type syncBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed (and replaced) by every Write
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

func (s *syncBuf) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// waitFor returns once the output contains want, or ctx's error.
func (s *syncBuf) waitFor(ctx context.Context, want string) error {
	for {
		s.mu.Lock()
		if strings.Contains(s.b.String(), want) {
			s.mu.Unlock()
			return nil
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// watch runs "watch" until the returned stop is called. It returns once
// the device said it is watching (its Connect returned, so its session
// and subscriptions are in place) and the emulator sees the subscription.
// Waiting for the subscription alone is not enough: with a persistent
// session the emulator reports the subscriptions inherited from the
// previous connection as soon as the new connection attaches, before it
// sent CONNACK, and a command invoked then reaches the device ahead of
// its CONNACK, which fails that connection attempt ("non-CONNACK first
// packet received") and loses the command.
func watch(t *testing.T, emu *emulator.Emulator, id string, args ...string) (*syncBuf, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuf{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"watch"}, args...), nil, out, out) }()
	wctx, wcancel := context.WithTimeout(context.Background(), waitLimit)
	defer wcancel()
	if err := out.waitFor(wctx, `{"watching":`); err != nil {
		cancel()
		t.Fatalf("the device never said it was watching: %v\n%s", err, out.String())
	}
	if err := emu.WaitSubscribed(wctx, id, "$iothub/methods/POST/#"); err != nil {
		cancel()
		t.Fatalf("device never subscribed: %v\n%s", err, out.String())
	}
	return out, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(waitLimit):
			return errors.New("watch did not stop")
		}
	}
}

// TestWatchAnswersCommands: a fixed reply, then a shell command reading
// the payload; a desired property is printed and acknowledged.
func TestWatchAnswersCommands(t *testing.T) {
	clearEnv(t)
	emu := startEmulator(t)
	ini := writeINI(t, emu, "cli-watch")
	out, stop := watch(t, emu, "cli-watch", "-config", ini, "-reply", `{"rebooted": true}`, "-status", "202")
	res, err := emu.InvokeCommand(ctxT(t), "cli-watch", "", "reboot", map[string]int{"delay": 1}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 202 || !strings.Contains(string(res.Payload), "rebooted") {
		t.Errorf("fixed reply: %+v", res)
	}
	if err := emu.UpdateProperties(ctxT(t), "cli-watch", "", map[string]any{"fanSpeed": 3}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(waitLimit)
	for {
		_, reported, _ := emu.Twin("cli-watch")
		if ack, ok := reported["fanSpeed"].(map[string]any); ok && ack["ac"] == float64(200) {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("fanSpeed never acknowledged; output:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := emu.SendCloudToDevice(ctxT(t), "cli-watch", []byte("hello device"), map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(out.String(), `"message":"hello device"`) {
		select {
		case <-deadline:
			t.Fatalf("cloud-to-device message never printed:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"command":"reboot"`, `"property":"fanSpeed"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}

	// The next watch must not see this connection's subscriptions.
	for {
		if d, err := emu.Device("cli-watch"); err == nil && !d.Connected {
			break
		}
		select {
		case <-deadline:
			t.Fatal("the emulator still sees the first watch connected")
		case <-time.After(20 * time.Millisecond):
		}
	}
	_, stop = watch(t, emu, "cli-watch", "-config", ini, "-exec", `read p; printf '{"echo": %s, "name": "%s"}' "$p" "$IOTC_COMMAND"; [ "$IOTC_COMPONENT" = thermostat1 ]`)
	res, err = emu.InvokeCommand(ctxT(t), "cli-watch", "thermostat1", "getReport", map[string]int{"n": 7}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Echo map[string]int
		Name string
	}
	if res.Status != 200 || json.Unmarshal(res.Payload, &body) != nil || body.Echo["n"] != 7 || body.Name != "getReport" {
		t.Errorf("exec reply: %d %s", res.Status, res.Payload)
	}
	res, err = emu.InvokeCommand(ctxT(t), "cli-watch", "", "getReport", map[string]int{"n": 1}, 10*time.Second)
	if err != nil || res.Status != 500 {
		t.Errorf("exec failing (root component): %+v, %v; want 500", res, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestFlagsAndEnvOverFile: environment and flags win over the file; bad
// usage gets clear errors.
func TestFlagsAndEnvOverFile(t *testing.T) {
	clearEnv(t)
	emu := startEmulator(t)
	ini := writeINI(t, emu, "from-file")
	var out, errb bytes.Buffer
	if err := run(ctxT(t), []string{"send", "-config", ini, "-device", "from-flag", `{"a": 1}`}, nil, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := emu.TelemetryHistory("from-flag", emulator.TelemetryFilter{}); len(msgs) != 1 {
		t.Errorf("from-flag sent %d messages, want 1", len(msgs))
	}
	key, err := emu.CreateDevice("env-dev")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("IOTC_DEVICE_KEY", key)
	if err := run(ctxT(t), []string{"send", "-config", ini, "-device", "env-dev", `{"a": 2}`}, nil, &out, &errb); err != nil {
		t.Fatalf("device key from the environment over the file's group key: %v", err)
	}
	t.Setenv("IOTC_GROUP_KEY", emu.GroupKey())
	for _, args := range [][]string{
		{"send", "-config", ini, `{"a": 2}`}, // two credentials in the environment
	} {
		if err := run(ctxT(t), args, nil, &out, &errb); err == nil || !strings.Contains(err.Error(), "more than one") {
			t.Errorf("%v: %v", args, err)
		}
	}
	clearEnv(t)
	for _, args := range [][]string{
		nil,
		{"fly"},
		{"send", "-config", ini, "not json"},
		{"report", "-config", ini},
		{"report", "-config", ini, "[1]"},
		{"watch", "-config", ini, "-reply", "{bad"},
		{"send", "-config", ini, "-section", "NOPE", "{}"},
		{"send", "-config", ini, "-fallback", "pigeon", "{}"},
		{"send", "-scope", "0ne00000001", "-device", "d", "{}"}, // no credential
	} {
		if err := run(ctxT(t), args, nil, &out, &errb); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	out.Reset()
	if err := run(ctxT(t), []string{"--help"}, nil, &out, &errb); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "samples.ini") {
		t.Errorf("--help: %v", err)
	}
}

// TestCredentialsCache: a run saves the hub DPS assigned in the user cache
// directory; the next run connects to it without DPS (its ID scope is
// refused by DPS, yet it reaches the hub).
func TestCredentialsCache(t *testing.T) {
	clearEnv(t)
	emu := startEmulator(t)
	ini := writeINI(t, emu, "cli-cache")
	out := &syncBuf{} // stdout and stderr: the status lines come from the client
	if err := run(ctxT(t), []string{"send", "-config", ini, `{"n": 1}`}, strings.NewReader(""), out, out); err != nil {
		t.Fatalf("first run: %v\n%s", err, out.String())
	}
	files, _ := filepath.Glob(filepath.Join(os.Getenv("XDG_CACHE_HOME"), "iotc-device", "*.json"))
	if len(files) != 1 {
		t.Fatalf("cache files %v, want one", files)
	}
	out = &syncBuf{}
	if err := run(ctxT(t), []string{"send", "-config", ini, "-dps", "dps.invalid", "-timeout", "20s", `{"n": 2}`}, strings.NewReader(""), out, out); err != nil {
		t.Fatalf("second run did not use the cache: %v\n%s", err, out.String())
	}
}

// TestUpload uploads a file with the hub's file upload; the blob holds
// its bytes and the hub recorded the upload.
func TestUpload(t *testing.T) {
	clearEnv(t)
	emu := startEmulator(t)
	ini := writeINI(t, emu, "cli-up")
	_, wsPort, _ := net.SplitHostPort(emu.WebSocketAddr())
	file := filepath.Join(t.TempDir(), "log.txt")
	if err := os.WriteFile(file, []byte("line 1\nline 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := run(ctxT(t), []string{"upload", "-config", ini, "-ws-port", wsPort, "-content-type", "text/plain", file}, nil, &out, &errb); err != nil {
		t.Fatalf("upload: %v\n%s", err, errb.String())
	}
	var res struct {
		Uploaded string
		Bytes    int64
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Bytes != 14 || !strings.HasSuffix(res.Uploaded, "/fileuploads/cli-up/log.txt") {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	ups := emu.FileUploads("cli-up")
	if len(ups) != 1 || !ups[0].Success || ups[0].Size != 14 {
		t.Fatalf("hub records %+v", ups)
	}
	if err := run(ctxT(t), []string{"upload", "-config", ini}, nil, &out, &errb); err == nil || !strings.Contains(err.Error(), "one file") {
		t.Fatalf("upload without a file: %v", err)
	}
}
