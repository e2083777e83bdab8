// Package storetest is the contract suite of core.Store: every adapter's
// tests run it, so the adapters cannot drift apart.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Open returns a new, empty, open store for t. The suite closes it.
type Open func(t *testing.T) core.Store

// Reopen returns a store on the data of closed, which the suite has closed,
// as an emulator restarted on it would find it.
type Reopen func(t *testing.T, closed core.Store) core.Store

// Run runs the contract against stores from open. reopen, when not nil,
// adds the durability checks: everything committed before Close is found
// by Load after reopen.
func Run(t *testing.T, open Open, reopen Reopen) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s core.Store)
	}{
		{"Empty", testEmpty},
		{"PutEveryKindAndLoadOrder", testPutAndLoadOrder},
		{"PutReplaces", testPutReplaces},
		{"Identities", testIdentities},
		{"Delete", testDelete},
		{"Trim", testTrim},
		{"DeleteDevice", testDeleteDevice},
		{"OrderAcrossUnits", testOrderAcrossUnits},
		{"OrderWithinUnit", testOrderWithinUnit},
		{"InvalidUnitIsAtomic", testInvalidUnit},
		{"CallerMayReuseDocs", testCallerReuse},
		{"EmptyUnit", testEmptyUnit},
		{"Concurrent", testConcurrent},
		{"Stats", testStats},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { _ = s.Close() })
			tc.fn(t, s)
		})
	}
	t.Run("Close", func(t *testing.T) { testClose(t, open(t)) })
	if reopen != nil {
		t.Run("Reopen", func(t *testing.T) { testReopen(t, open(t), reopen) })
	}
}

// Helpers building records and changes.

func put(r core.Record) core.Change  { return core.Change{Op: core.OpPut, Record: r} }
func del(r core.Record) core.Change  { return core.Change{Op: core.OpDelete, Record: r} }
func trim(r core.Record) core.Change { return core.Change{Op: core.OpTrim, Record: r} }
func deleteDevice(id string) core.Change {
	return core.Change{Op: core.OpDeleteDevice, Record: core.Record{Kind: core.KindDevice, Key: id}}
}

func plain(k core.Kind, key, doc string) core.Record {
	return core.Record{Kind: k, Key: key, Doc: []byte(doc)}
}
func c2d(dev, id string, seq int64, doc string) core.Record {
	return core.Record{Kind: core.KindC2D, Device: dev, Key: id, Seq: seq, Doc: []byte(doc)}
}
func seqd(k core.Kind, dev string, seq int64, doc string) core.Record {
	return core.Record{Kind: k, Device: dev, Seq: seq, Doc: []byte(doc)}
}

// apply applies one unit and waits for its result.
func apply(t *testing.T, s core.Store, changes ...core.Change) {
	t.Helper()
	if err := <-s.Apply(changes); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func load(t *testing.T, s core.Store) []core.Record {
	t.Helper()
	recs, err := s.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return recs
}

// same fails t unless got equals want (nil and empty alike; docs compared
// as text).
func same(t *testing.T, got, want []core.Record) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(norm(got), norm(want)) {
		t.Fatalf("records:\n got %s\nwant %s", show(got), show(want))
	}
}

type rec struct {
	Kind        core.Kind
	Device, Key string
	Seq         int64
	Doc         string
}

func norm(rs []core.Record) []rec {
	out := make([]rec, len(rs))
	for i, r := range rs {
		out[i] = rec{r.Kind, r.Device, r.Key, r.Seq, string(r.Doc)}
	}
	return out
}

func show(rs []core.Record) string {
	s := ""
	for _, r := range norm(rs) {
		s += fmt.Sprintf("\n\t%+v", r)
	}
	return s
}

func testEmpty(t *testing.T, s core.Store) {
	if recs := load(t, s); len(recs) != 0 {
		t.Fatalf("new store loads %d records: %s", len(recs), show(recs))
	}
	if st := s.Stats(); st != (core.StoreStats{}) {
		t.Fatalf("new store has stats %+v", st)
	}
}

