// Command backend is the loop a solution builder writes first: it reads a
// device's telemetry from the hub's built-in Event Hubs-compatible
// endpoint with the official client (azeventhubs.ConsumerClient) and
// answers it by running a command through the IoT Central REST API.
//
// With no flags it needs no set-up: it starts the emulator in-process,
// runs a simulated thermostat whose temperature climbs, and when a
// reading passes -threshold it runs the thermostat's "turnOnFan" command;
// the device answers and its temperature falls. It exits 0 once the
// temperature is back under the threshold, 1 on failure (or when
// -timeout passes first).
//
//	go run ./examples/backend
//
// Against a running emulator (or IoT Central), give the built-in
// endpoint's connection string, the application URL and an API token:
//
//	go run ./examples/backend -connection-string "Endpoint=sb://...;EntityPath=..." \
//	    -app-url https://127.0.0.1:8443 -api-token "$TOKEN" -ca-file ca.pem -device thermostat-01
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

const (
	command    = "turnOnFan"
	apiVersion = "2022-07-31"
)

// settings are the command line.
type settings struct {
	connectionString, appURL, apiToken, caFile, device string
	threshold                                          float64
	interval, timeout                                  time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var s settings
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.connectionString, "connection-string", "", "the built-in endpoint's Event Hubs connection string (default: an embedded emulator and a simulated device)")
	fs.StringVar(&s.appURL, "app-url", "", "IoT Central application (or emulator REST) base URL, with -connection-string")
	fs.StringVar(&s.apiToken, "api-token", os.Getenv("IOTC_API_TOKEN"), "API token of the REST API ($IOTC_API_TOKEN)")
	fs.StringVar(&s.caFile, "ca-file", "", "PEM CA to trust for both endpoints (an emulator's)")
	fs.StringVar(&s.device, "device", "backend-thermostat", "device whose telemetry is watched")
	fs.Float64Var(&s.threshold, "threshold", 25, "temperature above which the backend runs "+command)
	fs.DurationVar(&s.interval, "interval", 200*time.Millisecond, "telemetry interval of the simulated device")
	fs.DurationVar(&s.timeout, "timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	var roots *x509.CertPool
	if s.connectionString == "" {
		emu, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0", RetryAfter: time.Millisecond})
		if err != nil {
			return fmt.Errorf("start the emulator: %w", err)
		}
		defer emu.Close()
		if s.connectionString, err = emu.EventHubsConnectionString(emu.BuiltinEventHub()); err != nil {
			return err
		}
		s.appURL, s.apiToken, roots = emu.RESTURL(), emu.APIToken(), emu.CAPool()
		dev, err := startDevice(ctx, emu, s, stdout)
		if err != nil {
			return err
		}
		defer dev.Close(context.Background())
		fmt.Fprintf(stdout, "emulator running; simulated device %q sends its temperature every %s\n", s.device, s.interval)
	} else if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("-ca-file %s holds no PEM certificate", s.caFile)
		}
	}
	if s.appURL == "" || s.apiToken == "" {
		return errors.New("-connection-string needs -app-url and -api-token")
	}
	b := &backend{s: s, out: stdout, http: &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}}
	return b.watch(ctx, roots)
}

// backend reads the built-in endpoint and runs the command.
type backend struct {
	s    settings
	out  io.Writer
	http *http.Client

	mu        sync.Mutex
	commanded bool
}

// errDone ends the watch: the temperature fell back under the threshold
// after the command.
var errDone = errors.New("done")

