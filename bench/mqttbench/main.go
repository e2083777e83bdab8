// Command mqttbench measures the MQTT transport against raw paho, side by
// side in one run:
//
//  1. throughput: 256-byte JSON telemetry at QoS 1 (each message waits for
//     its PUBACK) through the SDK path and through a bare paho client, to
//     the same in-process emulator, with 1 and with 100 messages in
//     flight; it prints msgs/s for both and the ratio SDK / paho (median
//     of -rounds rounds, the paths alternating order each round);
//  2. footprint: -devices devices connected from this process, first
//     through the SDK, then through raw paho, with the emulator in a child
//     process so that only client memory is counted; it prints the live
//     heap and goroutines per connected device.
//
// Usage: go run ./bench/mqttbench [-messages 20000] [-rounds 3] [-devices 1000]
package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/iotc-go/iotc"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotc-go/iotc/adapters/mqtt"
	"github.com/iotc-go/iotc/bench/benchkit"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/ports"
)

func main() {
	if os.Getenv("MQTTBENCH_MEMPROFILE") != "" {
		runtime.MemProfileRate = 1 // every allocation, for a precise heap profile
	}
	var (
		messages = flag.Int("messages", 20000, "messages per timed run")
		rounds   = flag.Int("rounds", 3, "timed runs per path and in-flight level (the median is reported)")
		inflight = flag.String("inflight", "1,100", "comma-separated in-flight levels")
		devices  = flag.Int("devices", 1000, "devices connected at once for the footprint test (0 skips it)")
		where    = flag.String("throughput-emulator", "both", "where the throughput runs' emulator lives: inprocess, child or both")
		serve    = flag.Bool("serve-emulator", false, "internal: run the emulator for the footprint test and print how to reach it")
	)
	flag.Parse()
	if *serve {
		if err := serveEmulator(); err != nil {
			fmt.Fprintln(os.Stderr, "mqttbench:", err)
			os.Exit(1)
		}
		return
	}
	switch *where {
	case "inprocess", "child", "both":
	default:
		fmt.Fprintln(os.Stderr, "mqttbench: -throughput-emulator must be inprocess, child or both")
		os.Exit(2)
	}
	levels, err := benchkit.ParseLevels(*inflight)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	fmt.Printf("mqttbench: %s, GOMAXPROCS=%d, %d-byte JSON body, QoS 1\n\n", runtime.Version(), runtime.GOMAXPROCS(0), benchkit.BodySize)
	if err := run(ctx, *where, *messages, *rounds, levels, *devices); err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, where string, messages, rounds int, levels []int, devices int) error {
	if where == "inprocess" || where == "both" {
		ev, stop, err := inProcessEnv(ctx)
		if err != nil {
			return err
		}
		err = throughput(ctx, ev, messages, rounds, levels)
		stop()
		if err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
	}
	ev, stop, err := childEnv(ctx)
	if err != nil {
		return err
	}
	defer stop()
	if where == "child" || where == "both" {
		if err := throughput(ctx, ev, messages, rounds, levels); err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
	}
	if devices > 0 {
		if err := footprint(ctx, ev, devices); err != nil {
			return fmt.Errorf("footprint: %w", err)
		}
	}
	return nil
}

// sdkPaths returns the paths compared with raw paho. The app layer or the
// facade will be added here as more benchkit.Path values.
func sdkPaths(port int, roots *x509.CertPool) []benchkit.Path {
	return []benchkit.Path{
		benchkit.FacadePath("sdk iotc.Client", iotc.MQTT, port),
		benchkit.TransportPath("sdk adapters/mqtt", mqtt.New(&mqtt.Options{Port: port, RootCAs: roots})),
	}
}

// env is an emulator to send to and a way to get a fresh device on it.
type env struct {
	name      string
	port      int
	roots     *x509.CertPool
	newDevice func(ctx context.Context) (benchkit.Target, error)
}

// inProcessEnv starts an emulator in this process.
func inProcessEnv(ctx context.Context) (env, func(), error) {
	e, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-"})
	if err != nil {
		return env{}, nil, err
	}
	port, err := benchkit.PortOf(e.MQTTAddr())
	if err != nil {
		_ = e.Close()
		return env{}, nil, err
	}
	seq := 0
	return env{name: "in-process emulator", port: port, roots: e.CAPool(), newDevice: func(context.Context) (benchkit.Target, error) {
		seq++
		id := fmt.Sprintf("bench-%d", seq)
		key, err := e.CreateDevice(id)
		return benchkit.Target{Addr: e.MQTTAddr(), HubHost: e.HubHost(), RootCAs: e.CAPool(), DeviceID: id, Key: key}, err
	}}, func() { _ = e.Close() }, nil
}

