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
// in its URL fragment logs in), and the IoT Hub service connection strings
// of the hub's shared access policies (iothubowner, service, registryRead,
// registryReadWrite; the service API is served on the WebSocket listener's
// port, 443 by default); --info-file writes the same as JSON, with
// the process id (its directory is created). Without root, the default
// WebSocket port 443 falls back to 9443 (printed at start); other ports
// below 1024 are an error naming the flag to change. Stop it
// with Ctrl-C or SIGTERM to that pid (with "go run", signal the emulator's
// pid from the info file: killing the go command leaves the emulator
// running). Any listener flag set to "-" disables that listener. With
// --data-dir the ID scope, groups, devices, twins, queued messages, the
// shared access policies' keys and the API token survive a restart. A server certificate in --cert-dir that
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
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
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
	// ServiceConnectionStrings are the IoT Hub service connection strings
	// of the hub's shared access policies (iothubowner, service,
	// registryRead, registryReadWrite), for the official service SDKs;
	// the service API is on the WebSocket listener's port.
	ServiceConnectionStrings map[string]string `json:"serviceConnectionStrings"`
	// EventHubsConnectionStrings are the Event Hubs-compatible endpoint's
	// connection strings by event hub name: the built-in endpoint (named
	// after the hub) and every --event-hub.
	EventHubsConnectionStrings map[string]string `json:"eventHubsConnectionStrings"`
	// BlobURL is the embedded blob endpoint's account URL (file uploads),
	// "" when uploads go to --storage-connection-string.
	BlobURL string `json:"blobUrl,omitempty"`
	// StorageConnectionString reads the uploaded files (azblob, Azure
	// Storage Explorer): the embedded endpoint's or the one given.
	StorageConnectionString string `json:"storageConnectionString,omitempty"`
	// DPSConnectionString is the DPS service connection string of the
	// provisioningserviceowner policy, for the official provisioning
	// service SDKs (same host and port as the IoT Hub service API).
	DPSConnectionString string `json:"dpsConnectionString"`
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
		history    = fs.Int("telemetry-history", emulator.DefaultTelemetryHistory, "telemetry messages kept per device for GET /api/emulator/devices/{id}/telemetry (negative: none)")
		retryAfter = fs.Duration("retry-after", time.Second, "retry-after DPS sends while a registration is being assigned")
		manual     = fs.Bool("no-auto-approve", false, "refuse registrations of devices not created beforehand")
		infoFile   = fs.String("info-file", "", "write the connection details as JSON to this file once listening")
		verbose    = fs.Bool("v", false, "log every refused connection, failed authentication and limit hit to stderr (without it they are counted in one summary line per -log-summary-interval)")
		bearer     = fs.Bool("rest-allow-bearer", false, `also accept "Authorization: Bearer <API token>" (IoT Central refuses it: API tokens are sent bare)`)
		pageSize   = fs.Int("rest-page-size", 0, "items per REST list page before a nextLink (0: 100)")
		exportDefs = fs.String("data-export", "", `JSON file of IoT Central data export definitions, {"destinations":{"<id>":{...}},"exports":{"<id>":{...}}} in the shapes of the dataExport API's PUT bodies, created or replaced at start (see docs/emulator.md)`)
		noExport   = fs.Bool("no-data-export", false, "turn IoT Central data export off (its REST routes answer 501)")
		blobAddr   = fs.String("blob-addr", "", `embedded Azure Blob endpoint (TLS) that receives file uploads (default 127.0.0.1:10000, or port 0 when --mqtt-addr or --ws-addr has port 0; "-" disables it)`)
		storageCS  = fs.String("storage-connection-string", os.Getenv("IOTC_EMULATOR_STORAGE_CONNECTION_STRING"), "storage account (Azurite or Azure Storage) that receives file uploads instead of the embedded blob endpoint (default: $IOTC_EMULATOR_STORAGE_CONNECTION_STRING; prefer the variable: flags show in process listings)")
	)
	var trustedCAs []string
	fs.Func("trusted-ca", "PEM file of a CA the hub trusts for certificateAuthority devices created through the IoT Hub service API (repeatable)", func(v string) error {
		trustedCAs = append(trustedCAs, v)
		return nil
	})
	ehOpts := eventHubFlags(fs)
	var c2dLock time.Duration
	var c2dDeliveries int
	fs.DurationVar(&c2dLock, "c2d-lock-timeout", time.Minute, "how long a cloud-to-device message received over the device HTTPS API stays locked before it is visible again (IoT Hub: 1m)")
	fs.IntVar(&c2dDeliveries, "c2d-max-delivery-count", 10, "deliveries over the device HTTPS API after which a cloud-to-device message is dead-lettered (IoT Hub's default: 10)")
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
		fmt.Fprintf(stderr, `iotc-emulator runs a local Azure IoT Central: the Device Provisioning
Service and an IoT hub over MQTT/TLS (8883), MQTT and AMQP over secure
WebSockets (443, path /$iothub/websocket) and AMQP/TLS (5671), an HTTPS
operator API shaped like IoT Central's REST API and a web dashboard (8443).

On start it prints, and --info-file writes as JSON: the listeners, the ID
scope, the enrollment group key, the CA file devices must trust, the REST
URL, its API token, the dashboard's address and the IoT Hub service
connection strings (iothubowner, service, registryRead, registryReadWrite)
for the official service SDKs and the DPS service connection string
(provisioningserviceowner), whose APIs are on the WebSocket listener
(443). Point a device at it with:
  provisioning host  localhost, on the port of its transport
  ID scope, group key, trusted CA  as printed at start

Without root, ports below 1024 cannot be bound: when --ws-addr is left at
its default 443, the WebSocket listener falls back to 127.0.0.1:%d and the
start-up text says so; set --ws-addr (any listener flag, "-" disables it)
to choose.

Flags:
`, wsFallbackPort)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	certDirSet := set["cert-dir"]
	// Listeners on ports a non-root user may not bind: a default falls
	// back to an unprivileged port (printed), a flag set so is an error
	// naming the flag.
	var notes []string
	for _, l := range []struct {
		flag string
		addr *string
	}{{"mqtt-addr", mqttAddr}, {"ws-addr", wsAddr}, {"amqp-addr", amqpAddr}, {"rest-addr", restAddr}, {"blob-addr", blobAddr}} {
		note, err := checkPrivileged(l.flag, l.addr, set[l.flag])
		if err != nil {
			return nil, err
		}
		if note != "" {
			notes = append(notes, note)
		}
	}
	// The info file's directory exists before anything is said to run.
	if *infoFile != "" {
		if err := os.MkdirAll(filepath.Dir(*infoFile), 0o700); err != nil {
			return nil, fmt.Errorf("--info-file %s: %w", *infoFile, err)
		}
	}
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
		MQTTAddr:                *mqttAddr,
		WebSocketAddr:           *wsAddr,
		AMQPAddr:                *amqpAddr,
		RESTAddr:                *restAddr,
		HubHost:                 *hubHost,
		IDScope:                 *idScope,
		CertDir:                 *certDir,
		DataDir:                 *dataDir,
		APIToken:                *apiToken,
		RESTAllowBearer:         *bearer,
		RESTPageSize:            *pageSize,
		BlobAddr:                *blobAddr,
		StorageConnectionString: *storageCS,
		RetryAfter:              *retryAfter,
		Logger:                  logger,
		Limits:                  lim,
		EventHubs:               *ehOpts,
		// 0 would mean the default; the flag's 0 means none.
		TelemetryHistory: *history,
	}
	opts.DataExport.Disabled = *noExport
	if *exportDefs != "" {
		b, err := os.ReadFile(*exportDefs)
		if err != nil {
			return nil, fmt.Errorf("--data-export: %w", err)
		}
		opts.DataExport.Definitions = b
	}
	if *groupKey != "" {
		opts.Groups = []emulator.EnrollmentGroup{{ID: "default", Enabled: true, PrimaryKey: *groupKey}}
	}
	for _, f := range trustedCAs {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--trusted-ca: %w", err)
		}
		opts.TrustedCAs = append(opts.TrustedCAs, b)
	}
	if *history == 0 {
		opts.TelemetryHistory = -1
	}
	if c2dLock <= 0 || c2dDeliveries <= 0 {
		return nil, errors.New("-c2d-lock-timeout and -c2d-max-delivery-count must be positive")
	}
	opts.C2DLockTimeout, opts.C2DMaxDeliveryCount = c2dLock, c2dDeliveries
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
		BlobURL:          e.BlobURL(),

		StorageConnectionString: e.StorageConnectionString(),
	}
	in.ServiceConnectionStrings = map[string]string{}
	in.DPSConnectionString = e.DPSConnectionString()
	var policies string
	for _, p := range e.SharedAccessPolicies() {
		cs, err := e.ServiceConnectionString(p.Name)
		if err != nil {
			return nil, err
		}
		in.ServiceConnectionStrings[p.Name] = cs
		policies += fmt.Sprintf("  %-17s %s\n", p.Name, cs)
	}
	ehStrings, ehLines, err := eventHubsInfo(e)
	if err != nil {
		return nil, err
	}
	in.EventHubsConnectionStrings = ehStrings
	if *infoFile != "" {
		b, _ := json.MarshalIndent(in, "", "  ")
		tmp := *infoFile + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return nil, fmt.Errorf("--info-file: %w", err)
		}
		if err := os.Rename(tmp, *infoFile); err != nil {
			return nil, fmt.Errorf("--info-file: %w", err)
		}
	}
	for _, n := range notes {
		fmt.Fprintln(stdout, "iotc-emulator:", n)
	}
	fmt.Fprintf(stdout, `iotc-emulator is running.
  MQTT (DPS + hub)  %s
  WebSockets        %s (MQTT and AMQP at /$iothub/websocket)
  AMQP (DPS + hub)  %s
  blob storage      %s (file uploads)
  ID scope          %s
  group key         %s
  trust this CA     %s
  REST API          %s
  API token         %s
  dashboard         %s
  pid               %d
IoT Hub service API (official service SDKs) on https://%s (port of the WebSocket listener);
its connection strings, one per shared access policy:
%sDPS service API (provisioning service SDKs), same host and port:
  provisioningserviceowner %s
Event Hubs-compatible endpoint (azeventhubs, @azure/event-hubs) on the AMQP listener and
/$servicebus/websocket; its connection strings, one per event hub:
%sPress Ctrl-C (or send SIGTERM to the pid) to stop.
`, orNone(in.MQTTAddr), orNone(in.WebSocketAddr), orNone(in.AMQPAddr), orNone(in.BlobURL), in.IDScope, in.GroupKey, in.CAFile, orNone(in.RESTURL), in.APIToken, orNone(in.DashboardURL), in.PID, orNone(in.WebSocketAddr), policies, in.DPSConnectionString, ehLines)
	return e, nil
}

