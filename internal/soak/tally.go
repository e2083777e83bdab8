package soak

import (
	"regexp"
	"sort"
	"sync"
	"time"
)

// Path is how a message was sent.
type Path int

// The two send paths of a soak device.
const (
	// PathSend is Client.SendTelemetry: acknowledged when it returned nil.
	PathSend Path = iota
	// PathEnqueue is Client.EnqueueTelemetry: acknowledged (accepted)
	// when it returned nil; the client's outbox owes its delivery.
	PathEnqueue
)

// String is "send" or "enqueue".
func (p Path) String() string {
	if p == PathEnqueue {
		return "enqueue"
	}
	return "send"
}

// deviceName matches the soak devices' ids in error texts, so the same
// error of many devices counts as one.
var deviceName = regexp.MustCompile(`"soak-[a-z]+-[0-9]+"`)

type msgKey struct {
	device int
	path   Path
	seq    int
}

// Counts is what happened to the messages of one path.
type Counts struct {
	Sent       int // calls made
	Acked      int // calls that returned nil
	Failed     int // calls that returned an error
	Received   int // distinct messages the emulator received
	Lost       int // acknowledged but never received
	Duplicated int // distinct messages received more than once
	// NewID counts duplicated messages received again with a different
	// message id: at least once allows a resend after a lost
	// acknowledgement, but with the same id, so these are bugs.
	NewID int
	// Extra counts received messages never acknowledged (a failed or
	// timed-out send that reached the hub anyway; at least once allows it).
	Extra int
}

func (c *Counts) add(o Counts) {
	c.Sent += o.Sent
	c.Acked += o.Acked
	c.Failed += o.Failed
	c.Received += o.Received
	c.Lost += o.Lost
	c.Duplicated += o.Duplicated
	c.Extra += o.Extra
	c.NewID += o.NewID
}

// Tally counts every message of a run by (device, path, sequence): what
// was sent and acknowledged on the device side and what the emulator
// received. It is safe for concurrent use.
type Tally struct {
	mu       sync.Mutex
	sent     map[msgKey]bool // true once acknowledged
	failed   map[Path]int
	received map[msgKey]int
	firstID  map[msgKey]string // the message id ($.mid) first received
	newID    map[msgKey]bool   // received again with another message id
	errs     map[string]int

	// Recovery: for each fault, the devices not yet heard from since.
	devices int
	open    []*pendingFault
	done    []Recovery
}

type pendingFault struct {
	kind    string
	at      time.Time
	inject  time.Duration
	waiting map[int]bool
}

// Recovery is how long the fleet took to deliver again after one fault:
// from the injection until every device had a SendTelemetry call that
// started after it acknowledged. Unrecovered faults have Recovered false.
type Recovery struct {
	Kind string
	At   time.Time
	// Inject is how long injecting the fault took (for the kills, one
	// emulator call per device, one after another).
	Inject    time.Duration
	Took      time.Duration
	Recovered bool
}

// NewTally returns an empty tally for devices devices (0..devices-1).
func NewTally(devices int) *Tally {
	return &Tally{
		sent: map[msgKey]bool{}, failed: map[Path]int{}, received: map[msgKey]int{},
		firstID: map[msgKey]string{}, newID: map[msgKey]bool{}, errs: map[string]int{}, devices: devices,
	}
}

// Sent records a call of path p by device d for sequence seq, started at
// start, that returned err.
func (t *Tally) Sent(d int, p Path, seq int, start time.Time, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := msgKey{d, p, seq}
	if err != nil {
		t.sent[k] = false
		t.failed[p]++
		if msg := p.String() + ": " + deviceName.ReplaceAllString(err.Error(), `"soak-<n>"`); len(t.errs) < 20 || t.errs[msg] > 0 {
			t.errs[msg]++
		}
		return
	}
	t.sent[k] = true
	if p != PathSend {
		return
	}
	now := time.Now()
	keep := t.open[:0]
	for _, f := range t.open {
		if start.After(f.at) {
			delete(f.waiting, d)
		}
		if len(f.waiting) == 0 {
			t.done = append(t.done, Recovery{Kind: f.kind, At: f.at, Inject: f.inject, Took: now.Sub(f.at), Recovered: true})
			continue
		}
		keep = append(keep, f)
	}
	t.open = keep
}

// Received records that the emulator received sequence seq of path p
// from device d with message id mid.
func (t *Tally) Received(d int, p Path, seq int, mid string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := msgKey{d, p, seq}
	t.received[k]++
	if first, ok := t.firstID[k]; !ok {
		t.firstID[k] = mid
	} else if first != mid {
		t.newID[k] = true
	}
}