// allKinds is a set of records of every kind, given in no order, and the
// order Load must return them in.
func allKinds() (given, want []core.Record) {
	want = []core.Record{
		plain(core.KindMeta, "idScope", `"0ne00000001"`),
		plain(core.KindGroup, "Group", `{"id":"Group"}`),
		plain(core.KindGroup, "group", `{"id":"group"}`),
		plain(core.KindDevice, "dev1", `{"id":"dev1","twin":{"desired":{"$version":1}}}`),
		plain(core.KindDevice, "dev10", `{"id":"dev10"}`),
		plain(core.KindDevice, "dev2", `{"id":"dev2"}`),
		plain(core.KindDevice, "déjà-vu", `{"id":"déjà-vu","raw":"`+"\xff\xfe"+`"}`),
		plain(core.KindTemplate, "dtmi:x:y;1", `{"@id":"dtmi:x:y;1"}`),
		plain(core.KindCert, "group/AB12", `{"thumbprint":"AB12"}`),
		c2d("dev1", "m-b", 1, `{"body":"b"}`),
		c2d("dev1", "m-a", 2, `{"body":"a"}`),
		c2d("dev1", "m-c", 10, `{"body":"c"}`),
		c2d("dev2", "m-a", 1, `{"body":"other"}`),
		seqd(core.KindTelemetry, "dev1", 1, `{"t":1}`),
		seqd(core.KindTelemetry, "dev1", 2, `{"t":2}`),
		seqd(core.KindTelemetry, "dev1", 10, `{"t":10}`),
		seqd(core.KindTelemetry, "dev2", 3, `{"t":"dev2"}`),
		seqd(core.KindCommand, "dev1", 3, `{"name":"reboot"}`),
		seqd(core.KindCommand, "dev1", 4, `{"name":"echo","payload":[1,2]}`),
		seqd(core.KindEvent, "hub/0", 1, `{"b":"x"}`),
		seqd(core.KindEvent, "hub/0", 2, `{"b":"y"}`),
		seqd(core.KindEvent, "hub/1", 1, `{"b":"same seq, other stream"}`),
		seqd(core.KindEvent, "logs/0", 7, `{"b":"z"}`),
	}
	// Shuffled deterministically: reversed, then odd and even interleaved.
	for i := len(want) - 1; i >= 0; i -= 2 {
		given = append(given, want[i])
	}
	for i := len(want) - 2; i >= 0; i -= 2 {
		given = append(given, want[i])
	}
	return given, want
}

func testPutAndLoadOrder(t *testing.T, s core.Store) {
	given, want := allKinds()
	// Half in one unit, the rest one unit each.
	var unit []core.Change
	for _, r := range given[:len(given)/2] {
		unit = append(unit, put(r))
	}
	apply(t, s, unit...)
	for _, r := range given[len(given)/2:] {
		apply(t, s, put(r))
	}
	same(t, load(t, s), want)
}

func testPutReplaces(t *testing.T, s core.Store) {
	apply(t, s,
		put(plain(core.KindDevice, "d", `{"v":1}`)),
		put(c2d("d", "m1", 1, `{"v":1}`)),
		put(c2d("d", "m2", 2, `{"v":1}`)),
		put(seqd(core.KindTelemetry, "d", 5, `{"v":1}`)),
		put(seqd(core.KindCommand, "d", 5, `{"v":1}`)),
	)
	apply(t, s,
		put(plain(core.KindDevice, "d", `{"v":2}`)),
		put(c2d("d", "m1", 3, `{"v":2}`)), // a requeued message moves behind m2
		put(seqd(core.KindTelemetry, "d", 5, `{"v":2}`)),
		put(seqd(core.KindCommand, "d", 5, `{"v":2}`)),
	)
	same(t, load(t, s), []core.Record{
		plain(core.KindDevice, "d", `{"v":2}`),
		c2d("d", "m2", 2, `{"v":1}`),
		c2d("d", "m1", 3, `{"v":2}`),
		seqd(core.KindTelemetry, "d", 5, `{"v":2}`),
		seqd(core.KindCommand, "d", 5, `{"v":2}`),
	})
}

