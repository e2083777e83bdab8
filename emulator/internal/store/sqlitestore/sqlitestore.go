// Package sqlitestore is the durable adapter of core.Store: one SQLite
// database file (through modernc.org/sqlite, pure Go, no cgo) that a user
// can open with the sqlite3 shell.
//
// # Schema
//
// One table per kind of record, each document kept as JSON text so
// json_extract works in the shell:
//
//	meta(key, doc)              KindMeta; PRIMARY KEY key (e.g. 'idScope')
//	groups(id, doc)             KindGroup; PRIMARY KEY id
//	devices(id, doc)            KindDevice with its twin; PRIMARY KEY id
//	templates(id, doc)          KindTemplate; PRIMARY KEY id
//	certs(key, doc)             KindCert; PRIMARY KEY key ('group/thumbprint')
//	c2d(device, id, seq, doc)   KindC2D; PRIMARY KEY (device, id), INDEX c2d_queue (device, seq)
//	telemetry(seq, device, doc) KindTelemetry; INTEGER PRIMARY KEY seq
//	commands(seq, device, doc)  KindCommand; INTEGER PRIMARY KEY seq
//	events(stream, seq, doc)    KindEvent (Device is the stream); PRIMARY KEY (stream, seq) (version 2)
//
// telemetry and commands are keyed by their number alone (the model
// numbers each kind in one sequence across devices), so their rows append
// at the end of one b-tree: an index by device would spread every commit's
// rows over as many index pages as devices (about 40 % more CPU per message
// at 100 devices). Trimming or deleting a device's rows scans the table;
// the model deletes the records its histories drop one by one. The schema version is
// PRAGMA user_version (SchemaVersion) and PRAGMA application_id marks the
// file as an emulator store: Open migrates an older database and refuses,
// without changing the file, a newer one or another application's.
//
// # Durability
//
// The database runs in WAL mode. With Options.Synchronous SyncNormal (the
// default) a commit writes the WAL but does not fsync it: a committed
// transaction survives the emulator process being killed (kill -9: the
// data is in the operating system's cache) but the last commits may be
// lost, the file staying consistent, if the machine loses power. SyncFull
// fsyncs the WAL on every commit and survives power loss too, at the cost
// of one fsync per group. SyncNormal is the default because what the
// emulator promises is that a kill of the emulator loses nothing it
// acknowledged; an fsync per group would add its latency (0.15 ms here,
// milliseconds on many laptop disks) to every acknowledgement to guard
// against power loss, which a development emulator need not survive.
//
// # Group commit
//
// Apply never waits for the disk: it queues the unit and returns a buffered
// channel. One writer goroutine takes every unit queued (up to
// Options.MaxGroupUnits units or Options.MaxGroupBytes bytes of documents),
// runs one transaction for the group, commits it, then sends the result to
// the channel of each unit. Units queued while a commit runs form the next
// group. While the store is busy (the last group carried more than one
// unit) the writer first lets the group gather for Options.GroupDelay
// (default 0.5 ms), so that a unit waits for at most the commit running
// when it was queued, GroupDelay and its own commit, as long as fewer than
// MaxGroupUnits units are queued ahead of it; an idle store commits a lone
// unit at once. On the shared 2-core test
// machine a lone unit commits in 30-40 µs with SyncNormal (190 µs with
// SyncFull), a group of 100 telemetry units in about 0.5 ms, so a full
// group of 1024 in a few milliseconds. BenchmarkApplyTelemetry reports the
// group sizes: at 100 units in flight the mean group is 5-14 units with
// SyncNormal (the largest 100) and about 50 with SyncFull.
//
// Durability from outside: TestKillNineLosesNothingAcknowledged kills a
// child process applying units from 32 goroutines with SIGKILL and finds
// every unit it acknowledged, each whole, in the reopened file.
//
// While the emulator runs, the sqlite3 shell can read the file (WAL lets a
// reader in beside the writer); a shell that writes holds up the writer
// (for up to 10 s, then the groups fail with core.ErrStore). Two stores on
// one file are not prevented here: each would commit over the other's
// state.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/store/internal/storecheck"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// ErrClosed is reported (on the channel of Apply, and by Load) by a closed
// store; it matches core.ErrStore.
var ErrClosed = storecheck.ErrClosed

