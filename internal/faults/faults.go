// Package faults runs the SDK against the emulator under network and
// service faults and counts what happened to every message: the short
// version runs in go test, the long one in bench/faultbench.
//
// Clients connect through a faultproxy, so killing every connection is a
// network failure, and the emulator is asked to drop devices and expire
// tokens. Every message carries a sequence number; the emulator's
// telemetry stream says what arrived.
package faults

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/faultproxy"
)

// Config is one fault run. Zero fields take the defaults in brackets.
type Config struct {
	// Senders is how many goroutines send concurrently [1].
	Senders int
	// Rate is the total send rate, messages per second [150].
	Rate float64
	// Duration is how long the senders send [20 s].
	Duration time.Duration
	// KillEvery cuts every connection through the proxy at this period; 0
	// never does.
	KillEvery time.Duration
	// DisconnectEvery asks the emulator to drop the device at this
	// period; 0 never does.
	DisconnectEvery time.Duration
	// TokenTTL is the client's SAS lifetime [1 h]; 10 s renews every 8 s.
	TokenTTL time.Duration
	// SendTimeout is each send's context [5 s].
	SendTimeout time.Duration
	// Transport is the SDK transport [iotc.MQTT]; it must be a TCP one the
	// proxy can carry (MQTT or AMQP).
	Transport iotc.Transport
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
}

// Result counts what happened to the messages of one run.
type Result struct {
	Sent       int // SendTelemetry calls
	Acked      int // calls that returned nil
	Failed     int // calls that returned an error
	Received   int // distinct messages the emulator received
	Lost       int // acknowledged but never received
	Duplicated int // received more than once (at least once allows it)
	Faults     int // faults injected
	// Reconnects counts connections the client opened after the first.
	Reconnects int
	// MaxRecovery is the longest time from a fault to the next connection.
	MaxRecovery time.Duration
	// Unrecovered counts faults no connection followed (the last fault
	// may fall too close to the end of the run).
	Unrecovered int
	// MaxOverrun is the longest time a send outlived its context (0 or
	// less: none did).
	MaxOverrun time.Duration
	// CloseTime is how long Client.Close took at the end.
	CloseTime time.Duration
	// Errors holds the first distinct error texts of failed sends.
	Errors []string
}

func (r Result) String() string {
	return fmt.Sprintf("sent=%d acked=%d failed=%d received=%d lost=%d duplicated=%d faults=%d reconnects=%d max_recovery=%v unrecovered=%d max_ctx_overrun=%v close=%v",
		r.Sent, r.Acked, r.Failed, r.Received, r.Lost, r.Duplicated, r.Faults, r.Reconnects, r.MaxRecovery.Round(time.Millisecond), r.Unrecovered, max(r.MaxOverrun, 0).Round(time.Millisecond), r.CloseTime.Round(time.Millisecond))
}

func (c Config) withDefaults() Config {
	if c.Senders <= 0 {
		c.Senders = 1
	}
	if c.Rate <= 0 {
		c.Rate = 150
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 5 * time.Second
	}
	return c
}

