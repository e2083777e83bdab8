// Command iotc-device is a device in the shell, for trying an IoT Central
// app (or the emulator) without writing code:
//
//	iotc-device send   '{"temperature": 21.5}'        telemetry (or one JSON message per stdin line)
//	iotc-device report '{"firmware": "1.0.2"}'        reported properties
//	iotc-device watch  -reply '{"ok": true}'          print desired changes, commands and messages
//	iotc-device twin                                  print the twin
//	iotc-device upload ./log.txt                      upload a file (IoT Hub file upload)
//
// The device is configured by flags, else environment variables, else a
// samples.ini section (-config, -section) with the Python samples' keys.
// Keys and passphrases are read from the environment or the file only,
// never from flags, so that they stay out of process listings; they are
// never printed. Run "iotc-device -h" for everything.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/internal/samplesini"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "iotc-device:", err)
		os.Exit(1)
	}
}

const usage = `usage: iotc-device <command> [flags] [argument]

Commands:
  send [-component C] [-prop k=v ...] [JSON]
        send telemetry: the JSON argument, or one JSON message per line of
        stdin when there is no argument (or it is "-")
  report [-component C] JSON
        report properties (a JSON object)
  watch [-reply JSON] [-status N] [-exec CMD] [-for D]
        print desired property changes, commands and cloud-to-device
        messages as JSON lines; acknowledge properties (200); answer
        commands with -reply (default {}) and -status (default 200), or by
        running CMD with "sh -c" with the payload on stdin: its stdout (JSON,
        or else sent as a string) is the answer, exit 0 is 200 and any other
        exit 500; IOTC_COMMAND and IOTC_COMPONENT are set for it
  twin  print the twin (desired and reported) as JSON
  upload [-name NAME] [-content-type T] FILE
        upload FILE with the hub's file upload (blob "{device}/NAME",
        NAME defaulting to the file's base name); the hub's HTTPS port is
        -ws-port (default 443)

Device flags (any command), each defaulting to an environment variable,
then to the -config file's section:
  -config FILE     samples.ini file ($IOTC_SAMPLES_INI)
  -section NAME    section of the device (default DEVICE_A)
  -scope           ID scope ($IOTC_ID_SCOPE, ScopeId)
  -device          device id ($IOTC_DEVICE_ID, DeviceId; with X.509 default the CN)
  -model           model id ($IOTC_MODEL_ID, ModelId)
  -cert, -key      X.509 certificate and key files ($IOTC_CERT_FILE, $IOTC_KEY_FILE;
                   CertFilePath, KeyFilePath); passphrase $IOTC_KEY_PASSPHRASE or CertPassphrase
  -dps             provisioning host ($IOTC_PROVISIONING_HOST, ProvisioningHost)
  -ca              PEM file of CAs to trust, e.g. the emulator's ca.pem ($IOTC_CA_FILE, CAFile)
  -port            port of DPS and the hub (default the transport's)
  -transport       mqtt, mqttws, amqp or amqpws (Transport; default mqtt)
  -fallback        transports tried in order when -transport cannot connect, e.g. mqttws,amqpws
  -ws-port         port of the WebSocket transports as a fallback (default 443)
  -proxy           HTTP CONNECT proxy for the WebSocket transports (default $HTTPS_PROXY)
  -timeout D       give up connecting after D with the last attempt's error
                   (default 30s; 0 waits for ever); connection changes are
                   printed to stderr meanwhile
  -cache FILE      credentials cache: the hub DPS assigned, so later runs skip
                   DPS ($IOTC_CREDENTIALS_FILE; default in the user cache
                   directory, one file per ID scope and device; "off" for none)
  -v               log the SDK's records to stderr (everything)
Keys: $IOTC_GROUP_KEY, $IOTC_DEVICE_KEY or $IOTC_CONNECTION_STRING, else
GroupKey, DeviceKey or ConnectionString in the section; exactly one kind.

Against the emulator (go run ./cmd/iotc-emulator prints the values):
  export IOTC_ID_SCOPE=<scope> IOTC_GROUP_KEY=<key> IOTC_CA_FILE=<ca.pem> IOTC_PROVISIONING_HOST=localhost
  iotc-device send -device dev1 '{"temperature": 21.5}'
`

type deviceFlags struct {
	config, section, scope, device, model, cert, key, dps, ca string
	transport, fallback, proxy, cache                         string
	port, wsPort                                              int
	verbose                                                   bool
	timeout                                                   time.Duration
}

