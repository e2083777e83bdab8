// Package iotc connects devices to Azure IoT Central.
//
// A Client provisions the device through the Device Provisioning Service
// (group key, device key or X.509 certificate; or a hub connection string
// without DPS), connects to the assigned IoT hub announcing its IoT Plug and
// Play model, keeps writable properties in sync (calling the property
// handler for every value not yet acknowledged, also after reconnects),
// answers commands with any status and JSON payload, receives commands
// queued while offline and other cloud-to-device messages, and sends
// telemetry and reported properties. It reconnects by itself with
// exponential backoff and full jitter, renews its SAS token before it
// expires, and reports every connection change to a status callback.
//
//	client, err := iotc.New(iotc.Config{
//		DeviceID:   "thermostat-01",
//		IDScope:    "0ne00ABCDEF",
//		Credential: iotc.GroupKey(os.Getenv("IOTC_GROUP_KEY")),
//		ModelID:    "dtmi:com:example:Thermostat;1",
//	})
//	client.OnProperty(func(ctx context.Context, p iotc.Property) iotc.PropertyAck { ... })
//	client.OnCommand(func(ctx context.Context, c iotc.Command) iotc.CommandResponse { ... })
//	err = client.Connect(ctx)
//	err = client.SendTelemetry(ctx, map[string]any{"temperature": 21.5}, &iotc.TelemetryOptions{Component: "thermostat1"})
//
// The package is the composition root of the SDK: it wires package app
// (the use cases) to the transport adapters and the credentials file.
// Config.Adapter builds the same Client on any ports.Transport instead:
// package iotctest's in-memory hub for unit tests of device logic, the
// gomock mocks of package mocks, or an adapter of your own.
package iotc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/iotc-go/iotc/adapters/filestore"
	"github.com/iotc-go/iotc/app"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// Client is a device connected to IoT Central. Its methods are safe for
// concurrent use. Register handlers before Connect so that the startup
// twin sync reaches them.
type Client struct {
	app     *app.Client
	uploads *uploads // see fileupload.go
}

// New checks cfg and builds a client; it does not connect (see Connect)
// and starts no goroutine. Errors wrap ErrInvalidConfig: a missing or
// malformed credential (ErrInvalidKey for a key that is not base64), a
// missing IDScope or DeviceID, a transport not available yet, a bad port
// or a negative ConnectTimeout. With Config.Outbox.Dir, New also fails
// when the directory cannot be used, and with an error matching
// ErrOutboxDamaged (naming the file) when damaged records in it cannot be
// moved aside.
func New(cfg Config) (*Client, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, prefixed(err)
	}
	return c, nil
}

func newClient(cfg Config) (*Client, error) {
	logger := cfg.logger()
	var err error
	if cfg.ConnectTimeout < 0 {
		return nil, fmt.Errorf("%w: negative ConnectTimeout %v", ErrInvalidConfig, cfg.ConnectTimeout)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("%w: port %d", ErrInvalidConfig, cfg.Port)
	}
	var transports []ports.Transport
	if cfg.Adapter != nil {
		if len(cfg.Fallback) > 0 {
			return nil, fmt.Errorf("%w: Fallback cannot be combined with Adapter", ErrInvalidConfig)
		}
		transports = []ports.Transport{cfg.Adapter}
	} else if transports, err = cfg.transports(logger); err != nil { // see transports.go
		return nil, err
	}
	opts := app.Options{
		DeviceID:         cfg.DeviceID,
		IDScope:          cfg.IDScope,
		ProvisioningHost: cfg.ProvisioningHost,
		Credential:       cfg.Credential.c,
		ModelID:          cfg.ModelID,
		LegacyModelID:    cfg.LegacyModelID,
		Transports:       transports,
		TokenTTL:         cfg.TokenTTL,
		Backoff:          cfg.Backoff,
		MaxAttempts:      cfg.MaxAttempts,
		StableAfter:      cfg.StableAfter,
		DrainTimeout:     cfg.DrainTimeout,
		FailFast:         cfg.FailFast,
		SyncAllDesired:   cfg.SyncAllDesired,
		Logger:           logger,
		OnStatus:         cfg.OnStatus,
	}
	opts.ProvisioningPayload = cfg.ProvisioningPayload
	opts.Store = cfg.CredentialStore
	if f, ok := cfg.CredentialStore.(*credentialsFile); ok {
		opts.Store = filestore.New(f.path, withAttr(logger, "store", "file"))
	}
	if opts.Outbox, err = cfg.Outbox.open(logger); err != nil { // outbox.go
		return nil, err
	}
	opts.OutboxMaxAge = cfg.Outbox.MaxAge
	a, err := app.New(opts)
	if err != nil {
		_ = opts.Outbox.Close()
		return nil, prefixed(err)
	}
	return &Client{app: a, uploads: newUploads(cfg, logger)}, nil
}

