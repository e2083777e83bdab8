// Package fleet simulates a fleet of IoT Central devices in one process:
// N iotc.Client devices from one enrollment group key, ids from a pattern,
// connected at a limited rate, each sending telemetry from a Template at a
// fixed interval, acknowledging writable properties and answering commands.
// It is the engine of cmd/iotc-fleet and bench/cmdbench.
package fleet

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotc-go/iotc"
)

// ErrConfig is wrapped by every configuration error of New.
var ErrConfig = errors.New("fleet: invalid configuration")

// ErrNoneConnected is returned (wrapped, with the last device's error) by
// Run when every device's Connect failed: the fleet stops at once instead
// of running on with nothing connected.
var ErrNoneConnected = errors.New("fleet: no device could connect")

// Defaults and limits of Config.
const (
	// DefaultIDPattern names devices fleet-00000, fleet-00001, ...
	DefaultIDPattern = "fleet-%05d"
	// DefaultInterval is each device's telemetry interval.
	DefaultInterval = 10 * time.Second
	// DefaultConnectRate is IoT Hub S1's admission of new connections per
	// second per unit.
	DefaultConnectRate = 100
	// DPSRegistrationsPerMinute is the Device Provisioning Service's
	// registration limit per instance (1,000 a minute).
	DPSRegistrationsPerMinute = 1000
	// DefaultMaxConnecting bounds the Connect calls in progress at once.
	DefaultMaxConnecting = 64
	// DefaultConnectTimeout bounds one device's Connect.
	DefaultConnectTimeout = 2 * time.Minute
	// DefaultSendTimeout bounds one SendTelemetry.
	DefaultSendTimeout = 30 * time.Second
	// DefaultCloseTimeout bounds the shutdown of all devices.
	DefaultCloseTimeout = time.Minute
	// MaxDevices is the largest fleet New accepts.
	MaxDevices = 1_000_000
)

// Target is the IoT Central application (or emulator) the devices join.
type Target struct {
	// IDScope is the DPS ID scope. Required.
	IDScope string
	// GroupKey is the symmetric-key enrollment group's key; each device's
	// key is derived from it. Required. Never logged.
	GroupKey string
	// ProvisioningHost is the DPS host; default IoT Central's global one.
	ProvisioningHost string
	// Port is the port of DPS and the hub for the transport; 0 is the
	// transport's default.
	Port int
	// RootCAs verifies the servers; nil is the system roots.
	RootCAs *x509.CertPool
}

// Config configures a Fleet. Zero fields take their defaults.
type Config struct {
	// Devices is how many devices to run, 1 to MaxDevices.
	Devices int
	// IDPattern makes device ids with fmt.Sprintf(IDPattern, i), i from
	// FirstIndex; it needs exactly one integer verb (%d, %05d, %x).
	// Default DefaultIDPattern.
	IDPattern string
	// FirstIndex is the index of the first device. Default 0.
	FirstIndex int
	// Shard and Shards split the fleet across processes or machines: this
	// process runs the devices whose position p (0 to Devices-1) has
	// p % Shards == Shard, so N processes given Shard 0..N-1 and the same
	// Devices run the whole fleet once, with disjoint ids (and credentials,
	// which derive from the ids). Shards 0 or 1 runs every device.
	Shard, Shards int
	// Transport is the protocol of every device. Default iotc.MQTT.
	Transport iotc.Transport
	// Target is where the devices connect.
	Target Target
	// ModelID is announced by every device. Optional.
	ModelID string
	// Template makes the telemetry; nil is DefaultTemplate.
	Template *Template
	// Interval is each device's telemetry period; default DefaultInterval;
	// a negative value sends no telemetry (devices only connect).
	Interval time.Duration
	// ConnectRate is how many devices start connecting per second;
	// default DefaultConnectRate; negative means no limit.
	ConnectRate float64
	// RegistrationRate is how many DPS registrations a minute may start
	// (devices without cached credentials); 0 means no limit (right for the
	// emulator); use DPSRegistrationsPerMinute against Azure.
	RegistrationRate float64
	// MaxConnecting bounds Connect calls in progress; default
	// DefaultMaxConnecting.
	MaxConnecting int
	// ConnectTimeout bounds each device's Connect; default
	// DefaultConnectTimeout. A device that fails to connect is counted and
	// left stopped.
	ConnectTimeout time.Duration
	// CredentialsDir keeps each device's provisioning result (hub and
	// device id, no secret; iotc.CredentialsFile) so that a restart
	// does not register again. Created with mode 0700. Default "": none.
	CredentialsDir string
	// Duration stops the fleet that long after Run started; 0 runs until
	// Run's context ends.
	Duration time.Duration
	// SummaryEvery is the period of the progress and summary lines written
	// to Out; default 1 s.
	SummaryEvery time.Duration
	// Out receives the progress and live summary lines; nil discards.
	Out io.Writer
	// Logger receives connect and send failures (never keys or tokens);
	// nil discards.
	Logger *slog.Logger
	// Extra, when set, is called for every progress and summary line and
	// its text appended (the emulator child's RSS, say).
	Extra func() string
	// OnCommand, when set, is called with every command a device answered
	// (device id, command name), for benches.
	OnCommand func(deviceID, name string)
}