func (d *deviceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.config, "config", os.Getenv("IOTC_SAMPLES_INI"), "samples.ini file")
	fs.StringVar(&d.section, "section", "DEVICE_A", "section of the device in -config")
	fs.StringVar(&d.scope, "scope", os.Getenv("IOTC_ID_SCOPE"), "ID scope")
	fs.StringVar(&d.device, "device", os.Getenv("IOTC_DEVICE_ID"), "device id")
	fs.StringVar(&d.model, "model", os.Getenv("IOTC_MODEL_ID"), "model id")
	fs.StringVar(&d.cert, "cert", os.Getenv("IOTC_CERT_FILE"), "X.509 certificate file")
	fs.StringVar(&d.key, "key", os.Getenv("IOTC_KEY_FILE"), "X.509 key file")
	fs.StringVar(&d.dps, "dps", os.Getenv("IOTC_PROVISIONING_HOST"), "provisioning host")
	fs.StringVar(&d.ca, "ca", os.Getenv("IOTC_CA_FILE"), "PEM file of CAs to trust")
	fs.StringVar(&d.transport, "transport", "", "mqtt, mqttws, amqp or amqpws")
	fs.StringVar(&d.fallback, "fallback", "", "comma-separated fallback transports")
	fs.StringVar(&d.proxy, "proxy", "", "HTTP CONNECT proxy URL")
	fs.IntVar(&d.port, "port", 0, "port of DPS and the hub")
	fs.IntVar(&d.wsPort, "ws-port", 0, "port of the WebSocket fallbacks")
	fs.BoolVar(&d.verbose, "v", false, "log the SDK's records to stderr")
	fs.DurationVar(&d.timeout, "timeout", 30*time.Second, "give up connecting after this long (0: never)")
	fs.StringVar(&d.cache, "cache", os.Getenv("IOTC_CREDENTIALS_FILE"), `credentials cache file ("off": none)`)
}

// cacheFile is the credentials cache of cfg: -cache, else a file per ID
// scope and device in the user cache directory; "" for none.
func (d *deviceFlags) cacheFile(cfg iotc.Config) string {
	switch {
	case d.cache == "off" || cfg.CredentialStore != nil:
		return ""
	case d.cache != "":
		return d.cache
	case cfg.IDScope == "" || cfg.DeviceID == "":
		return ""
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == os.PathSeparator {
			return '_'
		}
		return r
	}, cfg.IDScope+"_"+cfg.DeviceID)
	return filepath.Join(dir, "iotc-device", name+".json")
}

// config merges flags, environment and the ini section.
func (d *deviceFlags) configure(stderr io.Writer) (iotc.Config, error) {
	var dev samplesini.Device
	if d.config != "" {
		ini, err := samplesini.Load(d.config)
		if err != nil {
			return iotc.Config{}, err
		}
		if dev, err = ini.Device(d.section); err != nil {
			return iotc.Config{}, err
		}
	}
	or := func(a, b string) string {
		if a != "" {
			return a
		}
		return b
	}
	dev.ScopeID = or(d.scope, dev.ScopeID)
	dev.DeviceID = or(d.device, dev.DeviceID)
	dev.ModelID = or(d.model, dev.ModelID)
	dev.ProvisioningHost = or(d.dps, dev.ProvisioningHost)
	dev.CAFile = or(d.ca, dev.CAFile)
	dev.Transport = or(d.transport, dev.Transport)
	env := []struct{ name, kind string }{{"IOTC_GROUP_KEY", "group"}, {"IOTC_DEVICE_KEY", "device"}, {"IOTC_CONNECTION_STRING", "cs"}}
	var envKinds []string
	for _, e := range env {
		if os.Getenv(e.name) != "" {
			envKinds = append(envKinds, e.name)
		}
	}
	if len(envKinds) > 0 || d.cert != "" || d.key != "" {
		// The environment or flags name the credential: the file's keys
		// no longer count.
		dev.GroupKey, dev.DeviceKey, dev.ConnectionString = os.Getenv("IOTC_GROUP_KEY"), os.Getenv("IOTC_DEVICE_KEY"), os.Getenv("IOTC_CONNECTION_STRING")
		dev.CertFile, dev.KeyFile = d.cert, d.key
		dev.CertPassphrase = or(os.Getenv("IOTC_KEY_PASSPHRASE"), dev.CertPassphrase)
	}
	n := 0
	for _, set := range []bool{dev.GroupKey != "", dev.DeviceKey != "", dev.CertFile != "" || dev.KeyFile != "", dev.ConnectionString != "" && dev.CertFile == ""} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return iotc.Config{}, errors.New("no credential: set IOTC_GROUP_KEY, IOTC_DEVICE_KEY, IOTC_CONNECTION_STRING, -cert and -key, or a -config section")
	case n > 1:
		return iotc.Config{}, errors.New("more than one credential is set (group key, device key, certificate, connection string); keep exactly one")
	}
	if d.port != 0 {
		dev.Port = fmt.Sprint(d.port)
	}
	if dev.Section == "" {
		dev.Section = "flags"
	}
	cfg, err := dev.Config(samplesini.AuthAny)
	if err != nil {
		return iotc.Config{}, err
	}
	if d.fallback != "" {
		for _, name := range strings.Split(d.fallback, ",") {
			t, err := samplesini.ParseTransport(strings.TrimSpace(name))
			if err != nil {
				return iotc.Config{}, fmt.Errorf("-fallback: %w", err)
			}
			cfg.Fallback = append(cfg.Fallback, t)
		}
	}
	if d.proxy != "" {
		u, err := url.Parse(d.proxy)
		if err != nil || u.Host == "" {
			return iotc.Config{}, errors.New("-proxy: want http://[user:password@]host:port")
		}
		cfg.Proxy = u
	}
	cfg.WebSocketPort = d.wsPort
	if f := d.cacheFile(cfg); f != "" {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			return iotc.Config{}, fmt.Errorf("credentials cache: %w", err)
		}
		cfg.CredentialStore = iotc.CredentialsFile(f)
	}
	// Every connection change is printed, so that nobody waits in silence.
	cfg.OnStatus = func(st iotc.Status) {
		if st.Reason != iotc.ReasonClientClose {
			fmt.Fprintln(stderr, "iotc-device:", st)
		}
	}
	if d.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg.LogLevel = slog.LevelDebug
	}
	return cfg, nil
}

