// Command footbench measures the emulator's memory and goroutines per
// connected MQTT device. It runs the emulator in a child process (this
// program with -serve), creates -devices devices there through the Go API
// (or, with -dps, has each device register through DPS over MQTT with the
// group key, as iotc-fleet does), then connects one raw paho client per
// device from this process doing a device SDK's connect work: TLS, CONNECT
// with a SAS token, SUBSCRIBE to the twin response, desired-patch and
// method topics (QoS 0) and to the device's cloud-to-device topic (QoS 1),
// one twin GET and one telemetry message at QoS 1. It prints the child's
// VmRSS (as is, and after debug.FreeOSMemory), live heap, goroutine stacks
// (allocated and in use) and goroutines, in total and per device.
//
// Usage:
//
//	go run ./emulator/internal/footbench [-devices 2000] [-dps] [-ws] [-messages 0] [-store memory] [-profile prefix]
//
// FOOTBENCH_CPUPROFILE=file writes the emulator child's CPU profile.
//
// -store sqlite runs the emulator with a data directory (its SQLite
// store, every acknowledged message committed first); -store both runs
// the whole measurement with the memory store, then with SQLite, and
// prints the ratio of their message rates and the commit group sizes.
//
// -ws connects over MQTT over WebSockets instead of the MQTT/TLS listener.
// -messages N then sends N telemetry messages (100 in flight) and prints
// the emulator's CPU time per message. With -profile the child records
// every allocation and writes prefix-heap.pprof and prefix-goroutine.pprof
// once every device is connected. Raise the open-file limit for 10,000
// devices (the program lifts its soft limit to the hard one).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotc-go/iotc/emulator"
)

func main() {
	var (
		devices = flag.Int("devices", 2000, "devices connected at once")
		workers = flag.Int("workers", 32, "goroutines connecting devices")
		profile = flag.String("profile", "", "write the child's heap and goroutine profiles to this prefix once connected")
		msgs    = flag.Int("messages", 0, "after measuring, telemetry messages to send (100 in flight, spread over the devices) to measure the emulator's CPU time per message")
		ws      = flag.Bool("ws", false, "connect the devices (and DPS) over MQTT over WebSockets instead of the MQTT/TLS listener")
		dps     = flag.Bool("dps", false, "provision every device through DPS over MQTT with the group key first (as the SDK and iotc-fleet do) instead of creating it through the Go API")
		idle    = flag.Duration("idle", 0, "how long the devices stay connected and idle before the emulator is measured")
		steps   = flag.String("steps", "all", "connect work done: connect, subscribe, twin or all (twin and telemetry)")
		store   = flag.String("store", "memory", "the emulator's store: memory, sqlite (a data directory) or both (one run each, then their ratio)")
		serve   = flag.Bool("serve", false, "internal: run the emulator and answer commands on stdin")
		dataDir = flag.String("datadir", "", "internal: the child's data directory")
	)
	flag.Parse()
	raiseNoFile()
	var err error
	if *serve {
		if *profile != "" {
			runtime.MemProfileRate = 1 // every allocation, for a precise heap profile
		}
		err = serveChild(*dataDir)
	} else {
		useWS = *ws
		var stores []string
		switch *store {
		case "memory", "sqlite":
			stores = []string{*store}
		case "both":
			stores = []string{"memory", "sqlite"}
		default:
			err = fmt.Errorf("-store %q: want memory, sqlite or both", *store)
		}
		rates := map[string]float64{}
		for _, st := range stores {
			if err != nil {
				break
			}
			rates[st], err = run(*devices, *workers, *profile, *steps, *idle, *msgs, *dps, st)
		}
		if err == nil && len(stores) == 2 && rates["memory"] > 0 {
			fmt.Printf("\nSQLite store / memory store message rate: %.2f\n", rates["sqlite"]/rates["memory"])
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "footbench:", err)
		os.Exit(1)
	}
}

// raiseNoFile lifts the soft open-file limit to the hard one: each device
// is a socket on both sides.
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

type info struct {
	Addr, WSAddr      string
	HubHost           string
	IDScope, GroupKey string
	CAPEM             []byte
}

// stats is one reading of the child process.
type stats struct {
	RSS        uint64 // VmRSS
	RSSFreed   uint64 // VmRSS after debug.FreeOSMemory
	Heap       uint64 // live heap after GC
	Stack      uint64 // goroutine stacks in use
	StackUsed  uint64 // stack bytes the last GC scanned (the part of the stacks in use)
	Goroutines int
	CPU        time.Duration // user + system CPU time of the process so far
}