// CredentialsFile is a credentials cache in the JSON file at path (mode
// 0600; hub and device id, no secret), for Config.CredentialStore: a
// restart then skips DPS. A missing, unreadable or corrupt file means
// "provision" (logged), never a failure; the file is written atomically
// after each provisioning. CredentialsFile("") is nil: no cache.
func CredentialsFile(path string) ports.CredentialStore {
	if path == "" {
		return nil
	}
	return &credentialsFile{path: path}
}

// credentialsFile is CredentialsFile's store before New gives it the
// client's logger.
type credentialsFile struct{ path string }

func (f *credentialsFile) Load(ctx context.Context) (domain.CachedCredentials, error) {
	return filestore.New(f.path, nil).Load(ctx)
}

func (f *credentialsFile) Save(ctx context.Context, c domain.CachedCredentials) error {
	return filestore.New(f.path, nil).Save(ctx, c)
}

// prefixed is err with "iotc: " in front, once: every error the client
// returns goes through it.
func prefixed(err error) error {
	if err == nil || strings.HasPrefix(err.Error(), "iotc: ") {
		return err
	}
	return &iotcError{err}
}

// iotcError is an error the SDK returns: its text starts with "iotc: ";
// errors.Is and errors.As see the error inside.
type iotcError struct{ err error }

func (e *iotcError) Error() string { return "iotc: " + e.err.Error() }
func (e *iotcError) Unwrap() error { return e.err }

func withAttr(l *slog.Logger, k, v string) *slog.Logger {
	if l == nil {
		return nil
	}
	return l.With(k, v)
}

// OnProperty sets the catch-all writable-property handler; nil removes it.
// It is called for every desired value the device has not acknowledged at
// its version (at Connect, after every reconnect and for each change) that
// no HandleProperty handler claims. Its PropertyAck is reported as the
// acknowledgement. Without a handler, desired values stay unacknowledged
// (never auto-acked). Properties are handled one at a time, in order, on a
// goroutine the client owns; a panic is reported as status 500.
func (c *Client) OnProperty(h PropertyHandler) { c.app.OnProperty(h) }

// HandleProperty sets the handler of one writable property, name in
// component ("" for the root), ahead of the OnProperty catch-all; nil
// removes it. Handlers run as OnProperty's.
func (c *Client) HandleProperty(component, name string, h PropertyHandler) {
	c.app.HandleProperty(component, name, h)
}

// OnCommand sets the catch-all command handler; nil removes it. Commands
// that neither a HandleCommand handler nor this one takes are answered 501
// with {"error": "..."}, a panicking handler 500. Commands are handled one
// at a time, in order, on a goroutine the client owns; IoT Central waits up
// to the command's timeout (30 s by default) for the answer. For long work,
// answer 202 and report progress as properties.
func (c *Client) OnCommand(h CommandHandler) { c.app.OnCommand(h) }

// HandleCommand sets the handler of one command, name in component (""
// for the root), ahead of the OnCommand catch-all, as the official SDKs'
// onDeviceMethod(name); nil removes it. A queued command of that name goes
// to it too when no OnQueuedCommand handler is set.
func (c *Client) HandleCommand(component, name string, h CommandHandler) {
	c.app.HandleCommand(component, name, h)
}

// OnQueuedCommand sets the handler of commands IoT Central queued while
// the device was offline; nil removes it, and then queued commands go to
// the command handlers (with Queued set, the response discarded, the
// message completed). The message is settled with the Outcome the handler
// returns once it returned: Complete (the zero value), Abandon (delivered
// again) or Reject (dead-lettered). A panicking handler rejects it; a
// handler still running when Close is called leaves it unsettled, so it
// comes again on a later connection.
func (c *Client) OnQueuedCommand(h QueuedCommandHandler) { c.app.OnQueuedCommand(h) }

// OnCloudMessage sets the handler of cloud-to-device messages that are
// not queued commands; nil removes it (they are then completed unread).
// The message is settled as OnQueuedCommand's. IoT Hub keeps up to 50
// messages per device and delivers one at most 10 times.
func (c *Client) OnCloudMessage(h CloudMessageHandler) { c.app.OnCloudMessage(h) }