// props is a repeatable -prop k=v flag.
type props map[string]string

func (p props) String() string { return fmt.Sprint(map[string]string(p)) }
func (p props) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	p[k] = v
	return nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command (send, report, watch, twin or upload)")
	}
	cmd := args[0]
	if cmd == "-h" || cmd == "-help" || cmd == "--help" || cmd == "help" {
		fmt.Fprint(stdout, usage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("iotc-device "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	var d deviceFlags
	d.register(fs)
	var (
		component, reply, execCmd string
		blobName, contentType     string
		status                    int
		watchFor                  time.Duration
		p                         = props{}
	)
	switch cmd {
	case "send":
		fs.StringVar(&component, "component", "", "component of the telemetry")
		fs.Var(p, "prop", "application property key=value (repeatable)")
	case "report":
		fs.StringVar(&component, "component", "", "component of the properties")
	case "watch":
		fs.StringVar(&reply, "reply", "{}", "JSON payload answering every command")
		fs.IntVar(&status, "status", 200, "status answering every command")
		fs.StringVar(&execCmd, "exec", "", "shell command answering commands (payload on stdin, answer on stdout)")
		fs.DurationVar(&watchFor, "for", 0, "stop after this long (0: until interrupted)")
	case "twin":
	case "upload":
		fs.StringVar(&blobName, "name", "", "blob name (default the file's base name)")
		fs.StringVar(&contentType, "content-type", "", "content type of the blob")
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q (want send, report, watch, twin or upload)", cmd)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if cmd == "watch" && !json.Valid([]byte(reply)) {
		return errors.New("-reply is not JSON")
	}
	if cmd == "upload" && fs.NArg() != 1 {
		return errors.New("upload takes one file")
	}
	if cmd == "report" && fs.NArg() != 1 {
		return errors.New("report takes one JSON object")
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("unexpected argument %q (quote the JSON)", fs.Arg(1))
	}
	cfg, err := d.configure(stderr)
	if err != nil {
		return err
	}
	client, err := iotc.New(cfg)
	if err != nil {
		return err
	}
	defer client.Close(context.Background())
	out := &lockedWriter{w: stdout}
	if cmd == "watch" {
		w := &watcher{out: out, reply: json.RawMessage(reply), status: status, exec: execCmd}
		client.OnProperty(w.property)
		client.OnCommand(w.command)
		client.OnQueuedCommand(w.queued)
		client.OnCloudMessage(w.message)
	}
	cctx, cancel := ctx, context.CancelFunc(func() {})
	if d.timeout > 0 {
		cctx, cancel = context.WithTimeout(ctx, d.timeout)
	}
	err = client.Connect(cctx, nil)
	cancel()
	if err != nil {
		return err
	}
	switch cmd {
	case "send":
		opts := &iotc.TelemetryOptions{Component: component, Properties: p}
		if fs.NArg() == 1 && fs.Arg(0) != "-" {
			if err := send(ctx, client, fs.Arg(0), opts); err != nil {
				return err
			}
			out.printJSON(map[string]any{"sent": json.RawMessage(fs.Arg(0))})
			break
		}
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 64<<10), 300<<10)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			if err := send(ctx, client, line, opts); err != nil {
				return fmt.Errorf("line %d: %w", n, err)
			}
			out.printJSON(map[string]any{"sent": json.RawMessage(line)})
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
	case "report":
		var m map[string]any
		if err := json.Unmarshal([]byte(fs.Arg(0)), &m); err != nil {
			return errors.New("report takes a JSON object, e.g. '{\"firmware\": \"1.0\"}'")
		}
		if err := client.ReportProperties(ctx, m, &iotc.ReportOptions{Component: component}); err != nil {
			return err
		}
		out.printJSON(map[string]any{"reported": m, "component": component})
	case "upload":
		res, err := upload(ctx, client, fs.Arg(0), blobName, contentType)
		if err != nil {
			return err
		}
		out.printJSON(map[string]any{"uploaded": res.BlobURL, "bytes": res.Size})
	case "twin":
		tw, err := client.FetchTwin(ctx)
		if err != nil {
			return err
		}
		out.printJSON(map[string]any{"desired": tw.Desired, "reported": tw.Reported})
	case "watch":
		out.printJSON(map[string]any{"watching": client.DeviceID()})
		wctx := ctx
		if watchFor > 0 {
			var cancel context.CancelFunc
			wctx, cancel = context.WithTimeout(ctx, watchFor)
			defer cancel()
		}
		<-wctx.Done()
	}
	return client.Close(context.Background())
}