// serveChild runs the emulator and answers one JSON line per command line:
// "create N" (the devices' keys), "stats", "profile PREFIX", "quit".
func serveChild(dataDir string) error {
	if path := os.Getenv("FOOTBENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	e, err := emulator.Start(context.Background(), &emulator.Options{
		MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1, DataDir: dataDir,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	defer e.Close()
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(info{Addr: e.MQTTAddr(), WSAddr: e.WebSocketAddr(), HubHost: e.HubHost(), IDScope: e.IDScope(), GroupKey: e.GroupKey(), CAPEM: e.CACertPEM()}); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		var reply any
		switch cmd {
		case "create":
			n, err := strconv.Atoi(arg)
			if err != nil {
				return err
			}
			keys := make([]string, n)
			for i := range n {
				if keys[i], err = e.CreateDevice(deviceID(i)); err != nil {
					return err
				}
			}
			reply = keys
		case "stats":
			reply = readStats()
		case "store":
			reply = e.StoreStats()
		case "profile":
			for _, p := range []string{"heap", "goroutine"} {
				f, err := os.Create(arg + "-" + p + ".pprof")
				if err != nil {
					return err
				}
				runtime.GC()
				err = pprof.Lookup(p).WriteTo(f, 0)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return err
				}
			}
			reply = "ok"
		case "quit":
			return nil
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
		if err := out.Encode(reply); err != nil {
			return err
		}
	}
	return in.Err()
}

// broker is the URL the devices connect to (set by run from -ws).
var (
	useWS  bool
	broker string
)

func deviceID(i int) string { return fmt.Sprintf("foot-%06d", i) }

func readStats() stats {
	var s stats
	s.RSS = vmRSS()
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for range 2 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.Heap, s.Stack, s.Goroutines = ms.HeapAlloc, ms.StackInuse, runtime.NumGoroutine()
	m := []metrics.Sample{{Name: "/gc/scan/stack:bytes"}}
	metrics.Read(m)
	s.StackUsed = m[0].Value.Uint64()
	debug.FreeOSMemory()
	s.RSSFreed = vmRSS()
	return s
}

func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// child is the emulator process, driven through its stdin.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func (c *child) call(line string, reply any) error {
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		return err
	}
	b, err := c.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("child: %q: %w", line, err)
	}
	return json.Unmarshal(b, reply)
}

