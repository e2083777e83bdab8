package emulator

// Tests of the emulator under hostile input (issue 23): each probe of the
// issue, bounded, against a real emulator on loopback.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
)

// amqpRaw is a hand-made AMQP client over TLS, for what no client library
// sends: links it never authenticates, messages it never finishes.
type amqpRaw struct {
	t  *testing.T
	nc net.Conn
}

func dialAMQPRaw(t *testing.T, addr string, roots *x509.CertPool) *amqpRaw {
	t.Helper()
	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(wait))
	r := &amqpRaw{t: t, nc: nc}
	if _, err := nc.Write([]byte{'A', 'M', 'Q', 'P', 0, 1, 0, 0}); err != nil {
		t.Fatal(err)
	}
	var h [8]byte
	if _, err := io.ReadFull(nc, h[:]); err != nil {
		t.Fatalf("protocol header: %v", err)
	}
	if err := r.send(0, &amqp1.Open{ContainerID: "hostile", MaxFrameSize: 65536, ChannelMax: 255}, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.next().(*amqp1.Open); !ok {
		t.Fatal("no open")
	}
	_ = nc.SetDeadline(time.Time{})
	return r
}

func (r *amqpRaw) send(ch uint16, p amqp1.Performative, payload []byte) error {
	body, err := amqp1.Encode(p)
	if err != nil {
		r.t.Fatal(err)
	}
	f, err := amqp1.AppendFrame(nil, amqp1.FrameTypeAMQP, ch, append(body, payload...))
	if err != nil {
		r.t.Fatal(err)
	}
	_, err = r.nc.Write(f)
	return err
}

// next returns the next performative (heartbeats skipped), nil on error.
func (r *amqpRaw) next() amqp1.Performative {
	for {
		f, err := amqp1.ReadFrame(r.nc, 1<<20)
		if err != nil {
			return nil
		}
		if len(f.Body) == 0 {
			continue
		}
		p, err := amqp1.DecodePerformative(f.Body)
		if err != nil {
			return nil
		}
		return p
	}
}

// closeCondition reads until the server's close and returns its condition
// ("" when the connection ended without a close, or after wait).
func (r *amqpRaw) closeCondition() amqp1.Symbol {
	_ = r.nc.SetReadDeadline(time.Now().Add(wait))
	for {
		p := r.next()
		if p == nil {
			return ""
		}
		if cl, ok := p.(*amqp1.Close); ok {
			if cl.Error == nil {
				return "(none)"
			}
			return cl.Error.Condition
		}
	}
}

// hostileChildEnv makes the test binary the emulator process of
// TestAMQPPreLoginMemoryIsBounded.
const hostileChildEnv = "IOTC_EMULATOR_HOSTILE_CHILD"

// preLoginRSSBound is the most the emulator's resident memory may grow
// (peak, VmHWM, over the resident size before the attack) while one
// connection without a token attaches 64 $cbs links and starts a 1 MiB
// message on each: 64 MiB sent, which made the old engine grow by about
// 120 MiB. The engine now closes the connection after
// DefaultAMQPLoginMaxUnsettledBytes (64 KiB) or DefaultAMQPLoginMaxLinks.
const preLoginRSSBound = 16 << 20

