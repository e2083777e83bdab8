// Command mqttbench measures the MQTT transport against raw paho, side by
// side in one run:
//
//  1. throughput: 256-byte JSON telemetry at QoS 1 (each message waits for
//     its PUBACK) through the SDK paths and through a bare paho client, to
//     the same emulator (in this process, in a child process, or both),
//     with 1 and with 100 messages in flight; it prints msgs/s for every
//     path, the ratio to raw paho (median of -rounds rounds, the paths
//     alternating order each round) and the heap allocations per message
//     of the sending process (the emulator's included when it runs in the
//     same process);
//  2. footprint: -devices devices connected at once through each path, the
//     path in a process of its own (this program re-executed with
//     -footprint-child) against an emulator process of its own (re-executed
//     with -serve-emulator), so that the RSS of one path holds nothing of
//     another's; it prints RSS, live heap and goroutines per connected
//     device and the connect-all time, the SDK paths' ratios to raw paho
//     with issue 17's targets, and the emulator's RSS and goroutines per
//     connected device.
//
// Every path does the same connect work: iotc.Client (connection string,
// no DPS) subscribes to twin responses, desired patches, methods (QoS 0)
// and cloud-to-device messages (QoS 1) and reads the twin; the bare
// adapters/mqtt session subscribes the same and the bench reads the twin
// on it; raw paho subscribes the same four filters with a handler each
// and publishes a twin GET, waiting for its answer.
//
// Usage: go run ./bench/mqttbench [-messages 20000] [-rounds 3] [-devices 1000]
// [-footprint-rounds 1] [-throughput-emulator both|inprocess|child|none]
// [-paths client,mqtt,raw]
//
// The Show command of issue 17 is go run ./bench/mqttbench -devices 10000
// (add -throughput-emulator none for the footprint alone). The bench
// raises its open-file limit to the hard limit itself.
package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/adapters/mqtt"
	"github.com/iotc-go/iotc/bench/benchkit"
	"github.com/iotc-go/iotc/emulator"
)

// baselineKey is the raw paho path's key; it always runs.
const baselineKey = "raw"

func main() {
	if os.Getenv("MQTTBENCH_MEMPROFILE") != "" && os.Getenv("MQTTBENCH_SAMPLED") == "" {
		runtime.MemProfileRate = 1 // every allocation, for a precise heap profile (MQTTBENCH_SAMPLED=1 keeps the default rate, for CPU profiles)
	}
	var (
		messages  = flag.Int("messages", 20000, "messages per timed run")
		rounds    = flag.Int("rounds", 11, "timed runs per path and in-flight level, the paths alternating (the median is reported; single runs vary by 30 % on a loaded 2-core machine)")
		inflight  = flag.String("inflight", "1,100", "comma-separated in-flight levels")
		devices   = flag.Int("devices", 1000, "devices connected at once for the footprint test (0 skips it)")
		footRuns  = flag.Int("footprint-rounds", 1, "footprint runs per path, the paths rotating order (medians are reported)")
		where     = flag.String("throughput-emulator", "both", "where the throughput runs' emulator lives: inprocess, child, both or none (none skips the throughput test)")
		pathsFlag = flag.String("paths", "client,mqtt,raw", "comma-separated paths to run: client (iotc.Client), mqtt (adapters/mqtt), raw (raw paho, the baseline, always run)")
		serve     = flag.Bool("serve-emulator", false, "internal: run an emulator child (see benchkit.ServeEmulator)")
		child     = flag.Bool("footprint-child", false, "internal: run a footprint child (see benchkit.FootprintChild)")
	)
	flag.Parse()
	if err := benchkit.RaiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench: warning:", err)
	}
	ctx := context.Background()
	switch {
	case *serve:
		exit(benchkit.ServeEmulator(os.Stdin, os.Stdout))
		return
	case *child:
		exit(benchkit.FootprintChild(ctx, allPaths, os.Stdin, os.Stdout))
		return
	}
	switch *where {
	case "inprocess", "child", "both", "none":
	default:
		fmt.Fprintln(os.Stderr, "mqttbench: -throughput-emulator must be inprocess, child, both or none")
		os.Exit(2)
	}
	levels, err := benchkit.ParseLevels(*inflight)
	if err == nil && (*messages <= 0 || *rounds <= 0 || *footRuns <= 0 || *devices < 0) {
		err = fmt.Errorf("-messages, -rounds and -footprint-rounds must be positive, -devices not negative")
	}
	var keys []string
	if err == nil {
		keys, err = benchkit.SelectKeys(*pathsFlag, allPaths(0, nil), baselineKey)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		os.Exit(2)
	}
	fmt.Printf("mqttbench: %s, GOMAXPROCS=%d, %d-byte JSON body, QoS 1, open-file limit %d\n\n", runtime.Version(), runtime.GOMAXPROCS(0), benchkit.BodySize, benchkit.FileLimit())
	if err := run(ctx, *where, *messages, *rounds, levels, *devices, *footRuns, keys); err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		os.Exit(1)
	}
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		os.Exit(1)
	}
}

