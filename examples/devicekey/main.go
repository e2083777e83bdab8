// Command devicekey is the Python iotc sample sync_device_key in Go: a
// device that connects with its device key (or its group's key) read from
// a samples.ini section, reports writeableProp, acknowledges writable properties,
// answers commands and sends a temperature every few seconds, at the root
// and from the component "firstcomponent".
//
//	[DEVICE_A]
//	ScopeId = 0ne00XXXXXX
//	DeviceId = my-device
//	DeviceKey = <the device's primary key>   ; or GroupKey = <the group's key>
//	; HubName = <hub host>: connect to it without DPS (provision only if refused)
//	; against the emulator (cmd/iotc-emulator), also:
//	; ProvisioningHost = localhost
//	; CAFile = <the ca.pem it prints>
//
//	go run ./examples/devicekey -config samples.ini -section DEVICE_A
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/iotc-go/iotc/examples/internal/sample"
	"github.com/iotc-go/iotc/internal/samplesini"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "devicekey:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := sample.Parse("devicekey", args, stderr)
	if err != nil {
		return err
	}
	cfg, _, err := sample.Load(f, samplesini.AuthKey)
	if err != nil {
		return err
	}
	return sample.Run(ctx, cfg, f, stdout)
}