// TestAMQPPreLoginMemoryIsBounded measures the emulator's RSS in a process
// of its own (this test binary, re-run as the emulator).
func TestAMQPPreLoginMemoryIsBounded(t *testing.T) {
	if os.Getenv(hostileChildEnv) == "1" {
		runHostileChild(t)
		return
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to read the emulator's resident memory")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAMQPPreLoginMemoryIsBounded$", "-test.count=1")
	cmd.Env = append(os.Environ(), hostileChildEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close() // the child closes its emulator and exits
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(wait):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	var addr, caFile string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "READY %s %s", &addr, &caFile); err == nil {
			break
		}
	}
	if addr == "" {
		t.Fatal("the emulator process did not start")
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)

	// Warm up TLS and the AMQP engine with one harmless connection, then
	// take the baseline.
	dialAMQPRaw(t, addr, roots).nc.Close()
	base := procStatusKiB(t, cmd.Process.Pid, "VmRSS")

	r := dialAMQPRaw(t, addr, roots)
	cond := make(chan amqp1.Symbol, 1)
	go func() { cond <- r.closeCondition() }()
	sent := 0
	func() {
		if r.send(0, &amqp1.Begin{IncomingWindow: 100000, OutgoingWindow: 100000, HandleMax: 255}, nil) != nil {
			return
		}
		chunk := bytes.Repeat([]byte{0x5a}, 65536-256)
		for h := range uint32(64) {
			if r.send(0, &amqp1.Attach{Name: "cbs-" + strconv.Itoa(int(h)), Handle: h, Role: amqp1.RoleSender,
				Target: &amqp1.Target{Address: "$cbs"}}, nil) != nil {
				return
			}
			for i := range 15 { // 15 frames of 64 KiB: just under 1 MiB, never finished
				id := h
				tr := &amqp1.Transfer{Handle: h, More: true}
				if i == 0 {
					tr.DeliveryID, tr.DeliveryTag = &id, []byte{byte(h)}
				}
				_ = r.nc.SetWriteDeadline(time.Now().Add(wait))
				if r.send(0, tr, chunk) != nil {
					return // the emulator closed the connection
				}
				sent += len(chunk)
			}
		}
	}()
	got := <-cond
	peak := procStatusKiB(t, cmd.Process.Pid, "VmHWM")
	growth := (peak - base) << 10
	t.Logf("sent %d KiB before the close (%q); emulator RSS %d KiB before, peak %d KiB: +%d KiB (bound %d KiB)",
		sent>>10, got, base, peak, growth>>10, preLoginRSSBound>>10)
	if got != amqp1.ErrCondResourceLimitExceeded {
		t.Errorf("connection ended with %q, want a close with amqp:resource-limit-exceeded", got)
	}
	if growth > preLoginRSSBound {
		t.Errorf("emulator RSS grew by %d KiB, bound %d KiB", growth>>10, preLoginRSSBound>>10)
	}
}

// runHostileChild is the emulator process of TestAMQPPreLoginMemoryIsBounded:
// it prints its AMQP address and CA file, then serves until stdin closes.
func runHostileChild(t *testing.T) {
	e, err := Start(t.Context(), &Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", WebSocketAddr: "-", CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("READY %s %s\n", e.AMQPAddr(), e.CAFile())
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := e.Close(); err != nil {
		t.Error(err)
	}
}

// procStatusKiB reads a "kB" field of /proc/pid/status.
func procStatusKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("%s: %q", field, line)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func TestAMQPConnectionWithoutATokenIsClosedAtTheDeadline(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{Limits: Limits{AMQPLoginDeadline: 100 * time.Millisecond}})
	r := dialAMQPRaw(t, e.AMQPAddr(), e.CAPool())
	// Heartbeats do not keep it open.
	go func() {
		for range 20 {
			if _, err := r.nc.Write([]byte{0, 0, 0, 8, 2, 0, 0, 0}); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if got := r.closeCondition(); got != amqp1.ErrCondUnauthorizedAccess {
		t.Fatalf("closed with %q, want amqp:unauthorized-access", got)
	}
	waitFor(t, func() bool { return e.Stats().LimitHits["amqp_login_deadline"] == 1 })
}

// waitFor polls cond until it holds or wait passes.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// expectClosedByServer reads from c until the server closes it; a read
// that reaches wait is a failure.
func expectClosedByServer(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: still open after %v", what, wait)
	}
}

func TestIdleHTTPConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", WebSocketAddr: "127.0.0.1:0",
		Limits: Limits{HTTPIdleTimeout: 100 * time.Millisecond}})
	for name, addr := range map[string]string{"REST": strings.TrimPrefix(e.RESTURL(), "https://"), "WebSocket": e.WebSocketAddr()} {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// One unauthenticated request, answered, then nothing.
		fmt.Fprintf(c, "GET /api/devices?api-version=2022-07-31 HTTP/1.1\r\nHost: localhost\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		expectClosedByServer(t, c, name+" idle keep-alive connection")
	}
}