// allPaths are every path of the bench, the baseline last.
func allPaths(port int, roots *x509.CertPool) []benchkit.Path {
	return []benchkit.Path{
		benchkit.FacadePath("sdk iotc.Client", iotc.MQTT, port).WithKey("client"),
		benchkit.TransportPath("sdk adapters/mqtt", mqtt.New(&mqtt.Options{Port: port, RootCAs: roots})).WithKey("mqtt"),
		benchkit.RawPahoPath().WithKey(baselineKey),
	}
}

func run(ctx context.Context, where string, messages, rounds int, levels []int, devices, footRounds int, keys []string) error {
	if where == "inprocess" || where == "both" {
		ev, stop, err := inProcessEnv(ctx)
		if err != nil {
			return err
		}
		err = throughput(ctx, ev, messages, rounds, levels, keys)
		stop()
		if err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
	}
	if where == "child" || where == "both" {
		ev, stop, err := childEnv()
		if err != nil {
			return err
		}
		err = throughput(ctx, ev, messages, rounds, levels, keys)
		stop()
		if err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
	}
	if devices > 0 {
		names := benchkit.Names(benchkit.Selected(allPaths(0, nil), keys))
		fmt.Println("footprint connect work, every path: TLS, MQTT 3.1.1, clean session false, 4 subscriptions with a handler each, a twin GET answered, one telemetry message")
		res, err := benchkit.RunFootprint(ctx, benchkit.FootprintConfig{
			Devices:      devices,
			Paths:        names,
			EmulatorArgs: []string{"-serve-emulator"},
			ChildArgs:    []string{"-footprint-child"},
			Addr:         func(i benchkit.EmulatorInfo) string { return i.MQTTAddr },
			Profile:      os.Getenv("MQTTBENCH_MEMPROFILE"),
			Rounds:       footRounds,
			Progress:     os.Stderr,
		})
		if err != nil {
			return fmt.Errorf("footprint: %w", err)
		}
		benchkit.PrintFootprint(os.Stdout, res, names[len(names)-1], benchkit.DefaultTargets)
	}
	return nil
}

// env is an emulator to send to and a way to get a fresh device on it.
type env struct {
	name      string
	port      int
	roots     *x509.CertPool
	newDevice func() (benchkit.Target, error)
}