func orNone(s string) string {
	if s == "" {
		return "(disabled)"
	}
	return s
}

// listen binds a listener; tests replace it to act as a user without
// privileges.
var listen = net.Listen

// wsFallbackPort is where the WebSocket listener goes when its default
// port 443 needs privileges this user lacks.
const wsFallbackPort = 9443

// checkPrivileged tries to bind *addr. When that fails for lack of
// privilege (a port below 1024 without root or CAP_NET_BIND_SERVICE), a
// default --ws-addr moves to wsFallbackPort and the note says so; any
// other listener, or one set by its flag, is an error naming the flag.
func checkPrivileged(name string, addr *string, explicit bool) (note string, err error) {
	if *addr == "-" || *addr == "" {
		return "", nil
	}
	ln, err := listen("tcp", *addr)
	if err == nil {
		_ = ln.Close()
		return "", nil
	}
	if !errors.Is(err, syscall.EACCES) && !errors.Is(err, os.ErrPermission) {
		return "", nil // reported by the emulator with its own words
	}
	host, _, _ := net.SplitHostPort(*addr)
	if name != "ws-addr" || explicit {
		return "", fmt.Errorf("--%s %s: permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose another port with --%s (for example %s)", name, *addr, name, net.JoinHostPort(host, "0"))
	}
	old := *addr
	*addr = net.JoinHostPort(host, strconv.Itoa(wsFallbackPort))
	return fmt.Sprintf("%s needs root (or CAP_NET_BIND_SERVICE): WebSockets listen on %s instead; devices set their WebSocket port to %d (Config.WebSocketPort), or choose with --ws-addr", old, *addr, wsFallbackPort), nil
}
