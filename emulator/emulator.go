package emulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/eventhubs"
	"github.com/iotc-go/iotc/emulator/internal/export"
	"github.com/iotc-go/iotc/emulator/internal/fileupload"
	"github.com/iotc-go/iotc/emulator/internal/mqtthub"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
	"github.com/iotc-go/iotc/emulator/internal/pki"
	"github.com/iotc-go/iotc/emulator/internal/store/sqlitestore"
)

// Emulator is a running local IoT Central. Its methods are safe for
// concurrent use. Create it with Start; stop it with Close.
type Emulator struct {
	cfg     resolved
	log     *slog.Logger
	tempDir string // removed by Close when CertDir was defaulted
	bundle  *pki.Bundle
	caPool  *x509.CertPool

	core      *core.Core
	store     core.Store // nil without DataDir; closed by Close after the front-ends
	mqtt      *mqtthub.Server
	restSrv   *http.Server
	restURL   string
	ws        *wsServer           // nil when disabled; see websocket.go
	amqp      *amqpServer         // see amqp.go
	eh        *eventhubs.Endpoint // see eventhubs.go
	export    *export.Manager     // nil when DataExport.Disabled; see dataexport.go
	blob      *blobEndpoint       // nil when disabled; see fileupload.go
	upStorage fileupload.Storage  // where devices upload; nil when none

	reporter             *netlimit.Reporter    // refusals and limit hits; see limits.go
	authFails            *netlimit.FailLimiter // failed authentications per client on the REST listener
	restLn, wsLn, amqpLn *netlimit.Listener    // connection caps; nil when disabled

	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// Start runs an emulator: it loads or creates the certificates, binds the
// MQTT listener (and the REST listener unless disabled) and returns once
// they accept connections. With Options.DataDir it first loads the saved
// state (see DataDir). ctx bounds start-up only; stop the emulator
// with Close. It returns an error wrapping ErrInvalid for bad options,
// ErrDataFile for an unreadable or invalid DataDir state file, or the
// listen / certificate / state-writing error.
func Start(ctx context.Context, opts *Options) (*Emulator, error) {
	cfg, err := resolve(opts)
	if err != nil {
		return nil, err
	}
	e := &Emulator{
		cfg: cfg,
		log: cfg.log,
	}
	e.reporter = netlimit.NewReporter(cfg.log.With("component", "limits"), cfg.limits.LogSummaryInterval)
	e.authFails = &netlimit.FailLimiter{Max: cfg.limits.AuthFailures, Window: cfg.limits.AuthFailureWindow}
	ccfg := core.Config{
		IDScope: cfg.idScope, HubHost: cfg.hubHost, Groups: cfg.groups, AutoApprove: cfg.autoApprove,
		RetryAfter: cfg.retryAfter, TelemetryHistory: cfg.history,
		ExplicitScope: cfg.explicitScope, ExplicitGroups: cfg.explicitGroups, Log: cfg.log, TrustedCAs: cfg.trustedCAs,
	}
	if cfg.dataDir != "" {
		if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("emulator: data directory: %w", err)
		}
		dbPath := filepath.Join(cfg.dataDir, DataDirDatabase)
		// Made private before SQLite opens it (its WAL files take its
		// mode): it holds device and group keys in clear.
		if f, err := os.OpenFile(dbPath, os.O_RDONLY|os.O_CREATE, 0o600); err == nil {
			_ = f.Close()
		}
		st, err := sqlitestore.Open(ctx, dbPath, sqlitestore.Options{})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrDataFile, err)
		}
		e.store = st
		ccfg.Store = st
		ccfg.LegacyStateFile = filepath.Join(cfg.dataDir, DataDirLegacyFile)
	}
	e.core = core.New(ccfg)
	ok := false
	defer func() {
		if !ok {
			_ = e.Close()
		}
	}()
	if cfg.dataDir != "" {
		if err := e.core.Load(ctx); err != nil {
			return nil, err
		}
		if !cfg.explicitToken {
			tok, err := keptToken(filepath.Join(cfg.dataDir, DataDirTokenFile), e.cfg.apiToken)
			if err != nil {
				return nil, err
			}
			e.cfg.apiToken = tok
		}
		if cfg.certDir == filepath.Join(cfg.dataDir, "certs") {
			// Private like the data directory: it holds the CA key.
			if err := os.MkdirAll(cfg.certDir, 0o700); err != nil {
				return nil, fmt.Errorf("emulator: cert dir: %w", err)
			}
		}
	}
	dir := cfg.certDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "iotc-emulator-*"); err != nil {
			return nil, fmt.Errorf("emulator: temp cert dir: %w", err)
		}
		e.tempDir = dir
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if cfg.hubHost != "localhost" {
		hosts = append(hosts, cfg.hubHost)
	}
	if e.bundle, err = pki.LoadOrCreate(dir, hosts); err != nil {
		return nil, fmt.Errorf("emulator: certificates: %w", err)
	}
	if e.bundle.Reissued != "" {
		e.log.Warn("server certificate reissued from the same CA", "reason", e.bundle.Reissued, "cert_dir", dir)
	}
	e.caPool = x509.NewCertPool()
	e.caPool.AddCert(e.bundle.CA.Cert)
	if err := e.startDataExport(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if e.mqtt, err = mqtthub.New(mqtthub.Config{
		Addr: cfg.mqttAddr, TLS: e.serverTLS(), Model: e.core, MaxTelemetryBody: MaxTelemetryBody, Logger: e.log,
		MaxIdle: cfg.limits.MQTTMaxIdle, PreLogin: &netlimit.Budget{Max: cfg.limits.MQTTPreLoginBytes}, Reporter: e.reporter,
	}); err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	if err := e.startEventHubs(); err != nil {
		return nil, err
	}
	if err := e.startAMQP(); err != nil {
		return nil, err
	}
	if err := e.startFileUploads(); err != nil {
		return nil, err
	}
	if err := e.startWebSocket(); err != nil {
		return nil, err
	}
	if cfg.restAddr != "-" {
		if err := e.startREST(); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ok = true
	e.log.Info("emulator started", "mqtt", e.MQTTAddr(), "websocket", e.WebSocketAddr(), "amqp", e.AMQPAddr(), "rest", e.restURL, "id_scope", e.IDScope(), "data_dir", cfg.dataDir, "hub_host", cfg.hubHost, "ca_file", e.bundle.CAFile)
	return e, nil
}

func (e *Emulator) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{e.bundle.Server},
		// Client certificates are checked against enrollment group CAs in
		// the CONNECT hook, where the device id is known.
		ClientAuth: tls.RequestClientCert,
	}
}

