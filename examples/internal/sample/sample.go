// Package sample is the body shared by the samples.ini examples
// (devicekey, x509, filelog): the Python iotc samples' loop. It reads a
// samples.ini section, connects, reports writeableProp, acknowledges
// writable properties, answers commands, prints queued commands, and sends
// a temperature, once at the root and once from the component
// "firstcomponent", every interval.
package sample

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/internal/samplesini"
)

// Flags are the command line of every sample.
type Flags struct {
	Config   string
	Section  string
	Count    int
	Interval time.Duration
	Verbose  bool
	// Log is where the console log goes: Parse's stderr.
	Log io.Writer
}

// Parse reads the flags: -config (default $IOTC_SAMPLES_INI, else
// samples.ini in the working directory, else next to the sample's source,
// as the seed's samples find theirs), -section (default DEVICE_A),
// -count, -interval, -v. -h returns flag.ErrHelp (exit 0).
func Parse(name string, args []string, stderr io.Writer) (Flags, error) {
	f := Flags{Log: stderr}
	def := os.Getenv("IOTC_SAMPLES_INI")
	if def == "" {
		def = "samples.ini"
		if _, err := os.Stat(def); err != nil {
			if _, file, _, ok := runtime.Caller(1); ok {
				if next := filepath.Join(filepath.Dir(file), "samples.ini"); fileExists(next) {
					def = next
				}
			}
		}
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.Config, "config", def, "samples.ini file ($IOTC_SAMPLES_INI; default samples.ini here or next to the sample)")
	fs.StringVar(&f.Section, "section", "DEVICE_A", "section of the device in the file")
	fs.IntVar(&f.Count, "count", 0, "telemetry rounds before exiting (0: until interrupted)")
	fs.DurationVar(&f.Interval, "interval", 3*time.Second, "time between telemetry rounds")
	fs.BoolVar(&f.Verbose, "v", false, "log everything (slog.LevelDebug)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if f.Interval <= 0 || f.Count < 0 {
		return f, errors.New("-interval must be positive and -count not negative")
	}
	return f, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Load reads the section of f.Config as a config with the credential a,
// logging to the console (stderr) at the seed's default level, API only
// (connection changes, provisioning, properties, commands), or everything
// with -v.
func Load(f Flags, a samplesini.Auth) (iotc.Config, *samplesini.File, error) {
	ini, err := samplesini.Load(f.Config)
	if err != nil {
		return iotc.Config{}, nil, err
	}
	d, err := ini.Device(f.Section)
	if err != nil {
		return iotc.Config{}, nil, err
	}
	cfg, err := d.Config(a)
	if err != nil {
		return iotc.Config{}, nil, err
	}
	level := slog.LevelInfo
	if f.Verbose {
		level = slog.LevelDebug
	}
	cfg.LogLevel = level
	w := f.Log
	if w == nil {
		w = os.Stderr
	}
	cfg.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	return cfg, ini, nil
}

// ConsoleStatus makes cfg print each connection change to f.Log, for the
// samples whose log goes elsewhere (a file, an Event Hub).
func ConsoleStatus(cfg *iotc.Config, f Flags) {
	w := f.Log
	if w == nil {
		w = os.Stderr
	}
	cfg.OnStatus = func(s iotc.Status) { fmt.Fprintln(w, "status:", s) }
}

// Run connects cfg and runs the loop until ctx ends or f.Count rounds
// are sent, then closes the client.
func Run(ctx context.Context, cfg iotc.Config, f Flags, out io.Writer) error {
	client, err := iotc.New(cfg)
	if err != nil {
		return err
	}
	defer client.Close(context.Background())
	client.OnProperty(func(_ context.Context, p iotc.Property) iotc.PropertyAck {
		fmt.Fprintf(out, "property %s (component %q) = %s, version %d\n", p.Name, p.Component, p.Value, p.Version)
		return iotc.PropertyAck{Status: 200, Description: "Completed"}
	})
	client.OnCommand(func(_ context.Context, c iotc.Command) iotc.CommandResponse {
		fmt.Fprintf(out, "command %s (component %q): %s\n", c.Name, c.Component, c.Payload)
		return iotc.CommandResponse{Status: 200, Payload: map[string]any{"result": true, "data": "Command received"}}
	})
	client.OnQueuedCommand(func(_ context.Context, c iotc.Command) iotc.Outcome {
		fmt.Fprintf(out, "queued command %s (component %q): %s\n", c.Name, c.Component, c.Payload)
		return iotc.Complete
	})
	if err := client.Connect(ctx, nil); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	fmt.Fprintf(out, "connected as %s\n", client.DeviceID())
	if err := client.ReportProperties(ctx, map[string]any{"writeableProp": 50}, nil); err != nil {
		return err
	}
	tick := time.NewTicker(f.Interval)
	defer tick.Stop()
	for round := 0; f.Count == 0 || round < f.Count; round++ {
		t := 20 + 10*rand.Float64()
		if err := client.SendTelemetry(ctx, map[string]any{"temperature": t}, nil); err != nil {
			return err
		}
		if err := client.SendTelemetry(ctx, map[string]any{"temperature": t + 1}, &iotc.TelemetryOptions{Component: "firstcomponent"}); err != nil {
			return err
		}
		fmt.Fprintf(out, "sent temperature %.2f\n", t)
		if f.Count != 0 && round+1 == f.Count {
			break
		}
		select {
		case <-ctx.Done():
			return client.Close(context.Background())
		case <-tick.C:
		}
	}
	return client.Close(context.Background())
}
