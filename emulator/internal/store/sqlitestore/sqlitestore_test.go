package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newStore opens a store in a new file of t's and closes it at the end.
func newStore(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "emulator.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestContract(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) core.Store { return newStore(t, Options{}) },
		func(t *testing.T, closed core.Store) core.Store {
			s, err := Open(context.Background(), closed.(*Store).Path(), Options{})
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			return s
		})
}

// TestContractSmallGroups runs the contract with groups of at most two
// units, so queued units span several transactions.
func TestContractSmallGroups(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) core.Store { return newStore(t, Options{MaxGroupUnits: 2, Synchronous: SyncFull}) },
		nil)
}

// rawDB opens path without the store, as the sqlite3 shell would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func put(r core.Record) core.Change { return core.Change{Op: core.OpPut, Record: r} }

func device(id, doc string) core.Record {
	return core.Record{Kind: core.KindDevice, Key: id, Doc: []byte(doc)}
}

func telemetry(dev string, seq int64, doc string) core.Record {
	return core.Record{Kind: core.KindTelemetry, Device: dev, Seq: seq, Doc: []byte(doc)}
}

// TestFileAsTheShellSeesIt checks the schema a user finds in the file: the
// tables and columns documented, the version, WAL mode while open, JSON
// documents json_extract reads, and one file once closed.
func TestFileAsTheShellSeesIt(t *testing.T) {
	s := newStore(t, Options{})
	if err := <-s.Apply([]core.Change{
		put(core.Record{Kind: core.KindMeta, Key: "idScope", Doc: []byte(`"0ne001"`)}),
		put(device("dev1", `{"id":"dev1","twin":{"reported":{"temp":21.5}}}`)),
		put(core.Record{Kind: core.KindC2D, Device: "dev1", Key: "m1", Seq: 7, Doc: []byte(`{"body":"hi"}`)}),
		put(telemetry("dev1", 1, `{"body":{"temp":20}}`)),
		put(core.Record{Kind: core.KindCommand, Device: "dev1", Seq: 1, Doc: []byte(`{"name":"reboot"}`)}),
	}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{s.Path(), s.Path() + "-wal"} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v (%v), want mode 0600: the file holds device keys", f, fi.Mode(), err)
		}
	}
	db := rawDB(t, s.Path())
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q (%v), want wal", mode, err)
	}
	for _, q := range []struct{ query, want string }{
		{`SELECT json_extract(doc, '$') FROM meta WHERE key = 'idScope'`, "0ne001"},
		{`SELECT json_extract(doc, '$.twin.reported.temp') FROM devices WHERE id = 'dev1'`, "21.5"},
		{`SELECT id || ' ' || seq || ' ' || json_extract(doc, '$.body') FROM c2d WHERE device = 'dev1'`, "m1 7 hi"},
		{`SELECT json_extract(doc, '$.body.temp') FROM telemetry WHERE device = 'dev1' AND seq = 1`, "20"},
		{`SELECT json_extract(doc, '$.name') FROM commands WHERE device = 'dev1'`, "reboot"},
		{`PRAGMA user_version`, fmt.Sprint(SchemaVersion)},
		{`PRAGMA application_id`, fmt.Sprint(applicationID)},
	} {
		var got string
		if err := db.QueryRow(q.query).Scan(&got); err != nil || got != q.want {
			t.Errorf("%s = %q (%v), want %q", q.query, got, err, q.want)
		}
	}
	wantCols := map[string]string{
		"meta":      "key doc",
		"groups":    "id doc",
		"devices":   "id doc",
		"templates": "id doc",
		"certs":     "key doc",
		"c2d":       "device id seq doc",
		"telemetry": "seq device doc",
		"commands":  "seq device doc",
		"events":    "stream seq doc",
	}
	rows, err := db.Query(`SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	_ = rows.Close()
	if got, want := strings.Join(names, " "), "c2d certs commands devices events groups meta telemetry templates"; got != want {
		t.Fatalf("tables %q, want %q", got, want)
	}
	// The identities of core.Store are unique in the file.
	for _, dup := range []string{
		`INSERT INTO devices (id, doc) VALUES ('dev1', '{}')`,
		`INSERT INTO c2d (device, id, seq, doc) VALUES ('dev1', 'm1', 8, '{}')`,
		`INSERT INTO telemetry (device, seq, doc) VALUES ('dev1', 1, '{}')`,
		`INSERT INTO commands (device, seq, doc) VALUES ('dev1', 1, '{}')`,
		`INSERT INTO meta (key, doc) VALUES ('idScope', '{}')`,
	} {
		if _, err := db.Exec(dup); err == nil || !strings.Contains(err.Error(), "UNIQUE") {
			t.Errorf("%s: %v, want a UNIQUE constraint failure", dup, err)
		}
	}
	plan := ""
	prows, err := db.Query(`EXPLAIN QUERY PLAN DELETE FROM telemetry WHERE device = 'dev1' AND seq <= 5`)
	if err != nil {
		t.Fatal(err)
	}
	for prows.Next() {
		var id, parent, unused int
		var detail string
		if err := prows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan += detail + "; "
	}
	_ = prows.Close()
	// Telemetry is keyed by its number alone: a trim scans by number,
	// appending needs no index by device.
	if !strings.Contains(plan, "INTEGER PRIMARY KEY") {
		t.Errorf("a trim of telemetry runs %q, not on its key", plan)
	}
	for table, want := range wantCols {
		rows, err := db.Query(`SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
		if err != nil {
			t.Fatal(err)
		}
		var cols []string
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				t.Fatal(err)
			}
			cols = append(cols, c)
		}
		_ = rows.Close()
		if got := strings.Join(cols, " "); got != want {
			t.Errorf("table %s has columns %q, want %q", table, got, want)
		}
	}
	_ = db.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(s.Path() + suffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s%s after Close: %v, want none", s.Path(), suffix, err)
		}
	}
}