// Fleet is a running (or ready to run) set of simulated devices.
type Fleet struct {
	cfg     Config
	devices []*device
	log     *slog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	stopAll   context.CancelCauseFunc // ends Run early once every device failed
	started   time.Time
	rampTime  atomic.Int64

	attempted, connectFailed, registered atomic.Int64
	// failing counts devices whose last connection attempt failed and
	// that have not connected since; fromCache those that connected with
	// cached credentials (no DPS registration).
	failing, fromCache                atomic.Int64
	lastFailure                       atomic.Pointer[string] // the latest failed attempt's error
	sent, sendErrors, props, commands atomic.Uint64
	sendLat, connectLat               Histogram
	sentAtReady                       atomic.Uint64
	latAtReady                        HistSnapshot // written before ready is closed
}

// device is one simulated device.
type device struct {
	id       string
	client   *iotc.Client
	gen      *Generator
	credFile string
	up       atomic.Bool // connected once and not failed
	failing  atomic.Bool // counted in Fleet.failing
}

var deviceIDRE = regexp.MustCompile(`^[A-Za-z0-9\-.:_]{1,128}$`)

// New checks cfg, builds every device's client (none connects yet) and
// returns the fleet. Errors wrap ErrConfig (or iotc.ErrInvalidConfig from
// the client): Devices out of range, a pattern without one integer verb or
// making an id IoT Hub refuses or the same id twice, a missing ID scope or
// group key, an unusable CredentialsDir.
func New(cfg Config) (*Fleet, error) {
	if cfg.Devices < 1 || cfg.Devices > MaxDevices {
		return nil, fmt.Errorf("%w: devices %d (want 1 to %d)", ErrConfig, cfg.Devices, MaxDevices)
	}
	if cfg.IDPattern == "" {
		cfg.IDPattern = DefaultIDPattern
	}
	if cfg.FirstIndex < 0 {
		return nil, fmt.Errorf("%w: first index %d is negative", ErrConfig, cfg.FirstIndex)
	}
	if cfg.Target.IDScope == "" || cfg.Target.GroupKey == "" {
		return nil, fmt.Errorf("%w: the ID scope and the group key are required", ErrConfig)
	}
	if cfg.Template == nil {
		t, err := ParseTemplate([]byte(DefaultTemplate))
		if err != nil {
			return nil, err
		}
		cfg.Template = t
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	switch {
	case cfg.ConnectRate == 0:
		cfg.ConnectRate = DefaultConnectRate
	case cfg.ConnectRate < 0:
		cfg.ConnectRate = 0
	}
	if cfg.MaxConnecting <= 0 {
		cfg.MaxConnecting = DefaultMaxConnecting
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.SummaryEvery <= 0 {
		cfg.SummaryEvery = time.Second
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Shards < 0 || cfg.Shards > 1 && (cfg.Shard < 0 || cfg.Shard >= cfg.Shards) {
		return nil, fmt.Errorf("%w: shard %d/%d (want 0 to N-1 of N)", ErrConfig, cfg.Shard, cfg.Shards)
	}
	ids, err := deviceIDs(cfg.IDPattern, cfg.FirstIndex, cfg.Devices)
	if err != nil {
		return nil, err
	}
	indexes := make([]int, 0, len(ids))
	for p := range ids {
		if cfg.Shards <= 1 || p%cfg.Shards == cfg.Shard {
			indexes = append(indexes, p)
		}
	}
	if len(indexes) == 0 {
		return nil, fmt.Errorf("%w: shard %d/%d of %d devices holds none", ErrConfig, cfg.Shard, cfg.Shards, cfg.Devices)
	}
	if cfg.CredentialsDir != "" {
		if err := os.MkdirAll(cfg.CredentialsDir, 0o700); err != nil {
			return nil, fmt.Errorf("%w: credentials directory: %w", ErrConfig, err)
		}
	}
	f := &Fleet{cfg: cfg, ready: make(chan struct{}), log: cfg.Logger}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	for _, i := range indexes {
		id := ids[i]
		d := &device{id: id, gen: cfg.Template.NewGenerator(uint64(cfg.FirstIndex+i) + 1)}
		if cfg.CredentialsDir != "" {
			d.credFile = filepath.Join(cfg.CredentialsDir, url.PathEscape(id)+".json")
		}
		c, err := iotc.New(iotc.Config{
			DeviceID:         id,
			IDScope:          cfg.Target.IDScope,
			Credential:       iotc.GroupKey(cfg.Target.GroupKey),
			ModelID:          cfg.ModelID,
			Transport:        cfg.Transport,
			ProvisioningHost: cfg.Target.ProvisioningHost,
			Port:             cfg.Target.Port,
			RootCAs:          cfg.Target.RootCAs,
			CredentialStore:  iotc.CredentialsFile(d.credFile),
			OnStatus:         func(st iotc.Status) { f.status(d, st) },
		})
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", id, err)
		}
		d.client = c
		f.handle(d)
		f.devices = append(f.devices, d)
	}
	return f, nil
}

// deviceIDs expands pattern for n indexes from first.
func deviceIDs(pattern string, first, n int) ([]string, error) {
	verbs := regexp.MustCompile(`%[-+# 0-9]*[a-zA-Z%]`).FindAllString(pattern, -1)
	count := 0
	for _, v := range verbs {
		switch v[len(v)-1] {
		case '%':
		case 'd', 'x', 'X', 'o', 'b':
			count++
		default:
			return nil, fmt.Errorf("%w: id pattern %q: verb %s is not an integer verb", ErrConfig, pattern, v)
		}
	}
	if count != 1 {
		return nil, fmt.Errorf("%w: id pattern %q needs exactly one integer verb such as %%05d", ErrConfig, pattern)
	}
	ids := make([]string, n)
	seen := make(map[string]bool, n)
	for i := range n {
		id := fmt.Sprintf(pattern, first+i)
		if !deviceIDRE.MatchString(id) {
			return nil, fmt.Errorf("%w: device id %q: IoT Hub allows up to 128 letters, digits and - . : _", ErrConfig, id)
		}
		if seen[id] {
			return nil, fmt.Errorf("%w: id pattern %q makes %q twice", ErrConfig, pattern, id)
		}
		seen[id] = true
		ids[i] = id
	}
	return ids, nil
}

// status counts a device as failing from its first failed attempt (a
// refused connection, an unknown host) until it connects, and logs that
// first failure.
func (f *Fleet) status(d *device, st iotc.Status) {
	switch {
	case st.State == iotc.StateConnected:
		if d.failing.CompareAndSwap(true, false) {
			f.failing.Add(-1)
		}
	case st.Err != nil && (st.State == iotc.StateConnecting || st.State == iotc.StateDisconnected && !d.up.Load()):
		text := st.Err.Error()
		f.lastFailure.Store(&text)
		if d.failing.CompareAndSwap(false, true) {
			f.failing.Add(1)
			f.log.Warn("connect attempt failed", "device", d.id, "err", st.Err)
		}
	}
}

// Failing returns how many devices failed their last connection attempt
// and have not connected since, and the latest such failure ("" if none).
func (f *Fleet) Failing() (int, string) {
	last := ""
	if p := f.lastFailure.Load(); p != nil {
		last = *p
	}
	return int(f.failing.Load()), last
}

// handle sets the device's property and command handlers.
func (f *Fleet) handle(d *device) {
	d.client.OnProperty(func(_ context.Context, p iotc.Property) iotc.PropertyAck {
		f.props.Add(1)
		return iotc.PropertyAck{Status: 200, Description: "applied by iotc-fleet"}
	})
	d.client.OnCommand(func(_ context.Context, c iotc.Command) iotc.CommandResponse {
		f.commands.Add(1)
		if f.cfg.OnCommand != nil {
			f.cfg.OnCommand(d.id, c.Name)
		}
		var req any
		if len(c.Payload) > 0 {
			req = json.RawMessage(c.Payload)
		}
		return iotc.CommandResponse{Status: 200, Payload: map[string]any{"device": d.id, "command": c.Name, "request": req}}
	})
}

// DeviceIDs returns the ids of the devices, in ramp order.
func (f *Fleet) DeviceIDs() []string {
	out := make([]string, len(f.devices))
	for i, d := range f.devices {
		out[i] = d.id
	}
	return out
}

// Ready is closed once every device has finished connecting (or failed to).
func (f *Fleet) Ready() <-chan struct{} { return f.ready }

// Sent counts the messages the hub acknowledged so far.
func (f *Fleet) Sent() uint64 { return f.sent.Load() }

// Commands counts the commands the devices answered so far.
func (f *Fleet) Commands() uint64 { return f.commands.Load() }

// Connected counts the devices with an open hub session now.
func (f *Fleet) Connected() int {
	n := 0
	for _, d := range f.devices {
		if d.up.Load() && d.client.IsConnected() {
			n++
		}
	}
	return n
}

// Run connects the devices at the configured rate, runs them until ctx
// ends (or Config.Duration passed), then closes every device and returns
// the report. It returns when every goroutine it started has ended. It
// stops early, with an error wrapping ErrNoneConnected and the last
// device's error, once every device's Connect failed (refused
// credentials, an untrusted server, ConnectTimeout passed); otherwise the
// error is non-nil only when a device could not be closed in time
// (DefaultCloseTimeout), and devices that failed to connect are in the
// report.
// Run may be called once.
func (f *Fleet) Run(ctx context.Context) (Report, error) {
	f.started = time.Now()
	if f.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.cfg.Duration)
		defer cancel()
	}
	ctx, f.stopAll = context.WithCancelCause(ctx)
	defer f.stopAll(nil)
	var devWG, bgWG sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(context.Background())
	var peak atomic.Int64
	bgWG.Go(func() { f.summaries(bgCtx, &peak) })

	connect := NewLimiter(f.cfg.ConnectRate)
	register := NewLimiter(f.cfg.RegistrationRate / 60)
	slots := make(chan struct{}, f.cfg.MaxConnecting)
	launched := 0
launch:
	for _, d := range f.devices {
		if connect.Wait(ctx) != nil {
			break
		}
		if f.needsRegistration(d) {
			if register.Wait(ctx) != nil {
				break
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break launch
		}
		launched++
		devWG.Go(func() { f.runDevice(ctx, d, slots) })
	}
	<-ctx.Done()
	stopAt := time.Now()
	stopBG() // no progress lines while closing
	bgWG.Wait()
	devWG.Wait()
	connected, proc := f.Connected(), readProc()
	closeErr := f.closeAll()
	stopTime := time.Since(stopAt)
	r := f.report(launched, int(max(peak.Load(), int64(connected))), stopAt)
	r.Connected = connected
	r.PeakRSS, r.RSS, r.Heap, r.Goroutines = proc.peakRSS, proc.rss, proc.heap, proc.goroutines
	r.StopTime = stopTime
	if cause := context.Cause(ctx); errors.Is(cause, ErrNoneConnected) {
		return r, errors.Join(cause, closeErr)
	}
	return r, closeErr
}

func (f *Fleet) needsRegistration(d *device) bool {
	if d.credFile == "" {
		return true
	}
	_, err := os.Stat(d.credFile)
	return err != nil
}

// runDevice connects d and sends its telemetry until ctx ends.
func (f *Fleet) runDevice(ctx context.Context, d *device, slots chan struct{}) {
	registers := f.needsRegistration(d)
	cctx, cancel := context.WithTimeout(ctx, f.cfg.ConnectTimeout)
	t0 := time.Now()
	err := d.client.Connect(cctx, nil)
	cancel()
	<-slots
	f.attemptDone()
	if err != nil {
		if ctx.Err() == nil {
			if f.connectFailed.Add(1) == int64(len(f.devices)) {
				f.stopAll(fmt.Errorf("%w: all %d failed; the last: %w", ErrNoneConnected, len(f.devices), err))
			}
			f.log.Warn("connect failed", "device", d.id, "err", err)
		}
		return
	}
	if registers {
		f.registered.Add(1)
	} else {
		f.fromCache.Add(1)
	}
	f.connectLat.Observe(time.Since(t0))
	d.up.Store(true)
	if f.cfg.Interval < 0 {
		<-ctx.Done()
		return
	}
	start := time.Now()
	next := start.Add(rand.N(f.cfg.Interval)) // spread the fleet's sends over the interval
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		body := d.gen.Next(time.Since(start))
		sctx, cancel := context.WithTimeout(ctx, DefaultSendTimeout)
		s := time.Now()
		err := d.client.SendTelemetry(sctx, json.RawMessage(body), nil)
		cancel()
		if err != nil {
			if stopping(ctx, err, time.Since(s)) {
				return
			}
			f.sendErrors.Add(1)
			f.log.Warn("send failed", "device", d.id, "err", err)
		} else {
			f.sent.Add(1)
			f.sendLat.Observe(time.Since(s))
		}
		next = next.Add(f.cfg.Interval)
		if now := time.Now(); next.Before(now) {
			next = now // a late device skips the sends it missed
		}
		timer.Reset(time.Until(next))
	}
}