func send(ctx context.Context, c *iotc.Client, msg string, opts *iotc.TelemetryOptions) error {
	if !json.Valid([]byte(msg)) {
		return errors.New("telemetry must be JSON, e.g. '{\"temperature\": 21.5}'")
	}
	return c.SendTelemetry(ctx, json.RawMessage(msg), opts)
}

// lockedWriter serializes the JSON lines of concurrent handlers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": err.Error()})
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(append(b, '\n'))
}

type watcher struct {
	out    *lockedWriter
	reply  json.RawMessage
	status int
	exec   string
}

func (w *watcher) property(_ context.Context, p iotc.Property) iotc.PropertyAck {
	w.out.printJSON(map[string]any{"property": p.Name, "component": p.Component, "value": p.Value, "version": p.Version})
	return iotc.PropertyAck{Status: 200, Description: "applied by iotc-device"}
}

func (w *watcher) command(ctx context.Context, c iotc.Command) iotc.CommandResponse {
	payload := c.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	res := iotc.CommandResponse{Status: w.status, Payload: w.reply}
	if w.exec != "" {
		res = w.run(ctx, c)
	}
	w.out.printJSON(map[string]any{"command": c.Name, "component": c.Component, "payload": payload, "status": res.Status, "response": res.Payload})
	return res
}

// run answers a command with the -exec shell command.
func (w *watcher) run(ctx context.Context, c iotc.Command) iotc.CommandResponse {
	cmd := exec.CommandContext(ctx, "sh", "-c", w.exec)
	cmd.Stdin = bytes.NewReader(c.Payload)
	cmd.Env = append(os.Environ(), "IOTC_COMMAND="+c.Name, "IOTC_COMPONENT="+c.Component)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	outb, err := cmd.Output()
	status := 200
	if err != nil {
		status = 500
	}
	outb = bytes.TrimSpace(outb)
	if json.Valid(outb) && len(outb) > 0 {
		return iotc.CommandResponse{Status: status, Payload: json.RawMessage(outb)}
	}
	if err != nil && len(outb) == 0 {
		return iotc.CommandResponse{Status: status, Payload: map[string]string{"error": strings.TrimSpace(err.Error() + ": " + stderr.String())}}
	}
	return iotc.CommandResponse{Status: status, Payload: string(outb)}
}

func (w *watcher) queued(_ context.Context, c iotc.Command) iotc.Outcome {
	w.out.printJSON(map[string]any{"queued_command": c.Name, "component": c.Component, "payload": string(c.Payload)})
	return iotc.Complete
}

func (w *watcher) message(_ context.Context, m iotc.CloudMessage) iotc.Outcome {
	w.out.printJSON(map[string]any{"message": string(m.Body), "properties": m.Properties})
	return iotc.Complete
}

// upload sends the file with the hub's file upload.
func upload(ctx context.Context, c *iotc.Client, file, name, contentType string) (iotc.UploadResult, error) {
	f, err := os.Open(file)
	if err != nil {
		return iotc.UploadResult{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return iotc.UploadResult{}, err
	}
	if !st.Mode().IsRegular() {
		return iotc.UploadResult{}, fmt.Errorf("%s is not a regular file", file)
	}
	if name == "" {
		name = filepath.Base(file)
	}
	return c.UploadFile(ctx, name, f, st.Size(), &iotc.UploadOptions{ContentType: contentType})
}