// ErrInvalid is reported (wrapped, with core.ErrStore) on the channel of
// Apply for a change the store cannot keep (an unknown kind or op, a
// missing identity, a document that is not JSON); nothing of that Apply
// call is applied. It matches core.ErrStore.
var ErrInvalid = storecheck.ErrInvalid

// ErrSchemaVersion is reported (wrapped) by Open for a database written by
// a newer emulator (a schema version above SchemaVersion); the file is left
// untouched. It matches core.ErrStore.
var ErrSchemaVersion error = storecheck.Error("database schema is newer than this emulator")

// ErrNotStore is reported (wrapped) by Open for an SQLite database that is
// not an emulator store (another application's, or tables without a schema
// version); the file is left untouched. It matches core.ErrStore.
var ErrNotStore error = storecheck.Error("database is not an emulator store")

// Synchronous says how hard a commit pushes to the disk (SQLite's PRAGMA
// synchronous in WAL mode).
type Synchronous int

const (
	// SyncNormal (the default) makes a commit durable against a crash or
	// kill of the process, not against power loss: the WAL is fsynced
	// only at checkpoints. It is what an emulator needs (an acknowledged
	// message survives kill -9) without an fsync per commit.
	SyncNormal Synchronous = iota
	// SyncFull fsyncs the WAL at every commit, so a commit also survives
	// power loss or an operating system crash.
	SyncFull
)

// String returns the PRAGMA value of s.
func (s Synchronous) String() string {
	switch s {
	case SyncNormal:
		return "NORMAL"
	case SyncFull:
		return "FULL"
	default:
		return fmt.Sprintf("Synchronous(%d)", int(s))
	}
}

// Defaults of Options.
const (
	// DefaultMaxGroupUnits is the default of Options.MaxGroupUnits.
	DefaultMaxGroupUnits = 1024
	// DefaultMaxGroupBytes is the default of Options.MaxGroupBytes.
	DefaultMaxGroupBytes = 4 << 20
	// DefaultGroupDelay is the default of Options.GroupDelay.
	DefaultGroupDelay = 500 * time.Microsecond
)

// Options tunes a Store; the zero value gives the defaults.
type Options struct {
	// Synchronous is the durability of a commit; default SyncNormal.
	Synchronous Synchronous
	// MaxGroupUnits bounds the Apply calls one transaction carries;
	// 0 or less means DefaultMaxGroupUnits.
	MaxGroupUnits int
	// MaxGroupBytes bounds the bytes of documents one transaction
	// carries (a larger unit goes alone); 0 or less means
	// DefaultMaxGroupBytes.
	MaxGroupBytes int
	// GroupDelay is how long the writer lets a group gather while the
	// store is busy (the previous group carried more than one unit), so
	// that one commit carries many units: a unit then waits at most
	// GroupDelay plus two commits. An idle store commits a lone unit at
	// once. 0 means DefaultGroupDelay; a negative value never waits.
	GroupDelay time.Duration
}

// Store is a core.Store on an SQLite file. It is safe for concurrent use.
type Store struct {
	path string
	opts Options
	db   *sql.DB
	// wconn is the writer's connection, stmts its prepared statements by
	// query; only the writer uses them once Open returned.
	wconn *sql.Conn
	stmts map[string]*sql.Stmt

	mu      sync.Mutex
	wake    *sync.Cond // on mu: the queue grew or the store is closing
	queue   []*unit
	closing bool
	stats   core.StoreStats
	// closeErr collects the failures of the groups committed by Close.
	closeErr error

	writerDone chan struct{}
	closeOnce  sync.Once
	closeRes   error

	// beforeCommit, when set (by tests), runs in the writer once a
	// group's changes are executed, before its transaction commits; an
	// error rolls the group back.
	beforeCommit func(units int) error
}

// unit is one Apply call waiting for its commit.
type unit struct {
	changes []change
	bytes   int
	res     chan error
}

// change is a validated core.Change with its document copied to a string.
type change struct {
	op  core.Op
	rec core.Record // Doc is nil: see doc
	doc string
}

var _ core.Store = (*Store)(nil)