func testIdentities(t *testing.T, s core.Store) {
	// The same key in every kind, the same c2d id and seq under two
	// devices, the same seq in telemetry and commands: all distinct.
	// (Telemetry and command numbers are unique within their kind.)
	var unit []core.Change
	want := []core.Record{}
	for _, k := range []core.Kind{core.KindMeta, core.KindGroup, core.KindDevice, core.KindTemplate, core.KindCert} {
		r := plain(k, "x", fmt.Sprintf(`{"kind":%q}`, k))
		unit = append(unit, put(r))
		want = append(want, r)
	}
	for _, r := range []core.Record{
		c2d("a", "x", 1, `{"dev":"a"}`),
		c2d("b", "x", 1, `{"dev":"b"}`),
		seqd(core.KindTelemetry, "a", 1, `{"dev":"a"}`),
		seqd(core.KindTelemetry, "b", 2, `{"dev":"b"}`),
		seqd(core.KindCommand, "a", 1, `{"dev":"a","cmd":true}`),
	} {
		unit = append(unit, put(r))
		want = append(want, r)
	}
	apply(t, s, unit...)
	same(t, load(t, s), want)
}

func testDelete(t *testing.T, s core.Store) {
	_, all := allKinds()
	var unit []core.Change
	for _, r := range all {
		unit = append(unit, put(r))
	}
	apply(t, s, unit...)
	// Delete one record of each kind (Doc ignored), plus absent ones.
	gone := []core.Record{
		plain(core.KindMeta, "idScope", ""),
		plain(core.KindGroup, "group", ""),
		plain(core.KindDevice, "dev10", ""),
		plain(core.KindTemplate, "dtmi:x:y;1", ""),
		plain(core.KindCert, "group/AB12", ""),
		c2d("dev1", "m-a", 0, ""),
		seqd(core.KindTelemetry, "dev1", 2, ""),
		seqd(core.KindCommand, "dev1", 3, ""),
	}
	absent := []core.Record{
		plain(core.KindDevice, "nobody", ""),
		c2d("nobody", "m-a", 0, ""),
		c2d("dev2", "m-b", 0, ""),
		seqd(core.KindTelemetry, "dev2", 2, ""),
		seqd(core.KindCommand, "nobody", 1, ""),
	}
	unit = nil
	for _, r := range append(gone, absent...) {
		unit = append(unit, del(r))
	}
	apply(t, s, unit...)
	var want []core.Record
	for _, r := range all {
		if !matches(r, gone) {
			want = append(want, r)
		}
	}
	same(t, load(t, s), want)
}

// matches reports whether r has the identity of one of rs.
func matches(r core.Record, rs []core.Record) bool {
	for _, g := range rs {
		if g.Kind != r.Kind || g.Device != r.Device {
			continue
		}
		switch {
		case r.Kind == core.KindTelemetry || r.Kind == core.KindCommand:
			if g.Seq == r.Seq {
				return true
			}
		case g.Key == r.Key:
			return true
		}
	}
	return false
}

func testTrim(t *testing.T, s core.Store) {
	var unit []core.Change
	// Telemetry and command numbers are unique within their kind: d2's
	// follow d1's (d1 1..5, d2 11..15).
	num := func(dev string, i int64) int64 {
		if dev == "d2" {
			return i + 10
		}
		return i
	}
	for _, dev := range []string{"d1", "d2"} {
		for i := int64(1); i <= 5; i++ {
			unit = append(unit,
				put(seqd(core.KindTelemetry, dev, num(dev, i), fmt.Sprintf(`{"i":%d}`, i))),
				put(seqd(core.KindCommand, dev, num(dev, i), fmt.Sprintf(`{"i":%d}`, i))),
				put(c2d(dev, fmt.Sprintf("m%d", i), i, fmt.Sprintf(`{"i":%d}`, i))),
			)
		}
	}
	apply(t, s, unit...)
	apply(t, s,
		trim(core.Record{Kind: core.KindTelemetry, Device: "d1", Seq: 3}),
		trim(core.Record{Kind: core.KindCommand, Device: "d2", Seq: 11}),
		trim(core.Record{Kind: core.KindC2D, Device: "d1", Seq: 2}),
		trim(core.Record{Kind: core.KindTelemetry, Device: "nobody", Seq: 100}),
		trim(core.Record{Kind: core.KindCommand, Device: "d1", Seq: 0}), // nothing at or below 0
	)
	var want []core.Record
	for _, k := range []core.Kind{core.KindC2D, core.KindTelemetry, core.KindCommand} {
		for _, dev := range []string{"d1", "d2"} {
			for i := int64(1); i <= 5; i++ {
				doc := fmt.Sprintf(`{"i":%d}`, i)
				switch {
				case k == core.KindTelemetry && dev == "d1" && i <= 3,
					k == core.KindCommand && dev == "d2" && i <= 1,
					k == core.KindC2D && dev == "d1" && i <= 2:
					continue
				case k == core.KindC2D:
					want = append(want, c2d(dev, fmt.Sprintf("m%d", i), i, doc))
				default:
					want = append(want, seqd(k, dev, num(dev, i), doc))
				}
			}
		}
	}
	same(t, load(t, s), want)
	// A trimmed history grows on.
	apply(t, s, put(seqd(core.KindTelemetry, "d1", 6, `{"i":6}`)), trim(core.Record{Kind: core.KindTelemetry, Device: "d1", Seq: 5}))
	var tel []core.Record
	for _, r := range load(t, s) {
		if r.Kind == core.KindTelemetry && r.Device == "d1" {
			tel = append(tel, r)
		}
	}
	same(t, tel, []core.Record{seqd(core.KindTelemetry, "d1", 6, `{"i":6}`)})
}

