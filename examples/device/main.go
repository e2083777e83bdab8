// Command device is a thermostat that runs against a real IoT Central
// application or against cmd/iotc-emulator, unchanged. It sends a
// temperature every interval, accepts the writable property
// targetTemperature, answers the commands reboot and getMaxMinReport, and
// prints queued commands and cloud-to-device messages, until interrupted.
// targetTemperature is accepted at the root and in the components
// thermostat1 and thermostat2 (the TemperatureController model), each with
// its own target; other components are answered 404.
//
// Configuration comes from flags, each defaulting to an environment
// variable. Secrets (keys, passphrase) are read from the environment only,
// so they never appear in a process listing, and are never printed.
//
//	IOTC_ID_SCOPE          -scope       DPS ID scope (required except with a connection string)
//	IOTC_DEVICE_ID         -device      device id (may be empty with X.509: the certificate CN)
//	IOTC_GROUP_KEY                      enrollment group key (SAS-IoT-Devices), or
//	IOTC_DEVICE_KEY                     the device's own key, or
//	IOTC_CONNECTION_STRING              a hub device connection string (skips DPS), or
//	IOTC_CERT_FILE         -cert        an X.509 certificate file
//	IOTC_KEY_FILE          -key         and its key file
//	IOTC_KEY_PASSPHRASE                 passphrase of an encrypted key
//	IOTC_MODEL_ID          -model       model id (default the example thermostat)
//	IOTC_PROVISIONING_HOST -dps         DPS host (default global.azure-devices-provisioning.net)
//	IOTC_CA_FILE           -ca          PEM file of extra CAs to trust (the emulator's ca.pem)
//	                       -port        port of DPS and hub (default the transport's: 8883, 443, 5671)
//	                       -ws-port     port of the WebSocket transports as a fallback (default 443)
//	                       -transport   mqtt, mqttws, amqp (AMQP over TLS) or amqpws (AMQP over WebSockets)
//	                       -fallback    transports tried in order when -transport cannot connect, e.g. mqttws,amqpws
//	HTTPS_PROXY            -proxy       HTTP CONNECT proxy of the WebSocket transports (http://user:pass@host:port)
//	                       -interval    telemetry interval (default 5s)
//	                       -count       telemetry messages to send, then exit (0 = until interrupted)
//	                       -credentials credentials cache file (optional)
//	                       -v           log everything (API calls are logged by default)
//
// Against the emulator: run `go run ./cmd/iotc-emulator`, then
//
//	IOTC_ID_SCOPE=<scope> IOTC_GROUP_KEY=<key> go run ./examples/device \
//	  -device dev1 -dps localhost -ca <ca.pem printed by the emulator>
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/iotc-go/iotc"
)

