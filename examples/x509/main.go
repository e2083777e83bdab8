// Command x509 is the Python iotc sample sync_x509 in Go: the devicekey
// sample with an X.509 certificate instead of a key. The key file may be
// encrypted (PKCS#8 as OpenSSL 3 writes it, or legacy PEM) with
// CertPassphrase. With a ConnectionString "HostName=...;DeviceId=...;
// x509=true" in the section it connects straight to the hub, skipping DPS.
//
//	[DEVICE_X509]
//	ScopeId = 0ne00XXXXXX
//	CertFilePath = certs/my-device.pem   ; made by cmd/iotc-certs
//	KeyFilePath = certs/my-device.key
//	CertPassphrase = optional password
//
//	go run ./examples/x509 -config samples.ini -section DEVICE_X509
//
// DeviceId may be left out: it is the certificate's CN.
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
		fmt.Fprintln(os.Stderr, "x509:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := sample.Parse("x509", args, stderr)
	if err != nil {
		return err
	}
	cfg, _, err := sample.Load(f, samplesini.AuthX509)
	if err != nil {
		return err
	}
	return sample.Run(ctx, cfg, f, stdout)
}
