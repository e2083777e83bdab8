// Command soak runs a fleet of SDK devices against an in-process emulator
// for minutes over one or more transports, injects a mix of faults
// (KillTcp, a graceful close, throttling, an emulator restart on the same
// ports and data directory, a network cut) every few seconds, and prints
// per transport what happened to every message sent through SendTelemetry
// and EnqueueTelemetry: sent, acknowledged, received by the emulator, lost
// (acknowledged, never received), duplicated, failed; the recovery time
// after each fault kind (p50, max); goroutines and heap before and after.
// A progress line goes to stderr while it runs.
//
//	go run ./bench/soak -devices 100 -duration 10m -transport all
//	go run ./bench/soak -transport amqp -devices 20 -duration 2m -fault-every 10s -sequential
//
// It exits 1 when a transport lost, duplicated or failed a message, 2 when
// a run could not be set up.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/internal/soak"
)

func main() {
	os.Exit(run())
}

func run() int {
	transports := flag.String("transport", "all", "mqtt, mqttws, amqp, amqpws, a comma-separated list, or all")
	sequential := flag.Bool("sequential", false, "run the transports one after another (default: all at once, each with its own emulator)")
	devices := flag.Int("devices", 100, "devices per transport")
	duration := flag.Duration("duration", 10*time.Minute, "how long the devices send")
	interval := flag.Duration("interval", time.Second, "each device's period on each path (one SendTelemetry and one EnqueueTelemetry per period)")
	faultEvery := flag.Duration("fault-every", 20*time.Second, "fault period; 0 injects none")
	faults := flag.String("faults", strings.Join(soak.DefaultMix, ","), "the fault rotation")
	throttleFor := flag.Duration("throttle-for", 5*time.Second, "how long a throttle fault lasts")
	dataDir := flag.String("data-dir", "", "emulator data directory root (one subdirectory per transport; default a temporary one)")
	outboxDir := flag.String("outbox-dir", "", "give every device a durable outbox under this directory (default in memory)")
	progressEvery := flag.Duration("progress", 10*time.Second, "progress line period")
	verbose := flag.Bool("v", false, "log the emulator's and the clients' warnings to stderr")
	flag.Parse()

	var trs []iotc.Transport
	names := strings.Split(*transports, ",")
	if *transports == "all" {
		names = []string{"mqtt", "mqttws", "amqp", "amqpws"}
	}
	for _, n := range names {
		tr, ok := map[string]iotc.Transport{"mqtt": iotc.MQTT, "mqttws": iotc.MQTTWebSockets, "amqp": iotc.AMQP, "amqpws": iotc.AMQPWebSockets}[strings.TrimSpace(n)]
		if !ok {
			fmt.Fprintf(os.Stderr, "soak: unknown transport %q (want mqtt, mqttws, amqp, amqpws or all)\n", n)
			return 2
		}
		trs = append(trs, tr)
	}
	fe := *faultEvery
	if fe == 0 {
		fe = -1
	}
	var logger *slog.Logger
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	fmt.Printf("soak: %d devices per transport, %v, %s, faults every %v (%s), throttle %v, outbox %s, GOMAXPROCS-visible CPUs %d\n",
		*devices, *duration, map[bool]string{true: "transports one after another", false: "transports at once"}[*sequential],
		*faultEvery, *faults, *throttleFor, map[bool]string{true: "durable", false: "in memory"}[*outboxDir != ""], runtime.NumCPU())
	cfgFor := func(tr iotc.Transport) soak.Config {
		c := soak.Config{
			Transport: tr, Devices: *devices, Duration: *duration, Interval: *interval, FaultEvery: fe,
			Faults: strings.Split(*faults, ","), ThrottleFor: *throttleFor,
			Progress: os.Stderr, ProgressEvery: *progressEvery, Logger: logger,
		}
		if *dataDir != "" {
			c.DataDir = *dataDir + "/" + tr.String()
		}
		if *outboxDir != "" {
			c.OutboxDir = *outboxDir + "/" + tr.String()
		}
		return c
	}
	reports := make([]soak.Report, len(trs))
	errs := make([]error, len(trs))
	if *sequential {
		for i, tr := range trs {
			reports[i], errs[i] = soak.Run(ctx, cfgFor(tr))
		}
	} else {
		var wg sync.WaitGroup
		for i, tr := range trs {
			wg.Go(func() { reports[i], errs[i] = soak.Run(ctx, cfgFor(tr)) })
		}
		wg.Wait()
	}
	code := 0
	for i, r := range reports {
		if errs[i] != nil {
			fmt.Fprintf(os.Stderr, "soak: %v: %v\n", trs[i], errs[i])
			code = 2
			continue
		}
		_ = r.Write(os.Stdout)
		if !r.Clean() && code == 0 {
			code = 1
		}
	}
	if !*sequential && len(trs) > 1 {
		fmt.Println("(transports ran at once in one process: goroutines and heap are the whole process's)")
	}
	return code
}
