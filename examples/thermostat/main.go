// Command thermostat runs the thermostat device of package thermostat.
//
// With IOTC_ID_SCOPE, IOTC_DEVICE_ID and IOTC_GROUP_KEY set it connects to
// that IoT Central application (IOTC_PROVISIONING_HOST and IOTC_CA_FILE
// point it at a running emulator instead); with none of them it starts the
// embedded emulator and connects to it:
//
//	go run ./examples/thermostat -count 5
//
// Its logic lives in ./thermostat, unit-tested with iotctest (no network).
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/examples/thermostat/thermostat"
)

func main() {
	if err := run(os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "thermostat:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("thermostat", flag.ContinueOnError)
	count := fs.Int("count", 0, "readings to send before exiting (0: until interrupted)")
	interval := fs.Duration("interval", 2*time.Second, "time between readings")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, how, cleanup, err := config(ctx)
	if err != nil {
		return err
	}
	defer cleanup()
	cfg.ModelID = thermostat.ModelID
	cfg.OnStatus = func(s iotc.Status) { fmt.Println("status:", s) }
	client, err := iotc.New(cfg)
	if err != nil {
		return err
	}
	defer client.Close(context.Background())
	th := thermostat.New(20)
	th.Attach(client)
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := client.Connect(cctx, nil); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	fmt.Printf("connected as %s; set %s/targetTemperature (5 to 35) to move it:\n%s\n", client.DeviceID(), thermostat.Component, how(client.DeviceID()))
	err = th.Run(ctx, client, *interval, *count)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// config reads the environment, or starts the embedded emulator. how
// says how to set the target temperature of a device.
func config(ctx context.Context) (cfg iotc.Config, how func(id string) string, cleanup func(), err error) {
	scope, id, key := os.Getenv("IOTC_ID_SCOPE"), os.Getenv("IOTC_DEVICE_ID"), os.Getenv("IOTC_GROUP_KEY")
	if scope != "" || id != "" || key != "" {
		if scope == "" || id == "" || key == "" {
			return iotc.Config{}, nil, nil, errors.New("set all of IOTC_ID_SCOPE, IOTC_DEVICE_ID and IOTC_GROUP_KEY, or none to use the embedded emulator")
		}
		cfg := iotc.Config{DeviceID: id, IDScope: scope, Credential: iotc.GroupKey(key), ProvisioningHost: os.Getenv("IOTC_PROVISIONING_HOST")}
		if ca := os.Getenv("IOTC_CA_FILE"); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return iotc.Config{}, nil, nil, err
			}
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return iotc.Config{}, nil, nil, fmt.Errorf("%s holds no PEM certificate", ca)
			}
			cfg.RootCAs = pool
		}
		how := func(id string) string {
			return "  in your IoT Central application: Devices > " + id + " > the Properties view (or its REST API, PATCH /api/devices/" + id + "/components/" + thermostat.Component + "/properties)"
		}
		return cfg, how, func() {}, nil
	}
	emu, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0", WebSocketAddr: "-", AMQPAddr: "-"})
	if err != nil {
		return iotc.Config{}, nil, nil, fmt.Errorf("start the emulator: %w", err)
	}
	how = func(id string) string {
		return fmt.Sprintf("  curl --cacert %s -X PATCH '%s/api/devices/%s/components/%s/properties?api-version=2022-07-31' \\\n"+
			"    -H 'Authorization: %s' -H 'Content-Type: application/json' -d '{\"targetTemperature\": 30}'\n"+
			"  or open the emulator's dashboard: %s",
			emu.CAFile(), emu.RESTURL(), id, thermostat.Component, emu.APIToken(), emu.DashboardURL())
	}
	host, portText, _ := net.SplitHostPort(emu.MQTTAddr())
	port, _ := strconv.Atoi(portText)
	fmt.Println("no IOTC_ID_SCOPE: running against the embedded emulator")
	return iotc.Config{
		DeviceID: "thermostat-01", IDScope: emu.IDScope(), Credential: iotc.GroupKey(emu.GroupKey()),
		ProvisioningHost: host, Port: port, RootCAs: emu.CAPool(),
	}, how, func() { _ = emu.Close() }, nil
}
