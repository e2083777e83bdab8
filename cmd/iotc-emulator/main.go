// Command iotc-emulator runs a local Azure IoT Central on this machine: the
// Device Provisioning Service and an IoT hub over MQTT/TLS (port 8883),
// MQTT and AMQP over WebSockets (port 443) and AMQP/TLS (port 5671), and an
// HTTPS operator API shaped like IoT Central's REST API (port 8443), so
// that a device (built with this SDK or with the official Azure IoT SDKs)
// can be developed and tested with no cloud account.
//
// Usage:
//
//	go build -o iotc-emulator ./cmd/iotc-emulator
//	./iotc-emulator [flags]
//
// On start it prints the ID scope, the enrollment group's primary key, the
// CA certificate file devices must trust, the REST base URL with its API
// token, and the web dashboard's address (open it in a browser: the token
// in its URL fragment logs in); --info-file writes the same as JSON, with the process id. Stop it
// with Ctrl-C or SIGTERM to that pid (with "go run", signal the emulator's
// pid from the info file: killing the go command leaves the emulator
// running). Any listener flag set to "-" disables that listener. With
// --data-dir the ID scope, groups, devices, twins, queued messages and the
// API token survive a restart. A server certificate in --cert-dir that
// does not name --hub-host is reissued from the same CA.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/iotc-go/iotc/emulator"
)

// info is what --info-file writes, for scripts and test suites.
type info struct {
	IDScope  string `json:"idScope"`
	GroupKey string `json:"groupKey"`
	CAFile   string `json:"caFile"`
	RESTURL  string `json:"restUrl"`
	APIToken string `json:"apiToken"`
	// DashboardURL opens the web dashboard logged in (the token is in its fragment).
	DashboardURL     string `json:"dashboardUrl,omitempty"`
	MQTTAddr         string `json:"mqttAddr"`
	WebSocketAddr    string `json:"webSocketAddr"`
	AMQPAddr         string `json:"amqpAddr"`
	HubHost          string `json:"hubHost"`
	ProvisioningHost string `json:"provisioningHost"`
	// PID is the emulator's process id: signal it (SIGTERM) to stop it.
	PID int `json:"pid"`
}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "iotc-emulator:", err)
		os.Exit(1)
	}
}

func defaultCertDir() string {
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "iotc-emulator")
	}
	return filepath.Join(os.TempDir(), "iotc-emulator")
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := start(ctx, args, stdout, stderr)
	if err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "iotc-emulator: stopping")
	return e.Close()
}

