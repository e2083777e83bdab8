// Command eventhublog is the Python iotc Event Hub logger sample in Go:
// the devicekey sample (any credential of the section) whose SDK log
// records are forwarded, as JSON, to an Azure Event Hub, with the Event
// Hubs REST API (batches of up to 100 records, at least every second; a
// full queue drops records rather than slowing the device). Keys and
// tokens never reach the log. The hub comes from samples.ini:
//
//	[DEVICE_A]
//	ScopeId = ...
//	DeviceId = ...
//	DeviceKey = ...
//
//	[EventHub]
//	ConnectionString = Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=<key>
//	EventHubName = device-logs
//
//	go run ./examples/eventhublog -config samples.ini -v
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/iotc-go/iotc/examples/internal/sample"
	"github.com/iotc-go/iotc/internal/samplesini"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, &http.Client{Timeout: time.Minute})
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "eventhublog:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, hc *http.Client) error {
	f, err := sample.Parse("eventhublog", args, stderr)
	if err != nil {
		return err
	}
	cfg, ini, err := sample.Load(f, samplesini.AuthAny)
	if err != nil {
		return err
	}
	cs, _ := ini.Get("EventHub", "ConnectionString")
	name, _ := ini.Get("EventHub", "EventHubName")
	hub, err := parseEventHub(cs, name)
	if err != nil {
		return err
	}
	fw := newForwarder(hub, hc, stderr)
	cfg.Logger = slog.New(slog.NewJSONHandler(fw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sample.ConsoleStatus(&cfg, f) // the log goes elsewhere: connection changes still show here
	fmt.Fprintln(stdout, "forwarding logs to", hub)
	runErr := sample.Run(ctx, cfg, f, stdout)
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fw.Close(cctx); err != nil {
		fmt.Fprintln(stderr, "eventhublog: not every record was forwarded:", err)
	}
	fmt.Fprintf(stdout, "forwarded %d records, dropped %d\n", fw.sent.Load(), fw.dropped.Load())
	return runErr
}