func testDeleteDevice(t *testing.T, s core.Store) {
	// dev1 and dev10 (a prefix), a group and a template named dev1.
	var unit []core.Change
	owned := func(dev string) []core.Record {
		return []core.Record{
			plain(core.KindDevice, dev, `{}`),
			c2d(dev, "m", 1, `{}`),
			seqd(core.KindTelemetry, dev, 1, `{}`),
			seqd(core.KindTelemetry, dev, 2, `{}`),
			seqd(core.KindCommand, dev, 1, `{}`),
		}
	}
	// An event stream named like the device is not the device's: events
	// outlive their device.
	others := []core.Record{plain(core.KindGroup, "dev1", `{}`), plain(core.KindTemplate, "dev1", `{}`), plain(core.KindCert, "dev1", `{}`), seqd(core.KindEvent, "dev1", 1, `{}`)}
	for _, r := range append(append(owned("dev1"), owned("dev10")...), others...) {
		unit = append(unit, put(r))
	}
	apply(t, s, unit...)
	apply(t, s, deleteDevice("dev1"), deleteDevice("nobody"))
	want := append(append([]core.Record{}, others[0]), plain(core.KindDevice, "dev10", `{}`), others[1], others[2])
	want = append(want, owned("dev10")[1:]...)
	want = append(want, others[3])
	same(t, load(t, s), want)
	// Kind "" is accepted for a device deletion.
	apply(t, s, core.Change{Op: core.OpDeleteDevice, Record: core.Record{Key: "dev10"}})
	same(t, load(t, s), others)
}

func testOrderAcrossUnits(t *testing.T, s core.Store) {
	// Many units queued without waiting: the last write of each record wins.
	const n = 300
	var chans []<-chan error
	for i := range n {
		doc := fmt.Sprintf(`{"i":%d}`, i)
		unit := []core.Change{put(plain(core.KindDevice, "d", doc))}
		if i%3 == 0 {
			unit = append(unit, put(plain(core.KindGroup, "g", doc)))
		}
		if i%3 == 1 {
			unit = append(unit, del(plain(core.KindGroup, "g", "")))
		}
		unit = append(unit, put(seqd(core.KindTelemetry, "d", int64(i), doc)))
		if i >= 10 {
			unit = append(unit, trim(core.Record{Kind: core.KindTelemetry, Device: "d", Seq: int64(i - 10)}))
		}
		chans = append(chans, s.Apply(unit))
	}
	for i, c := range chans {
		if err := <-c; err != nil {
			t.Fatalf("unit %d: %v", i, err)
		}
	}
	last := n - 1 // n-1 = 299: 299%3 == 2, so the group was last deleted at 298
	want := []core.Record{plain(core.KindDevice, "d", fmt.Sprintf(`{"i":%d}`, last))}
	for i := last - 9; i <= last; i++ {
		want = append(want, seqd(core.KindTelemetry, "d", int64(i), fmt.Sprintf(`{"i":%d}`, i)))
	}
	same(t, load(t, s), want)
}

func testOrderWithinUnit(t *testing.T, s core.Store) {
	apply(t, s,
		put(plain(core.KindDevice, "gone", `{}`)),
		del(plain(core.KindDevice, "gone", "")),
		del(plain(core.KindDevice, "back", "")),
		put(plain(core.KindDevice, "back", `{"v":1}`)),
		put(plain(core.KindDevice, "back", `{"v":2}`)),
		put(seqd(core.KindTelemetry, "back", 1, `{}`)),
		deleteDevice("back"),
		put(plain(core.KindDevice, "back", `{"v":3}`)),
		put(seqd(core.KindTelemetry, "back", 2, `{}`)),
	)
	same(t, load(t, s), []core.Record{
		plain(core.KindDevice, "back", `{"v":3}`),
		seqd(core.KindTelemetry, "back", 2, `{}`),
	})
}