// Close stops the listeners, drops every connection, ends every goroutine
// the emulator started, fails pending InvokeCommand calls with ErrClosed,
// writes the DataDir state file a last time (returning its error) and
// removes the temporary certificate directory. It is safe to call
// more than once; later calls return the first result.
func (e *Emulator) Close() error {
	e.closeOnce.Do(func() {
		if e.export != nil {
			e.export.Close() // stops observing and delivering
		}
		e.core.Close() // ends waits with ErrClosed, stops the saver
		var errs []error
		if e.restSrv != nil {
			if err := e.restSrv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, err)
			}
		}
		errs = append(errs, e.closeAMQP())      // AMQP connections, TLS and WebSocket alike, get a close
		errs = append(errs, e.closeWebSocket()) // before mochi's Close, which waits for its clients
		errs = append(errs, e.closeBlob())
		if e.mqtt != nil {
			errs = append(errs, e.mqtt.Close())
		}
		e.wg.Wait()
		if e.eh != nil {
			e.eh.Close()
		}
		e.reporter.Close() // the last summary
		if e.store != nil {
			errs = append(errs, e.store.Close()) // once every connection is gone
		}
		if e.tempDir != "" {
			errs = append(errs, os.RemoveAll(e.tempDir))
		}
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}

// MQTTAddr is the bound host:port of the MQTT/TLS listener, or "" when it
// is disabled.
func (e *Emulator) MQTTAddr() string {
	if e.mqtt == nil {
		return ""
	}
	return e.mqtt.Addr()
}

// RESTURL is the base URL of the REST API ("https://127.0.0.1:port"), or
// "" when it is disabled.
func (e *Emulator) RESTURL() string { return e.restURL }

// APIToken is the value the REST API expects in the Authorization header.
func (e *Emulator) APIToken() string { return e.cfg.apiToken }

// IDScope is the DPS ID scope devices must use.
func (e *Emulator) IDScope() string { return e.core.IDScope() }

// HubHost is the hub host name DPS assigns and hub SAS tokens must name.
func (e *Emulator) HubHost() string { return e.cfg.hubHost }

// GroupKey is the primary key of the first symmetric-key enrollment group,
// "" when there is none.
func (e *Emulator) GroupKey() string { return e.core.GroupKey() }

// CAFile is the path of the PEM file of the CA that signed the server
// certificate; devices trust it.
func (e *Emulator) CAFile() string { return e.bundle.CAFile }

// CAPool is a pool holding the emulator's CA, for a tls.Config RootCAs.
func (e *Emulator) CAPool() *x509.CertPool { return e.caPool.Clone() }

// CACertPEM is the emulator's CA certificate in PEM.
func (e *Emulator) CACertPEM() []byte { return append([]byte(nil), e.bundle.CA.CertPEM...) }

// keptToken returns the API token stored in path, or stores fresh there
// (mode 0600) and returns it when the file does not exist yet.
func keptToken(path, fresh string) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(b))
		if tok == "" || strings.ContainsAny(tok, "\r\n") {
			return "", fmt.Errorf("%w: %s holds no API token (remove it to get a new one)", ErrDataFile, path)
		}
		return tok, nil
	case errors.Is(err, os.ErrNotExist):
		if err := os.WriteFile(path, []byte(fresh+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("emulator: keep API token: %w", err)
		}
		return fresh, nil
	default:
		return "", fmt.Errorf("%w: %s: %w", ErrDataFile, path, err)
	}
}