// Fault records a fault of kind injected at at, which took inject to
// inject (for a windowed fault, pass the window's end as at: recovery
// counts from there).
func (t *Tally) Fault(kind string, at time.Time, inject time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := make(map[int]bool, t.devices)
	for d := range t.devices {
		w[d] = true
	}
	t.open = append(t.open, &pendingFault{kind: kind, at: at, inject: inject, waiting: w})
}

// Missing returns how many acknowledged messages the emulator has not
// received yet.
func (t *Tally) Missing() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, ok := range t.sent {
		if ok && t.received[k] == 0 {
			n++
		}
	}
	return n
}

// Snapshot returns the counts so far: total sent, acknowledged, failed
// and received (distinct).
func (t *Tally) Snapshot() (sent, acked, failed, received int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ok := range t.sent {
		sent++
		if ok {
			acked++
		}
	}
	for _, n := range t.failed {
		failed += n
	}
	return sent, acked, failed, len(t.received)
}

// LostMessage names one acknowledged message the emulator never received.
type LostMessage struct {
	Device int
	Path   Path
	Seq    int
}

// Summary is the tally's verdict.
type Summary struct {
	ByPath     map[Path]Counts
	Total      Counts
	Recoveries []Recovery    // every fault, in injection order
	LostSample []LostMessage // up to 20 lost messages
	DupSample  []LostMessage // up to 20 duplicated messages
	Errors     map[string]int
}

// Summarize counts the tally. Faults still open are unrecovered.
func (t *Tally) Summarize() Summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Summary{ByPath: map[Path]Counts{}, Errors: map[string]int{}}
	for _, p := range []Path{PathSend, PathEnqueue} {
		s.ByPath[p] = Counts{}
	}
	get := func(p Path) Counts { return s.ByPath[p] }
	for k, ok := range t.sent {
		c := get(k.path)
		c.Sent++
		if ok {
			c.Acked++
			if t.received[k] == 0 {
				c.Lost++
				if len(s.LostSample) < 20 {
					s.LostSample = append(s.LostSample, LostMessage{k.device, k.path, k.seq})
				}
			}
		} else {
			c.Failed++
		}
		s.ByPath[k.path] = c
	}
	for k, n := range t.received {
		c := get(k.path)
		c.Received++
		if t.newID[k] {
			c.NewID++
		}
		if n > 1 {
			c.Duplicated++
			if len(s.DupSample) < 20 {
				s.DupSample = append(s.DupSample, LostMessage{k.device, k.path, k.seq})
			}
		}
		if !t.sent[k] {
			c.Extra++
		}
		s.ByPath[k.path] = c
	}
	for _, c := range s.ByPath {
		s.Total.add(c)
	}
	s.Recoveries = append(s.Recoveries, t.done...)
	for _, f := range t.open {
		s.Recoveries = append(s.Recoveries, Recovery{Kind: f.kind, At: f.at, Inject: f.inject})
	}
	sort.Slice(s.Recoveries, func(i, j int) bool { return s.Recoveries[i].At.Before(s.Recoveries[j].At) })
	less := func(a, b LostMessage) bool {
		if a.Device != b.Device {
			return a.Device < b.Device
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Seq < b.Seq
	}
	sort.Slice(s.LostSample, func(i, j int) bool { return less(s.LostSample[i], s.LostSample[j]) })
	sort.Slice(s.DupSample, func(i, j int) bool { return less(s.DupSample[i], s.DupSample[j]) })
	for e, n := range t.errs {
		s.Errors[e] = n
	}
	return s
}

// MaxInject returns the longest injection of the faults of kind in rs
// (all when kind is "").
func MaxInject(rs []Recovery, kind string) time.Duration {
	var m time.Duration
	for _, r := range rs {
		if kind == "" || r.Kind == kind {
			m = max(m, r.Inject)
		}
	}
	return m
}

// RecoveryStats returns the p50 and max recovery of the recovered faults
// in rs (of kind, or all when kind is ""), and how many were unrecovered.
func RecoveryStats(rs []Recovery, kind string) (n int, p50, maxd time.Duration, unrecovered int) {
	var ds []time.Duration
	for _, r := range rs {
		if kind != "" && r.Kind != kind {
			continue
		}
		if !r.Recovered {
			unrecovered++
			continue
		}
		ds = append(ds, r.Took)
	}
	if len(ds) == 0 {
		return 0, 0, 0, unrecovered
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return len(ds), ds[(len(ds)-1)/2], ds[len(ds)-1], unrecovered
}