// Open opens the store in the SQLite file at path, creating the file when
// missing (mode 0600: it holds device keys), migrating it to SchemaVersion, switching it to WAL mode, and
// starts the writer. Errors wrap core.ErrStore: ErrSchemaVersion for a
// database of a newer emulator and ErrNotStore for another application's
// database (both leave the file untouched), or the failure to open or
// migrate it. ctx bounds the opening only.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if opts.Synchronous != SyncNormal && opts.Synchronous != SyncFull {
		return nil, fmt.Errorf("%w: unknown %v", core.ErrStore, opts.Synchronous)
	}
	if opts.MaxGroupUnits <= 0 {
		opts.MaxGroupUnits = DefaultMaxGroupUnits
	}
	if opts.GroupDelay == 0 {
		opts.GroupDelay = DefaultGroupDelay
	}
	if opts.MaxGroupBytes <= 0 {
		opts.MaxGroupBytes = DefaultMaxGroupBytes
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", core.ErrStore, path, err)
	}
	// The file holds device keys: create it readable by its owner only
	// (SQLite gives its -wal and -shm files the same mode).
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", core.ErrStore, path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", core.ErrStore, path, err)
	}
	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", core.ErrStore, path, err)
	}
	s := &Store{path: abs, opts: opts, db: db, stmts: map[string]*sql.Stmt{}, writerDone: make(chan struct{})}
	s.wake = sync.NewCond(&s.mu)
	if err := s.open(ctx); err != nil {
		if s.wconn != nil {
			_ = s.wconn.Close()
		}
		_ = db.Close()
		return nil, fmt.Errorf("%w: open %s: %w", core.ErrStore, path, err)
	}
	go s.writer()
	return s, nil
}

// dsn is the data source name of the file at the absolute path abs.
func dsn(abs string) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Set("_txlock", "immediate")
	return u.String() + "?" + q.Encode()
}

// open checks the version, migrates and prepares the writer's connection.
func (s *Store) open(ctx context.Context) error {
	c, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	s.wconn = c
	// Read before anything writes: a refused file must stay as it was
	// (switching to WAL mode alone rewrites its header).
	var version, appID, objects int
	if err := c.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return err
	}
	if err := c.QueryRowContext(ctx, `PRAGMA application_id`).Scan(&appID); err != nil {
		return err
	}
	if err := c.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema`).Scan(&objects); err != nil {
		return err
	}
	switch {
	case appID != 0 && appID != applicationID:
		return fmt.Errorf("%w (application_id %#x)", ErrNotStore, appID)
	case version == 0 && objects > 0:
		return fmt.Errorf("%w (it has tables but no schema version)", ErrNotStore)
	case version > len(migrations):
		return fmt.Errorf("%w: version %d, this emulator knows up to %d", ErrSchemaVersion, version, len(migrations))
	}
	var mode string
	if err := c.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("the database stays in journal mode %q, not WAL", mode)
	}
	if _, err := c.ExecContext(ctx, `PRAGMA synchronous = `+s.opts.Synchronous.String()); err != nil {
		return err
	}
	for v := version; v < len(migrations); v++ {
		if err := migrate(ctx, c, v); err != nil {
			return fmt.Errorf("migrating to schema version %d: %w", v+1, err)
		}
	}
	return nil
}

// migrate runs migrations[from] and sets the version, in one transaction.
func migrate(ctx context.Context, c *sql.Conn, from int) (err error) {
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, migrations[from]); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA application_id = %d`, applicationID)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, from+1)); err != nil {
		return err
	}
	return tx.Commit()
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Load returns every committed record in the order of core.Store: the kinds
// in the order meta, group, device, template, cert, c2d, telemetry, command;
// each unsequenced kind by Key; c2d by Device, then Seq, then Key; telemetry
// and command by Device, then Seq (strings compare bytewise). It reads on a
// connection of its own, so units being committed are either all in or all
// out. Errors wrap core.ErrStore (ErrClosed after Close).
func (s *Store) Load(ctx context.Context) ([]core.Record, error) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return nil, ErrClosed
	}
	recs, err := s.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: load: %w", core.ErrStore, err)
	}
	return recs, nil
}