func TestSlowRequestBodyIsCut(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", Limits: Limits{HTTPReadTimeout: 200 * time.Millisecond}})
	c, err := tls.Dial("tcp", strings.TrimPrefix(e.RESTURL(), "https://"), &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A valid token and a body that never comes.
	fmt.Fprintf(c, "POST /api/emulator/devices/x/messages?api-version=2022-07-31 HTTP/1.1\r\nHost: localhost\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", e.APIToken())
	expectClosedByServer(t, c, "slow body")
}

func TestListenerConnectionCap(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", Limits: Limits{RESTMaxConns: 2}})
	addr := strings.TrimPrefix(e.RESTURL(), "https://")
	var held []net.Conn
	for range 2 {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosedByServer(t, c, "connection over the cap")
	waitFor(t, func() bool { return e.Stats().LimitHits["conn_cap_rest"] >= 1 })
	if n := e.Stats().Connections["rest"]; n != 2 {
		t.Errorf("open REST connections %d, want 2", n)
	}
	for _, h := range held {
		h.Close()
	}
	waitFor(t, func() bool { return e.Stats().Connections["rest"] == 0 })
}

func TestFailedAuthenticationsAreRateLimited(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", Limits: Limits{AuthFailures: 3, AuthFailureWindow: time.Hour}})
	var codes []int
	for range 4 {
		st, _ := restDo(t, e, "GET", "/api/devices", "wrong", nil)
		codes = append(codes, st)
	}
	st, _ := restDo(t, e, "GET", "/api/devices", e.APIToken(), nil)
	codes = append(codes, st)
	if fmt.Sprint(codes) != "[401 401 401 429 429]" {
		t.Errorf("statuses %v, want [401 401 401 429 429]: the client is refused until its window ends", codes)
	}
}

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRefusalFloodIsSummarisedInTheLog(t *testing.T) {
	t.Parallel()
	for _, verbose := range []bool{false, true} {
		t.Run(fmt.Sprintf("verbose=%v", verbose), func(t *testing.T) {
			t.Parallel()
			// The level iotc-emulator uses: Warn, or Debug with -v.
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelDebug
			}
			var logs lockedBuffer
			e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level}))})
			id := "evil\nlevel=ERROR msg=forged " + strings.Repeat("x", 300)
			const attempts = 40
			for range attempts {
				_, err := dial(t, e, dialOpts{clientID: id, username: hubUser(e, id, ""), password: "SharedAccessSignature sr=x&sig=bad&se=1"})
				expectRefused(t, err)
				if st, _ := restDo(t, e, "GET", "/api/devices", "wrong", nil); st != 401 {
					t.Fatalf("REST with a wrong token: %d", st)
				}
			}
			if err := e.Close(); err != nil { // writes the last summary
				t.Fatal(err)
			}
			out := logs.String()
			lines := strings.Count(out, "\n")
			for line := range strings.SplitSeq(strings.TrimSuffix(out, "\n"), "\n") {
				if !strings.HasPrefix(line, "time=") || strings.Contains(line, strings.Repeat("x", 300)) {
					t.Fatalf("client text forged or flooded a log line: %q", line)
				}
			}
			if !verbose {
				// One summary line per interval (10 s): the whole flood fits in one or two.
				if lines > 2 || !strings.Contains(out, "mqtt_auth=") || !strings.Contains(out, "rest_auth=") {
					t.Errorf("%d lines for %d refusals without -v:\n%s", lines, 2*attempts, out)
				}
				return
			}
			if lines < 2*attempts {
				t.Errorf("%d lines with -v, want each of the %d refusals", lines, 2*attempts)
			}
		})
	}
}

