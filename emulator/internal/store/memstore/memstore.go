// Package memstore is the in-memory adapter of core.Store: what an
// emulator without a data directory keeps, and what tests use. It has the
// semantics of the SQLite adapter (sqlitestore) without its durability:
// Apply commits at once, Load returns the committed records in the same
// order.
package memstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/store/internal/storecheck"
)

// ErrClosed is reported (on the channel of Apply, and by Load) by a closed
// store; it matches core.ErrStore.
var ErrClosed = storecheck.ErrClosed

// ErrInvalid is reported (wrapped, with core.ErrStore) on the channel of
// Apply for a change the store cannot keep (an unknown kind or op, a
// missing identity, a document that is not JSON); nothing of that Apply
// call is applied. It matches core.ErrStore.
var ErrInvalid = storecheck.ErrInvalid

// errNotClosed is reported by Reopen on a store still open.
var errNotClosed error = storecheck.Error("emulator: state store: reopen of a store still open")

// done is the channel Apply returns for a committed unit: closed, so a
// receive yields nil at once, and shared, so Apply allocates nothing for it.
var done = func() chan error { c := make(chan error); close(c); return c }()

// Store is an in-memory core.Store. The zero value is not usable; call New.
// It is safe for concurrent use.
type Store struct {
	mu     sync.Mutex
	closed bool
	stats  core.StoreStats
	// plain holds the unsequenced kinds: kind, key -> doc.
	plain map[core.Kind]map[string][]byte
	// c2d is device -> message id -> entry.
	c2d map[string]map[string]c2dEntry
	// seqd holds KindTelemetry and KindCommand: kind, device -> log.
	seqd map[core.Kind]map[string]*seqLog
}

type c2dEntry struct {
	seq int64
	doc []byte
}

// seqLog is one device's history of one kind, sorted by seq.
type seqLog struct {
	entries []seqEntry
}

type seqEntry struct {
	seq int64
	doc []byte
}

var _ core.Store = (*Store)(nil)

// New returns an empty, open store.
func New() *Store {
	return &Store{
		plain: map[core.Kind]map[string][]byte{},
		c2d:   map[string]map[string]c2dEntry{},
		seqd:  map[core.Kind]map[string]*seqLog{},
	}
}

// Reopen returns a new open store holding everything s committed, as an
// emulator restarted on s would find it (tests use it for a restart without
// a disk). s must be closed first; otherwise Reopen returns an error
// wrapping core.ErrStore.
func (s *Store) Reopen() (*Store, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		return nil, errNotClosed
	}
	n := New()
	for _, r := range s.records() {
		n.put(r)
	}
	return n, nil
}

// Load returns every committed record in the order of core.Store: the kinds
// in the order meta, group, device, template, cert, c2d, telemetry, command;
// each unsequenced kind by Key; c2d by Device, then Seq, then Key; telemetry
// and command by Device, then Seq (strings compare bytewise, as SQLite's
// BINARY collation does). The documents are copies. A closed store returns
// ErrClosed.
func (s *Store) Load(ctx context.Context) ([]core.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: load: %w", core.ErrStore, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	recs := s.records()
	for i := range recs {
		recs[i].Doc = slices.Clone(recs[i].Doc)
	}
	return recs, nil
}