// stopping reports whether a send that failed with err after took was
// ended by the fleet's stop rather than by a failure: ctx ended, or err is
// a context error the send's own timeout cannot have caused (a deadline
// error can reach the caller a moment before ctx.Err is set).
func stopping(ctx context.Context, err error, took time.Duration) bool {
	return ctx.Err() != nil || errors.Is(err, context.Canceled) ||
		(errors.Is(err, context.DeadlineExceeded) && took < DefaultSendTimeout)
}

func (f *Fleet) attemptDone() {
	if f.attempted.Add(1) == int64(len(f.devices)) {
		f.readyOnce.Do(func() {
			f.rampTime.Store(int64(time.Since(f.started)))
			f.sentAtReady.Store(f.sent.Load())
			f.latAtReady = f.sendLat.Snapshot()
			close(f.ready)
		})
	}
}

// closeAll closes every device, a few at a time.
func (f *Fleet) closeAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCloseTimeout)
	defer cancel()
	work := make(chan *device)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range min(DefaultMaxConnecting, len(f.devices)) {
		wg.Go(func() {
			for d := range work {
				if d.client.Close(ctx) != nil {
					failed.Add(1)
				}
			}
		})
	}
	for _, d := range f.devices {
		work <- d
	}
	close(work)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("fleet: %d devices did not close within %s", n, DefaultCloseTimeout)
	}
	return nil
}

