// Command amqpbench measures the AMQP transport against a bare go-amqp
// client, side by side in one run:
//
//  1. throughput: 256-byte JSON telemetry sent unsettled, each message
//     waiting for the hub's accepted disposition (the AMQP equivalent of
//     MQTT QoS 1), through the SDK (iotc.Client, and adapters/amqp alone)
//     and through a bare go-amqp sender (TLS, SASL ANONYMOUS, one CBS
//     put-token, one sender link, the same message properties), to the
//     same in-process emulator, with 1 and with 100 messages in flight,
//     every path connected at once and -rounds rounds of -messages
//     messages each, the paths alternating order each round; it prints the
//     median msgs/s, the median of the per-round ratios to the bare client
//     with their range, and the process CPU time and heap allocations per
//     message (client and emulator: the difference between two paths is
//     the client's). Two more bare paths show what the SDK adds: the
//     adapter's idle links (methods, twin, cloud-to-device) and the
//     message-id of every iotc.Client message;
//  2. footprint: -devices devices connected from this process, first
//     through adapters/amqp (CBS, telemetry, cloud-to-device, methods and
//     twin links on one connection), then through the bare sender (CBS
//     links closed after the put-token), with the emulator in a child
//     process so that only client memory is counted; it prints the live
//     heap and goroutines per connected device.
//
// Usage: go run ./bench/amqpbench [-messages 2000] [-rounds 25] [-inflight 1,100] [-devices 1000] [-cpuprofile file]
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/adapters/amqp"
	"github.com/iotc-go/iotc/bench/benchkit"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/ports"
)

func main() {
	var (
		messages = flag.Int("messages", 2000, "messages per timed run")
		rounds   = flag.Int("rounds", 25, "timed runs per path and in-flight level (medians are reported)")
		inflight = flag.String("inflight", "1,100", "comma-separated in-flight levels")
		devices  = flag.Int("devices", 1000, "devices connected at once for the footprint test (0 skips it)")
		cpuprof  = flag.String("cpuprofile", "", "write a CPU profile of the throughput test to this file (samples labelled path=<name>)")
		serve    = flag.Bool("serve-emulator", false, "internal: run the emulator for the footprint test and print how to reach it")
	)
	flag.Parse()
	if *serve {
		if err := serveEmulator(); err != nil {
			fmt.Fprintln(os.Stderr, "amqpbench:", err)
			os.Exit(1)
		}
		return
	}
	levels, err := benchkit.ParseLevels(*inflight)
	if err != nil || *messages <= 0 || *rounds <= 0 || *devices < 0 {
		fmt.Fprintln(os.Stderr, "amqpbench: bad flags:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	fmt.Printf("amqpbench: %s, GOMAXPROCS=%d, %d-byte JSON body, unsettled sends (wait for accepted)\n\n", runtime.Version(), runtime.GOMAXPROCS(0), benchkit.BodySize)
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			fmt.Fprintln(os.Stderr, "amqpbench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "amqpbench:", err)
			os.Exit(1)
		}
	}
	err = throughput(ctx, *messages, *rounds, levels)
	if *cpuprof != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "amqpbench: throughput:", err)
		os.Exit(1)
	}
	if *devices > 0 {
		if err := footprint(ctx, *devices); err != nil {
			fmt.Fprintln(os.Stderr, "amqpbench: footprint:", err)
			os.Exit(1)
		}
	}
}

