// Package soak runs a fleet of SDK devices against the emulator for
// minutes while injecting faults, and counts what happened to every
// message: each device sends through Client.SendTelemetry and through
// Client.EnqueueTelemetry, every message carries a sequence property, and
// the emulator's telemetry stream says what arrived. bench/soak is its
// program; the short version runs in go test.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/faultproxy"
)

// The fault kinds of a soak run's mix.
const (
	// FaultKillTCP asks the emulator to kill every device's connection
	// ungracefully (AzIoTHub_FaultOperationType KillTcp, reason "boom").
	FaultKillTCP = "killtcp"
	// FaultGraceful asks the emulator to close every device's connection
	// gracefully (KillTcp, reason "byebye": AMQP close frames; MQTT 3.1.1
	// has no server goodbye, so there it is a socket close too).
	FaultGraceful = "graceful"
	// FaultThrottle throttles every device for Config.ThrottleFor.
	FaultThrottle = "throttle"
	// FaultRestart closes the emulator and starts it again on the same
	// ports with the same data directory (Options.DataDir).
	FaultRestart = "restart"
	// FaultNetCut cuts every TCP connection in the fault proxy between
	// the devices and the emulator (a network failure: a reset, no
	// protocol goodbye).
	FaultNetCut = "netcut"
)

// DefaultMix is the fault rotation when Config.Faults is empty.
var DefaultMix = []string{FaultKillTCP, FaultGraceful, FaultThrottle, FaultRestart, FaultNetCut}

// Config is one soak run over one transport. Zero fields take the
// defaults in brackets.
type Config struct {
	// Transport is the SDK transport [iotc.MQTT, the zero value].
	Transport iotc.Transport
	// Devices is how many devices run [10].
	Devices int
	// Duration is how long the devices send [1 min].
	Duration time.Duration
	// Interval is each device's period on each path: one SendTelemetry
	// and one EnqueueTelemetry per interval [1 s].
	Interval time.Duration
	// FaultEvery is the period of the faults; negative injects none [20 s].
	FaultEvery time.Duration
	// Faults is the rotation of fault kinds [DefaultMix].
	Faults []string
	// ThrottleFor is how long a throttle fault lasts [5 s].
	ThrottleFor time.Duration
	// SendTimeout bounds each SendTelemetry call [30 s].
	SendTimeout time.Duration
	// DrainTimeout bounds the wait at the end for the outboxes to empty
	// and the acknowledged messages to arrive [2 min].
	DrainTimeout time.Duration
	// DataDir is the emulator's data directory; "" uses a temporary one.
	DataDir string
	// OutboxDir, when set, gives every device a durable outbox in
	// OutboxDir/<device id>; "" uses the in-memory outbox.
	OutboxDir string
	// Progress receives a progress line every ProgressEvery; nil prints none.
	Progress io.Writer
	// ProgressEvery is the period of the progress line [10 s].
	ProgressEvery time.Duration
	// Logger receives the emulator's and the clients' logs; nil discards.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Devices <= 0 {
		c.Devices = 10
	}
	if c.Duration <= 0 {
		c.Duration = time.Minute
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.FaultEvery == 0 {
		c.FaultEvery = 20 * time.Second
	}
	if len(c.Faults) == 0 {
		c.Faults = DefaultMix
	}
	if c.ThrottleFor <= 0 {
		c.ThrottleFor = 5 * time.Second
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 30 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 2 * time.Minute
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = 10 * time.Second
	}
	return c
}

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("soak: invalid config")

func (c Config) validate() error {
	switch c.Transport {
	case iotc.MQTT, iotc.MQTTWebSockets, iotc.AMQP, iotc.AMQPWebSockets:
	default:
		return fmt.Errorf("%w: transport %v", ErrConfig, c.Transport)
	}
	for _, f := range c.Faults {
		switch f {
		case FaultKillTCP, FaultGraceful, FaultThrottle, FaultRestart, FaultNetCut:
		default:
			return fmt.Errorf("%w: fault %q (want %s)", ErrConfig, f, strings.Join(DefaultMix, ", "))
		}
	}
	return nil
}

