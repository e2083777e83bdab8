package emulator

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// kill9ChildEnv makes the test binary run an emulator on the data
// directory it names (see runKill9Child) instead of the tests.
const kill9ChildEnv = "IOTC_EMULATOR_KILL9_CHILD"

const kill9Token = "kill9-api-token"

// kill9Info is what the child prints once it serves.
type kill9Info struct {
	MQTT, REST, HubHost, CAFile string
}

// runKill9Child serves an emulator with a data directory until killed.
func runKill9Child(dir string) {
	e, err := Start(context.Background(), &Options{
		DataDir: dir, MQTTAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0", AMQPAddr: "-", WebSocketAddr: "-",
		APIToken: kill9Token, RetryAfter: -1,
	})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	b, _ := json.Marshal(kill9Info{MQTT: e.MQTTAddr(), REST: e.RESTURL(), HubHost: e.HubHost(), CAFile: e.CAFile()})
	fmt.Println(string(b))
	select {}
}

// kill9Load drives the child: REST calls and MQTT devices, recording what
// the emulator acknowledged.
type kill9Load struct {
	t    *testing.T
	info kill9Info
	http *http.Client
	tls  *tls.Config
	stop chan struct{} // closed at the kill

	mu        sync.Mutex
	created   []string         // devices whose PUT got a 2xx
	telemetry map[string][]int // device -> acknowledged seq numbers
	reported  map[string]int   // device -> highest acknowledged reported "n"
	desired   map[string]int   // device -> highest acknowledged desired "n"
	c2d       map[string]int   // device -> messages acknowledged (202)
	acks      atomic.Int64     // telemetry PUBACKs
}

func (l *kill9Load) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// rest makes one call; ok is false when it failed (the child died).
func (l *kill9Load) rest(method, path string, body any) (int, []byte, bool) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	req, err := http.NewRequest(method, l.info.REST+path+sep+"api-version=2022-07-31", r)
	if err != nil {
		l.t.Error(err)
		return 0, nil, false
	}
	req.Header.Set("Authorization", kill9Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.http.Do(req)
	if err != nil {
		return 0, nil, false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err == nil
}

// device creates id through REST and returns its primary key.
func (l *kill9Load) device(id string) string {
	l.t.Helper()
	if status, b, _ := l.rest("PUT", "/api/devices/"+id, map[string]any{"displayName": id}); status != 200 {
		l.t.Fatalf("create %s: %d %s", id, status, b)
	}
	status, b, _ := l.rest("GET", "/api/devices/"+id+"/credentials", nil)
	var cred struct {
		SymmetricKey struct{ PrimaryKey string } `json:"symmetricKey"`
	}
	if status != 200 || json.Unmarshal(b, &cred) != nil || cred.SymmetricKey.PrimaryKey == "" {
		l.t.Fatalf("credentials of %s: %d %s", id, status, b)
	}
	return cred.SymmetricKey.PrimaryKey
}

func (l *kill9Load) mqtt(id, key string) paho.Client {
	l.t.Helper()
	opts := paho.NewClientOptions().AddBroker("ssl://" + l.info.MQTT).SetClientID(id).
		SetUsername(l.info.HubHost + "/" + id + "/?api-version=2021-04-12").
		SetPassword(testSAS(l.t, key, l.info.HubHost+"/devices/"+id, time.Now().Add(time.Hour), "")).
		SetTLSConfig(l.tls).SetProtocolVersion(4).SetAutoReconnect(false).SetCleanSession(true).
		SetOrderMatters(false).SetConnectTimeout(wait).SetMaxResumePubInFlight(100)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		l.t.Fatalf("connect %s: %v", id, tok.Error())
	}
	l.t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// sendTelemetry publishes seq 1, 2, ... at QoS 1 with up to window in
// flight, recording each PUBACK; kill is called after the kill-th one.
func (l *kill9Load) sendTelemetry(id string, c paho.Client, window int, killAt int64, kill func()) {
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	defer wg.Wait()
	for seq := 1; !l.stopped() && seq <= 900; seq++ {
		select {
		case sem <- struct{}{}:
		case <-l.stop:
			return
		}
		tok := c.Publish("devices/"+id+"/messages/events/seq="+strconv.Itoa(seq), 1, false, []byte(`{"seq":`+strconv.Itoa(seq)+`}`))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			select {
			case <-tok.Done():
			case <-l.stop:
				return
			}
			if tok.Error() != nil {
				return
			}
			l.mu.Lock()
			l.telemetry[id] = append(l.telemetry[id], seq)
			l.mu.Unlock()
			if l.acks.Add(1) == killAt {
				kill()
			}
		}()
	}
}

// patchReported sends reported patches {"n": k} one at a time, recording
// the k of each 204.
func (l *kill9Load) patchReported(id string, c paho.Client) {
	res := make(chan paho.Message, 1)
	if tok := c.Subscribe("$iothub/twin/res/#", 0, func(_ paho.Client, m paho.Message) {
		select {
		case res <- m:
		default:
		}
	}); !tok.WaitTimeout(wait) || tok.Error() != nil {
		l.t.Errorf("subscribe: %v", tok.Error())
		return
	}
	for n := 1; !l.stopped(); n++ {
		rid := strconv.Itoa(n)
		c.Publish("$iothub/twin/PATCH/properties/reported/?$rid="+rid, 0, false, []byte(`{"n":`+rid+`}`))
		select {
		case m := <-res:
			if strings.HasPrefix(m.Topic(), "$iothub/twin/res/204/?$rid="+rid+"&") {
				l.mu.Lock()
				l.reported[id] = n
				l.mu.Unlock()
			}
		case <-l.stop:
			return
		case <-time.After(wait):
			return
		}
	}
}