// rawAMQPPath is the baseline: a bare go-amqp client that authenticates
// with one CBS put-token (the CBS links are closed after it) and sends the
// same body with the same properties as the SDK on one sender link,
// waiting for each disposition.
// With idleLinks it also attaches, and leaves idle, the links the adapter
// attaches besides telemetry (methods, twin, cloud-to-device); with
// messageID each message carries a fresh uuid message-id, as every message
// of iotc.Client does (it is what lets the hub's consumers drop the
// duplicates of at-least-once delivery).
func rawAMQPPath(idleLinks, messageID bool) benchkit.Path {
	name := "raw go-amqp"
	switch {
	case idleLinks:
		name = "raw + idle links"
	case messageID:
		name = "raw + message-id"
	}
	return benchkit.Path{Name: name, Connect: func(ctx context.Context, t benchkit.Target) (benchkit.Conn, error) {
		sas, err := benchkit.HubSAS(t)
		if err != nil {
			return benchkit.Conn{}, err
		}
		conn, err := goamqp.Dial(ctx, "amqps://"+t.Addr, &goamqp.ConnOptions{
			TLSConfig:   &tls.Config{ServerName: t.HubHost, RootCAs: t.RootCAs, MinVersion: tls.VersionTLS12},
			HostName:    t.HubHost,
			SASLType:    goamqp.SASLTypeAnonymous(),
			IdleTimeout: amqp.DefaultIdleTimeout,
		})
		if err != nil {
			return benchkit.Conn{}, err
		}
		fail := func(err error) (benchkit.Conn, error) { _ = conn.Close(); return benchkit.Conn{}, err }
		sess, err := conn.NewSession(ctx, nil)
		if err != nil {
			return fail(err)
		}
		if err := putToken(ctx, sess, domain.HubResource(t.HubHost, t.DeviceID), sas); err != nil {
			return fail(err)
		}
		snd, err := sess.NewSender(ctx, "/devices/"+t.DeviceID+"/messages/events", nil)
		if err != nil {
			return fail(err)
		}
		if idleLinks {
			if err := attachIdleLinks(ctx, sess, t.DeviceID); err != nil {
				return fail(err)
			}
		}
		body := benchkit.Body()
		ct, ce := domain.DefaultContentType, domain.DefaultContentEncoding
		return benchkit.Conn{
			Send: func(ctx context.Context) error {
				p := &goamqp.MessageProperties{ContentType: &ct, ContentEncoding: &ce}
				if messageID {
					p.MessageID = uuid()
				}
				return snd.Send(ctx, &goamqp.Message{Properties: p, Data: [][]byte{body}}, nil)
			},
			Close: conn.Close,
		}, nil
	}}
}

// uuid returns a random uuid in its canonical text form.
func uuid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// attachIdleLinks attaches the method pair, the twin pair and the
// cloud-to-device receiver as adapters/amqp does (same credits and settle
// modes), and sends nothing on them.
func attachIdleLinks(ctx context.Context, sess *goamqp.Session, id string) error {
	base := "/devices/" + id
	settled := goamqp.SenderSettleModeSettled
	if _, err := sess.NewReceiver(ctx, base+"/methods/devicebound", &goamqp.ReceiverOptions{Credit: 10}); err != nil {
		return err
	}
	if _, err := sess.NewSender(ctx, base+"/methods/devicebound", nil); err != nil {
		return err
	}
	if _, err := sess.NewSender(ctx, base+"/twin", &goamqp.SenderOptions{SettlementMode: &settled}); err != nil {
		return err
	}
	if _, err := sess.NewReceiver(ctx, base+"/twin", &goamqp.ReceiverOptions{Credit: 10, RequestedSenderSettleMode: &settled}); err != nil {
		return err
	}
	_, err := sess.NewReceiver(ctx, base+"/messages/devicebound", &goamqp.ReceiverOptions{Credit: amqp.DefaultCloudToDeviceCredit})
	return err
}

// putToken authenticates on $cbs and closes the CBS links.
func putToken(ctx context.Context, sess *goamqp.Session, audience, token string) error {
	snd, err := sess.NewSender(ctx, "$cbs", nil)
	if err != nil {
		return err
	}
	defer snd.Close(ctx)
	rcv, err := sess.NewReceiver(ctx, "$cbs", &goamqp.ReceiverOptions{TargetAddress: "cbs"})
	if err != nil {
		return err
	}
	defer rcv.Close(ctx)
	replyTo := "cbs"
	if err := snd.Send(ctx, &goamqp.Message{
		Properties:            &goamqp.MessageProperties{MessageID: "1", ReplyTo: &replyTo},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience},
		Value:                 token,
	}, nil); err != nil {
		return err
	}
	m, err := rcv.Receive(ctx, nil)
	if err != nil {
		return err
	}
	_ = rcv.AcceptMessage(ctx, m)
	if code, _ := m.ApplicationProperties["status-code"].(int32); code != 200 {
		return fmt.Errorf("put-token: status %d", code)
	}
	return nil
}

// sdkPaths are the SDK paths compared with the bare client.
func sdkPaths(port int, roots *x509.CertPool) []benchkit.Path {
	return []benchkit.Path{
		benchkit.FacadePath("sdk iotc.Client", iotc.AMQP, port),
		benchkit.TransportPath("sdk adapters/amqp", amqp.New(&amqp.Options{Port: port, RootCAs: roots})),
	}
}