// start parses args, starts the emulator, prints its details (and writes
// the info file) and returns it running.
func start(ctx context.Context, args []string, stdout, stderr io.Writer) (_ *emulator.Emulator, err error) {
	fs := flag.NewFlagSet("iotc-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		mqttAddr   = fs.String("mqtt-addr", "127.0.0.1:8883", `MQTT over TLS listener for DPS and the hub ("-" disables it, as when only 443 is open)`)
		wsAddr     = fs.String("ws-addr", "127.0.0.1:443", `WebSocket/TLS listener at /$iothub/websocket for MQTT and AMQP over WebSockets ("-" disables it)`)
		amqpAddr   = fs.String("amqp-addr", "127.0.0.1:5671", `AMQP 1.0 over TLS listener for DPS and the hub ("-" disables it)`)
		restAddr   = fs.String("rest-addr", "127.0.0.1:8443", `HTTPS operator API listener ("-" disables it)`)
		hubHost    = fs.String("hub-host", "localhost", "host name DPS assigns devices to; must resolve to this machine")
		idScope    = fs.String("id-scope", "", "DPS ID scope (default: a random 0ne... scope)")
		groupKey   = fs.String("group-key", os.Getenv("IOTC_EMULATOR_GROUP_KEY"), "base64 primary key of the default symmetric-key enrollment group (default: $IOTC_EMULATOR_GROUP_KEY or random)")
		certDir    = fs.String("cert-dir", defaultCertDir(), "directory of the emulator's CA and server certificate; created on first run and reused so devices keep trusting the same CA (with --data-dir and no --cert-dir: <data-dir>/certs)")
		dataDir    = fs.String("data-dir", "", "directory where the emulator keeps its ID scope, enrollment groups, devices (keys included), twins and queued messages across restarts (default: memory only)")
		apiToken   = fs.String("api-token", os.Getenv("IOTC_EMULATOR_API_TOKEN"), "token the REST API requires in the Authorization header (default: $IOTC_EMULATOR_API_TOKEN, else the one kept in --data-dir, else random)")
		history    = fs.Int("telemetry-history", emulator.DefaultTelemetryHistory, "telemetry messages kept per device for GET /api/devices/{id}/telemetry (negative: none)")
		retryAfter = fs.Duration("retry-after", time.Second, "retry-after DPS sends while a registration is being assigned")
		manual     = fs.Bool("no-auto-approve", false, "refuse registrations of devices not created beforehand")
		infoFile   = fs.String("info-file", "", "write the connection details as JSON to this file once listening")
		verbose    = fs.Bool("v", false, "log every refused connection, failed authentication and limit hit to stderr (without it they are counted in one summary line per -log-summary-interval)")
		bearer     = fs.Bool("rest-allow-bearer", false, `also accept "Authorization: Bearer <API token>" (IoT Central refuses it: API tokens are sent bare)`)
		pageSize   = fs.Int("rest-page-size", 0, "items per REST list page before a nextLink (0: 100)")
	)
	var lim emulator.Limits
	fs.DurationVar(&lim.AMQPLoginDeadline, "amqp-login-deadline", emulator.DefaultAMQPLoginDeadline, "close an AMQP connection that has no valid token this long after open (only $cbs may be used before)")
	fs.IntVar(&lim.AMQPMaxSessions, "amqp-max-sessions", emulator.DefaultAMQPMaxSessions, "most sessions of one logged-in AMQP connection")
	fs.IntVar(&lim.AMQPMaxLinks, "amqp-max-links", emulator.DefaultAMQPMaxLinks, "most links of one logged-in AMQP connection")
	fs.IntVar(&lim.AMQPMaxUnsettledBytes, "amqp-max-unsettled-bytes", emulator.DefaultAMQPMaxUnsettledBytes, "most bytes of unsettled messages of one logged-in AMQP connection")
	fs.IntVar(&lim.AMQPLoginMaxSessions, "amqp-login-max-sessions", emulator.DefaultAMQPLoginMaxSessions, "most sessions of an AMQP connection before a valid token")
	fs.IntVar(&lim.AMQPLoginMaxLinks, "amqp-login-max-links", emulator.DefaultAMQPLoginMaxLinks, "most links of an AMQP connection before a valid token")
	fs.IntVar(&lim.AMQPLoginMaxUnsettledBytes, "amqp-login-max-unsettled-bytes", emulator.DefaultAMQPLoginMaxUnsettledBytes, "most bytes of unsettled messages of an AMQP connection before a valid token")
	fs.DurationVar(&lim.HTTPReadTimeout, "http-read-timeout", emulator.DefaultHTTPReadTimeout, "longest read of one HTTP request, headers and body (REST/dashboard and WebSocket listeners)")
	fs.DurationVar(&lim.HTTPWriteTimeout, "http-write-timeout", emulator.DefaultHTTPWriteTimeout, "longest HTTP response (live dashboard streams and upgraded WebSockets are exempt)")
	fs.DurationVar(&lim.HTTPIdleTimeout, "http-idle-timeout", emulator.DefaultHTTPIdleTimeout, "close an HTTP keep-alive connection idle this long")
	fs.IntVar(&lim.HTTPMaxHeaderBytes, "http-max-header-bytes", emulator.DefaultHTTPMaxHeaderBytes, "largest HTTP request header block")
	fs.IntVar(&lim.RESTMaxConns, "rest-max-conns", emulator.DefaultRESTMaxConns, "most simultaneous connections of the REST/dashboard listener (negative: no cap)")
	fs.IntVar(&lim.WebSocketMaxConns, "ws-max-conns", emulator.DefaultWebSocketMaxConns, "most simultaneous connections of the WebSocket listener (negative: no cap)")
	fs.IntVar(&lim.AMQPMaxConns, "amqp-max-conns", emulator.DefaultAMQPMaxConns, "most simultaneous connections of the AMQP listener (negative: no cap)")
	fs.IntVar(&lim.AuthFailures, "auth-failures", emulator.DefaultAuthFailures, "failed authentications one IP address may make on the REST/dashboard listener per -auth-failure-window before getting 429 (negative: no limit)")
	fs.DurationVar(&lim.AuthFailureWindow, "auth-failure-window", emulator.DefaultAuthFailureWindow, "window of -auth-failures")
	fs.DurationVar(&lim.MQTTMaxIdle, "mqtt-max-idle", emulator.DefaultMQTTMaxIdle, "longest an MQTT connection may stay silent, used for keep-alive 0 and as the cap of 1.5 x keep-alive (IoT Hub: 1767s)")
	fs.Int64Var(&lim.MQTTPreLoginBytes, "mqtt-prelogin-bytes", emulator.DefaultMQTTPreLoginBytes, "most bytes of CONNECT packets all MQTT connections not yet logged in may make the emulator buffer (negative: no cap)")
	fs.DurationVar(&lim.DashboardSessionIdle, "dashboard-session-idle", emulator.DefaultDashboardSessionIdle, "dashboard login lifetime without a request (renewed by each request, at most a day)")
	fs.DurationVar(&lim.LogSummaryInterval, "log-summary-interval", emulator.DefaultLogSummaryInterval, "interval of the summary line counting refused connections, failed authentications and limit hits")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `iotc-emulator runs a local Azure IoT Central: DPS and an IoT hub over
MQTT/TLS, plus an HTTPS operator API shaped like IoT Central's REST API.

Point a device at it with:
  provisioning host  localhost (port 8883 for MQTT, 443 for WebSockets, 5671 for AMQP)
  ID scope           printed below
  group key          printed below (derive the device key from it as usual)
  trusted CA         the ca.pem file printed below

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	certDirSet := false
	fs.Visit(func(f *flag.Flag) { certDirSet = certDirSet || f.Name == "cert-dir" })
	if *dataDir != "" && !certDirSet {
		*certDir = "" // the emulator uses <data-dir>/certs
	} else if err := os.MkdirAll(*certDir, 0o700); err != nil {
		return nil, fmt.Errorf("cert dir: %w", err)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	opts := &emulator.Options{
		MQTTAddr:        *mqttAddr,
		WebSocketAddr:   *wsAddr,
		AMQPAddr:        *amqpAddr,
		RESTAddr:        *restAddr,
		HubHost:         *hubHost,
		IDScope:         *idScope,
		CertDir:         *certDir,
		DataDir:         *dataDir,
		APIToken:        *apiToken,
		RESTAllowBearer: *bearer,
		RESTPageSize:    *pageSize,
		RetryAfter:      *retryAfter,
		Logger:          logger,
		Limits:          lim,
		// 0 would mean the default; the flag's 0 means none.
		TelemetryHistory: *history,
	}
	if *groupKey != "" {
		opts.Groups = []emulator.EnrollmentGroup{{ID: "default", Enabled: true, PrimaryKey: *groupKey}}
	}
	if *history == 0 {
		opts.TelemetryHistory = -1
	}
	if *manual {
		off := false
		opts.AutoApprove = &off
	}

	e, err := emulator.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = e.Close()
		}
	}()

	in := info{
		IDScope:          e.IDScope(),
		GroupKey:         e.GroupKey(),
		CAFile:           e.CAFile(),
		RESTURL:          e.RESTURL(),
		APIToken:         e.APIToken(),
		DashboardURL:     e.DashboardURL(),
		MQTTAddr:         e.MQTTAddr(),
		WebSocketAddr:    e.WebSocketAddr(),
		AMQPAddr:         e.AMQPAddr(),
		HubHost:          e.HubHost(),
		ProvisioningHost: e.HubHost(),
		PID:              os.Getpid(),
	}
	fmt.Fprintf(stdout, `iotc-emulator is running.
  MQTT (DPS + hub)  %s
  WebSockets        %s (MQTT and AMQP at /$iothub/websocket)
  AMQP (DPS + hub)  %s
  ID scope          %s
  group key         %s
  trust this CA     %s
  REST API          %s
  API token         %s
  dashboard         %s
  pid               %d
Press Ctrl-C (or send SIGTERM to the pid) to stop.
`, orNone(in.MQTTAddr), orNone(in.WebSocketAddr), orNone(in.AMQPAddr), in.IDScope, in.GroupKey, in.CAFile, orNone(in.RESTURL), in.APIToken, orNone(in.DashboardURL), in.PID)
	if *infoFile != "" {
		b, _ := json.MarshalIndent(in, "", "  ")
		tmp := *infoFile + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return nil, fmt.Errorf("info file: %w", err)
		}
		if err := os.Rename(tmp, *infoFile); err != nil {
			return nil, fmt.Errorf("info file: %w", err)
		}
	}
	return e, nil
}

func orNone(s string) string {
	if s == "" {
		return "(disabled)"
	}
	return s
}
