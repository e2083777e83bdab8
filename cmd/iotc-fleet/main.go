// Command iotc-fleet simulates a fleet of IoT Central devices from one
// process: N devices from one enrollment group key, with ids from a
// pattern, over any transport, each sending telemetry from a JSON template
// (random walk, sine, constant, counter) at a fixed interval, acknowledging
// writable properties and answering commands. Connections ramp up at a
// limited rate; progress and a live summary line are printed every
// second, and a summary table when it stops (Ctrl-C or -duration).
//
// With no ID scope it runs against an emulator it starts itself (in this
// process, or in a child process when the fleet needs more file
// descriptors than one process has):
//
//	go run ./cmd/iotc-fleet -devices 1000
//	go run ./cmd/iotc-fleet -devices 10000 -rate 5s -duration 2m
//
// Against an emulator that runs on its own (iotc-emulator --info-file
// info.json), and split across N machines as shards K = 0..N-1:
//
//	go run ./cmd/iotc-fleet -emulator-info info.json -devices 10000 -shard 0/4
//
// Against a real IoT Central application:
//
//	IOTC_ID_SCOPE=0ne00XXXXXX IOTC_GROUP_KEY=<group primary key> go run ./cmd/iotc-fleet -devices 50
//
// Exit status: 0 after a clean stop, 2 for bad flags, 1 otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/cmd/iotc-fleet/fleet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv(fleet.ChildEnv) == "1" {
		if err := fleet.ServeChild(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "iotc-fleet emulator:", err)
			stop()
			os.Exit(1)
		}
		return
	}
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "iotc-fleet:", err)
		stop()
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "iotc-fleet:", err)
		stop()
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func parseTransport(name string) (iotc.Transport, error) {
	for _, t := range []iotc.Transport{iotc.MQTT, iotc.MQTTWebSockets, iotc.AMQP, iotc.AMQPWebSockets} {
		if t.String() == name {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown transport %q: want mqtt, mqttws, amqp or amqpws", errUsage, name)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("iotc-fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	devices := fs.Int("devices", 100, "number of devices")
	pattern := fs.String("id-pattern", fleet.DefaultIDPattern, "device id pattern, with one integer verb")
	first := fs.Int("first", 0, "index of the first device")
	trName := fs.String("transport", "mqtt", "transport: mqtt, mqttws, amqp or amqpws")
	rate := fs.Duration("rate", fleet.DefaultInterval, "telemetry interval of each device (0: no telemetry)")
	ramp := fs.Float64("ramp", fleet.DefaultConnectRate, "new connections per second (IoT Hub S1: 100 per unit); 0 for no limit")
	dpsRate := fs.Float64("dps-rate", -1, "DPS registrations per minute; default 1000 (the DPS limit) against Azure, no limit against the emulator")
	maxConnecting := fs.Int("max-connecting", fleet.DefaultMaxConnecting, "connects in progress at once")
	templateFile := fs.String("template", "", "telemetry template JSON file (default: a built-in one; see the README)")
	duration := fs.Duration("duration", 0, "stop after this long (default: run until Ctrl-C)")
	summary := fs.Duration("summary", time.Second, "period of the progress and summary lines")
	scope := fs.String("id-scope", os.Getenv("IOTC_ID_SCOPE"), "IoT Central ID scope ($IOTC_ID_SCOPE); empty runs the emulator")
	groupKeyFlag := fs.String("group-key", "", "enrollment group key (prefer $IOTC_GROUP_KEY: flags are visible to other users)")
	provHost := fs.String("provisioning-host", envOr("IOTC_PROVISIONING_HOST", "global.azure-devices-provisioning.net"), "DPS host ($IOTC_PROVISIONING_HOST)")
	modelID := fs.String("model-id", "dtmi:iotcgo:fleet:Simulated;1", "model id the devices announce")
	credDir := fs.String("credentials-dir", "", "credentials cache directory (default: the user cache dir's iotc-fleet/<ID scope> against Azure, none against the emulator; - for none)")
	emuMode := fs.String("emulator", "auto", "where the emulator runs: auto, inproc or child (auto: a child when the fleet needs more file descriptors than one process may open)")
	verbose := fs.Bool("v", false, "log connect and send failures to stderr")
	apiToken := fs.String("api-token", os.Getenv(fleet.APITokenEnv), "API token of the emulator the fleet starts ($"+fleet.APITokenEnv+"; default random); printed at start")
	emuInfo := fs.String("emulator-info", "", "drive an emulator that runs on its own: the JSON file iotc-emulator --info-file wrote")
	shardText := fs.String("shard", "", "K/N: run only shard K (0 to N-1) of the -devices, so N processes or machines run one fleet (Kubernetes Indexed Job: K = $JOB_COMPLETION_INDEX)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	tr, err := parseTransport(*trName)
	if err != nil {
		return err
	}
	shard, shards, err := parseShard(*shardText)
	if err != nil {
		return err
	}
	interval := *rate
	switch {
	case interval < 0:
		return fmt.Errorf("%w: -rate %s is negative", errUsage, interval)
	case interval == 0:
		interval = -1
	}
	if *ramp < 0 {
		return fmt.Errorf("%w: -ramp %v is negative", errUsage, *ramp)
	}
	connectRate := *ramp
	if connectRate == 0 {
		connectRate = -1
	}
	var tmpl *fleet.Template
	if *templateFile != "" {
		text, err := os.ReadFile(*templateFile)
		if err != nil {
			return fmt.Errorf("%w: -template: %w", errUsage, err)
		}
		if tmpl, err = fleet.ParseTemplate(text); err != nil {
			return fmt.Errorf("%w: -template %s: %w", errUsage, *templateFile, err)
		}
	}
	var logger *slog.Logger
	if *verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	cfg := fleet.Config{
		Devices: *devices, IDPattern: *pattern, FirstIndex: *first, Transport: tr, ModelID: *modelID,
		Template: tmpl, Interval: interval, ConnectRate: connectRate, MaxConnecting: *maxConnecting,
		Duration: *duration, SummaryEvery: *summary, Out: stdout, Logger: logger,
		Shard: shard, Shards: shards,
	}

	var local *fleet.Local
	if *scope == "" {
		var where string
		if *emuInfo != "" {
			if local, err = fleet.ExternalEmulator(*emuInfo); err != nil {
				return err
			}
			where = "from " + *emuInfo
		} else {
			child := false
			switch *emuMode {
			case "auto":
				child = needsChild(*devices)
			case "child":
				child = true
			case "inproc":
			default:
				return fmt.Errorf("%w: -emulator %q: want auto, inproc or child", errUsage, *emuMode)
			}
			if *apiToken != "" {
				// The emulator (in this process or the child) reads it.
				if err := os.Setenv(fleet.APITokenEnv, *apiToken); err != nil {
					return err
				}
			}
			local, err = fleet.StartEmulator(ctx, child)
			if err != nil {
				return err
			}
			defer local.Close()
			where = "in this process"
			if child {
				where = fmt.Sprintf("in child process %d", local.PID)
			}
		}
		if cfg.Target, err = local.Target(tr); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "emulator %s: ID scope %s, %s on %s\n  REST API  %s\n  API token %s\n  dashboard %s\n",
			where, local.IDScope, tr, cfg.Target.ProvisioningHost, orNone(local.RESTURL), orNone(local.APIToken), orNone(local.DashboardURL))
		cfg.RegistrationRate = max(*dpsRate, 0)
		if *credDir != "" && *credDir != "-" {
			cfg.CredentialsDir = *credDir
		}
	} else {
		key := *groupKeyFlag
		if key == "" {
			key = os.Getenv("IOTC_GROUP_KEY")
		}
		if key == "" {
			return fmt.Errorf("%w: with an ID scope, the group key is needed ($IOTC_GROUP_KEY or -group-key)", errUsage)
		}
		cfg.Target = fleet.Target{IDScope: *scope, GroupKey: key, ProvisioningHost: *provHost}
		cfg.RegistrationRate = *dpsRate
		if cfg.RegistrationRate < 0 {
			cfg.RegistrationRate = fleet.DPSRegistrationsPerMinute
		}
		switch *credDir {
		case "-":
		case "":
			base, err := os.UserCacheDir()
			if err != nil {
				return fmt.Errorf("no user cache directory for the credentials cache (set -credentials-dir): %w", err)
			}
			cfg.CredentialsDir = filepath.Join(base, "iotc-fleet", *scope)
		default:
			cfg.CredentialsDir = *credDir
		}
		fmt.Fprintf(stdout, "IoT Central ID scope %s via %s, %s\n", *scope, *provHost, tr)
	}
	// The emulator child's RSS, sampled with every summary line: the last
	// sample is the one before the devices closed.
	var emuRSS, emuPeak atomic.Uint64
	if local != nil && local.PID != os.Getpid() {
		pid := fmt.Sprint(local.PID)
		cfg.Extra = func() string {
			rss, peak := fleet.ProcessRSS(pid)
			emuRSS.Store(rss)
			emuPeak.Store(peak)
			return fmt.Sprintf("emulator RSS %.0f MiB", float64(rss)/(1<<20))
		}
	}
	f, err := fleet.New(cfg)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if cfg.CredentialsDir != "" {
		fmt.Fprintf(stdout, "credentials cache: %s\n", cfg.CredentialsDir)
	}
	if shards > 1 {
		fmt.Fprintf(stdout, "shard %d/%d: %d of the %d devices\n", shard, shards, len(f.DeviceIDs()), *devices)
	}
	fmt.Fprintf(stdout, "starting %d devices at %v/s, telemetry every %s; Ctrl-C stops\n", len(f.DeviceIDs()), rateText(connectRate), *rate)
	report, runErr := f.Run(ctx)
	fmt.Fprintln(stdout)
	report.WriteTable(stdout)
	if rss := emuRSS.Load(); rss > 0 {
		fmt.Fprintf(stdout, "emulator child RSS before the stop %.1f MiB (peak %.1f MiB), %.1f KiB per device\n",
			float64(rss)/(1<<20), float64(emuPeak.Load())/(1<<20), float64(rss)/1024/float64(report.Devices))
	}
	if report.RSS > 0 {
		who := "fleet process"
		if local != nil && local.PID == os.Getpid() {
			who = "fleet and emulator (one process)"
		}
		fmt.Fprintf(stdout, "%s: RSS %.1f KiB, heap %.1f KiB, %.1f goroutines per device\n", who,
			float64(report.RSS)/1024/float64(report.Devices), float64(report.Heap)/1024/float64(report.Devices),
			float64(report.Goroutines)/float64(report.Devices))
	}
	return runErr
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// parseShard reads -shard K/N; "" is the whole fleet (0, 0).
func parseShard(text string) (shard, shards int, err error) {
	if text == "" {
		return 0, 0, nil
	}
	k, n, ok := strings.Cut(text, "/")
	shard, err1 := strconv.Atoi(strings.TrimSpace(k))
	shards, err2 := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err1 != nil || err2 != nil || shards < 1 || shard < 0 || shard >= shards {
		return 0, 0, fmt.Errorf("%w: -shard %q: want K/N with 0 <= K < N, e.g. 0/4", errUsage, text)
	}
	return shard, shards, nil
}

func rateText(r float64) string {
	if r <= 0 {
		return "unlimited"
	}
	return fmt.Sprint(r)
}