// sample is one timed run of one path.
type sample struct {
	rate   float64 // msgs/s
	cpu    float64 // process CPU µs per message (client and in-process emulator)
	allocs float64 // process heap allocations per message
}

// timedRun sends messages on c, level in flight, and measures the rate,
// the process CPU time and the heap allocations per message.
func timedRun(ctx context.Context, c benchkit.Conn, messages, level int) (sample, error) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	cpu0 := processCPU()
	elapsed, err := benchkit.Run(ctx, c.Send, messages, level)
	cpu1 := processCPU()
	runtime.ReadMemStats(&m1)
	if err != nil {
		return sample{}, err
	}
	n := float64(messages)
	return sample{
		rate:   n / elapsed.Seconds(),
		cpu:    float64((cpu1 - cpu0).Microseconds()) / n,
		allocs: float64(m1.Mallocs-m0.Mallocs) / n,
	}, nil
}

// processCPU is the user plus system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func throughput(ctx context.Context, messages, rounds int, levels []int) error {
	e, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer e.Close()
	port, err := benchkit.PortOf(e.AMQPAddr())
	if err != nil {
		return err
	}
	seq := 0
	newDevice := func() (benchkit.Target, error) {
		seq++
		id := fmt.Sprintf("bench-%d", seq)
		key, err := e.CreateDevice(id)
		return benchkit.Target{Addr: e.AMQPAddr(), HubHost: e.HubHost(), RootCAs: e.CAPool(), DeviceID: id, Key: key}, err
	}
	paths := append(sdkPaths(port, e.CAPool()), rawAMQPPath(true, false), rawAMQPPath(false, true), rawAMQPPath(false, false))
	baseline := len(paths) - 1
	fmt.Printf("throughput (in-process emulator): %d messages per run, %d rounds on open connections, paths alternating order each round\n", messages, rounds)
	fmt.Printf("ratio: median of the per-round ratios to %s [min-max]; cpu and allocs: whole process (client and emulator) per message, medians\n", paths[baseline].Name)
	fmt.Printf("%-9s %-20s %9s %6s %13s %8s %7s\n", "in-flight", "path", "msgs/s", "ratio", "[spread]", "cpu µs", "allocs")
	for _, level := range levels {
		runs := make([][]sample, len(paths))
		// Every path stays connected through the rounds, so that a round
		// runs the paths back to back and a change of the machine's load
		// falls on all of them.
		conns := make([]benchkit.Conn, len(paths))
		closeAll := func() {
			for _, c := range conns {
				if c.Close != nil {
					_ = c.Close()
				}
			}
		}
		for i, p := range paths {
			target, err := newDevice()
			if err != nil {
				closeAll()
				return err
			}
			pprof.Do(ctx, pprof.Labels("path", p.Name), func(ctx context.Context) {
				if conns[i], err = p.Connect(ctx, target); err != nil {
					err = fmt.Errorf("%s: connect: %w", p.Name, err)
					return
				}
				if _, err = benchkit.Run(ctx, conns[i].Send, min(1000, messages), level); err != nil { // warm-up
					err = fmt.Errorf("%s: %w", p.Name, err)
				}
			})
			if err != nil {
				closeAll()
				return err
			}
		}
		for r := range rounds {
			for k := range paths {
				i := (k + r) % len(paths) // alternate who goes first
				var s sample
				pprof.Do(ctx, pprof.Labels("path", paths[i].Name), func(ctx context.Context) {
					if s, err = timedRun(ctx, conns[i], messages, level); err != nil {
						err = fmt.Errorf("%s: %w", paths[i].Name, err)
					}
				})
				if err != nil {
					closeAll()
					return err
				}
				runs[i] = append(runs[i], s)
			}
		}
		closeAll()
		for i, p := range paths {
			var rates, ratios, cpus, allocs []float64
			for r, s := range runs[i] {
				rates = append(rates, s.rate)
				ratios = append(ratios, s.rate/runs[baseline][r].rate)
				cpus = append(cpus, s.cpu)
				allocs = append(allocs, s.allocs)
			}
			fmt.Printf("%-9d %-20s %9.0f %6.2f %13s %8.1f %7.1f   runs: %s\n", level, p.Name,
				benchkit.Median(rates), benchkit.Median(ratios), fmt.Sprintf("[%.2f-%.2f]", slices.Min(ratios), slices.Max(ratios)),
				benchkit.Median(cpus), benchkit.Median(allocs), benchkit.FormatRates(rates))
		}
	}
	fmt.Println()
	return nil
}