// TestKill9LosesNothingAcknowledged runs the emulator with a data
// directory in a child process, acknowledges telemetry, reported and
// desired patches, created devices and queued cloud-to-device messages
// under load, kills it with SIGKILL right after an acknowledgement,
// restarts on the same directory and finds every acknowledged item.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), kill9ChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatalf("the child printed nothing: %v", sc.Err())
	}
	var info kill9Info
	if err := json.Unmarshal(sc.Bytes(), &info); err != nil {
		t.Fatalf("child: %s", sc.Bytes())
	}
	ca, err := os.ReadFile(info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	l := &kill9Load{
		t: t, info: info, stop: make(chan struct{}),
		http: &http.Client{Timeout: wait, Transport: &http.Transport{MaxConnsPerHost: 8,
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
		tls:       &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12},
		telemetry: map[string][]int{}, reported: map[string]int{}, desired: map[string]int{}, c2d: map[string]int{},
	}
	var killOnce sync.Once
	kill := func() {
		killOnce.Do(func() {
			_ = cmd.Process.Kill() // SIGKILL, right after an acknowledgement
			close(l.stop)
		})
	}

	const devices, window, killAt = 8, 50, 2000
	var wg sync.WaitGroup
	for i := range devices {
		id := fmt.Sprintf("tel-%d", i)
		c := l.mqtt(id, l.device(id))
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.sendTelemetry(id, c, window, killAt, kill)
		}()
		if i < 3 {
			// A second connection would replace the first: reported
			// patches go on the same one.
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.patchReported(id, c)
			}()
		}
	}
	wg.Add(3)
	go func() { // devices created through REST
		defer wg.Done()
		for n := 0; !l.stopped(); n++ {
			id := fmt.Sprintf("new-%d", n)
			if status, _, ok := l.rest("PUT", "/api/devices/"+id, map[string]any{"displayName": id}); ok && status == 200 {
				l.mu.Lock()
				l.created = append(l.created, id)
				l.mu.Unlock()
			}
		}
	}()
	go func() { // cloud-to-device messages queued for devices that never take them
		defer wg.Done()
		for n := 0; !l.stopped() && n < 45*devices; n++ {
			id := fmt.Sprintf("tel-%d", n%devices)
			if status, _, ok := l.rest("POST", "/api/emulator/devices/"+id+"/messages", map[string]any{"data": "m" + strconv.Itoa(n)}); ok && status == 202 {
				l.mu.Lock()
				l.c2d[id]++
				l.mu.Unlock()
			}
		}
	}()
	go func() { // desired patches
		defer wg.Done()
		for n := 1; !l.stopped(); n++ {
			if status, _, ok := l.rest("PATCH", "/api/devices/tel-7/properties", map[string]any{"n": n}); ok && status == 202 {
				l.mu.Lock()
				l.desired["tel-7"] = n
				l.mu.Unlock()
			}
		}
	}()
	select {
	case <-l.stop:
	case <-time.After(2 * time.Minute):
		t.Fatal("the load never reached the kill point")
	}
	werr := cmd.Wait()
	killed = true
	wg.Wait()
	if ee, ok := werr.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
		t.Fatalf("the child was not killed by a signal: %v", werr)
	}

	// Restart on the same directory and look for every acknowledged item.
	e, err := Start(ctxT(t), &Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", RESTAddr: "-", AMQPAddr: "-", WebSocketAddr: "-"})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer e.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	total := 0
	for id, seqs := range l.telemetry {
		hist, err := e.TelemetryHistory(id, TelemetryFilter{})
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		have := map[string]bool{}
		for _, m := range hist {
			have[m.Properties["seq"]] = true
		}
		for _, s := range seqs {
			if !have[strconv.Itoa(s)] {
				t.Errorf("%s: acknowledged message seq=%d lost (history holds %d)", id, s, len(hist))
			}
		}
		total += len(seqs)
	}
	if total < killAt {
		t.Fatalf("only %d telemetry acknowledgements recorded", total)
	}
	for _, id := range l.created {
		if _, err := e.Device(id); err != nil {
			t.Errorf("acknowledged device %s lost: %v", id, err)
		}
	}
	for id, n := range l.reported {
		_, reported, err := e.Twin(id)
		if err != nil || toInt(reported["n"]) < n {
			t.Errorf("%s: acknowledged reported n=%d, restarted twin has %v (%v)", id, n, reported["n"], err)
		}
	}
	for id, n := range l.desired {
		desired, _, err := e.Twin(id)
		if err != nil || toInt(desired["n"]) < n {
			t.Errorf("%s: acknowledged desired n=%d, restarted twin has %v (%v)", id, n, desired["n"], err)
		}
	}
	queued := 0
	for id, n := range l.c2d {
		if got := e.core.PendingC2D(id); got < n {
			t.Errorf("%s: %d cloud-to-device messages acknowledged, %d kept", id, n, got)
		}
		queued += n
	}
	t.Logf("acknowledged before the kill: %d telemetry, %d devices, %d reported patches (max), %d desired, %d C2D",
		total, len(l.created), len(l.reported), l.desired["tel-7"], queued)
	if len(l.created) == 0 || len(l.reported) == 0 || queued == 0 || l.desired["tel-7"] == 0 {
		t.Fatal("the load acknowledged nothing of some kind: the test proves nothing for it")
	}
}

func toInt(v any) int {
	switch n := v.(type) {
	case float64:
		return int(n)
	case int64:
		return int(n)
	case json.Number:
		i, _ := n.Int64()
		return int(i)
	}
	return -1
}
