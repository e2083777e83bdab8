// Command eventhublog is the Python iotc Event Hub logger sample in Go:
// a device (the devicekey sample's loop) whose SDK log records are
// forwarded, as JSON, to an event hub with the official client
// (github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs: batching,
// retries and authentication are its job). A batch the client could not
// send is tried again; records still lost are counted and reported, and
// the exit status is 1 when any was lost. Keys and tokens never reach the
// log.
//
// With no samples.ini it runs with no set-up: it starts the emulator
// in-process with an event hub "logs", runs a device against it, forwards
// its log there and reads the records back with a ConsumerClient.
//
//	go run ./examples/eventhublog
//
// With a samples.ini the device comes from its section (as in devicekey),
// and the event hub from [EventHub] (without it, the embedded emulator's
// "logs"):
//
//	[EventHub]
//	ConnectionString = Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=<key>;EntityPath=device-logs
//	EventHubName = device-logs   ; when the connection string has no EntityPath
//	CAFile = ca.pem              ; optional: a CA to trust (an emulator's)
//	Retries = 3                  ; optional: attempts after the first per batch
//
//	go run ./examples/eventhublog -config samples.ini -v
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/examples/internal/sample"
	"github.com/iotc-go/iotc/internal/samplesini"
)

// logsHub is the embedded emulator's event hub.
const logsHub = "logs"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "eventhublog:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := sample.Parse("eventhublog", args, stderr)
	if err != nil {
		return err
	}
	var (
		cfg iotc.Config
		ini *samplesini.File
		emu *embedded
	)
	if _, statErr := os.Stat(f.Config); statErr == nil {
		if cfg, ini, err = sample.Load(f, samplesini.AuthAny); err != nil {
			return err
		}
	} else if f.Count == 0 {
		f.Count = 3 // the no-set-up run ends by itself
	}
	hub, err := target(ini, f.Config)
	if err != nil {
		return err
	}
	if ini == nil || hub.connectionString == "" {
		if emu, err = startEmbedded(ctx); err != nil {
			return err
		}
		defer emu.Close()
		if ini == nil {
			cfg = emu.deviceConfig(f)
		}
		hub = emu.hub
	}
	fw, err := newForwarder(hub, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(fw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sample.ConsoleStatus(&cfg, f) // the log goes elsewhere: connection changes still show here
	fmt.Fprintln(stdout, "forwarding logs to", hub)
	runErr := sample.Run(ctx, cfg, f, stdout)
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	closeErr := fw.Close(cctx)
	fmt.Fprintf(stdout, "forwarded %d records, dropped %d, failed %d\n", fw.sent.Load(), fw.dropped.Load(), fw.failed.Load())
	if closeErr == nil && emu != nil {
		n, err := emu.readBack(cctx, int(fw.sent.Load()))
		if err != nil {
			closeErr = fmt.Errorf("reading the records back: %w", err)
		} else {
			fmt.Fprintf(stdout, "read back %d records from event hub %q with a ConsumerClient\n", n, logsHub)
		}
	}
	return errors.Join(runErr, closeErr)
}

// target reads [EventHub] of ini (nil: none).
func target(ini *samplesini.File, iniPath string) (hubTarget, error) {
	h := hubTarget{retries: 3}
	if ini == nil {
		return h, nil
	}
	h.connectionString, _ = ini.Get("EventHub", "ConnectionString")
	h.entity, _ = ini.Get("EventHub", "EventHubName")
	if v, ok := ini.Get("EventHub", "Retries"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return h, fmt.Errorf("[EventHub] Retries = %q: want a number >= 0", v)
		}
		h.retries = n
	}
	if ca, ok := ini.Get("EventHub", "CAFile"); ok && ca != "" {
		if !filepath.IsAbs(ca) {
			ca = filepath.Join(filepath.Dir(iniPath), ca)
		}
		pem, err := os.ReadFile(ca)
		if err != nil {
			return h, fmt.Errorf("[EventHub] CAFile: %w", err)
		}
		h.rootCAs = x509.NewCertPool()
		if !h.rootCAs.AppendCertsFromPEM(pem) {
			return h, fmt.Errorf("[EventHub] CAFile %s holds no PEM certificate", ca)
		}
	}
	return h, nil
}

// embedded is the in-process emulator of the no-set-up run.
type embedded struct {
	*emulator.Emulator
	hub hubTarget
}

func startEmbedded(ctx context.Context) (*embedded, error) {
	e, err := emulator.Start(ctx, &emulator.Options{
		MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: time.Millisecond,
		EventHubs: emulator.EventHubsOptions{Entities: []string{logsHub}},
	})
	if err != nil {
		return nil, fmt.Errorf("start the emulator: %w", err)
	}
	cs, err := e.EventHubsConnectionString(logsHub)
	if err != nil {
		_ = e.Close()
		return nil, err
	}
	return &embedded{Emulator: e, hub: hubTarget{connectionString: cs, rootCAs: e.CAPool(), retries: 3}}, nil
}

// deviceConfig is a device of the embedded emulator (MQTT, group key).
func (e *embedded) deviceConfig(f sample.Flags) iotc.Config {
	host, port, _ := net.SplitHostPort(e.MQTTAddr())
	p, _ := strconv.Atoi(port)
	var level slog.Leveler = slog.LevelInfo
	if f.Verbose {
		level = slog.LevelDebug
	}
	return iotc.Config{
		DeviceID: "eventhublog-device", IDScope: e.IDScope(), Credential: iotc.GroupKey(e.GroupKey()),
		ModelID: "dtmi:com:example:Thermostat;1", ProvisioningHost: host, Port: p, RootCAs: e.CAPool(), LogLevel: level,
	}
}

// readBack reads want records from every partition of the logs hub.
func (e *embedded) readBack(ctx context.Context, want int) (int, error) {
	c, err := azeventhubs.NewConsumerClientFromConnectionString(e.hub.connectionString, "", azeventhubs.DefaultConsumerGroup,
		&azeventhubs.ConsumerClientOptions{TLSConfig: e.EventHubsClientTLS()})
	if err != nil {
		return 0, err
	}
	defer c.Close(context.Background())
	props, err := c.GetEventHubProperties(ctx, nil)
	if err != nil {
		return 0, err
	}
	got := 0
	earliest := true
	for _, id := range props.PartitionIDs {
		pp, err := c.GetPartitionProperties(ctx, id, nil)
		if err != nil {
			return got, err
		}
		if pp.IsEmpty {
			continue
		}
		n := int(pp.LastEnqueuedSequenceNumber - pp.BeginningSequenceNumber + 1)
		pc, err := c.NewPartitionClient(id, &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}})
		if err != nil {
			return got, err
		}
		for n > 0 {
			evs, err := pc.ReceiveEvents(ctx, n, nil)
			if err != nil {
				_ = pc.Close(ctx)
				return got, err
			}
			n -= len(evs)
			got += len(evs)
		}
		_ = pc.Close(ctx)
	}
	if got != want {
		return got, fmt.Errorf("read %d records, forwarded %d", got, want)
	}
	return got, nil
}