// invalidChanges are changes no store may keep.
func invalidChanges() map[string]core.Change {
	return map[string]core.Change{
		"unknown op":                {Op: core.Op(99), Record: plain(core.KindDevice, "d", `{}`)},
		"negative op":               {Op: core.Op(-1), Record: plain(core.KindDevice, "d", `{}`)},
		"unknown kind":              put(plain(core.Kind("module"), "d", `{}`)),
		"empty kind":                put(plain("", "d", `{}`)),
		"doc not JSON":              put(plain(core.KindDevice, "d", `{"a":`)),
		"nil doc":                   put(plain(core.KindDevice, "d", "")),
		"device without key":        put(plain(core.KindDevice, "", `{}`)),
		"device with a device":      put(core.Record{Kind: core.KindDevice, Device: "x", Key: "d", Doc: []byte(`{}`)}),
		"c2d without device":        put(c2d("", "m", 1, `{}`)),
		"c2d without key":           put(c2d("d", "", 1, `{}`)),
		"telemetry without device":  put(seqd(core.KindTelemetry, "", 1, `{}`)),
		"telemetry with a key":      put(core.Record{Kind: core.KindTelemetry, Device: "d", Key: "k", Doc: []byte(`{}`)}),
		"delete without key":        del(plain(core.KindGroup, "", "")),
		"trim of unsequenced":       trim(core.Record{Kind: core.KindDevice, Device: "d", Seq: 1}),
		"trim without device":       trim(core.Record{Kind: core.KindTelemetry, Seq: 1}),
		"delete-device without key": deleteDevice(""),
		"delete-device of a group":  {Op: core.OpDeleteDevice, Record: plain(core.KindGroup, "d", "")},
	}
}

func testInvalidUnit(t *testing.T, s core.Store) {
	apply(t, s, put(plain(core.KindDevice, "keep", `{"v":1}`)))
	for name, bad := range invalidChanges() {
		err := <-s.Apply([]core.Change{
			put(plain(core.KindDevice, "keep", `{"v":2}`)),
			put(plain(core.KindDevice, "new", `{}`)),
			bad,
		})
		if !errors.Is(err, core.ErrStore) {
			t.Errorf("%s: Apply = %v, want an error wrapping core.ErrStore", name, err)
		}
	}
	// Nothing of the failed units, and the store still works.
	apply(t, s, put(plain(core.KindGroup, "after", `{}`)))
	same(t, load(t, s), []core.Record{
		plain(core.KindGroup, "after", `{}`),
		plain(core.KindDevice, "keep", `{"v":1}`),
	})
	if st := s.Stats(); st.Units != 2 || st.Changes != 2 {
		t.Fatalf("stats %+v count failed units, want 2 units and 2 changes", st)
	}
}

func testCallerReuse(t *testing.T, s core.Store) {
	doc := []byte(`{"v":"original"}`)
	changes := []core.Change{put(core.Record{Kind: core.KindDevice, Key: "d", Doc: doc})}
	res := s.Apply(changes)
	copy(doc, `{"v":"CLOBBERED"}`)
	changes[0].Record.Key = "other"
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	got := load(t, s)
	same(t, got, []core.Record{plain(core.KindDevice, "d", `{"v":"original"}`)})
	// And Load's documents are the caller's to change.
	got[0].Doc[0] = 'X'
	same(t, load(t, s), []core.Record{plain(core.KindDevice, "d", `{"v":"original"}`)})
}

func testEmptyUnit(t *testing.T, s core.Store) {
	first := s.Apply([]core.Change{put(plain(core.KindDevice, "d", `{}`))})
	if err := <-s.Apply(nil); err != nil {
		t.Fatalf("Apply(nil) = %v", err)
	}
	// The empty unit came after the first: that one is done too.
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatal("an empty unit was committed before the unit applied before it")
	}
	same(t, load(t, s), []core.Record{plain(core.KindDevice, "d", `{}`)})
}