// Report is what one run saw.
type Report struct {
	Transport iotc.Transport
	Devices   int
	Duration  time.Duration // sending time
	Summary
	// Outbox sums the clients' OutboxStats at the end: Delivered,
	// Expired, Rejected, and Left (still waiting when the drain ended).
	OutboxDelivered, OutboxExpired, OutboxRejected uint64
	OutboxLeft                                     int
	// Connects counts connections the clients opened (first ones included).
	Connects int64
	// Restarts counts emulator restarts.
	Restarts int
	// Ended is when the devices stopped sending (zero when the run
	// failed before).
	Ended time.Time
	// DrainTook is how long the end waited for outboxes and stragglers.
	DrainTook time.Duration
	// GoroutinesBefore and GoroutinesAfter are runtime.NumGoroutine
	// before the emulator started and after everything closed; HeapBefore
	// and HeapAfter the live heap (HeapAlloc after a GC) at those moments.
	GoroutinesBefore, GoroutinesAfter int
	HeapBefore, HeapAfter             uint64
}

// Clean reports whether the run lost nothing, failed nothing, received
// something, and received no message twice under different message ids
// (a resend with the same id after a lost acknowledgement is at least
// once, as promised; Duplicated still counts it).
func (r Report) Clean() bool {
	t := r.Total
	return t.Lost == 0 && t.NewID == 0 && t.Failed == 0 && t.Received > 0
}

// Run starts an emulator (with a data directory) and a fault proxy,
// connects cfg.Devices devices through the proxy, lets each send on both
// paths for cfg.Duration while faults are injected, then waits for the
// outboxes to empty and counts. It returns an error only when the set-up
// (emulator, proxy, first connects) or an emulator restart fails, or ctx
// ends; the Report says how the SDK and the emulator did.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Report{}, err
	}
	rep := Report{Transport: cfg.Transport, Devices: cfg.Devices, Duration: cfg.Duration}
	rep.GoroutinesBefore, rep.HeapBefore = runtimeStats()
	r := &runner{cfg: cfg, tally: NewTally(cfg.Devices), index: map[string]int{}}
	err := r.run(ctx, &rep)
	rep.Summary = r.tally.Summarize()
	rep.Restarts = r.restarts
	rep.Connects = r.connects.Load()
	// Let the goroutines of the closed clients and emulator end.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > rep.GoroutinesBefore && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	rep.GoroutinesAfter, rep.HeapAfter = runtimeStats()
	return rep, err
}