// run measures one emulator child with the store ("memory" or "sqlite")
// and returns its telemetry rate in messages per second (0 without msgs).
func run(n, workers int, profile, steps string, idle time.Duration, msgs int, dps bool, store string) (float64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	args := []string{"-serve", "-profile=" + profile}
	if store == "sqlite" {
		dir, err := os.MkdirTemp("", "footbench-data-*")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		args = append(args, "-datadir="+dir)
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	c := &child{cmd: cmd, in: in, out: bufio.NewReader(out)}
	defer func() {
		_ = in.Close()
		_ = cmd.Wait()
	}()
	var inf info
	b, err := c.out.ReadBytes('\n')
	if err != nil {
		return 0, fmt.Errorf("child: %w", err)
	}
	if err := json.Unmarshal(b, &inf); err != nil {
		return 0, err
	}
	if useWS {
		broker = "wss://" + inf.WSAddr + "/$iothub/websocket"
	} else {
		broker = "tls://" + inf.Addr
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(inf.CAPEM) {
		return 0, errors.New("bad CA PEM")
	}
	fmt.Printf("footbench: %s, GOMAXPROCS=%d, %d devices, %s store, emulator pid %d\n", runtime.Version(), runtime.GOMAXPROCS(0), n, store, cmd.Process.Pid)

	var s0, s1, s2 stats
	if err := c.call("stats", &s0); err != nil {
		return 0, err
	}
	keys := make([]string, n)
	if dps {
		for i := range keys {
			if keys[i], err = deriveKey(inf.GroupKey, deviceID(i)); err != nil {
				return 0, err
			}
		}
	} else if err := c.call("create "+strconv.Itoa(n), &keys); err != nil {
		return 0, err
	}
	if err := c.call("stats", &s1); err != nil {
		return 0, err
	}
	clients := make([]paho.Client, n)
	start := time.Now()
	err = parallel(n, workers, func(i int) error {
		if dps {
			if err := provision(inf, roots, deviceID(i), keys[i]); err != nil {
				return err
			}
		}
		cl, err := connect(inf, roots, deviceID(i), keys[i], steps)
		clients[i] = cl
		return err
	})
	took := time.Since(start)
	defer func() {
		for _, cl := range clients {
			if cl != nil {
				cl.Disconnect(100)
			}
		}
	}()
	if err != nil {
		return 0, err
	}
	time.Sleep(idle)
	if err := c.call("stats", &s2); err != nil {
		return 0, err
	}
	if profile != "" {
		var ok string
		if err := c.call("profile "+profile, &ok); err != nil {
			return 0, err
		}
	}
	fmt.Printf("connected %d devices in %s\n\n", n, took.Round(time.Millisecond))
	fmt.Printf("%-26s %12s %12s %12s %12s %12s %12s\n", "emulator process", "RSS", "RSS freed", "heap", "stacks", "stack used", "goroutines")
	row := func(name string, s stats) {
		fmt.Printf("%-26s %9.1f MiB %9.1f MiB %9.1f MiB %9.1f MiB %9.1f MiB %12d\n", name, mib(s.RSS), mib(s.RSSFreed), mib(s.Heap), mib(s.Stack), mib(s.StackUsed), s.Goroutines)
	}
	row("started", s0)
	row("devices created", s1)
	row("devices connected", s2)
	per := func(name string, a, b stats) {
		d := func(x, y uint64) float64 { return float64(int64(y)-int64(x)) / float64(n) / 1024 }
		fmt.Printf("%-26s %8.1f KiB %8.1f KiB %8.1f KiB %8.1f KiB %8.1f KiB %12.2f\n", name, d(a.RSS, b.RSS), d(a.RSSFreed, b.RSSFreed), d(a.Heap, b.Heap), d(a.Stack, b.Stack), d(a.StackUsed, b.StackUsed), float64(b.Goroutines-a.Goroutines)/float64(n))
	}
	fmt.Println()
	per("per device: registry", s0, s1)
	per("per device: connection", s1, s2)
	per("per device: total", s0, s2)
	if msgs > 0 {
		return cpuPerMessage(c, clients, msgs)
	}
	return 0, nil
}

// cpuPerMessage sends msgs telemetry messages at QoS 1, 100 in flight, and
// prints the emulator's CPU time per message (CPU time, unlike msgs/s, is
// hardly changed by other load on the machine).
func cpuPerMessage(c *child, clients []paho.Client, msgs int) (float64, error) {
	var a, b stats
	var sa, sb emulator.StoreStats
	if err := c.call("stats", &a); err != nil {
		return 0, err
	}
	if err := c.call("store", &sa); err != nil {
		return 0, err
	}
	body := bytes.Repeat([]byte("x"), 256)
	start := time.Now()
	err := parallel(msgs, 100, func(i int) error {
		k := i % len(clients)
		return wait(clients[k].Publish("devices/"+deviceID(k)+"/messages/events/", 1, false, body))
	})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if err := c.call("stats", &b); err != nil {
		return 0, err
	}
	if err := c.call("store", &sb); err != nil {
		return 0, err
	}
	// Each stats call itself costs two GCs; measure them and subtract.
	var g0, g1 stats
	if err := c.call("stats", &g0); err != nil {
		return 0, err
	}
	if err := c.call("stats", &g1); err != nil {
		return 0, err
	}
	cpu := b.CPU - a.CPU - (g1.CPU - g0.CPU)
	rate := float64(msgs) / took.Seconds()
	fmt.Printf("\n%d messages of 256 bytes in %s (%.0f msgs/s); emulator CPU %.1f us per message\n", msgs, took.Round(time.Millisecond), rate, float64(cpu.Microseconds())/float64(msgs))
	if commits := sb.Commits - sa.Commits; commits > 0 {
		fmt.Printf("store: %d commits for %d acknowledged changes: %.1f per commit on average, at most %d\n",
			commits, sb.Units-sa.Units, float64(sb.Units-sa.Units)/float64(commits), sb.MaxUnits)
	}
	return rate, nil
}

func mib(x uint64) float64 { return float64(x) / (1 << 20) }

// connect does a device SDK's connect work with a raw paho client.
func connect(inf info, roots *x509.CertPool, id, key, steps string) (paho.Client, error) {
	sas, err := hubSAS(key, inf.HubHost+"/devices/"+id, time.Now().Add(time.Hour))
	if err != nil {
		return nil, err
	}
	twin := make(chan struct{}, 1)
	opts := paho.NewClientOptions().
		AddBroker(broker).
		SetTLSConfig(&tls.Config{ServerName: inf.HubHost, RootCAs: roots, MinVersion: tls.VersionTLS12}).
		SetClientID(id).
		SetUsername(inf.HubHost + "/" + id + "/?api-version=2021-04-12").
		SetPassword(sas).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectTimeout(time.Minute).
		SetKeepAlive(4 * time.Minute)
	cl := paho.NewClient(opts)
	if err := wait(cl.Connect()); err != nil {
		return nil, fmt.Errorf("connect %s: %w", id, err)
	}
	if steps == "connect" {
		return cl, nil
	}
	subs := map[string]byte{
		"$iothub/twin/res/#":                        0,
		"$iothub/twin/PATCH/properties/desired/#":   0,
		"$iothub/methods/POST/#":                    0,
		"devices/" + id + "/messages/devicebound/#": 1,
	}
	if err := wait(cl.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) {
		if strings.HasPrefix(m.Topic(), "$iothub/twin/res/200/") {
			select {
			case twin <- struct{}{}:
			default:
			}
		}
	})); err != nil {
		return cl, fmt.Errorf("subscribe %s: %w", id, err)
	}
	if steps == "subscribe" {
		return cl, nil
	}
	if err := wait(cl.Publish("$iothub/twin/GET/?$rid=1", 0, false, []byte{})); err != nil {
		return cl, err
	}
	select {
	case <-twin:
	case <-time.After(time.Minute):
		return cl, fmt.Errorf("%s: no twin answer", id)
	}
	if steps == "twin" {
		return cl, nil
	}
	body := []byte(`{"temperature":21.5,"humidity":40,"pressure":1013}`)
	if err := wait(cl.Publish("devices/"+id+"/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8", 1, false, body)); err != nil {
		return cl, fmt.Errorf("telemetry %s: %w", id, err)
	}
	return cl, nil
}