func throughput(ctx context.Context, ev env, messages, rounds int, levels []int) error {
	paths := append(sdkPaths(ev.port, ev.roots), benchkit.RawPahoPath())
	baseline := len(paths) - 1
	fmt.Printf("throughput (%s): %d messages per run, median of %d runs\n", ev.name, messages, rounds)
	fmt.Printf("%-9s %-20s %12s %8s\n", "in-flight", "path", "msgs/s", "ratio")
	for _, level := range levels {
		rates := make([][]float64, len(paths))
		for r := range rounds {
			for k := range paths {
				i := (k + r) % len(paths) // alternate who goes first
				target, err := ev.newDevice(ctx)
				if err != nil {
					return err
				}
				c, err := paths[i].Connect(ctx, target)
				if err != nil {
					return fmt.Errorf("%s: connect: %w", paths[i].Name, err)
				}
				if _, err := benchkit.Run(ctx, c.Send, min(1000, messages), level); err != nil { // warm-up
					c.Close()
					return fmt.Errorf("%s: %w", paths[i].Name, err)
				}
				elapsed, err := benchkit.Run(ctx, c.Send, messages, level)
				c.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", paths[i].Name, err)
				}
				rates[i] = append(rates[i], float64(messages)/elapsed.Seconds())
			}
		}
		base := benchkit.Median(rates[baseline])
		for i, p := range paths {
			m := benchkit.Median(rates[i])
			fmt.Printf("%-9d %-20s %12.0f %8.2f   runs: %s\n", level, p.Name, m, m/base, benchkit.FormatRates(rates[i]))
		}
	}
	fmt.Println()
	return nil
}

// childInfo is what the emulator child prints on its first stdout line.
type childInfo struct {
	Addr     string `json:"addr"`
	HubHost  string `json:"hubHost"`
	IDScope  string `json:"idScope"`
	GroupKey string `json:"groupKey"`
	CAPEM    []byte `json:"caPEM"`
}

// serveEmulator runs in the child: it starts an emulator, prints a
// childInfo line and runs until stdin closes.
func serveEmulator() error {
	e, err := emulator.Start(context.Background(), &emulator.Options{
		MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	defer e.Close()
	if err := json.NewEncoder(os.Stdout).Encode(childInfo{Addr: e.MQTTAddr(), HubHost: e.HubHost(), IDScope: e.IDScope(), GroupKey: e.GroupKey(), CAPEM: e.CACertPEM()}); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
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
					first = cmp(first, err)
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

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// childEnv starts the emulator in a child process (this program with
// -serve-emulator), so that this process's heap holds only clients.
// Devices are provisioned with the group key through the SDK's DPS client.
func childEnv(ctx context.Context) (env, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return env{}, nil, err
	}
	cmd := exec.Command(exe, "-serve-emulator")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return env{}, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return env{}, nil, err
	}
	if err := cmd.Start(); err != nil {
		return env{}, nil, err
	}
	stop := func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}
	fail := func(err error) (env, func(), error) {
		stop()
		return env{}, nil, fmt.Errorf("emulator child: %w", err)
	}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		return fail(err)
	}
	var info childInfo
	if err := json.Unmarshal(line, &info); err != nil {
		return fail(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(info.CAPEM) {
		return fail(errors.New("bad CA PEM"))
	}
	port, err := benchkit.PortOf(info.Addr)
	if err != nil {
		return fail(err)
	}
	tr := mqtt.New(&mqtt.Options{Port: port, RootCAs: roots})
	var seq atomic.Int64
	return env{name: "emulator in a child process", port: port, roots: roots, newDevice: func(ctx context.Context) (benchkit.Target, error) {
		id := fmt.Sprintf("child-%06d", seq.Add(1))
		key, err := domain.DeriveDeviceKey(info.GroupKey, id)
		if err != nil {
			return benchkit.Target{}, err
		}
		sas, err := domain.BuildSAS(key, domain.DPSResource(info.IDScope, id), time.Now().Add(time.Hour), domain.DPSKeyName)
		if err != nil {
			return benchkit.Target{}, err
		}
		a, err := tr.Provision(ctx, ports.ProvisioningRequest{Host: "localhost", IDScope: info.IDScope,
			Registration: domain.RegistrationRequest{RegistrationID: id}, Auth: ports.Auth{SASToken: sas}})
		if err != nil {
			return benchkit.Target{}, fmt.Errorf("provision %s: %w", id, err)
		}
		return benchkit.Target{Addr: info.Addr, HubHost: a.Hub, RootCAs: roots, DeviceID: a.DeviceID, Key: key}, nil
	}}, stop, nil
}

func footprint(ctx context.Context, ev env, n int) error {
	targets := make([]benchkit.Target, n)
	start := time.Now()
	err := parallel(n, func(i int) error {
		t, err := ev.newDevice(ctx)
		targets[i] = t
		return err
	})
	if err != nil {
		return err
	}
	fmt.Printf("footprint (%s): %d devices provisioned in %s\n", ev.name, n, time.Since(start).Round(time.Millisecond))
	fmt.Printf("%-20s %14s %14s %12s\n", "path", "heap/device", "goroutines/dev", "connect all")
	for _, p := range append(sdkPaths(ev.port, ev.roots), benchkit.RawPahoPath()) {
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
		if prefix := os.Getenv("MQTTBENCH_MEMPROFILE"); prefix != "" {
			if f, ferr := os.Create(prefix + "-" + strings.NewReplacer(" ", "_", "/", "_").Replace(p.Name) + ".pprof"); ferr == nil {
				_ = pprof.WriteHeapProfile(f)
				_ = f.Close()
			}
		}
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