// summaries writes a progress line while ramping and a live summary line
// after, every SummaryEvery, until ctx ends.
func (f *Fleet) summaries(ctx context.Context, peak *atomic.Int64) {
	t := time.NewTicker(f.cfg.SummaryEvery)
	defer t.Stop()
	prevSent, prevAt, prevLat := f.sent.Load(), time.Now(), f.sendLat.Snapshot()
	prevAttempted := int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		conn := f.Connected()
		if int64(conn) > peak.Load() {
			peak.Store(int64(conn))
		}
		sent, lat := f.sent.Load(), f.sendLat.Snapshot()
		dt := now.Sub(prevAt).Seconds()
		window := lat.Sub(prevLat)
		attempted := f.attempted.Load()
		extra := ""
		if n, last := f.Failing(); n > 0 {
			if len(last) > 160 {
				last = last[:160] + "..."
			}
			extra = fmt.Sprintf("  failing %d (last: %s)", n, last)
		}
		if f.cfg.Extra != nil {
			extra += "  " + f.cfg.Extra()
		}
		select {
		case <-f.ready:
			fmt.Fprintf(f.cfg.Out, "connected %d/%d  msgs/s %.0f  errors %d  send p50 %s p99 %s  props %d  cmds %d%s\n",
				conn, len(f.devices), float64(sent-prevSent)/dt, f.sendErrors.Load()+uint64(f.connectFailed.Load()),
				fmtDur(window.Quantile(0.5)), fmtDur(window.Quantile(0.99)), f.props.Load(), f.commands.Load(), extra)
		default:
			fmt.Fprintf(f.cfg.Out, "ramp %d/%d connecting, %d connected (%.0f/s), %d failed  msgs/s %.0f  send p50 %s p99 %s%s\n",
				attempted, len(f.devices), conn, float64(attempted-prevAttempted)/dt, f.connectFailed.Load(),
				float64(sent-prevSent)/dt, fmtDur(window.Quantile(0.5)), fmtDur(window.Quantile(0.99)), extra)
		}
		prevSent, prevAt, prevLat, prevAttempted = sent, now, lat, attempted
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// Report is what a Run did.
type Report struct {
	// Transport is the devices' transport.
	Transport iotc.Transport
	// Devices, Launched, Connected (at the stop) and PeakConnected count
	// devices; ConnectFailed those whose Connect failed; Registered those
	// that registered with DPS, FromCache those that connected with cached
	// credentials.
	Devices, Launched, Connected, PeakConnected, ConnectFailed, Registered, FromCache int
	// RampTime is from Run to every device connected or failed (0 if the
	// run stopped first).
	RampTime time.Duration
	// ConnectLatency is the distribution of Connect durations.
	ConnectLatency HistSnapshot
	// Sent messages were acknowledged by the hub; SendErrors were not.
	Sent, SendErrors uint64
	// SendLatency is the distribution of SendTelemetry durations.
	SendLatency HistSnapshot
	// SteadySendLatency is SendLatency after the ramp (all of it when
	// the ramp did not finish).
	SteadySendLatency HistSnapshot
	// Properties acknowledged and Commands answered.
	Properties, Commands uint64
	// Elapsed is from Run to the stop; StopTime how long closing took.
	Elapsed, StopTime time.Duration
	// MsgsPerSec is the rate of messages sent after the ramp (over the
	// whole run when the ramp did not finish).
	MsgsPerSec float64
	// Process figures at the stop: peak RSS (VmHWM), RSS, heap in use and
	// goroutines (all devices still open).
	PeakRSS, RSS, Heap uint64
	// Goroutines is the process's goroutine count at the stop.
	Goroutines int
}

func (f *Fleet) report(launched, peak int, stopAt time.Time) Report {
	r := Report{
		Transport: f.cfg.Transport, Devices: len(f.devices), Launched: launched, PeakConnected: peak,
		ConnectFailed: int(f.connectFailed.Load()), Registered: int(f.registered.Load()), FromCache: int(f.fromCache.Load()),
		RampTime: time.Duration(f.rampTime.Load()), ConnectLatency: f.connectLat.Snapshot(),
		Sent: f.sent.Load(), SendErrors: f.sendErrors.Load(), SendLatency: f.sendLat.Snapshot(),
		Properties: f.props.Load(), Commands: f.commands.Load(), Elapsed: stopAt.Sub(f.started),
	}
	window, sent := r.Elapsed, r.Sent
	r.SteadySendLatency = r.SendLatency
	if r.RampTime > 0 && r.Elapsed > r.RampTime {
		window, sent = r.Elapsed-r.RampTime, r.Sent-f.sentAtReady.Load()
		r.SteadySendLatency = r.SendLatency.Sub(f.latAtReady)
	}
	if window > 0 {
		r.MsgsPerSec = float64(sent) / window.Seconds()
	}
	return r
}

// WriteTable writes the report as an aligned table.
func (r Report) WriteTable(w io.Writer) {
	rows := [][2]string{
		{"transport", r.Transport.String()},
		{"devices", fmt.Sprint(r.Devices)},
		{"connected at stop", fmt.Sprint(r.Connected)},
		{"peak connected", fmt.Sprint(r.PeakConnected)},
		{"connect failures", fmt.Sprint(r.ConnectFailed)},
		{"registered with DPS", fmt.Sprintf("%d (%d from the credentials cache)", r.Registered, r.FromCache)},
		{"ramp time", rampText(r.RampTime)},
		{"connect p50 / p99", fmtDur(r.ConnectLatency.Quantile(0.5)) + " / " + fmtDur(r.ConnectLatency.Quantile(0.99))},
		{"messages sent", fmt.Sprint(r.Sent)},
		{"send errors", fmt.Sprint(r.SendErrors)},
		{"msgs/s after ramp", fmt.Sprintf("%.1f", r.MsgsPerSec)},
		{"send p50 / p99 / max", fmtDur(r.SendLatency.Quantile(0.5)) + " / " + fmtDur(r.SendLatency.Quantile(0.99)) + " / " + fmtDur(r.SendLatency.Max)},
		{"send p50 / p99 after ramp", fmtDur(r.SteadySendLatency.Quantile(0.5)) + " / " + fmtDur(r.SteadySendLatency.Quantile(0.99))},
		{"properties acked", fmt.Sprint(r.Properties)},
		{"commands answered", fmt.Sprint(r.Commands)},
		{"run time", r.Elapsed.Round(time.Millisecond).String()},
		{"stop time", r.StopTime.Round(time.Millisecond).String()},
		{"process RSS (peak)", fmt.Sprintf("%s (%s)", mib(r.RSS), mib(r.PeakRSS))},
		{"heap in use", mib(r.Heap)},
		{"goroutines", fmt.Sprint(r.Goroutines)},
	}
	width := 0
	for _, row := range rows {
		width = max(width, len(row[0]))
	}
	fmt.Fprintln(w, strings.Repeat("-", width+30))
	for _, row := range rows {
		fmt.Fprintf(w, "%-*s  %s\n", width, row[0], row[1])
	}
	fmt.Fprintln(w, strings.Repeat("-", width+30))
}

func rampText(d time.Duration) string {
	if d == 0 {
		return "not finished"
	}
	return d.Round(time.Millisecond).String()
}

func mib(b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
