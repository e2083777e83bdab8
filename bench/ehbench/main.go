// Command ehbench measures how fast a backend reads device telemetry from
// the emulator's built-in Event Hubs-compatible endpoint with the official
// client (azeventhubs.ConsumerClient, one PartitionClient per partition),
// with the CPU time the client and the emulator spend per event. The
// emulator runs in a child process, so each process's CPU is its own.
//
// Two phases, in the same run:
//
//   - fill: -devices devices (iotc.Client over MQTT, run by the fleet
//     simulator) send as fast as their -fill-interval lets them until
//     -events messages are stored; the devices then stop. The fill rate is
//     the baseline: how fast the emulator takes the devices' messages in.
//
//   - drain: the consumer reads those events from the start of every
//     partition, with nothing else running: events per second, and CPU µs
//     per event of the consumer process and of the emulator child.
//
//   - live: the devices send again, each every -live-interval, for
//     -live-duration, while the consumer reads from the end: events per
//     second read and the delay from enqueued time to receipt (p50, p99).
//
//     go run ./bench/ehbench                         # 1,000 devices, 30,000 events
//     go run ./bench/ehbench -devices 1000 -events 30000 -live-interval 1s -live-duration 15s
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/cmd/iotc-fleet/fleet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv(fleet.ChildEnv) == "1" { // the emulator child
		if err := fleet.ServeChild(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "ehbench emulator:", err)
			stop()
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ehbench:", err)
		stop()
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ehbench", flag.ContinueOnError)
	devices := fs.Int("devices", 1000, "devices sending")
	events := fs.Int("events", 30000, "events the fill phase stores (at most 4 x the emulator's retention count, 10,000)")
	fillInterval := fs.Duration("fill-interval", 50*time.Millisecond, "telemetry period of each device while filling")
	liveInterval := fs.Duration("live-interval", time.Second, "telemetry period of each device in the live phase")
	liveDuration := fs.Duration("live-duration", 15*time.Second, "length of the live phase (0 skips it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *devices < 1 || *events < 1 || *fillInterval <= 0 || *liveInterval <= 0 {
		return errors.New("-devices, -events, -fill-interval and -live-interval must be positive")
	}
	local, err := fleet.StartEmulator(ctx, true)
	if err != nil {
		return err
	}
	defer local.Close()
	target, err := local.Target(iotc.MQTT)
	if err != nil {
		return err
	}
	cfg := fleet.Config{Devices: *devices, IDPattern: "eh-bench-%05d", Transport: iotc.MQTT, Target: target,
		Interval: *fillInterval, ConnectRate: -1, MaxConnecting: 128}

	// Fill.
	f, err := fleet.New(cfg)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _, _ = f.Run(fctx); close(done) }()
	select {
	case <-f.Ready():
	case <-ctx.Done():
		cancel()
		<-done
		return ctx.Err()
	}
	if c := f.Connected(); c != *devices {
		cancel()
		<-done
		return fmt.Errorf("only %d of %d devices connected", c, *devices)
	}
	fillStart, sent0 := time.Now(), f.Sent()
	for f.Sent()-sent0 < uint64(*events) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	fillTime := time.Since(fillStart)
	stored := f.Sent()
	fillRate := float64(stored-sent0) / fillTime.Seconds()
	fmt.Fprintf(out, "fill: %d devices stored %d messages in %s (%.0f msgs/s), %d in all since they connected\n",
		*devices, stored-sent0, fillTime.Round(time.Millisecond), fillRate, stored)

	c, err := azeventhubs.NewConsumerClientFromConnectionString(local.EventHubsConnectionString, "", azeventhubs.DefaultConsumerGroup,
		&azeventhubs.ConsumerClientOptions{TLSConfig: &tls.Config{RootCAs: local.RootCAs(), ServerName: local.HubHost, MinVersion: tls.VersionTLS12}})
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	props, err := c.GetEventHubProperties(ctx, nil)
	if err != nil {
		return err
	}
	var total int64
	for _, id := range props.PartitionIDs {
		pp, err := c.GetPartitionProperties(ctx, id, nil)
		if err != nil {
			return err
		}
		if !pp.IsEmpty {
			total += pp.LastEnqueuedSequenceNumber - pp.BeginningSequenceNumber + 1
		}
	}

	// Drain.
	runtime.GC()
	own0, child0 := selfCPU(), procCPU(local.PID)
	start := time.Now()
	read, err := consume(ctx, c, props.PartitionIDs, azeventhubs.StartPosition{Earliest: ptr(true)}, total, nil)
	if err != nil {
		return err
	}
	drain := time.Since(start)
	own, child := selfCPU()-own0, procCPU(local.PID)-child0
	fmt.Fprintf(out, "drain: read the %d events the partitions keep (%d partitions, retention 10,000 events each) in %s\n", read, len(props.PartitionIDs), drain.Round(time.Millisecond))
	fmt.Fprintf(out, "\n| phase | events | events/s | ratio to the fill rate | consumer CPU µs/event | emulator CPU µs/event |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(out, "| fill (%d devices over MQTT) | %d | %.0f | 1.00 | | |\n", *devices, stored-sent0, fillRate)
	fmt.Fprintf(out, "| drain (ConsumerClient, from the start) | %d | %.0f | %.2f | %.1f | %.1f |\n", read,
		float64(read)/drain.Seconds(), float64(read)/drain.Seconds()/fillRate, us(own, read), us(child, read))

	if *liveDuration <= 0 {
		return nil
	}
	// Live.
	cfg.Interval, cfg.Duration = *liveInterval, *liveDuration
	f, err = fleet.New(cfg)
	if err != nil {
		return err
	}
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	var lat latencies
	readC := make(chan int64, 1)
	errC := make(chan error, 1)
	go func() {
		n, err := consume(lctx, c, props.PartitionIDs, azeventhubs.StartPosition{Latest: ptr(true)}, -1, &lat)
		readC <- n
		errC <- err
	}()
	time.Sleep(time.Second) // the readers attach before the devices send
	liveStart := time.Now()
	if _, err := f.Run(ctx); err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // the last events reach the readers
	lcancel()
	n := <-readC
	if err := <-errC; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	liveTime := time.Since(liveStart)
	sent := f.Sent()
	p50, p99 := lat.quantiles()
	fmt.Fprintf(out, "\nlive: %d devices each every %s for %s sent %d; the consumer read %d (%.0f events/s), delay from enqueued time p50 %s, p99 %s\n",
		*devices, *liveInterval, *liveDuration, sent, n, float64(n)/liveTime.Seconds(), p50, p99)
	return nil
}