func main() {
	if err := run(os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "device:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

type settings struct {
	scope, device, cert, key, model, dps, ca, transport, credentials string
	fallback, proxy                                                  string
	port, wsPort, count                                              int
	interval                                                         time.Duration
	verbose                                                          bool
}

func parse(args []string) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("device", flag.ContinueOnError)
	fs.StringVar(&s.scope, "scope", env("IOTC_ID_SCOPE", ""), "DPS ID scope (IOTC_ID_SCOPE)")
	fs.StringVar(&s.device, "device", env("IOTC_DEVICE_ID", ""), "device id (IOTC_DEVICE_ID)")
	fs.StringVar(&s.cert, "cert", env("IOTC_CERT_FILE", ""), "X.509 certificate file (IOTC_CERT_FILE)")
	fs.StringVar(&s.key, "key", env("IOTC_KEY_FILE", ""), "X.509 key file (IOTC_KEY_FILE)")
	fs.StringVar(&s.model, "model", env("IOTC_MODEL_ID", "dtmi:com:example:Thermostat;1"), "model id (IOTC_MODEL_ID)")
	fs.StringVar(&s.dps, "dps", env("IOTC_PROVISIONING_HOST", ""), "DPS host (IOTC_PROVISIONING_HOST)")
	fs.StringVar(&s.ca, "ca", env("IOTC_CA_FILE", ""), "PEM file of CAs to trust besides the system roots (IOTC_CA_FILE)")
	fs.StringVar(&s.transport, "transport", "mqtt", "transport: mqtt, mqttws, amqp or amqpws")
	fs.StringVar(&s.credentials, "credentials", "", "credentials cache file")
	fs.StringVar(&s.fallback, "fallback", "", "comma-separated transports tried in order when -transport cannot connect (e.g. mqttws,amqpws)")
	fs.StringVar(&s.proxy, "proxy", "", "HTTP CONNECT proxy of the WebSocket transports, http://[user:password@]host:port (default HTTPS_PROXY)")
	fs.IntVar(&s.port, "port", 0, "port of DPS and the hub (default the transport's)")
	fs.IntVar(&s.wsPort, "ws-port", 0, "port of the WebSocket transports when they are a -fallback (default 443)")
	fs.IntVar(&s.count, "count", 0, "telemetry messages to send before exiting (0: until interrupted)")
	fs.DurationVar(&s.interval, "interval", 5*time.Second, "telemetry interval")
	fs.BoolVar(&s.verbose, "v", false, "log every message")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if s.interval <= 0 || s.count < 0 {
		return s, errors.New("-interval must be positive and -count not negative")
	}
	return s, nil
}

// credential picks the credential from the environment and flags.
func credential(s settings) (iotc.Credential, error) {
	var found []iotc.Credential
	if k := env("IOTC_GROUP_KEY", ""); k != "" {
		found = append(found, iotc.GroupKey(k))
	}
	if k := env("IOTC_DEVICE_KEY", ""); k != "" {
		found = append(found, iotc.DeviceKey(k))
	}
	if cs := env("IOTC_CONNECTION_STRING", ""); cs != "" {
		found = append(found, iotc.ConnectionString(cs))
	}
	if s.cert != "" || s.key != "" {
		found = append(found, iotc.X509Files(s.cert, s.key, env("IOTC_KEY_PASSPHRASE", "")))
	}
	switch len(found) {
	case 0:
		return iotc.Credential{}, errors.New("no credential: set IOTC_GROUP_KEY, IOTC_DEVICE_KEY, IOTC_CONNECTION_STRING or -cert and -key")
	case 1:
		return found[0], nil
	}
	return iotc.Credential{}, errors.New("more than one credential is set; keep exactly one")
}

func transport(name string) (iotc.Transport, error) {
	for _, t := range []iotc.Transport{iotc.MQTT, iotc.MQTTWebSockets, iotc.AMQP, iotc.AMQPWebSockets} {
		if t.String() == name {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown transport %q", name)
}

func run(args []string) error {
	s, err := parse(args)
	if err != nil {
		return err
	}
	cred, err := credential(s)
	if err != nil {
		return err
	}
	tr, err := transport(s.transport)
	if err != nil {
		return err
	}
	var fallback []iotc.Transport
	if s.fallback != "" {
		for _, name := range strings.Split(s.fallback, ",") {
			t, err := transport(strings.TrimSpace(name))
			if err != nil {
				return fmt.Errorf("-fallback: %w", err)
			}
			fallback = append(fallback, t)
		}
	}
	var proxy *url.URL
	if s.proxy != "" {
		if proxy, err = url.Parse(s.proxy); err != nil || proxy.Host == "" {
			return errors.New("-proxy: want http://[user:password@]host:port")
		}
	}
	var roots *x509.CertPool
	if s.ca != "" {
		pemBytes, err := os.ReadFile(s.ca)
		if err != nil {
			return fmt.Errorf("read the CA file: %w", err)
		}
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pemBytes) {
			return fmt.Errorf("%s holds no PEM certificate", s.ca)
		}
	}
	level := slog.LevelInfo
	if s.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))

	client, err := iotc.New(iotc.Config{
		DeviceID:         s.device,
		IDScope:          s.scope,
		Credential:       cred,
		ModelID:          s.model,
		Transport:        tr,
		Fallback:         fallback,
		Proxy:            proxy,
		ProvisioningHost: s.dps,
		Port:             s.port,
		WebSocketPort:    s.wsPort,
		RootCAs:          roots,
		CredentialStore:  iotc.CredentialsFile(s.credentials),
		Logger:           logger,
		LogLevel:         level,
		OnStatus:         func(st iotc.Status) { fmt.Println("status:", st) },
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dev := newDevice()
	th := dev.thermostats[""]
	client.OnProperty(dev.onProperty)
	client.OnCommand(th.onCommand)
	client.OnQueuedCommand(func(_ context.Context, c iotc.Command) iotc.Outcome {
		fmt.Printf("queued command %s (component %q): %s\n", c.Name, c.Component, c.Payload)
		return iotc.Complete
	})
	client.OnCloudMessage(func(_ context.Context, m iotc.CloudMessage) iotc.Outcome {
		fmt.Printf("cloud message %s: %q\n", m.MessageID(), m.Body)
		return iotc.Complete
	})

	if err := client.Connect(ctx, nil); err != nil {
		_ = client.Close(context.Background())
		return fmt.Errorf("connect: %w", err)
	}
	fmt.Printf("connected as %s\n", client.DeviceID())
	_ = client.ReportProperties(ctx, map[string]any{"maxTempSinceLastReboot": th.temperature}, nil)

	ticker := time.NewTicker(s.interval)
	defer ticker.Stop()
	for sent := 0; s.count == 0 || sent < s.count; {
		temp := th.step()
		err := client.SendTelemetry(ctx, map[string]any{"temperature": temp}, nil)
		switch {
		case err == nil:
			sent++
			fmt.Printf("telemetry: temperature=%.2f\n", temp)
		case errors.Is(err, iotc.ErrNotConnected):
			fmt.Println("offline; the client is reconnecting")
		case ctx.Err() != nil:
		default:
			fmt.Println("telemetry failed:", err)
		}
		if cerr := client.Err(); cerr != nil {
			_ = client.Close(context.Background())
			return fmt.Errorf("the client gave up: %w", cerr)
		}
		if s.count != 0 && sent >= s.count {
			break
		}
		select {
		case <-ctx.Done():
			fmt.Println("interrupted")
			return client.Close(context.Background())
		case <-ticker.C:
		}
	}
	return client.Close(context.Background())
}

// thermostat is the simulated device state.
type thermostat struct {
	mu                  sync.Mutex
	temperature, target float64
	min, max            float64
}

// step moves the temperature towards the target and returns it.
func (t *thermostat) step() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.temperature += (t.target - t.temperature) / 4
	t.min = math.Min(t.min, t.temperature)
	t.max = math.Max(t.max, t.temperature)
	return math.Round(t.temperature*100) / 100
}

// device is the root thermostat and those of the components.
type device struct {
	thermostats map[string]*thermostat // by component, "" the root
}

func newDevice() *device {
	d := &device{thermostats: map[string]*thermostat{}}
	for _, c := range []string{"", "thermostat1", "thermostat2"} {
		d.thermostats[c] = &thermostat{temperature: 21, target: 21, min: math.Inf(1), max: math.Inf(-1)}
	}
	return d
}

// onProperty hands a writable property to the thermostat of its component.
func (d *device) onProperty(ctx context.Context, p iotc.Property) iotc.PropertyAck {
	t, ok := d.thermostats[p.Component]
	if !ok {
		return iotc.PropertyAck{Status: 404, Description: "unknown component " + p.Component}
	}
	return t.onProperty(ctx, p)
}

func (t *thermostat) onProperty(_ context.Context, p iotc.Property) iotc.PropertyAck {
	if p.Name != "targetTemperature" {
		return iotc.PropertyAck{Status: 404, Description: "unknown property " + p.Name}
	}
	var v float64
	if err := p.Unmarshal(&v); err != nil {
		return iotc.PropertyAck{Status: 400, Description: "targetTemperature must be a number"}
	}
	t.mu.Lock()
	t.target = v
	t.mu.Unlock()
	fmt.Printf("targetTemperature of %q set to %v (version %d)\n", p.Component, v, p.Version)
	return iotc.PropertyAck{Status: 200, Description: "target applied"}
}

func (t *thermostat) onCommand(_ context.Context, c iotc.Command) iotc.CommandResponse {
	fmt.Printf("command %s (component %q): %s\n", c.Name, c.Component, c.Payload)
	switch c.Name {
	case "reboot":
		t.mu.Lock()
		t.min, t.max = math.Inf(1), math.Inf(-1)
		t.mu.Unlock()
		return iotc.CommandResponse{Status: 200, Payload: map[string]any{"rebooted": true}}
	case "getMaxMinReport":
		t.mu.Lock()
		defer t.mu.Unlock()
		lo, hi := t.min, t.max
		if math.IsInf(lo, 0) || math.IsInf(hi, 0) { // no reading since the last reboot
			lo, hi = t.temperature, t.temperature
		}
		return iotc.CommandResponse{Status: 200, Payload: map[string]any{
			"maxTemp": hi, "minTemp": lo, "endTime": time.Now().UTC().Format(time.RFC3339),
		}}
	}
	return iotc.CommandResponse{Status: 404, Payload: map[string]string{"error": "unknown command " + c.Name}}
}