// watch reads every partition from now on until the loop has closed.
func (b *backend) watch(ctx context.Context, roots *x509.CertPool) error {
	c, err := azeventhubs.NewConsumerClientFromConnectionString(b.s.connectionString, "", azeventhubs.DefaultConsumerGroup,
		&azeventhubs.ConsumerClientOptions{TLSConfig: endpointTLS(b.s.connectionString, roots)})
	if err != nil {
		return fmt.Errorf("event hubs client: %w", err)
	}
	defer c.Close(context.Background())
	props, err := c.GetEventHubProperties(ctx, nil)
	if err != nil {
		return fmt.Errorf("event hub properties: %w", err)
	}
	fmt.Fprintf(b.out, "reading event hub %q (%d partitions) from now on\n", props.Name, len(props.PartitionIDs))
	since := time.Now().Add(-time.Minute)
	wctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var wg sync.WaitGroup
	for _, id := range props.PartitionIDs {
		pc, err := c.NewPartitionClient(id, &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{EnqueuedTime: &since}})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pc.Close(context.Background())
			for wctx.Err() == nil {
				evs, err := pc.ReceiveEvents(wctx, 100, nil)
				if err != nil && wctx.Err() == nil {
					stop(fmt.Errorf("partition %s: %w", id, err))
					return
				}
				for _, ev := range evs {
					if err := b.handle(wctx, ev); err != nil {
						stop(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(wctx); !errors.Is(err, errDone) {
		return err
	}
	fmt.Fprintln(b.out, "the loop is closed: telemetry read, command run, temperature back to normal")
	return nil
}

// handle looks at one event: the watched device's temperature.
func (b *backend) handle(ctx context.Context, ev *azeventhubs.ReceivedEventData) error {
	if ev.SystemProperties["iothub-connection-device-id"] != b.s.device {
		return nil
	}
	var body struct {
		Temperature *float64 `json:"temperature"`
	}
	if err := json.Unmarshal(ev.Body, &body); err != nil || body.Temperature == nil {
		return nil
	}
	t := *body.Temperature
	fmt.Fprintf(b.out, "telemetry from %s: temperature %.1f (partition sequence number %d)\n", b.s.device, t, ev.SequenceNumber)
	b.mu.Lock()
	commanded := b.commanded
	if t > b.s.threshold && !commanded {
		b.commanded = true
	}
	b.mu.Unlock()
	switch {
	case t > b.s.threshold && !commanded:
		code, resp, err := b.runCommand(ctx, map[string]any{"reason": fmt.Sprintf("temperature %.1f above %.1f", t, b.s.threshold)})
		if err != nil {
			return err
		}
		fmt.Fprintf(b.out, "ran %s through the REST API: device answered %d %s\n", command, code, resp)
		if code != http.StatusOK {
			return fmt.Errorf("the device answered %s with %d", command, code)
		}
	case commanded && t <= b.s.threshold:
		return errDone
	}
	return nil
}

// runCommand runs the command on the device through the IoT Central REST
// API and returns the device's response code and payload.
func (b *backend) runCommand(ctx context.Context, request any) (int, json.RawMessage, error) {
	body, _ := json.Marshal(map[string]any{"request": request, "responseTimeout": 30})
	u := strings.TrimRight(b.s.appURL, "/") + "/api/devices/" + url.PathEscape(b.s.device) + "/commands/" + command + "?api-version=" + apiVersion
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", b.s.apiToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("run %s: %w", command, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return 0, nil, fmt.Errorf("run %s: HTTP %d: %s", command, resp.StatusCode, rb)
	}
	var out struct {
		ResponseCode int             `json:"responseCode"`
		Response     json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(rb, &out); err != nil {
		return 0, nil, fmt.Errorf("run %s: answer %q: %w", command, rb, err)
	}
	return out.ResponseCode, out.Response, nil
}

// endpointTLS trusts roots (nil: the system's) and names the Endpoint's
// host without its port, which go-amqp would otherwise check the
// certificate against.
func endpointTLS(cs string, roots *x509.CertPool) *tls.Config {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	for _, part := range strings.Split(cs, ";") {
		k, v, _ := strings.Cut(part, "=")
		if strings.EqualFold(strings.TrimSpace(k), "Endpoint") {
			if u, err := url.Parse(v); err == nil {
				cfg.ServerName = u.Hostname()
			}
		}
	}
	return cfg
}

// startDevice runs the simulated thermostat: its temperature climbs by
// one degree per message until the fan is on, then falls.
func startDevice(ctx context.Context, emu *emulator.Emulator, s settings, out io.Writer) (*iotc.Client, error) {
	host, portText, _ := net.SplitHostPort(emu.MQTTAddr())
	port, _ := strconv.Atoi(portText)
	client, err := iotc.New(iotc.Config{
		DeviceID: s.device, IDScope: emu.IDScope(), Credential: iotc.GroupKey(emu.GroupKey()),
		ProvisioningHost: host, Port: port, RootCAs: emu.CAPool(),
	})
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	fan := false
	client.OnCommand(func(_ context.Context, c iotc.Command) iotc.CommandResponse {
		if c.Name != command {
			return iotc.CommandResponse{Status: 404, Payload: map[string]any{"error": "unknown command"}}
		}
		mu.Lock()
		fan = true
		mu.Unlock()
		fmt.Fprintf(out, "device: %s received (%s): fan on\n", c.Name, c.Payload)
		return iotc.CommandResponse{Status: 200, Payload: map[string]any{"fan": "on"}}
	})
	if err := client.Connect(ctx, nil); err != nil {
		return nil, fmt.Errorf("simulated device: %w", err)
	}
	go func() {
		t := s.threshold - 3
		tick := time.NewTicker(s.interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			if fan {
				t -= 2
			} else {
				t++
			}
			mu.Unlock()
			if err := client.SendTelemetry(ctx, map[string]any{"temperature": t}, nil); err != nil {
				return
			}
		}
	}()
	return client, nil
}