func runtimeStats() (int, uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

type runner struct {
	cfg   Config
	tally *Tally
	ids   []string
	index map[string]int // device id -> index

	emuMu    sync.Mutex
	emu      *emulator.Emulator
	opts     emulator.Options
	watchers []*watcher
	restarts int
	faults   atomic.Int64

	connects  atomic.Int64
	connected []atomic.Bool
}

func (r *runner) run(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	dataDir := cfg.DataDir
	if dataDir == "" {
		d, err := os.MkdirTemp("", "iotc-soak-")
		if err != nil {
			return fmt.Errorf("soak: data dir: %w", err)
		}
		defer os.RemoveAll(d)
		dataDir = d
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r.opts = emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1, TelemetryHistory: -1, DataDir: dataDir, Logger: logger}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	emu, err := emulator.Start(sctx, &r.opts)
	cancel()
	if err != nil {
		return fmt.Errorf("soak: start emulator: %w", err)
	}
	// Restarts bind the same ports.
	r.opts.MQTTAddr, r.opts.WebSocketAddr, r.opts.AMQPAddr = emu.MQTTAddr(), emu.WebSocketAddr(), emu.AMQPAddr()
	r.emu = emu
	defer func() { r.closeEmulator() }()

	name := cfg.Transport.String()
	for i := range cfg.Devices {
		id := fmt.Sprintf("soak-%s-%04d", name, i)
		r.ids = append(r.ids, id)
		r.index[id] = i
	}
	r.connected = make([]atomic.Bool, cfg.Devices)
	r.startWatchers()

	target := emu.MQTTAddr()
	switch cfg.Transport {
	case iotc.AMQP:
		target = emu.AMQPAddr()
	case iotc.MQTTWebSockets, iotc.AMQPWebSockets:
		target = emu.WebSocketAddr()
	}
	proxy, err := faultproxy.Start(target)
	if err != nil {
		return fmt.Errorf("soak: start proxy: %w", err)
	}
	defer proxy.Close()

	clients := make([]*iotc.Client, cfg.Devices)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range clients {
			if c != nil {
				wg.Go(func() { _ = c.Close(context.Background()) })
			}
		}
		wg.Wait()
	}()
	for i, id := range r.ids {
		outboxDir := ""
		if cfg.OutboxDir != "" {
			outboxDir = filepath.Join(cfg.OutboxDir, id)
		}
		c, err := iotc.New(iotc.Config{
			DeviceID:         id,
			IDScope:          emu.IDScope(),
			Credential:       iotc.GroupKey(emu.GroupKey()),
			ProvisioningHost: "localhost",
			Transport:        cfg.Transport,
			Port:             proxy.Port(),
			RootCAs:          emu.CAPool(),
			Backoff:          iotc.Backoff{Base: 200 * time.Millisecond, Cap: 2 * time.Second},
			Outbox:           iotc.OutboxConfig{Dir: outboxDir},
			Logger:           cfg.Logger,
			OnStatus: func(s iotc.Status) {
				up := s.State == iotc.StateConnected
				if up && !r.connected[i].Load() {
					r.connects.Add(1)
				}
				r.connected[i].Store(up)
			},
		})
		if err != nil {
			return fmt.Errorf("soak: device %s: %w", id, err)
		}
		clients[i] = c
	}
	if err := connectAll(ctx, clients); err != nil {
		return err
	}

	runCtx, stopRun := context.WithTimeout(ctx, cfg.Duration)
	defer stopRun()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { r.sendLoop(runCtx, i, c, PathSend) })
		wg.Go(func() { r.sendLoop(runCtx, i, c, PathEnqueue) })
	}
	faultErr := make(chan error, 1)
	wg.Go(func() { faultErr <- r.faultLoop(runCtx, proxy) })
	start := time.Now()
	progressDone := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Go(func() { r.progressLoop(progressDone, start, clients) })
	wg.Wait()
	if err := <-faultErr; err != nil {
		close(progressDone)
		pwg.Wait()
		return err
	}
	if err := ctx.Err(); err != nil {
		close(progressDone)
		pwg.Wait()
		return err
	}

	// Drain: every outbox empty and every acknowledged message received.
	drainStart := time.Now()
	rep.Ended = drainStart
	deadline := drainStart.Add(cfg.DrainTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if outboxLeft(clients) == 0 && r.tally.Missing() == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(progressDone)
	pwg.Wait()
	for _, c := range clients {
		st := c.OutboxStats()
		rep.OutboxDelivered += st.Delivered
		rep.OutboxExpired += st.Expired
		rep.OutboxRejected += st.Rejected
		rep.OutboxLeft += st.Messages
	}
	rep.DrainTook = time.Since(drainStart)
	return nil
}

func outboxLeft(clients []*iotc.Client) int {
	n := 0
	for _, c := range clients {
		n += c.OutboxStats().Messages
	}
	return n
}

// connectAll connects the clients, 16 at a time.
func connectAll(ctx context.Context, clients []*iotc.Client) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sem := make(chan struct{}, 16)
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = c.Connect(cctx, nil)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("soak: connect: %w", err)
		}
	}
	return nil
}