func TestDashboardLogoutRevokesTheSession(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	c := dashClient(t, e)
	resp := dashLogin(t, e, c, e.APIToken())
	ck := resp.Cookies()
	if len(ck) != 1 {
		t.Fatalf("login: %d cookies %v", resp.StatusCode, ck)
	}
	again := dashLogin(t, e, dashClient(t, e), e.APIToken()).Cookies()
	if len(again) != 1 || again[0].Value == ck[0].Value {
		t.Errorf("a second login got the same session id")
	}
	get := func(cookie string) int {
		req, _ := http.NewRequestWithContext(ctxT(t), "GET", e.RESTURL()+"/groups", nil)
		req.Header.Set("Cookie", CookieNameForTest+"="+cookie)
		r, err := restClient(e).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if st := get(ck[0].Value); st != 200 {
		t.Fatalf("with the session: %d", st)
	}
	// Logout from another site is refused; from the dashboard it works.
	for _, origin := range []string{"https://evil.example", ""} {
		req, _ := http.NewRequestWithContext(ctxT(t), "POST", e.RESTURL()+"/logout", nil)
		req.Header.Set("Cookie", CookieNameForTest+"="+ck[0].Value)
		if origin != "" {
			req.Header.Set("Origin", origin)
		} else {
			req.Header.Set("X-IOTC-Dashboard", "1")
		}
		r, err := restClient(e).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if origin != "" && get(ck[0].Value) != 200 {
			t.Fatalf("a cross-site logout ended the session")
		}
	}
	// The cookie replayed after logout no longer works.
	if st := get(ck[0].Value); st != http.StatusUnauthorized {
		t.Errorf("session after logout: %d, want 401", st)
	}
}

// CookieNameForTest is the dashboard's session cookie.
const CookieNameForTest = "iotc_dashboard"

func TestDotIDsAndBadDPSBodiesAreRefused(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	for _, id := range []string{".", ".."} {
		if _, err := e.CreateDevice(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateDevice(%q) = %v, want ErrInvalid", id, err)
		}
		if st, _ := restDo(t, e, "PUT", "/api/devices/"+url.PathEscape(id), e.APIToken(), map[string]any{"displayName": "x"}); st == 200 || st == 201 {
			t.Errorf("REST PUT device %q: %d", id, st)
		}
		// DPS refuses the registration id at CONNECT.
		_, err := dialDPS(t, e, id, dpsSAS(t, e, id, derived(t, e.GroupKey(), id), time.Hour), nil)
		expectRefused(t, err)
	}
	s, err := dialDPS(t, e, "dev-ok", dpsSAS(t, e, "dev-ok", derived(t, e.GroupKey(), "dev-ok"), time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"null":         `null`,
		"array":        `[]`,
		"huge modelId": `{"registrationId":"dev-ok","payload":{"modelId":"dtmi:` + strings.Repeat("a", 200000) + `;1"}}`,
		"markup":       `{"registrationId":"dev-ok","payload":{"modelId":"<img src=x onerror=alert(1)>"}}`,
	} {
		if st, _, _ := s.request("$dps/registrations/PUT/iotdps-register/", "", 1, []byte(body)); st != 400 {
			t.Errorf("register with a %s body: %d, want 400", name, st)
		}
	}
	if _, err := e.Device("dev-ok"); err == nil {
		t.Error("a refused registration made the device")
	}
}

func TestMQTTKeepAliveZeroGetsTheMaximumIdleTime(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{Limits: Limits{MQTTMaxIdle: 3 * time.Second}})
	id := "idle-dev"
	key, err := e.CreateDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", e.MQTTAddr(), &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A raw CONNECT with keep-alive 0 (paho would ping anyway).
	if _, err := c.Write(mqttConnect(id, hubUser(e, id, ""), hubSAS(t, e, id, key, time.Hour), 0)); err != nil {
		t.Fatal(err)
	}
	var ack [4]byte
	_ = c.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK % x, %v", ack, err)
	}
	expectClosedByServer(t, c, "silent connection with keep-alive 0")
	waitFor(t, func() bool { return e.Stats().LimitHits["mqtt_idle_timeout"] == 1 })
}