func (s *Store) load(ctx context.Context) (_ []core.Record, err error) {
	// One read transaction, so the tables are read at one point in time.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	var out []core.Record
	for _, t := range tables {
		rows, err := tx.QueryContext(ctx, t.load)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			r := core.Record{Kind: t.kind}
			if err := rows.Scan(&r.Device, &r.Key, &r.Seq, &r.Doc); err != nil {
				_ = rows.Close()
				return nil, err
			}
			out = append(out, r)
		}
		if err := rows.Err(); err != nil {
			_ = rows.Close()
			return nil, err
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Apply queues changes to be committed as one unit, in one transaction
// with the units queued around it, after every unit applied before it. The
// returned channel (buffered) receives nil once the unit is committed, or
// an error wrapping core.ErrStore: ErrInvalid for a change the store cannot
// keep (checked before queuing), ErrClosed after Close, or the failure of
// its group's transaction (then no unit of the group is applied). Apply
// never waits for a commit and copies the documents: the caller may reuse
// changes once it returns.
func (s *Store) Apply(changes []core.Change) <-chan error {
	res := make(chan error, 1)
	if err := storecheck.Unit(changes); err != nil {
		res <- err
		return res
	}
	u := &unit{changes: make([]change, len(changes)), res: res}
	for i, c := range changes {
		r := c.Record
		doc := string(r.Doc)
		r.Doc = nil
		u.changes[i] = change{op: c.Op, rec: r, doc: doc}
		u.bytes += len(doc)
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		res <- ErrClosed
		return res
	}
	s.queue = append(s.queue, u)
	s.mu.Unlock()
	s.wake.Signal()
	return res
}

// writer commits the queue group by group until the store closes and its
// queue is empty.
func (s *Store) writer() {
	defer close(s.writerDone)
	var group []*unit
	busy := false // the previous group carried more than one unit
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closing {
			s.wake.Wait()
		}
		if len(s.queue) == 0 {
			s.mu.Unlock()
			return
		}
		if busy && s.opts.GroupDelay > 0 && len(s.queue) < s.opts.MaxGroupUnits && !s.closing {
			// Under load: let the group gather, so that one commit (its
			// WAL frames, its checkpoint share) serves many units.
			s.mu.Unlock()
			time.Sleep(s.opts.GroupDelay)
			s.mu.Lock()
		}
		group = s.take(group[:0])
		busy = len(group) > 1
		closing := s.closing
		s.mu.Unlock()

		err := s.commit(group)
		s.mu.Lock()
		if err == nil {
			s.stats.Commits++
			s.stats.Units += uint64(len(group))
			for _, u := range group {
				s.stats.Changes += uint64(len(u.changes))
			}
			s.stats.MaxUnits = max(s.stats.MaxUnits, len(group))
		} else if closing {
			s.closeErr = errors.Join(s.closeErr, err)
		}
		s.mu.Unlock()
		for i, u := range group {
			u.res <- err
			group[i] = nil
		}
	}
}

// take moves the first units of the queue, within the bounds of a group,
// to group; s.mu is held.
func (s *Store) take(group []*unit) []*unit {
	n, bytes := 0, 0
	for n < len(s.queue) && n < s.opts.MaxGroupUnits {
		b := s.queue[n].bytes
		if n > 0 && bytes+b > s.opts.MaxGroupBytes {
			break
		}
		bytes += b
		n++
	}
	group = append(group, s.queue[:n]...)
	rest := copy(s.queue, s.queue[n:])
	clear(s.queue[rest:])
	s.queue = s.queue[:rest]
	return group
}

// commit runs the group in one transaction; on failure it rolls back and
// returns an error wrapping core.ErrStore. Only the writer calls it.
func (s *Store) commit(group []*unit) (err error) {
	if err := s.exec(`BEGIN IMMEDIATE`); err != nil {
		// A transaction left open by a failed ROLLBACK would refuse
		// every later BEGIN: end it, so the next group starts clean.
		_ = s.exec(`ROLLBACK`)
		return fmt.Errorf("%w: begin: %w", core.ErrStore, err)
	}
	defer func() {
		if err != nil {
			_ = s.exec(`ROLLBACK`)
			err = fmt.Errorf("%w: commit of %d units: %w", core.ErrStore, len(group), err)
		}
	}()
	// Runs of telemetry puts (most of a busy group) go in multi-row
	// INSERTs: one statement per 64 rows instead of one per row.
	var run []any
	flush := func() error {
		for len(run) > 0 {
			n := len(run) / 3
			for _, size := range telemetryBatch {
				if size <= n {
					n = size
					break
				}
			}
			if err := s.exec(telemetryInsert(n), run[:3*n]...); err != nil {
				return err
			}
			run = run[3*n:]
		}
		run = run[:0]
		return nil
	}
	for _, u := range group {
		for _, c := range u.changes {
			if c.op == core.OpPut && c.rec.Kind == core.KindTelemetry {
				run = append(run, c.rec.Device, c.rec.Seq, c.doc)
				continue
			}
			if err := flush(); err != nil {
				return err
			}
			if err := apply(s.exec, c); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if s.beforeCommit != nil {
		if err := s.beforeCommit(len(group)); err != nil {
			return err
		}
	}
	return s.exec(`COMMIT`)
}

// telemetryBatch are the row counts of the multi-row telemetry INSERTs,
// largest first (few distinct statements to prepare).
var telemetryBatch = []int{64, 16, 4, 1}

// telemetryInserts are the statements of telemetryBatch, by row count.
var telemetryInserts = func() map[int]string {
	m := map[int]string{}
	for _, n := range telemetryBatch {
		var b strings.Builder
		b.WriteString(`INSERT INTO telemetry (device, seq, doc) VALUES `)
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?)")
		}
		b.WriteString(` ON CONFLICT (seq) DO UPDATE SET device = excluded.device, doc = excluded.doc`)
		m[n] = b.String()
	}
	return m
}()

func telemetryInsert(n int) string { return telemetryInserts[n] }

// exec runs query on the writer's connection through a statement prepared
// once for the life of the store. Only the writer calls it.
func (s *Store) exec(query string, args ...any) error {
	ctx := context.Background()
	st := s.stmts[query]
	if st == nil {
		var err error
		if st, err = s.wconn.PrepareContext(ctx, query); err != nil {
			return err
		}
		s.stmts[query] = st
	}
	_, err := st.ExecContext(ctx, args...)
	return err
}

// apply runs one change through exec.
func apply(exec func(query string, args ...any) error, c change) error {
	r := c.rec
	if c.op == core.OpDeleteDevice {
		for _, q := range deleteDevice {
			if err := exec(q, r.Key); err != nil {
				return err
			}
		}
		return nil
	}
	t := tableOf(r.Kind)
	switch c.op {
	case core.OpPut:
		switch r.Kind {
		case core.KindC2D:
			return exec(t.put, r.Device, r.Key, r.Seq, c.doc)
		case core.KindTelemetry, core.KindCommand, core.KindEvent:
			return exec(t.put, r.Device, r.Seq, c.doc)
		default:
			return exec(t.put, r.Key, c.doc)
		}
	case core.OpDelete:
		switch r.Kind {
		case core.KindC2D:
			return exec(t.del, r.Device, r.Key)
		case core.KindTelemetry, core.KindCommand, core.KindEvent:
			return exec(t.del, r.Device, r.Seq)
		default:
			return exec(t.del, r.Key)
		}
	case core.OpTrim:
		return exec(t.trim, r.Device, r.Seq)
	}
	return fmt.Errorf("%w: unknown op %d", ErrInvalid, c.op)
}

// Stats reports the groups committed so far: Commits transactions carrying
// Units Apply calls and Changes changes, MaxUnits the largest group.
func (s *Store) Stats() core.StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Close commits every unit applied before it (their channels hold their
// results when it returns), stops the writer and closes the database,
// which checkpoints the WAL into the database file. Later Apply and Load
// calls fail with ErrClosed. It returns an error wrapping core.ErrStore if
// a group it committed or the closing failed; closing again returns the
// same result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.wake.Broadcast()
		<-s.writerDone
		err := s.closeErr
		for _, st := range s.stmts {
			err = errors.Join(err, st.Close())
		}
		err = errors.Join(err, s.wconn.Close(), s.db.Close())
		if err != nil {
			s.closeRes = fmt.Errorf("%w: close: %w", core.ErrStore, err)
		}
	})
	return s.closeRes
}