func (r *runner) sendLoop(ctx context.Context, i int, c *iotc.Client, p Path) {
	// Spread the devices over the interval.
	select {
	case <-ctx.Done():
		return
	case <-time.After(rand.N(r.cfg.Interval)):
	}
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	tag := "s"
	if p == PathEnqueue {
		tag = "e"
	}
	for seq := 1; ; seq++ {
		props := &iotc.TelemetryOptions{Properties: map[string]string{"seq": tag + strconv.Itoa(seq)}}
		body := map[string]any{"seq": seq, "path": p.String()}
		start := time.Now()
		var err error
		if p == PathSend {
			sctx, cancel := context.WithTimeout(context.Background(), r.cfg.SendTimeout)
			err = c.SendTelemetry(sctx, body, props)
			cancel()
		} else {
			err = c.EnqueueTelemetry(context.Background(), body, props)
		}
		r.tally.Sent(i, p, seq, start, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *runner) faultLoop(ctx context.Context, proxy *faultproxy.Proxy) error {
	if r.cfg.FaultEvery < 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(r.cfg.FaultEvery)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		kind := r.cfg.Faults[n%len(r.cfg.Faults)]
		at := time.Now()
		if err := r.inject(ctx, kind, proxy); err != nil {
			return err
		}
		took := time.Since(at)
		if kind == FaultThrottle {
			at = at.Add(r.cfg.ThrottleFor) // recovery counts from the window's end
		}
		r.tally.Fault(kind, at, took)
		r.faults.Add(1)
	}
}

func (r *runner) inject(ctx context.Context, kind string, proxy *faultproxy.Proxy) error {
	r.emuMu.Lock()
	defer r.emuMu.Unlock()
	switch kind {
	case FaultKillTCP, FaultGraceful:
		for _, id := range r.ids {
			// ErrNotFound cannot happen (the devices exist); a device
			// between connections simply has nothing to kill.
			_ = r.emu.InjectFault(id, emulator.Fault{Kind: emulator.FaultKillTCP, Graceful: kind == FaultGraceful})
		}
	case FaultThrottle:
		if err := r.emu.Throttle("", r.cfg.ThrottleFor); err != nil {
			return fmt.Errorf("soak: throttle: %w", err)
		}
	case FaultNetCut:
		proxy.Kill()
	case FaultRestart:
		return r.restartLocked(ctx)
	}
	return nil
}

// restartLocked closes the emulator and starts it again on the same ports
// and data directory; a port still held is retried for 10 s.
func (r *runner) restartLocked(ctx context.Context) error {
	if err := r.emu.Close(); err != nil {
		return fmt.Errorf("soak: close emulator for restart: %w", err)
	}
	r.stopWatchersLocked()
	r.restarts++
	deadline := time.Now().Add(10 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		opts := r.opts
		emu, err := emulator.Start(sctx, &opts)
		cancel()
		if err == nil {
			r.emu = emu
			r.startWatchersLocked()
			return nil
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) || time.Now().After(deadline) || ctx.Err() != nil {
			r.emu = nil
			return fmt.Errorf("soak: restart emulator: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *runner) closeEmulator() {
	r.emuMu.Lock()
	defer r.emuMu.Unlock()
	if r.emu != nil {
		_ = r.emu.Close()
	}
	r.stopWatchersLocked()
}

// watcher reads one device's telemetry stream from one emulator.
type watcher struct {
	stop  func()
	quit  chan struct{}
	ended chan struct{}
}

func (r *runner) startWatchers() {
	r.emuMu.Lock()
	defer r.emuMu.Unlock()
	r.startWatchersLocked()
}

func (r *runner) startWatchersLocked() {
	for i, id := range r.ids {
		msgs, stop := r.emu.WatchTelemetry(id)
		w := &watcher{stop: stop, quit: make(chan struct{}), ended: make(chan struct{})}
		r.watchers = append(r.watchers, w)
		go func() {
			defer close(w.ended)
			for {
				select {
				case m := <-msgs:
					r.record(i, m)
				case <-w.quit:
					for { // what the stream already holds
						select {
						case m := <-msgs:
							r.record(i, m)
						default:
							return
						}
					}
				}
			}
		}()
	}
}

func (r *runner) stopWatchersLocked() {
	for _, w := range r.watchers {
		close(w.quit)
		<-w.ended
		w.stop()
	}
	r.watchers = nil
}

func (r *runner) record(i int, m emulator.Telemetry) {
	p, seq, ok := ParseSeq(m.Properties["seq"])
	if ok {
		r.tally.Received(i, p, seq, m.MessageID)
	}
}

// ParseSeq reads a message's "seq" property: "s<n>" for SendTelemetry,
// "e<n>" for EnqueueTelemetry.
func ParseSeq(v string) (Path, int, bool) {
	if len(v) < 2 {
		return 0, 0, false
	}
	var p Path
	switch v[0] {
	case 's':
		p = PathSend
	case 'e':
		p = PathEnqueue
	default:
		return 0, 0, false
	}
	n, err := strconv.Atoi(v[1:])
	if err != nil || n <= 0 {
		return 0, 0, false
	}
	return p, n, true
}

func (r *runner) progressLoop(done <-chan struct{}, start time.Time, clients []*iotc.Client) {
	if r.cfg.Progress == nil {
		return
	}
	t := time.NewTicker(r.cfg.ProgressEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		sent, acked, failed, received := r.tally.Snapshot()
		up := 0
		for i := range r.connected {
			if r.connected[i].Load() {
				up++
			}
		}
		r.emuMu.Lock()
		restarts := r.restarts
		r.emuMu.Unlock()
		fmt.Fprintf(r.cfg.Progress, "[%s] %v/%v sent=%d acked=%d failed=%d received=%d outbox=%d connected=%d/%d faults=%d restarts=%d goroutines=%d\n",
			r.cfg.Transport, time.Since(start).Round(time.Second), r.cfg.Duration, sent, acked, failed, received,
			outboxLeft(clients), up, len(clients), r.faults.Load(), restarts, runtime.NumGoroutine())
	}
}