// deriveKey is the device key under the group key: HMAC-SHA256 of the
// registration id with the base64 group key.
func deriveKey(groupKey, id string) (string, error) {
	k, err := base64.StdEncoding.DecodeString(groupKey)
	if err != nil {
		return "", fmt.Errorf("group key: %w", err)
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(id))
	return base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}

// provision registers the device with DPS over MQTT: register, then poll
// the operation until it is assigned.
func provision(inf info, roots *x509.CertPool, id, key string) error {
	res := inf.IDScope + "/registrations/" + id
	sas, err := hubSAS(key, res, time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	answers := make(chan paho.Message, 1)
	opts := paho.NewClientOptions().
		AddBroker(broker).
		SetTLSConfig(&tls.Config{ServerName: inf.HubHost, RootCAs: roots, MinVersion: tls.VersionTLS12}).
		SetClientID(id).
		SetUsername(res + "/api-version=2019-03-31").
		SetPassword(sas + "&skn=registration").
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectTimeout(time.Minute)
	cl := paho.NewClient(opts)
	if err := wait(cl.Connect()); err != nil {
		return fmt.Errorf("DPS connect %s: %w", id, err)
	}
	defer cl.Disconnect(0)
	if err := wait(cl.Subscribe("$dps/registrations/res/#", 1, func(_ paho.Client, m paho.Message) { answers <- m })); err != nil {
		return err
	}
	ask := func(topic string, body []byte) (string, map[string]any, error) {
		if err := wait(cl.Publish(topic, 1, false, body)); err != nil {
			return "", nil, err
		}
		select {
		case m := <-answers:
			var ans map[string]any
			err := json.Unmarshal(m.Payload(), &ans)
			return m.Topic(), ans, err
		case <-time.After(time.Minute):
			return "", nil, fmt.Errorf("%s: no DPS answer", id)
		}
	}
	topic, ans, err := ask("$dps/registrations/PUT/iotdps-register/?$rid=1", []byte(`{"registrationId":"`+id+`"}`))
	if err != nil {
		return err
	}
	op, _ := ans["operationId"].(string)
	if !strings.HasPrefix(topic, "$dps/registrations/res/202/") || op == "" {
		return fmt.Errorf("%s: register answered %s %v", id, topic, ans)
	}
	topic, ans, err = ask("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId="+op, nil)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(topic, "$dps/registrations/res/200/") || ans["status"] != "assigned" {
		return fmt.Errorf("%s: poll answered %s %v", id, topic, ans)
	}
	return nil
}

// hubSAS signs a device SAS token with no code of the emulator or the SDK
// (the emulator must not share its SAS code with the SDK side): HMAC-SHA256
// of "sr\nse" with the base64 device key.
func hubSAS(key, resource string, expiry time.Time) (string, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("device key: %w", err)
	}
	sr := strings.ReplaceAll(url.QueryEscape(resource), "+", "%20")
	se := strconv.FormatInt(expiry.Unix(), 10)
	m := hmac.New(sha256.New, k)
	m.Write([]byte(sr + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(m.Sum(nil))
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se, nil
}

func wait(t paho.Token) error {
	if !t.WaitTimeout(2 * time.Minute) {
		return errors.New("timed out")
	}
	return t.Error()
}

// parallel runs f(i) for i in [0,n) on w workers and returns the first error.
func parallel(n, w int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		mu    sync.Mutex
		first error
	)
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
