// Command cmdbench measures the command round trip on loopback through
// the emulator's IoT Central REST API (POST /api/devices/{id}/commands/{name}
// with ?api-version, a JSON body and the bare API token) and through its IoT
// Hub service API as the official service SDKs call it (POST
// /twins/{id}/methods on the hub host listener with a "service" policy SAS
// token), until the device's answer comes back, p50 and p99, first for one
// connected device with nothing else running, then under fleet load (many
// devices sending telemetry, each command to a random one of them). The
// devices are iotc.Client devices run by the fleet simulator.
//
//	go run ./bench/cmdbench                       # 1,000 commands per path; 1,000 devices at 1 msg/s each as the load
//	go run ./bench/cmdbench -devices 5000 -rate 2s -n 2000 -transport amqp -api service
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/cmd/iotc-fleet/fleet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv(fleet.ChildEnv) == "1" { // the emulator child of -emulator child
		if err := fleet.ServeChild(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "cmdbench emulator:", err)
			stop()
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cmdbench:", err)
		stop()
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(1)
	}
}

type result struct {
	name        string
	lat         fleet.HistSnapshot
	errors      int
	answered    uint64 // commands the devices' handlers answered
	fleetMsgsPS float64
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("cmdbench", flag.ContinueOnError)
	n := fs.Int("n", 1000, "commands per scenario")
	devices := fs.Int("devices", 1000, "devices of the fleet load")
	rate := fs.Duration("rate", time.Second, "telemetry interval of each loaded device")
	trName := fs.String("transport", "mqtt", "transport: mqtt, mqttws, amqp or amqpws")
	child := fs.Bool("child", false, "run the emulator in a child process (as iotc-fleet does for big fleets)")
	api := fs.String("api", "both", "command path: rest (IoT Central REST), service (IoT Hub service API, POST /twins/{id}/methods) or both")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *api != "rest" && *api != "service" && *api != "both" {
		return fmt.Errorf("-api %q: want rest, service or both", *api)
	}
	if *n < 1 || *devices < 1 || *rate <= 0 {
		return errors.New("-n, -devices and -rate must be positive")
	}
	var tr iotc.Transport = -1
	for _, t := range []iotc.Transport{iotc.MQTT, iotc.MQTTWebSockets, iotc.AMQP, iotc.AMQPWebSockets} {
		if t.String() == *trName {
			tr = t
		}
	}
	if tr < 0 {
		return fmt.Errorf("unknown transport %q", *trName)
	}
	local, err := fleet.StartEmulator(ctx, *child)
	if err != nil {
		return err
	}
	defer local.Close()
	target, err := local.Target(tr)
	if err != nil {
		return err
	}
	cc, err := fleet.NewCommandClient(local.RESTURL, local.APIToken, local.RootCAs())
	if err != nil {
		return err
	}
	defer cc.CloseIdle()
	var paths []invoker
	if *api != "service" {
		paths = append(paths, invoker{"REST", func(ctx context.Context, id, name string, payload any) (int, error) {
			r, err := cc.Invoke(ctx, id, name, payload, 10)
			return r.ResponseCode, err
		}})
	}
	if *api != "rest" {
		sc, err := newServiceClient(local.ServiceConnectionString, local.WebSocketAddr, local.RootCAs())
		if err != nil {
			return err
		}
		defer sc.http.CloseIdleConnections()
		paths = append(paths, invoker{"service API", func(ctx context.Context, id, name string, payload any) (int, error) {
			return sc.invoke(ctx, id, name, payload, 10)
		}})
	}

	fmt.Fprintf(out, "command round trip over %s, %d commands per scenario and path, one at a time\n", tr, *n)
	one, err := scenario(ctx, paths, fleet.Config{Devices: 1, IDPattern: "cmd-solo-%d", Transport: tr, Target: target, Interval: -1}, *n, "1 device, idle")
	if err != nil {
		return err
	}
	loaded, err := scenario(ctx, paths, fleet.Config{Devices: *devices, IDPattern: "cmd-load-%05d", Transport: tr, Target: target, Interval: *rate, ConnectRate: -1, MaxConnecting: 128},
		*n, fmt.Sprintf("%d devices, 1 msg/%s each", *devices, *rate))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n| scenario | commands | answered by devices | errors | p50 | p99 | max | fleet msgs/s meanwhile |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range append(one, loaded...) {
		fmt.Fprintf(out, "| %s | %d | %d | %d | %s | %s | %s | %.0f |\n", r.name, r.lat.Count(), r.answered, r.errors,
			ms(r.lat.Quantile(0.5)), ms(r.lat.Quantile(0.99)), ms(r.lat.Max), r.fleetMsgsPS)
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// invoker is one command path: it runs a command and returns the device's status.
type invoker struct {
	name   string
	invoke func(ctx context.Context, id, name string, payload any) (int, error)
}

// scenario runs a fleet, waits until it is connected, invokes n commands
// one after another on random devices through each path in turn and stops
// the fleet.
func scenario(ctx context.Context, paths []invoker, cfg fleet.Config, n int, name string) ([]result, error) {
	f, err := fleet.New(cfg)
	if err != nil {
		return nil, err
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan fleet.Report, 1)
	go func() { r, _ := f.Run(fctx); done <- r }()
	select {
	case <-f.Ready():
	case <-ctx.Done():
		cancel()
		<-done
		return nil, ctx.Err()
	}
	ids := f.DeviceIDs()
	if c := f.Connected(); c != len(ids) {
		cancel()
		<-done
		return nil, fmt.Errorf("%s: only %d of %d devices connected", name, c, len(ids))
	}
	if cfg.Interval > 0 {
		time.Sleep(cfg.Interval) // let every device start sending
	}
	var out []result
	for _, p := range paths {
		for range 20 { // warm up the HTTPS connection and the paths
			if _, err := p.invoke(ctx, ids[0], "warmup", nil); err != nil {
				cancel()
				<-done
				return nil, err
			}
		}
		var h fleet.Histogram
		res := result{name: name + ", " + p.name}
		start, sent0, answered0 := time.Now(), f.Sent(), f.Commands()
		for i := range n {
			if ctx.Err() != nil {
				break
			}
			id := ids[rand.N(len(ids))]
			t0 := time.Now()
			status, err := p.invoke(ctx, id, "ping", map[string]any{"seq": i})
			if err != nil || status != 200 {
				res.errors++
				continue
			}
			h.Observe(time.Since(t0))
		}
		elapsed := time.Since(start)
		res.fleetMsgsPS = float64(f.Sent()-sent0) / elapsed.Seconds()
		res.answered = f.Commands() - answered0
		res.lat = h.Snapshot()
		out = append(out, res)
	}
	cancel()
	<-done
	return out, ctx.Err()
}