// mqttConnect encodes an MQTT 3.1.1 CONNECT.
func mqttConnect(clientID, user, pass string, keepAlive uint16) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var vh []byte
	vh = append(vh, str("MQTT")...)
	vh = append(vh, 4, 0xC2, byte(keepAlive>>8), byte(keepAlive)) // user, password, clean session
	vh = append(vh, str(clientID)...)
	vh = append(vh, str(user)...)
	vh = append(vh, str(pass)...)
	return append(append([]byte{0x10}, remainingLength(len(vh))...), vh...)
}

func remainingLength(n int) []byte {
	var out []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}

func TestMQTTPreLoginBytesAreCapped(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{Limits: Limits{MQTTPreLoginBytes: 100 << 10}})
	dialTLS := func() net.Conn {
		c, err := tls.Dial("tcp", e.MQTTAddr(), &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// A CONNECT announcing 60 KiB, sent slowly: it holds its share.
	slow := dialTLS()
	if _, err := slow.Write(append([]byte{0x10}, remainingLength(60<<10)...)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return e.Stats().MQTTPreLoginBytes == 60<<10 })
	// A second one does not fit: that connection is closed.
	second := dialTLS()
	if _, err := second.Write(append([]byte{0x10}, remainingLength(60<<10)...)); err != nil {
		t.Fatal(err)
	}
	expectClosedByServer(t, second, "CONNECT over the pre-login budget")
	if n := e.Stats().LimitHits["mqtt_prelogin_bytes"]; n != 1 {
		t.Errorf("limit hits %d, want 1", n)
	}
	// Once the slow one is gone its share returns, and devices log in.
	slow.Close()
	waitFor(t, func() bool { return e.Stats().MQTTPreLoginBytes == 0 })
	_, _ = newHubDevice(t, e, "after-flood")
}

func TestStatsExtension(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	if st, _ := restDo(t, e, "GET", "/api/devices", "wrong", nil); st != 401 {
		t.Fatalf("wrong token: %d", st)
	}
	if st, _ := restDo(t, e, "GET", "/api/emulator/stats", "", nil); st != 401 {
		t.Errorf("stats without a token: %d", st)
	}
	st, body := restDo(t, e, "GET", "/api/emulator/stats", e.APIToken(), nil)
	var s Stats
	if err := json.Unmarshal(body, &s); st != 200 || err != nil {
		t.Fatalf("stats: %d %s", st, body)
	}
	if s.Refusals["rest_auth"] < 1 || s.Connections["rest"] < 1 {
		t.Errorf("stats %s: want a rest_auth refusal and an open REST connection", body)
	}
}

// TestShortHTTPTimeoutsSpareWebSocketsAndStreams: the HTTP timeouts bound
// requests, not the devices that upgraded to WebSockets nor the
// dashboard's live streams.
func TestShortHTTPTimeoutsSpareWebSocketsAndStreams(t *testing.T) {
	t.Parallel()
	short := 300 * time.Millisecond
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0", WebSocketAddr: "127.0.0.1:0",
		Limits: Limits{HTTPReadTimeout: short, HTTPWriteTimeout: short, HTTPIdleTimeout: short}})
	key, err := e.CreateDevice("ws-dev")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := dial(t, e, dialOpts{clientID: "ws-dev", websocket: true, username: hubUser(e, "ws-dev", ""), password: hubSAS(t, e, "ws-dev", key, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctxT(t), "GET", e.RESTURL()+"/live", nil)
	req.Header.Set("Authorization", e.APIToken())
	resp, err := restClient(e).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(4 * short) // well past every HTTP timeout
	msgs, stop := e.WatchTelemetry("ws-dev")
	defer stop()
	sendTelemetry(t, &hubDevice{client: cl, id: "ws-dev"}, msgs, "", []byte(`{"t":1}`))
	// The stream is still alive: it delivers the change of the device's row.
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("live stream ended: %v", err)
		}
		if strings.Contains(line, `"messages":1`) {
			break
		}
	}
}