// Run starts an emulator and a proxy, connects one device through it,
// sends while injecting the faults, then waits for the stragglers and
// counts. It fails only when the set-up fails; the counts say how the SDK
// did.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	emu, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", WebSocketAddr: "-", AMQPAddr: "127.0.0.1:0", RetryAfter: -1})
	if err != nil {
		return Result{}, fmt.Errorf("start emulator: %w", err)
	}
	defer emu.Close()
	target := emu.MQTTAddr()
	if cfg.Transport == iotc.AMQP {
		target = emu.AMQPAddr()
	}
	proxy, err := faultproxy.Start(target)
	if err != nil {
		return Result{}, fmt.Errorf("start proxy: %w", err)
	}
	defer proxy.Close()

	const id = "fault-device"
	var connects atomic.Int64
	var upMu sync.Mutex
	var upTimes []time.Time // when each connection opened
	client, err := iotc.New(iotc.Config{
		DeviceID:         id,
		IDScope:          emu.IDScope(),
		Credential:       iotc.GroupKey(emu.GroupKey()),
		ProvisioningHost: "localhost",
		Transport:        cfg.Transport,
		Port:             proxy.Port(),
		RootCAs:          emu.CAPool(),
		TokenTTL:         cfg.TokenTTL,
		Logger:           cfg.Logger,
		OnStatus: func(s iotc.Status) {
			if s.State == iotc.StateConnected && s.Reason == iotc.ReasonConnectionOK {
				connects.Add(1)
				upMu.Lock()
				upTimes = append(upTimes, time.Now())
				upMu.Unlock()
			}
		},
	})
	if err != nil {
		return Result{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = client.Connect(cctx, nil)
	cancel()
	if err != nil {
		_ = client.Close(context.Background())
		return Result{}, fmt.Errorf("connect: %w", err)
	}

	// What the emulator receives, by sequence number.
	got := map[int]int{}
	var gotMu sync.Mutex
	watch, stopWatch := emu.WatchTelemetry(id)
	watchDone := make(chan struct{})
	stopReading := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			select {
			case m := <-watch:
				if n, err := strconv.Atoi(m.Properties["seq"]); err == nil {
					gotMu.Lock()
					got[n]++
					gotMu.Unlock()
				}
			case <-stopReading:
				return
			}
		}
	}()

	var (
		res      Result
		resMu    sync.Mutex
		seq      atomic.Int64
		acked    = map[int]bool{}
		faultsAt []time.Time
		errSeen  = map[string]bool{}
	)
	runCtx, stopRun := context.WithTimeout(ctx, cfg.Duration)
	defer stopRun()

	// Faults.
	var fwg sync.WaitGroup
	inject := func(every time.Duration, fault func()) {
		if every <= 0 {
			return
		}
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-t.C:
					fault()
					resMu.Lock()
					res.Faults++
					faultsAt = append(faultsAt, time.Now())
					resMu.Unlock()
				}
			}
		}()
	}
	inject(cfg.KillEvery, func() { proxy.Kill() })
	inject(cfg.DisconnectEvery, func() { _ = emu.DisconnectDevice(id) })

	// Senders, each at Rate/Senders.
	interval := time.Duration(float64(time.Second) * float64(cfg.Senders) / cfg.Rate)
	var swg sync.WaitGroup
	for range cfg.Senders {
		swg.Add(1)
		go func() {
			defer swg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-t.C:
				}
				n := int(seq.Add(1))
				start := time.Now()
				sctx, cancel := context.WithTimeout(context.Background(), cfg.SendTimeout)
				err := client.SendTelemetry(sctx, map[string]any{"n": n}, &iotc.TelemetryOptions{Properties: map[string]string{"seq": strconv.Itoa(n)}})
				cancel()
				took := time.Since(start)
				resMu.Lock()
				res.Sent++
				res.MaxOverrun = max(res.MaxOverrun, took-cfg.SendTimeout)
				if err == nil {
					res.Acked++
					acked[n] = true
				} else {
					res.Failed++
					if msg := err.Error(); !errSeen[msg] && len(res.Errors) < 10 {
						errSeen[msg] = true
						res.Errors = append(res.Errors, msg)
					}
				}
				resMu.Unlock()
			}
		}()
	}
	swg.Wait()
	fwg.Wait()
	closeStart := time.Now()
	_ = client.Close(context.Background())
	res.CloseTime = time.Since(closeStart)

	// Give the emulator's stream a moment to deliver the last messages:
	// wait until every acknowledged message arrived or 5 s passed.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		gotMu.Lock()
		missing := 0
		for n := range acked {
			if got[n] == 0 {
				missing++
			}
		}
		gotMu.Unlock()
		if missing == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stopReading)
	<-watchDone
	stopWatch()

	gotMu.Lock()
	for n, k := range got {
		res.Received++
		if k > 1 {
			res.Duplicated++
		}
		_ = n
	}
	for n := range acked {
		if got[n] == 0 {
			res.Lost++
		}
	}
	gotMu.Unlock()
	res.Reconnects = max(int(connects.Load())-1, 0)
	upMu.Lock()
	sort.Slice(upTimes, func(i, j int) bool { return upTimes[i].Before(upTimes[j]) })
	for _, f := range faultsAt {
		i := sort.Search(len(upTimes), func(i int) bool { return upTimes[i].After(f) })
		if i < len(upTimes) {
			res.MaxRecovery = max(res.MaxRecovery, upTimes[i].Sub(f))
		} else {
			res.Unrecovered++
		}
	}
	upMu.Unlock()
	return res, nil
}

// ErrLossy is what Check returns for a run that lost or failed messages.
var ErrLossy = errors.New("faults: messages were lost or failed")

// Check returns an error wrapping ErrLossy when r lost, failed or never
// received anything.
func (r Result) Check() error {
	if r.Lost > 0 || r.Failed > 0 || r.Received == 0 || r.Acked == 0 {
		return fmt.Errorf("%w: %v; errors: %q", ErrLossy, r, r.Errors)
	}
	return nil
}