// records lists the records in Load order, sharing their documents; s.mu is held.
func (s *Store) records() []core.Record {
	var out []core.Record
	for _, k := range storecheck.Kinds {
		switch k {
		case core.KindC2D:
			for _, dev := range sortedKeys(s.c2d) {
				q := s.c2d[dev]
				start := len(out)
				for id, e := range q {
					out = append(out, core.Record{Kind: k, Device: dev, Key: id, Seq: e.seq, Doc: e.doc})
				}
				part := out[start:]
				sort.Slice(part, func(i, j int) bool {
					if c := cmp.Compare(part[i].Seq, part[j].Seq); c != 0 {
						return c < 0
					}
					return part[i].Key < part[j].Key
				})
			}
		case core.KindTelemetry, core.KindCommand, core.KindEvent:
			logs := s.seqd[k]
			for _, dev := range sortedKeys(logs) {
				for _, e := range logs[dev].entries {
					out = append(out, core.Record{Kind: k, Device: dev, Seq: e.seq, Doc: e.doc})
				}
			}
		default:
			m := s.plain[k]
			for _, key := range sortedKeys(m) {
				out = append(out, core.Record{Kind: k, Key: key, Doc: m[key]})
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Apply commits changes at once, as one unit, and returns a channel that
// yields nil (it is closed). A change the store cannot keep makes the whole
// unit fail with ErrInvalid, a closed store with ErrClosed; the channel then
// carries that error and nothing of the unit is applied. Apply copies the
// documents: the caller may reuse changes once it returns.
func (s *Store) Apply(changes []core.Change) <-chan error {
	if err := storecheck.Unit(changes); err != nil {
		return failed(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return failed(ErrClosed)
	}
	for _, c := range changes {
		r := c.Record
		switch c.Op {
		case core.OpPut:
			r.Doc = slices.Clone(r.Doc)
			s.put(r)
		case core.OpDelete:
			s.delete(r)
		case core.OpTrim:
			s.trim(r)
		case core.OpDeleteDevice:
			s.deleteDevice(r.Key)
		}
	}
	s.stats.Commits++
	s.stats.Units++
	s.stats.Changes += uint64(len(changes))
	s.stats.MaxUnits = 1
	return done
}

func failed(err error) <-chan error {
	c := make(chan error, 1)
	c <- err
	return c
}

// put stores r, whose Doc it keeps; s.mu is held.
func (s *Store) put(r core.Record) {
	switch r.Kind {
	case core.KindC2D:
		q := s.c2d[r.Device]
		if q == nil {
			q = map[string]c2dEntry{}
			s.c2d[r.Device] = q
		}
		q[r.Key] = c2dEntry{seq: r.Seq, doc: r.Doc}
	case core.KindTelemetry, core.KindCommand, core.KindEvent:
		logs := s.seqd[r.Kind]
		if logs == nil {
			logs = map[string]*seqLog{}
			s.seqd[r.Kind] = logs
		}
		l := logs[r.Device]
		if l == nil {
			l = &seqLog{}
			logs[r.Device] = l
		}
		l.put(r.Seq, r.Doc)
	default:
		m := s.plain[r.Kind]
		if m == nil {
			m = map[string][]byte{}
			s.plain[r.Kind] = m
		}
		m[r.Key] = r.Doc
	}
}

// delete removes the record with the identity of r; s.mu is held.
func (s *Store) delete(r core.Record) {
	switch r.Kind {
	case core.KindC2D:
		if q := s.c2d[r.Device]; q != nil {
			delete(q, r.Key)
			if len(q) == 0 {
				delete(s.c2d, r.Device)
			}
		}
	case core.KindTelemetry, core.KindCommand, core.KindEvent:
		logs := s.seqd[r.Kind]
		if l := logs[r.Device]; l != nil {
			l.delete(r.Seq)
			if len(l.entries) == 0 {
				delete(logs, r.Device)
			}
		}
	default:
		delete(s.plain[r.Kind], r.Key)
	}
}

// trim removes r.Kind's records of r.Device up to r.Seq; s.mu is held.
func (s *Store) trim(r core.Record) {
	if r.Kind == core.KindC2D {
		q := s.c2d[r.Device]
		for id, e := range q {
			if e.seq <= r.Seq {
				delete(q, id)
			}
		}
		if q != nil && len(q) == 0 {
			delete(s.c2d, r.Device)
		}
		return
	}
	logs := s.seqd[r.Kind]
	if l := logs[r.Device]; l != nil {
		l.trim(r.Seq)
		if len(l.entries) == 0 {
			delete(logs, r.Device)
		}
	}
}

// deleteDevice removes device id and what it owns; s.mu is held.
func (s *Store) deleteDevice(id string) {
	delete(s.plain[core.KindDevice], id)
	delete(s.c2d, id)
	for k, logs := range s.seqd {
		if k != core.KindEvent { // events outlive their device
			delete(logs, id)
		}
	}
}

// search returns where seq is or would be in l.
func (l *seqLog) search(seq int64) (int, bool) {
	return slices.BinarySearchFunc(l.entries, seq, func(e seqEntry, t int64) int { return cmp.Compare(e.seq, t) })
}

func (l *seqLog) put(seq int64, doc []byte) {
	if n := len(l.entries); n == 0 || l.entries[n-1].seq < seq {
		l.entries = append(l.entries, seqEntry{seq, doc}) // the usual case: a new newest
		return
	}
	i, found := l.search(seq)
	if found {
		l.entries[i].doc = doc
		return
	}
	l.entries = slices.Insert(l.entries, i, seqEntry{seq, doc})
}

func (l *seqLog) delete(seq int64) {
	if i, found := l.search(seq); found {
		l.entries = slices.Delete(l.entries, i, i+1)
	}
}

// trim drops the entries up to seq. The dropped prefix is released at once
// when it is most of the slice, so a bounded history trimmed one at a time
// keeps about twice its bound in memory.
func (l *seqLog) trim(seq int64) {
	i, found := l.search(seq)
	if found {
		i++
	}
	if i == 0 {
		return
	}
	clear(l.entries[:i])
	l.entries = l.entries[i:]
	if cap(l.entries) > 2*len(l.entries)+16 {
		l.entries = slices.Clone(l.entries)
	}
}

// Stats reports the commits so far: one per Apply that succeeded, so
// Commits equals Units and MaxUnits is 1 once anything was committed.
func (s *Store) Stats() core.StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Close closes the store: everything applied is already committed; later
// Apply and Load calls fail with ErrClosed. Closing again does nothing. It
// returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
