package outboxe2e

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/adapters/fileoutbox"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/faultproxy"
)

// Environment of the child process.
const (
	envMode  = "IOTC_OUTBOX_E2E_CHILD" // "enqueue" or "deliver"
	envDir   = "IOTC_OUTBOX_E2E_DIR"
	envPort  = "IOTC_OUTBOX_E2E_PORT"
	envScope = "IOTC_OUTBOX_E2E_SCOPE"
	envKey   = "IOTC_OUTBOX_E2E_KEY"
	envCA    = "IOTC_OUTBOX_E2E_CA"
	envCount = "IOTC_OUTBOX_E2E_COUNT"
)

const deviceID = "outbox-e2e"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envMode); mode != "" {
		os.Exit(child(mode))
	}
	goleak.VerifyTestMain(m)
}

// child is the device process. In "enqueue" mode it connects in the
// background (to a port where nothing listens) and enqueues count
// messages, printing "ok N" once message N was accepted, until it is
// killed. In "deliver" mode it connects, waits until the outbox is empty,
// closes and prints "delivered N reconnects R".
func child(mode string) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "child %s: "+format+"\n", append([]any{mode}, args...)...)
		return 2
	}
	port, _ := strconv.Atoi(os.Getenv(envPort))
	pem, err := os.ReadFile(os.Getenv(envCA))
	if err != nil {
		return fail("read CA: %v", err)
	}
	var connects int
	var mu sync.Mutex
	cfg := iotc.Config{
		DeviceID:         deviceID,
		IDScope:          os.Getenv(envScope),
		Credential:       iotc.GroupKey(os.Getenv(envKey)),
		ProvisioningHost: "127.0.0.1",
		Port:             port,
		Outbox:           iotc.OutboxConfig{Dir: os.Getenv(envDir)},
		// Quick reconnects: the connection-cutting case cuts every 300 ms.
		StableAfter: 100 * time.Millisecond,
		Backoff:     iotc.Backoff{Base: 50 * time.Millisecond, Cap: 500 * time.Millisecond},
		OnStatus: func(s iotc.Status) {
			if s.State == iotc.StateConnected {
				mu.Lock()
				connects++
				mu.Unlock()
			}
		},
	}
	cfg.RootCAs = x509Pool(pem)
	c, err := iotc.New(cfg)
	if err != nil {
		return fail("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	switch mode {
	case "enqueue":
		go func() { _ = c.Connect(ctx, nil) }() // retries against a dead port until killed
		n, _ := strconv.Atoi(os.Getenv(envCount))
		for i := 1; i <= n; i++ {
			err := c.EnqueueTelemetry(ctx, map[string]any{"n": i}, &iotc.TelemetryOptions{Properties: map[string]string{"seq": strconv.Itoa(i)}})
			if err != nil {
				return fail("EnqueueTelemetry %d: %v", i, err)
			}
			fmt.Fprintf(os.Stdout, "ok %d\n", i)
		}
		<-ctx.Done() // wait to be killed
		return fail("not killed")
	case "deliver":
		if err := c.Connect(ctx, nil); err != nil {
			return fail("Connect: %v", err)
		}
		for c.OutboxStats().Messages > 0 {
			select {
			case <-ctx.Done():
				return fail("outbox still holds %d messages", c.OutboxStats().Messages)
			case <-time.After(20 * time.Millisecond):
			}
		}
		st := c.OutboxStats()
		if err := c.Close(ctx); err != nil {
			return fail("Close: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf("delivered %d reconnects %d\n", st.Delivered, connects-1)
		return 0
	}
	return fail("unknown mode")
}

// perTestDeadline bounds each case of TestKill9WhileOfflineThenDeliver,
// both phases together, so that a stuck child (a pump that stopped
// delivering) fails that case with a message and the child's goroutine
// stacks, rather than reaching the whole binary's timeout.
const perTestDeadline = 100 * time.Second

// caseContext returns a context ending at perTestDeadline, or earlier when
// the test binary's own deadline comes first (less a margin to report).
func caseContext(t *testing.T) context.Context {
	t.Helper()
	d := time.Now().Add(perTestDeadline)
	if td, ok := t.Deadline(); ok && td.Add(-10*time.Second).Before(d) {
		d = td.Add(-10 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// childCmd is the device process; when ctx ends while it runs it is sent
// SIGQUIT (it prints every goroutine's stack to the test log) and killed
// 5 s later.
func childCmd(ctx context.Context, t *testing.T, mode, dir string, port int, emu *emulator.Emulator, caFile string, count int) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Cancel = func() error { return quit(cmd.Process) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(),
		envMode+"="+mode, envDir+"="+dir, envPort+"="+strconv.Itoa(port),
		envScope+"="+emu.IDScope(), envKey+"="+emu.GroupKey(), envCA+"="+caFile,
		envCount+"="+strconv.Itoa(count))
	cmd.Stderr = &prefixWriter{t: t}
	return cmd
}

// prefixWriter logs a child's stderr through t.
type prefixWriter struct {
	t  *testing.T
	mu sync.Mutex
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Logf("child: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// deadPort returns a local port where nothing listens.
func deadPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// TestKill9WhileOfflineThenDeliver: 5,000 messages are enqueued while the
// hub is unreachable; the device process is killed with SIGKILL once 3,000
// were accepted; a new process on the same OutboxDir, with the emulator
// reachable, delivers every accepted message, in order, each with the id
// it was stored with, none twice unless a connection was lost. In the
// second case every connection of the delivering process is cut every
// 250 ms, so acknowledgements get lost and messages are sent again.
func TestKill9WhileOfflineThenDeliver(t *testing.T) {
	t.Run("Clean", func(t *testing.T) { kill9ThenDeliver(t, false) })
	t.Run("ConnectionsCut", func(t *testing.T) { kill9ThenDeliver(t, true) })
}

// kill9ThenDeliver enqueues offline, kills the process, then delivers
// from a new one; with cuts, the connection is cut after every cutEvery
// messages the hub received (counted, not timed: a fast delivery is cut
// as surely as a slow one).
func kill9ThenDeliver(t *testing.T, cuts bool) {
	const cutEvery = 700
	const total, killAfter = 5000, 3000
	emu, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", WebSocketAddr: "-", AMQPAddr: "-", RetryAfter: -1})
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	defer emu.Close()
	work := t.TempDir()
	caFile := filepath.Join(work, "ca.pem")
	if err := os.WriteFile(caFile, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "outbox")
	ctx := caseContext(t)

	// Phase 1: offline, killed after killAfter acceptances.
	cmd := childCmd(ctx, t, "enqueue", dir, deadPort(t), emu, caFile, total)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	accepted := 0
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "ok "))
		if err != nil || n != accepted+1 {
			t.Fatalf("child printed %q after %d", sc.Text(), accepted)
		}
		accepted = n
		if accepted == killAfter && !killed {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	werr := cmd.Wait()
	if !killed && ctx.Err() != nil {
		t.Fatalf("per-test deadline (%v) passed while the enqueue child ran: %d messages accepted", perTestDeadline, accepted)
	}
	if !killed {
		t.Fatalf("the child ended before %d messages were accepted (%d): %v", killAfter, accepted, werr)
	}
	if ee, ok := werr.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
		t.Fatalf("the child was not killed by a signal: %v", werr)
	}
	t.Logf("killed after %d messages were accepted", accepted)

	// What the killed process left on disk.
	ob, err := fileoutbox.Open(dir, fileoutbox.Options{})
	if err != nil {
		t.Fatalf("open the outbox left behind: %v", err)
	}
	rec := ob.Recovery()
	stored, err := ob.Peek(context.Background(), total+1)
	_ = ob.Close()
	if err != nil {
		t.Fatal(err)
	}
	// A write the kill cut short may leave a torn last record (moved to
	// quarantine); anything else is damage.
	for _, c := range rec.Corrupt {
		if !c.Torn {
			t.Fatalf("the killed process left a damaged outbox: %+v", rec)
		}
	}
	// Every accepted message is stored, in order; at most one more (accepted
	// but killed before it printed).
	if len(stored) < accepted || len(stored) > accepted+1 {
		t.Fatalf("%d messages stored, %d accepted", len(stored), accepted)
	}
	idOf := map[int]string{}
	for i, e := range stored {
		if e.Message.Properties["seq"] != strconv.Itoa(i+1) || e.Message.MessageID == "" {
			t.Fatalf("stored entry %d: seq %s id %q", i, e.Message.Properties["seq"], e.Message.MessageID)
		}
		idOf[i+1] = e.Message.MessageID
	}

	// Phase 2: the emulator is reachable; a new process delivers.
	_, port, _ := net.SplitHostPort(emu.MQTTAddr())
	p, _ := strconv.Atoi(port)
	var proxy *faultproxy.Proxy
	if cuts {
		proxy, err = faultproxy.Start(emu.MQTTAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer proxy.Close()
		p = proxy.Port()
	}
	watch, stopWatch := emu.WatchTelemetry(deviceID)
	defer stopWatch()
	type arrival struct {
		seq int
		id  string
	}
	var (
		gotMu sync.Mutex
		got   []arrival
	)
	stopReading := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			select {
			case m := <-watch:
				n, _ := strconv.Atoi(m.Properties["seq"])
				gotMu.Lock()
				got = append(got, arrival{n, m.MessageID})
				cut := proxy != nil && len(got)%cutEvery == 0
				gotMu.Unlock()
				if cut {
					proxy.Kill()
				}
			case <-stopReading:
				return
			}
		}
	}()
	received := func() int {
		gotMu.Lock()
		defer gotMu.Unlock()
		return len(got)
	}
	cmd2 := childCmd(ctx, t, "deliver", dir, p, emu, caFile, 0)
	out, err := cmd2.Output()
	if err != nil && ctx.Err() != nil {
		t.Fatalf("per-test deadline (%v) passed while the deliver child ran (its stacks are above): %d of %d stored messages received", perTestDeadline, received(), len(stored))
	}
	if err != nil {
		t.Fatalf("deliver child: %v", err)
	}
	var delivered, reconnects int
	if _, err := fmt.Sscanf(string(out), "delivered %d reconnects %d", &delivered, &reconnects); err != nil {
		t.Fatalf("deliver child printed %q", out)
	}
	// Wait, within the case's deadline, for the emulator's stream to hand
	// over the last ones.
	for received() < len(stored) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(stopReading)
	<-readDone

	gotMu.Lock()
	defer gotMu.Unlock()
	seen := map[int]bool{}
	last, dups := 0, 0
	for _, a := range got {
		if a.id != idOf[a.seq] {
			t.Fatalf("message %d received with id %q, stored with %q", a.seq, a.id, idOf[a.seq])
		}
		if seen[a.seq] {
			dups++
			continue
		}
		if a.seq != last+1 {
			t.Fatalf("message %d received after %d: out of order or a gap", a.seq, last)
		}
		seen[a.seq] = true
		last = a.seq
	}
	if last != len(stored) {
		t.Fatalf("received messages 1..%d of %d stored (%d accepted)", last, len(stored), accepted)
	}
	if proxy != nil && (proxy.Kills() == 0 || reconnects == 0) {
		t.Fatalf("no connection was cut during the delivery (%d cut, %d reconnects)", proxy.Kills(), reconnects)
	}
	if dups > 0 && reconnects == 0 {
		t.Fatalf("%d messages received twice without a lost connection", dups)
	}
	t.Logf("accepted %d, stored %d, received %d distinct (%d duplicates, %d reconnects), child reported %d delivered", accepted, len(stored), last, dups, reconnects, delivered)
}

func x509Pool(pem []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pem)
	return p
}