// refusedUntouched opens path, expects an error matching want, and checks
// the file kept its bytes and got no WAL.
func refusedUntouched(t *testing.T, path string, want error) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), path, Options{})
	if err == nil {
		_ = s.Close()
		t.Fatalf("Open accepted the file")
	}
	if !errors.Is(err, want) || !errors.Is(err, core.ErrStore) {
		t.Fatalf("Open = %v, want an error wrapping %v and core.ErrStore", err, want)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("the refused file changed")
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if _, err := os.Stat(path + suffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after a refused Open: %v", suffix, err)
		}
	}
}

// rawFile creates an SQLite file at a new path with the statements.
func rawFile(t *testing.T, stmts ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "other.db")
	db := rawDB(t, path)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRefusesNewerSchema(t *testing.T) {
	t.Run("rollback journal", func(t *testing.T) {
		// Not in WAL mode: switching it would rewrite its header.
		path := rawFile(t, `CREATE TABLE future (x)`, fmt.Sprintf(`PRAGMA application_id = %d`, applicationID), fmt.Sprintf(`PRAGMA user_version = %d`, SchemaVersion+1))
		refusedUntouched(t, path, ErrSchemaVersion)
	})
	t.Run("written by the store", func(t *testing.T) {
		s := newStore(t, Options{})
		if err := <-s.Apply([]core.Change{put(device("d", `{}`))}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		db := rawDB(t, s.Path())
		if _, err := db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, SchemaVersion+1)); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		refusedUntouched(t, s.Path(), ErrSchemaVersion)
	})
}