// childInfo is what the emulator child prints on its first stdout line.
type childInfo struct {
	Addr     string `json:"addr"`
	IDScope  string `json:"idScope"`
	GroupKey string `json:"groupKey"`
	CAPEM    []byte `json:"caPEM"`
}

// serveEmulator runs in the child: it starts an emulator, prints a
// childInfo line and runs until stdin closes.
func serveEmulator() error {
	e, err := emulator.Start(context.Background(), &emulator.Options{
		MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	defer e.Close()
	if err := json.NewEncoder(os.Stdout).Encode(childInfo{Addr: e.AMQPAddr(), IDScope: e.IDScope(), GroupKey: e.GroupKey(), CAPEM: e.CACertPEM()}); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// startChild starts this program with -serve-emulator.
func startChild() (childInfo, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return childInfo{}, nil, err
	}
	cmd := exec.Command(exe, "-serve-emulator")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return childInfo{}, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return childInfo{}, nil, err
	}
	if err := cmd.Start(); err != nil {
		return childInfo{}, nil, err
	}
	stop := func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	var info childInfo
	if err == nil {
		err = json.Unmarshal(line, &info)
	}
	if err != nil {
		stop()
		return childInfo{}, nil, fmt.Errorf("emulator child: %w", err)
	}
	return info, stop, nil
}

// measure returns the live heap (after GC) and the goroutine count.
func measure() (uint64, int) {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

// parallel runs f(i) for i in [0,n) on 32 workers and returns the first error.
func parallel(n int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func footprint(ctx context.Context, n int) error {
	info, stop, err := startChild()
	if err != nil {
		return err
	}
	defer stop()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(info.CAPEM) {
		return errors.New("bad CA PEM from the emulator child")
	}
	port, err := benchkit.PortOf(info.Addr)
	if err != nil {
		return err
	}
	tr := amqp.New(&amqp.Options{Port: port, RootCAs: roots})
	targets := make([]benchkit.Target, n)
	var seq atomic.Int64
	start := time.Now()
	err = parallel(n, func(i int) error {
		id := fmt.Sprintf("child-%06d", seq.Add(1))
		key, err := domain.DeriveDeviceKey(info.GroupKey, id)
		if err != nil {
			return err
		}
		sas, err := domain.BuildSAS(key, domain.DPSResource(info.IDScope, id), time.Now().Add(time.Hour), domain.DPSKeyName)
		if err != nil {
			return err
		}
		a, err := tr.Provision(ctx, ports.ProvisioningRequest{Host: "localhost", IDScope: info.IDScope,
			Registration: domain.RegistrationRequest{RegistrationID: id}, Auth: ports.Auth{SASToken: sas}})
		if err != nil {
			return fmt.Errorf("provision %s: %w", id, err)
		}
		targets[i] = benchkit.Target{Addr: info.Addr, HubHost: a.Hub, RootCAs: roots, DeviceID: a.DeviceID, Key: key}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("footprint (emulator in a child process): %d devices provisioned over AMQP in %s\n", n, time.Since(start).Round(time.Millisecond))
	fmt.Printf("%-20s %14s %14s %12s\n", "path", "heap/device", "goroutines/dev", "connect all")
	for _, p := range []benchkit.Path{benchkit.TransportPath("sdk adapters/amqp", tr), rawAMQPPath(false, false)} {
		heap0, g0 := measure()
		conns := make([]benchkit.Conn, n)
		start := time.Now()
		err := parallel(n, func(i int) error {
			c, err := p.Connect(ctx, targets[i])
			if err != nil {
				return fmt.Errorf("%s: connect %s: %w", p.Name, targets[i].DeviceID, err)
			}
			conns[i] = c
			return nil
		})
		took := time.Since(start)
		if err == nil {
			// One message each, so every connection has been used.
			err = parallel(n, func(i int) error { return conns[i].Send(ctx) })
		}
		heap1, g1 := measure()
		for _, c := range conns {
			if c.Close != nil {
				_ = c.Close()
			}
		}
		if err != nil {
			return err
		}
		fmt.Printf("%-20s %11.1f KiB %14.1f %12s\n", p.Name, float64(int64(heap1)-int64(heap0))/float64(n)/1024, float64(g1-g0)/float64(n), took.Round(time.Millisecond))
	}
	return nil
}