// Connect provisions the device (or uses the credentials file) and
// connects to the hub; it returns once the session is open, while the
// writable properties are synchronised on the client's own goroutine (the
// property handler is called for each pending value). Afterwards the
// client reconnects by itself until Close. Network failures are retried
// with backoff while ctx lasts; refused credentials (ErrUnauthorized), a
// disabled device (*ProvisioningError) or an unknown device
// (ErrDeviceNotFound) return at once. Use a ctx deadline to bound it. A
// failed Connect leaves nothing running; Close waits for a Connect in
// progress. opts may be nil (see ConnectOptions).
func (c *Client) Connect(ctx context.Context, opts *ConnectOptions) error {
	return prefixed(c.app.Connect(ctx, opts))
}

// ConnectOptions are the optional parts of one Connect call; nil selects
// the defaults. ForceProvisioning (default false) makes Connect register
// with DPS again even when the credentials cache holds an assignment (the
// Python client's connect(force_dps=True)); DPS allows about 5
// registrations per 10 s per device and answers 429 beyond.
type ConnectOptions = app.ConnectOptions

// ProvisioningPayload returns the custom payload DPS returned with the
// assignment this client received (see Config.ProvisioningPayload), or nil.
func (c *Client) ProvisioningPayload() json.RawMessage { return c.app.ProvisioningPayload() }

// SendTelemetry sends v encoded as JSON ([]byte and json.RawMessage are
// sent as they are) and returns when the hub acknowledged it. While the
// client is reconnecting it waits for the connection within ctx, and a
// message whose connection was lost before the acknowledgement is sent
// again, with the same message id (at least once). It fails at once with
// ErrClosed after Close or once the client gave up, ErrNotConnected before
// Connect succeeded (or with Config.FailFast while offline),
// ErrMessageTooLarge over 256 KiB, ErrInvalidConfig for a reserved
// property name, or an encoding error; when ctx ends while offline the
// error matches both ErrNotConnected and ctx's error.
// IoT Hub meters messages in 4 KiB blocks and throttles a unit at about
// 100 messages per second.
func (c *Client) SendTelemetry(ctx context.Context, v any, opts *TelemetryOptions) error {
	m, err := domain.NewJSONMessage(v)
	if err != nil {
		return prefixed(err)
	}
	m = withTelemetryOptions(m, opts)
	return prefixed(c.app.SendTelemetry(ctx, m))
}

// ReportProperties reports device (read-only) properties; with
// opts.Component they are wrapped as that component's (opts may be nil). It waits for the
// connection and resends as SendTelemetry does. Errors: those of
// SendTelemetry, ErrMessageTooLarge over 32 KiB, *HubError when the hub
// refuses (429: about 50 twin updates per second per unit).
func (c *Client) ReportProperties(ctx context.Context, props map[string]any, opts *ReportOptions) error {
	var component string
	if opts != nil {
		component = opts.Component
	}
	return prefixed(c.app.ReportProperties(ctx, component, props))
}

// AckProperty reports an acknowledgement of p, typically the final one
// after the handler answered 202. It never lands before the handler's own
// answer: called while the handler for p still runs (from inside it or
// from another goroutine), it returns nil at once and its acknowledgement
// replaces the handler's in the report made when the handler returns;
// called while that report is in flight, it waits and reports right after.
// An acknowledgement for a version older than one already handed to the
// handler is not reported and gives ErrSuperseded. Errors as
// ReportProperties.
func (c *Client) AckProperty(ctx context.Context, p Property, ack PropertyAck) error {
	return prefixed(c.app.AckProperty(ctx, p, ack))
}

// FetchTwin reads the device twin. Errors: ErrNotConnected, *HubError.
func (c *Client) FetchTwin(ctx context.Context) (Twin, error) {
	t, err := c.app.FetchTwin(ctx)
	return t, prefixed(err)
}

// IsConnected reports whether the client has an open hub session.
func (c *Client) IsConnected() bool { return c.app.IsConnected() }

// Status returns the current connection status.
func (c *Client) Status() Status { return c.app.Status() }

// Err returns why the client gave up reconnecting (refused credentials,
// disabled device, MaxAttempts reached), or nil.
func (c *Client) Err() error { return prefixed(c.app.Err()) }

// DeviceID is the device id: the one DPS assigned once connected, else the
// configured one.
func (c *Client) DeviceID() string { return c.app.DeviceID() }

// Close lets the sends in flight get their acknowledgements (up to
// Config.DrainTimeout), disconnects and returns when every goroutine of
// the client has ended; running handlers see their context cancelled and
// are waited for. If ctx ends first, Close returns its error. Close is
// idempotent. Called from inside a handler or OnStatus (a "reboot"
// command), it starts the shutdown and returns nil at once: it cannot
// wait for its own goroutine; a Close from elsewhere waits for the end.
func (c *Client) Close(ctx context.Context) error {
	defer c.uploads.close()
	return prefixed(c.app.Close(ctx))
}