func TestRefusesOtherDatabases(t *testing.T) {
	t.Run("tables without a version", func(t *testing.T) {
		refusedUntouched(t, rawFile(t, `CREATE TABLE devices (name TEXT)`), ErrNotStore)
	})
	t.Run("another application id", func(t *testing.T) {
		refusedUntouched(t, rawFile(t, `PRAGMA application_id = 42`, `PRAGMA user_version = 1`, `CREATE TABLE x (y)`), ErrNotStore)
	})
	t.Run("not a database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.json")
		if err := os.WriteFile(path, []byte(`{"format":1,"idScope":"0ne0000000000000000000000000"}`+strings.Repeat(" ", 200)), 0o600); err != nil {
			t.Fatal(err)
		}
		refusedUntouched(t, path, core.ErrStore)
	})
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(context.Background(), filepath.Join(t.TempDir(), "no", "such", "dir", "x.db"), Options{}); !errors.Is(err, core.ErrStore) {
		t.Errorf("Open in a missing directory = %v, want an error wrapping core.ErrStore", err)
	}
	if _, err := Open(context.Background(), filepath.Join(t.TempDir(), "x.db"), Options{Synchronous: Synchronous(7)}); !errors.Is(err, core.ErrStore) {
		t.Errorf("Open with Synchronous(7) = %v, want an error wrapping core.ErrStore", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(ctx, filepath.Join(t.TempDir(), "x.db"), Options{}); !errors.Is(err, core.ErrStore) {
		t.Errorf("Open with a cancelled context = %v, want an error wrapping core.ErrStore", err)
	}
}

func TestSynchronousOption(t *testing.T) {
	for _, tc := range []struct {
		opt  Synchronous
		want int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{{SyncNormal, 1}, {SyncFull, 2}} {
		s := newStore(t, Options{Synchronous: tc.opt})
		var got int
		if err := s.wconn.QueryRowContext(context.Background(), `PRAGMA synchronous`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%v: the writer runs with synchronous %d, want %d", tc.opt, got, tc.want)
		}
	}
}

// gate holds the writer in the commit of its first group until released, so
// a test can queue units behind it and know they form the next groups.
type gate struct {
	entered, release chan struct{}
	// then answers the later commits with their group sizes.
	then func(units int) error
	n    int
}

func newGate(s *Store, then func(units int) error) *gate {
	g := &gate{entered: make(chan struct{}), release: make(chan struct{}), then: then}
	s.beforeCommit = func(units int) error {
		g.n++
		if g.n == 1 {
			close(g.entered)
			<-g.release
			return nil
		}
		if g.then != nil {
			return g.then(units)
		}
		return nil
	}
	return g
}

func TestGroupCommit(t *testing.T) {
	s := newStore(t, Options{})
	var sizes []int
	g := newGate(s, func(units int) error { sizes = append(sizes, units); return nil })
	first := s.Apply([]core.Change{put(device("first", `{}`))})
	<-g.entered
	var chans []<-chan error
	for i := range 10 {
		chans = append(chans, s.Apply([]core.Change{put(telemetry("d", int64(i), `{}`)), put(device("d", fmt.Sprintf(`{"i":%d}`, i)))}))
	}
	// Nothing behind the held commit is done.
	for i, c := range chans {
		select {
		case err := <-c:
			t.Fatalf("unit %d answered (%v) while the commit before it was held", i, err)
		default:
		}
	}
	close(g.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for _, c := range chans {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(sizes) != "[10]" {
		t.Fatalf("groups after the held one: %v, want one of 10 units", sizes)
	}
	if st := s.Stats(); st != (core.StoreStats{Commits: 2, Units: 11, Changes: 21, MaxUnits: 10}) {
		t.Fatalf("stats %+v", st)
	}
}

func TestGroupBounds(t *testing.T) {
	t.Run("units", func(t *testing.T) {
		s := newStore(t, Options{MaxGroupUnits: 3})
		var sizes []int
		g := newGate(s, func(units int) error { sizes = append(sizes, units); return nil })
		first := s.Apply(nil)
		<-g.entered
		var chans []<-chan error
		for i := range 8 {
			chans = append(chans, s.Apply([]core.Change{put(telemetry("d", int64(i), `{}`))}))
		}
		close(g.release)
		for _, c := range append(chans, first) {
			if err := <-c; err != nil {
				t.Fatal(err)
			}
		}
		if fmt.Sprint(sizes) != "[3 3 2]" {
			t.Fatalf("group sizes %v, want [3 3 2]", sizes)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		s := newStore(t, Options{MaxGroupBytes: 100})
		var sizes []int
		g := newGate(s, func(units int) error { sizes = append(sizes, units); return nil })
		first := s.Apply(nil)
		<-g.entered
		doc := func(n int) string { return `{"` + strings.Repeat("x", n-6) + `":1}` }
		var chans []<-chan error
		for i, n := range []int{40, 40, 40, 300, 10, 10} { // 80 | 40 (+300 is too much) | 300 alone | 20
			chans = append(chans, s.Apply([]core.Change{put(telemetry("d", int64(i), doc(n)))}))
		}
		close(g.release)
		for _, c := range append(chans, first) {
			if err := <-c; err != nil {
				t.Fatal(err)
			}
		}
		if fmt.Sprint(sizes) != "[2 1 1 2]" {
			t.Fatalf("group sizes %v, want [2 1 1 2]", sizes)
		}
	})
}

// TestFailedGroupAppliesNothing fails the transaction of a group after its
// changes ran: every unit of the group gets the error, none is applied,
// the units around it are.
func TestFailedGroupAppliesNothing(t *testing.T) {
	s := newStore(t, Options{})
	boom := errors.New("disk on fire")
	g := newGate(s, func(units int) error {
		if units == 5 {
			return boom
		}
		return nil
	})
	first := s.Apply([]core.Change{put(device("before", `{}`))})
	<-g.entered
	var chans []<-chan error
	for i := range 5 {
		chans = append(chans, s.Apply([]core.Change{put(telemetry("lost", int64(i), `{}`)), put(device(fmt.Sprintf("lost%d", i), `{}`))}))
	}
	close(g.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, c := range chans {
		if err := <-c; !errors.Is(err, core.ErrStore) || !errors.Is(err, boom) {
			t.Fatalf("unit %d of the failed group: %v, want an error wrapping core.ErrStore and the cause", i, err)
		}
	}
	if err := <-s.Apply([]core.Change{put(device("after", `{}`))}); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range recs {
		keys = append(keys, string(r.Kind)+":"+r.Device+r.Key)
	}
	if got := strings.Join(keys, " "); got != "device:after device:before" {
		t.Fatalf("records %q, want only the units around the failed group", got)
	}
	if st := s.Stats(); st.Units != 2 || st.Commits != 2 {
		t.Fatalf("stats %+v count the failed group", st)
	}
}

// TestSQLFailure makes SQLite itself refuse a group (its table is gone).
func TestSQLFailure(t *testing.T) {
	s := newStore(t, Options{})
	db := rawDB(t, s.Path())
	if _, err := db.Exec(`DROP TABLE telemetry`); err != nil {
		t.Fatal(err)
	}
	err := <-s.Apply([]core.Change{put(device("d", `{}`)), put(telemetry("d", 1, `{}`))})
	if !errors.Is(err, core.ErrStore) || !strings.Contains(err.Error(), "telemetry") {
		t.Fatalf("Apply into a dropped table = %v, want an error wrapping core.ErrStore naming the table", err)
	}
	if err := <-s.Apply([]core.Change{put(device("e", `{}`))}); err != nil {
		t.Fatalf("the store did not go on after a failed group: %v", err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM devices WHERE id = 'd'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("device d of the failed unit: %d rows (%v), want 0", n, err)
	}
}

// TestLoadIsConsistent loads while units are committed: every unit is
// seen whole or not at all.
func TestLoadIsConsistent(t *testing.T) {
	s := newStore(t, Options{MaxGroupUnits: 1})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			<-s.Apply([]core.Change{put(telemetry("d", int64(i), `{}`)), put(device("d", fmt.Sprintf(`{"i":%d}`, i)))})
		}
	}()
	for range 20 {
		recs, err := s.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			continue
		}
		var last int
		if _, err := fmt.Sscanf(string(recs[0].Doc), `{"i":%d}`, &last); err != nil {
			t.Fatal(err)
		}
		if n := len(recs) - 1; n != last+1 {
			t.Fatalf("device at unit %d with %d telemetry records: a unit seen in part", last, n)
		}
	}
	<-done
}
