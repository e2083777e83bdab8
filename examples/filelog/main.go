// Command filelog is the Python iotc file-logger sample in Go: the
// devicekey sample (any credential of the section) with the SDK's slog
// output written as JSON lines to a rotating file, iotc.log in [FileLog]
// LogsPath (default ./logs), rotated at 10 MB, keeping 5 compressed old
// files for 30 days (gopkg.in/natefinch/lumberjack.v2; it keeps one
// background goroutine per Logger for the life of the process). Keys,
// tokens and passphrases never reach the log.
//
//	[DEVICE_A]
//	ScopeId = ...
//	DeviceId = ...
//	GroupKey = ...
//
//	[FileLog]
//	LogsPath = ./logs
//
//	go run ./examples/filelog -config samples.ini -v
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
	"syscall"

	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/iotc-go/iotc/examples/internal/sample"
	"github.com/iotc-go/iotc/internal/samplesini"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "filelog:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := sample.Parse("filelog", args, stderr)
	if err != nil {
		return err
	}
	cfg, ini, err := sample.Load(f, samplesini.AuthAny)
	if err != nil {
		return err
	}
	dir := ini.LogsPath()
	if dir == "" {
		dir = "logs"
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	w := &lumberjack.Logger{
		Filename:   filepath.Join(dir, "iotc.log"),
		MaxSize:    10, // megabytes
		MaxBackups: 5,
		MaxAge:     30, // days
		Compress:   true,
	}
	defer w.Close()
	cfg.Logger = slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sample.ConsoleStatus(&cfg, f) // the log goes elsewhere: connection changes still show here
	fmt.Fprintln(stdout, "logging to", w.Filename)
	return sample.Run(ctx, cfg, f, stdout)
}