func ptr[T any](v T) *T { return &v }

func us(d time.Duration, n int64) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}

// latencies collects enqueued-to-received delays.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) quantiles() (time.Duration, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0
	}
	slices.Sort(l.d)
	return l.d[len(l.d)/2].Round(time.Millisecond), l.d[len(l.d)*99/100].Round(time.Millisecond)
}

// consume reads every partition from start until want events were read
// (want < 0: until ctx ends); it returns the count.
func consume(ctx context.Context, c *azeventhubs.ConsumerClient, ids []string, start azeventhubs.StartPosition, want int64, lat *latencies) (int64, error) {
	var read atomic.Int64
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, id := range ids {
		pc, err := c.NewPartitionClient(id, &azeventhubs.PartitionClientOptions{StartPosition: start, Prefetch: 1000})
		if err != nil {
			return 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pc.Close(context.Background())
			for cctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(cctx, 200*time.Millisecond)
				evs, err := pc.ReceiveEvents(rctx, 500, nil)
				rcancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) && cctx.Err() == nil {
					cancel(fmt.Errorf("partition %s: %w", id, err))
					return
				}
				now := time.Now()
				for _, ev := range evs {
					if lat != nil && ev.EnqueuedTime != nil {
						lat.add(now.Sub(*ev.EnqueuedTime))
					}
				}
				if n := read.Add(int64(len(evs))); want >= 0 && n >= want {
					cancel(nil)
				}
			}
		}()
	}
	wg.Wait()
	err := context.Cause(cctx)
	if errors.Is(err, context.Canceled) || (want < 0 && ctx.Err() != nil) {
		err = nil
	}
	return read.Load(), err
}

// selfCPU is this process's user + system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is another process's user + system CPU time from /proc (Linux;
// 0 elsewhere).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}