func testConcurrent(t *testing.T, s core.Store) {
	const workers, per = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	for w := range workers {
		wg.Go(func() {
			dev := fmt.Sprintf("dev%d", w)
			for i := range per {
				err := <-s.Apply([]core.Change{
					put(plain(core.KindDevice, dev, fmt.Sprintf(`{"i":%d}`, i))),
					// Numbers unique in the kind, as the model gives them.
					put(seqd(core.KindTelemetry, dev, int64(w*per+i), fmt.Sprintf(`{"i":%d}`, i))),
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	recs := load(t, s)
	if len(recs) != workers+workers*per {
		t.Fatalf("%d records, want %d", len(recs), workers+workers*per)
	}
	for w := range workers {
		if r := recs[w]; r.Key != fmt.Sprintf("dev%d", w) || string(r.Doc) != fmt.Sprintf(`{"i":%d}`, per-1) {
			t.Fatalf("device %d: %+v, want its last write", w, r)
		}
	}
	st := s.Stats()
	if st.Units != workers*per || st.Changes != 2*workers*per {
		t.Fatalf("stats %+v, want %d units and %d changes", st, workers*per, 2*workers*per)
	}
}

func testStats(t *testing.T, s core.Store) {
	const n = 20
	var chans []<-chan error
	for i := range n {
		chans = append(chans, s.Apply([]core.Change{
			put(seqd(core.KindTelemetry, "d", int64(i), `{}`)),
			put(plain(core.KindDevice, "d", `{}`)),
			put(plain(core.KindDevice, "d", `{}`)),
		}))
	}
	for _, c := range chans {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Units != n || st.Changes != 3*n {
		t.Fatalf("stats %+v, want %d units and %d changes", st, n, 3*n)
	}
	if st.Commits < 1 || st.Commits > n {
		t.Fatalf("stats %+v: commits outside 1..%d", st, n)
	}
	if st.MaxUnits < 1 || uint64(st.MaxUnits) > st.Units || uint64(st.MaxUnits)*st.Commits < st.Units {
		t.Fatalf("stats %+v: MaxUnits inconsistent with commits and units", st)
	}
}

func testClose(t *testing.T, s core.Store) {
	const n = 200
	var chans []<-chan error
	for i := range n {
		chans = append(chans, s.Apply([]core.Change{put(seqd(core.KindTelemetry, "d", int64(i), `{}`))}))
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Close committed every unit applied before it: each result is there.
	for i, c := range chans {
		select {
		case err := <-c:
			if err != nil {
				t.Fatalf("unit %d: %v", i, err)
			}
		default:
			t.Fatalf("unit %d has no result after Close", i)
		}
	}
	if st := s.Stats(); st.Units != n {
		t.Fatalf("stats after Close %+v, want %d units", st, n)
	}
	if err := <-s.Apply([]core.Change{put(plain(core.KindDevice, "late", `{}`))}); !errors.Is(err, core.ErrStore) {
		t.Fatalf("Apply after Close = %v, want an error wrapping core.ErrStore", err)
	}
	if _, err := s.Load(context.Background()); !errors.Is(err, core.ErrStore) {
		t.Fatalf("Load after Close = %v, want an error wrapping core.ErrStore", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func testReopen(t *testing.T, s core.Store, reopen Reopen) {
	given, want := allKinds()
	for _, r := range given {
		apply(t, s, put(r))
	}
	// Queued, not awaited: Close commits them.
	var chans []<-chan error
	for i := range 100 {
		chans = append(chans, s.Apply([]core.Change{put(seqd(core.KindTelemetry, "dev3", int64(100+i), fmt.Sprintf(`{"i":%d}`, i)))}))
	}
	// dev3's telemetry sorts after dev2's, before the commands.
	cmds := slices.IndexFunc(want, func(r core.Record) bool { return r.Kind == core.KindCommand })
	var dev3 []core.Record
	for i := range 100 {
		dev3 = append(dev3, seqd(core.KindTelemetry, "dev3", int64(100+i), fmt.Sprintf(`{"i":%d}`, i)))
	}
	want = slices.Insert(want, cmds, dev3...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range chans {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	r := reopen(t, s)
	defer func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}()
	same(t, load(t, r), want)
	// The reopened store goes on.
	apply(t, r, deleteDevice("dev1"))
	for _, rec := range load(t, r) {
		if rec.Device == "dev1" || rec.Key == "dev1" {
			t.Fatalf("dev1 still has %+v after its deletion", rec)
		}
	}
}