// inProcessEnv starts an emulator in this process.
func inProcessEnv(ctx context.Context) (env, func(), error) {
	e, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return env{}, nil, err
	}
	port, err := benchkit.PortOf(e.MQTTAddr())
	if err != nil {
		_ = e.Close()
		return env{}, nil, err
	}
	seq := 0
	return env{name: "in-process emulator; allocs include the emulator's", port: port, roots: e.CAPool(), newDevice: func() (benchkit.Target, error) {
		seq++
		id := fmt.Sprintf("bench-%d", seq)
		key, err := e.CreateDevice(id)
		return benchkit.Target{Addr: e.MQTTAddr(), HubHost: e.HubHost(), RootCAs: e.CAPool(), DeviceID: id, Key: key}, err
	}}, func() { _ = e.Close() }, nil
}

// childEnv starts the emulator in a child process (this program with
// -serve-emulator), so that this process holds and allocates only for the
// clients. Devices are created through the child's API (no DPS).
func childEnv() (env, func(), error) {
	c, err := benchkit.StartEmulatorChild("-serve-emulator")
	if err != nil {
		return env{}, nil, err
	}
	port, err := benchkit.PortOf(c.Info.MQTTAddr)
	if err != nil {
		_ = c.Close()
		return env{}, nil, err
	}
	return env{name: "emulator in a child process", port: port, roots: c.Roots, newDevice: func() (benchkit.Target, error) {
		d, err := c.CreateDevices(1)
		if err != nil {
			return benchkit.Target{}, err
		}
		return c.Target(c.Info.MQTTAddr, d[0]), nil
	}}, func() { _ = c.Close() }, nil
}

// cpuProfile starts a CPU profile of this process for path at level when
// MQTTBENCH_CPUPROFILE names a file prefix (one profile per path and
// level: the last round's); it returns the function that stops it.
func cpuProfile(path string, level int) func() {
	prefix := os.Getenv("MQTTBENCH_CPUPROFILE")
	if prefix == "" {
		return func() {}
	}
	name := fmt.Sprintf("%s-%s-%d.pprof", prefix, strings.NewReplacer(" ", "_", "/", "_", ".", "_").Replace(path), level)
	f, err := os.Create(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench: cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench: cpu profile:", err)
		_ = f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// cpus returns the samples' CPU time per message (this process's: the
// client's alone when the emulator runs in a child).
func cpus(ss []benchkit.Sample) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.CPU
	}
	return out
}

func throughput(ctx context.Context, ev env, messages, rounds int, levels []int, keys []string) error {
	paths := benchkit.Selected(allPaths(ev.port, ev.roots), keys)
	baseline := len(paths) - 1
	fmt.Printf("throughput (%s): %d messages per run, median of %d runs; ratio: median of the per-round ratios to raw paho (the two ran back to back)\n", ev.name, messages, rounds)
	fmt.Printf("%-9s %-20s %12s %8s %8s %9s %8s\n", "in-flight", "path", "msgs/s", "ratio", "allocs", "cpu µs", "cpu x")
	for _, level := range levels {
		samples := make([][]benchkit.Sample, len(paths))
		for r := range rounds {
			for k := range paths {
				i := (k + r) % len(paths) // alternate who goes first
				target, err := ev.newDevice()
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
				stopProfile := cpuProfile(paths[i].Name, level)
				s, err := benchkit.TimedRun(ctx, c.Send, messages, level)
				stopProfile()
				c.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", paths[i].Name, err)
				}
				samples[i] = append(samples[i], s)
			}
		}
		baseCPU := benchkit.Median(cpus(samples[baseline]))
		for i, p := range paths {
			rates := benchkit.Rates(samples[i])
			ratios := make([]float64, len(rates))
			for r := range rates {
				ratios[r] = rates[r] / samples[baseline][r].Rate
			}
			cpu := benchkit.Median(cpus(samples[i]))
			fmt.Printf("%-9d %-20s %12.0f %8.2f %8.1f %9.1f %8.2f   runs: %s\n", level, p.Name, benchkit.Median(rates), benchkit.Median(ratios),
				benchkit.Median(benchkit.Allocs(samples[i])), cpu, cpu/baseCPU, benchkit.FormatRates(rates))
		}
	}
	fmt.Println()
	return nil
}
