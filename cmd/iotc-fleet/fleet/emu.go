package fleet

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

// ChildEnv is the environment variable that makes the fleet program run
// as the emulator child of StartEmulator(ctx, true) (see ServeChild).
const ChildEnv = "IOTC_FLEET_EMULATOR_CHILD"

// Local is an emulator the fleet runs: in this process or in a child
// process (the same program with ChildEnv set), so that the devices and
// the emulator each have their own file-descriptor limit and RSS.
type Local struct {
	// IDScope, GroupKey (a secret) and HubHost identify the emulator's
	// default enrollment group and hub.
	IDScope, GroupKey, HubHost string
	// MQTTAddr, WebSocketAddr and AMQPAddr are its device listeners.
	MQTTAddr, WebSocketAddr, AMQPAddr string
	// RESTURL and APIToken (a secret) reach its operator API;
	// DashboardURL opens its web dashboard logged in (a secret too).
	RESTURL, APIToken, DashboardURL string
	// CAPEM is the CA that signs its server certificate.
	CAPEM []byte
	// ServiceConnectionString (a secret) is the IoT Hub service connection
	// string of its "service" policy; the service API is on WebSocketAddr.
	ServiceConnectionString string
	// PID is the emulator's process (os.Getpid() when in-process).
	PID int
	// EventHubsConnectionString (a secret) reads the built-in Event
	// Hubs-compatible endpoint (every device-to-cloud message); "" for an
	// ExternalEmulator.
	EventHubsConnectionString string

	pool  *x509.CertPool
	close func() error
}

// Target returns where devices of transport tr connect.
func (l *Local) Target(tr iotc.Transport) (Target, error) {
	addr := l.MQTTAddr
	switch tr {
	case iotc.MQTTWebSockets, iotc.AMQPWebSockets:
		addr = l.WebSocketAddr
	case iotc.AMQP:
		addr = l.AMQPAddr
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return Target{}, fmt.Errorf("fleet: emulator address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return Target{}, fmt.Errorf("fleet: emulator port %q: %w", portText, err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() && l.HubHost != "" {
		host = l.HubHost // listening on every address: reach it by its name
	}
	return Target{IDScope: l.IDScope, GroupKey: l.GroupKey, ProvisioningHost: host, Port: port, RootCAs: l.pool}, nil
}

// RootCAs is a pool holding the emulator's CA.
func (l *Local) RootCAs() *x509.CertPool { return l.pool }

// Close stops the emulator (and waits for the child to exit).
func (l *Local) Close() error { return l.close() }

// localInfo is what the child writes on its stdout.
type localInfo struct {
	IDScope, GroupKey, HubHost        string
	MQTTAddr, WebSocketAddr, AMQPAddr string
	RESTURL, APIToken, DashboardURL   string
	CAPEM                             []byte
	ServiceConnectionString           string
	PID                               int
	EventHubsConnectionString         string
}

// APITokenEnv names the environment variable that sets the API token of
// the emulator the fleet starts (as for cmd/iotc-emulator); without it
// the token is random. Either way the fleet prints it.
const APITokenEnv = "IOTC_EMULATOR_API_TOKEN"

func startOptions() *emulator.Options {
	return &emulator.Options{
		MQTTAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0",
		APIToken:         os.Getenv(APITokenEnv),
		RetryAfter:       -1, // DPS answers "assigned" on the first poll
		TelemetryHistory: -1, // keep no history: 10,000 devices' messages add up
	}
}

// StartEmulator starts an emulator on free loopback ports: in this process,
// or with child true as a child process running this same program (which
// must call ServeChild when ChildEnv is set). The child is put in its own
// process group so that Ctrl-C reaches only the fleet, which then stops it
// after its devices closed; it also exits when this process dies (its stdin
// closes).
func StartEmulator(ctx context.Context, child bool) (*Local, error) {
	if !child {
		e, err := emulator.Start(ctx, startOptions())
		if err != nil {
			return nil, fmt.Errorf("fleet: start the emulator: %w", err)
		}
		svc, _ := e.ServiceConnectionString("service")
		eh, _ := e.EventHubsConnectionString(e.BuiltinEventHub())
		return &Local{
			IDScope: e.IDScope(), GroupKey: e.GroupKey(), HubHost: e.HubHost(),
			MQTTAddr: e.MQTTAddr(), WebSocketAddr: e.WebSocketAddr(), AMQPAddr: e.AMQPAddr(),
			RESTURL: e.RESTURL(), APIToken: e.APIToken(), DashboardURL: e.DashboardURL(), CAPEM: e.CACertPEM(), PID: os.Getpid(),
			ServiceConnectionString: svc, EventHubsConnectionString: eh,
			pool: e.CAPool(), close: e.Close,
		}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("fleet: find this program to start the emulator child: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	cmd.Stderr = os.Stderr
	ownProcessGroup(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("fleet: emulator child: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("fleet: emulator child: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fleet: start the emulator child: %w", err)
	}
	done := make(chan error, 1)
	infoC := make(chan localInfo, 1)
	go func() {
		var info localInfo
		line, err := bufio.NewReader(stdout).ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &info)
		}
		if err == nil {
			infoC <- info
		}
		_, _ = io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	stop := func() error {
		_ = stdin.Close()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return errors.Join(errors.New("fleet: the emulator child did not stop in 30 s; killed"), <-done)
		}
	}
	var info localInfo
	select {
	case info = <-infoC:
	case err := <-done:
		return nil, fmt.Errorf("fleet: the emulator child exited before it was ready: %w", err)
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), stop())
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(info.CAPEM) {
		return nil, errors.Join(errors.New("fleet: the emulator child sent no CA"), stop())
	}
	return &Local{
		IDScope: info.IDScope, GroupKey: info.GroupKey, HubHost: info.HubHost,
		MQTTAddr: info.MQTTAddr, WebSocketAddr: info.WebSocketAddr, AMQPAddr: info.AMQPAddr,
		RESTURL: info.RESTURL, APIToken: info.APIToken, DashboardURL: info.DashboardURL, CAPEM: info.CAPEM, PID: info.PID,
		ServiceConnectionString: info.ServiceConnectionString, EventHubsConnectionString: info.EventHubsConnectionString,
		pool: pool, close: stop,
	}, nil
}

// ServeChild is the emulator child's main: it starts the emulator, writes
// its details as one JSON line on stdout (a pipe to the parent: the group
// key and API token are secrets) and serves until stdin closes or ctx ends.
func ServeChild(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	e, err := emulator.Start(ctx, startOptions())
	if err != nil {
		return fmt.Errorf("start the emulator: %w", err)
	}
	svc, _ := e.ServiceConnectionString("service")
	eh, _ := e.EventHubsConnectionString(e.BuiltinEventHub())
	line, err := json.Marshal(localInfo{
		IDScope: e.IDScope(), GroupKey: e.GroupKey(), HubHost: e.HubHost(),
		MQTTAddr: e.MQTTAddr(), WebSocketAddr: e.WebSocketAddr(), AMQPAddr: e.AMQPAddr(),
		RESTURL: e.RESTURL(), APIToken: e.APIToken(), DashboardURL: e.DashboardURL(), CAPEM: e.CACertPEM(), PID: os.Getpid(),
		ServiceConnectionString: svc, EventHubsConnectionString: eh,
	})
	if err == nil {
		_, err = stdout.Write(append(line, '\n'))
	}
	if err != nil {
		return errors.Join(err, e.Close())
	}
	eof := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, stdin); close(eof) }()
	select {
	case <-eof:
	case <-ctx.Done():
	}
	return e.Close()
}

// emulatorInfo is the JSON that cmd/iotc-emulator --info-file writes.
type emulatorInfo struct {
	IDScope       string `json:"idScope"`
	GroupKey      string `json:"groupKey"`
	CAFile        string `json:"caFile"`
	RESTURL       string `json:"restUrl"`
	APIToken      string `json:"apiToken"`
	DashboardURL  string `json:"dashboardUrl"`
	MQTTAddr      string `json:"mqttAddr"`
	WebSocketAddr string `json:"webSocketAddr"`
	AMQPAddr      string `json:"amqpAddr"`
	HubHost       string `json:"hubHost"`
	PID           int    `json:"pid"`
}

// ExternalEmulator describes an emulator that runs on its own
// (cmd/iotc-emulator, here or on another machine) from the info file it
// wrote with --info-file. Close does nothing: the emulator is not the
// fleet's. Errors name the file and what is missing in it.
func ExternalEmulator(file string) (*Local, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("fleet: emulator info: %w", err)
	}
	var in emulatorInfo
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("fleet: emulator info %s is not the JSON iotc-emulator --info-file writes: %w", file, err)
	}
	if in.IDScope == "" || in.GroupKey == "" || in.CAFile == "" {
		return nil, fmt.Errorf("fleet: emulator info %s lacks idScope, groupKey or caFile", file)
	}
	ca, err := os.ReadFile(in.CAFile)
	if err != nil {
		return nil, fmt.Errorf("fleet: the emulator's CA (from %s): %w", file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("fleet: %s holds no PEM certificate", in.CAFile)
	}
	return &Local{
		IDScope: in.IDScope, GroupKey: in.GroupKey, HubHost: in.HubHost,
		MQTTAddr: in.MQTTAddr, WebSocketAddr: in.WebSocketAddr, AMQPAddr: in.AMQPAddr,
		RESTURL: in.RESTURL, APIToken: in.APIToken, DashboardURL: in.DashboardURL, CAPEM: ca, PID: in.PID,
		pool: pool, close: func() error { return nil },
	}, nil
}
