package fileoutbox_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/adapters/fileoutbox"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/internal/outboxtest"
	"github.com/iotc-go/iotc/ports"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func factory(opts fileoutbox.Options) outboxtest.Factory {
	return outboxtest.Factory{
		Open: func(t *testing.T, l domain.OutboxLimit) ports.Outbox {
			o2 := opts
			o2.Limit = l
			o, err := fileoutbox.Open(t.TempDir(), o2)
			if err != nil {
				t.Fatal(err)
			}
			return o
		},
		Reopen: func(t *testing.T, o ports.Outbox, l domain.OutboxLimit) ports.Outbox {
			dir := o.(*fileoutbox.Outbox).Dir()
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			o2 := opts
			o2.Limit = l
			n, err := fileoutbox.Open(dir, o2)
			if err != nil {
				t.Fatal(err)
			}
			return n
		},
	}
}

func TestContract(t *testing.T) {
	t.Run("Sync", func(t *testing.T) { outboxtest.Run(t, factory(fileoutbox.Options{})) })
	t.Run("NoSync", func(t *testing.T) { outboxtest.Run(t, factory(fileoutbox.Options{NoSync: true})) })
	// Segments of 300 bytes hold a couple of messages each: rotation and
	// deletion run on every few appends and removals.
	t.Run("TinySegments", func(t *testing.T) { outboxtest.Run(t, factory(fileoutbox.Options{SegmentSize: 300})) })
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func open(t *testing.T, dir string, opts fileoutbox.Options) *fileoutbox.Outbox {
	t.Helper()
	o, err := fileoutbox.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = o.Close() })
	return o
}

func fill(t *testing.T, o *fileoutbox.Outbox, from, to int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := from; i <= to; i++ {
		s, err := o.Append(context.Background(), outboxtest.Msg(i, 40), t0)
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		seqs = append(seqs, s)
	}
	return seqs
}

// ids returns the numbers of the messages o holds, in order.
func ids(t *testing.T, o *fileoutbox.Outbox) []int {
	t.Helper()
	es, err := o.Peek(context.Background(), 1<<30)
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	var out []int
	for _, e := range es {
		n, err := strconv.Atoi(e.Message.Properties["seq"])
		if err != nil {
			t.Fatalf("entry %d: %v", e.Seq, err)
		}
		if d := outboxtest.Equal(e.Message, outboxtest.Msg(n, 40)); d != "" {
			t.Fatalf("entry %d: %s", e.Seq, d)
		}
		out = append(out, n)
	}
	return out
}

func span(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

func TestRotationDeletesDeliveredSegments(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, fileoutbox.Options{SegmentSize: 1000})
	seqs := fill(t, o, 1, 100)
	if n := len(segments(t, dir)); n < 10 {
		t.Fatalf("%d segments for 100 messages in 1000-byte segments", n)
	}
	if err := o.Remove(context.Background(), seqs[89]); err != nil {
		t.Fatal(err)
	}
	if n := len(segments(t, dir)); n > 3 {
		t.Fatalf("%d segments left holding 10 messages", n)
	}
	if got := ids(t, o); !equalInts(got, span(91, 100)) {
		t.Fatalf("holds %v", got)
	}
	if err := o.Remove(context.Background(), seqs[99]); err != nil {
		t.Fatal(err)
	}
	_ = o.Close()
	o = open(t, dir, fileoutbox.Options{SegmentSize: 1000})
	if got := ids(t, o); len(got) != 0 {
		t.Fatalf("holds %v after everything was removed", got)
	}
	if s := fill(t, o, 101, 101); s[0] <= seqs[99] {
		t.Fatalf("seq %d after %d", s[0], seqs[99])
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	o := open(t, dir, fileoutbox.Options{})
	fill(t, o, 1, 1)
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != fileoutbox.DirMode {
		t.Fatalf("directory mode %v", st.Mode().Perm())
	}
	for _, p := range append(segments(t, dir), filepath.Join(dir, "LOCK")) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != fileoutbox.FileMode {
			t.Fatalf("%s: mode %v", p, st.Mode().Perm())
		}
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, fileoutbox.Options{})
	if _, err := fileoutbox.Open(dir, fileoutbox.Options{}); !errors.Is(err, fileoutbox.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

func TestBadOptions(t *testing.T) {
	for _, opts := range []fileoutbox.Options{{Limit: domain.OutboxLimit{Bytes: -1}}, {SegmentSize: -1}} {
		if _, err := fileoutbox.Open(t.TempDir(), opts); !errors.Is(err, domain.ErrInvalidConfig) {
			t.Fatalf("Open(%+v): %v", opts, err)
		}
	}
	if _, err := fileoutbox.Open("", fileoutbox.Options{}); !errors.Is(err, domain.ErrInvalidConfig) {
		t.Fatalf("Open(\"\"): %v", err)
	}
}

func TestUnusableDirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fileoutbox.Open(f, fileoutbox.Options{}); err == nil {
		t.Fatal("Open on a regular file succeeded")
	}
}

// A write cut short by a crash: the half record is moved to quarantine,
// the rest is kept, and appends continue after it.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, fileoutbox.Options{})
	fill(t, o, 1, 5)
	_ = o.Close()
	segs := segments(t, dir)
	last := segs[len(segs)-1]
	st, _ := os.Stat(last)
	if err := os.Truncate(last, st.Size()-7); err != nil {
		t.Fatal(err)
	}
	o = open(t, dir, fileoutbox.Options{})
	rec := o.Recovery()
	if rec.TornBytes == 0 || len(rec.Corrupt) != 1 || !rec.Corrupt[0].Torn || rec.Entries != 4 {
		t.Fatalf("Recovery = %+v", rec)
	}
	if got := ids(t, o); !equalInts(got, span(1, 4)) {
		t.Fatalf("holds %v", got)
	}
	fill(t, o, 6, 6)
	_ = o.Close()
	o = open(t, dir, fileoutbox.Options{})
	if got := ids(t, o); !equalInts(got, []int{1, 2, 3, 4, 6}) {
		t.Fatalf("holds %v after appending past the cut", got)
	}
	if rec := o.Recovery(); rec.TornBytes != 0 || len(rec.Corrupt) != 0 {
		t.Fatalf("second Recovery = %+v", rec)
	}
}

// Damage in the middle of a segment among several: only the damaged
// record is lost, later records and segments are read, and the segment is
// rewritten without the damage (its bytes are in quarantine).
func TestCorruptSegment(t *testing.T) {
	dir := t.TempDir()
	opts := fileoutbox.Options{SegmentSize: 1000}
	o := open(t, dir, opts)
	fill(t, o, 1, 30)
	_ = o.Close()
	segs := segments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)*2/3] ^= 0xff // inside a record past the first
	if err := os.WriteFile(segs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	o = open(t, dir, opts)
	rec := o.Recovery()
	if len(rec.Corrupt) != 1 || rec.Corrupt[0].Path != segs[0] || rec.Corrupt[0].LostBytes == 0 || rec.Corrupt[0].Err == nil || rec.Corrupt[0].Torn || rec.Damage.Lost != 1 {
		t.Fatalf("Recovery = %+v", rec)
	}
	got := ids(t, o)
	if len(got) != 29 || got[0] != 1 || got[len(got)-1] != 30 {
		t.Fatalf("holds %v: want 1..30 but one", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("out of order: %v", got)
		}
	}
	fill(t, o, 31, 31)
	_ = o.Close()
	o = open(t, dir, opts)
	if got2 := ids(t, o); !equalInts(got2, append(got, 31)) {
		t.Fatalf("after reopening: %v, want %v", got2, append(got, 31))
	}
	if rec := o.Recovery(); len(rec.Corrupt) != 0 {
		t.Fatalf("second Recovery = %+v", rec)
	}
}

// Files of any content never make Open fail or panic; the damage is
// reported.
func TestGarbageSegments(t *testing.T) {
	cases := map[string][]byte{
		"zeros":      make([]byte, 100),
		"huge-len":   {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1},
		"text":       []byte("hello, this is not an outbox segment\n"),
		"one-byte":   {1},
		"bad-crc":    {0, 0, 0, 9, 1, 2, 3, 4, 2, 0, 0, 0, 0, 0, 0, 0, 1},
		"empty-file": {},
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			o := open(t, dir, fileoutbox.Options{})
			fill(t, o, 1, 3)
			_ = o.Close()
			// A damaged older segment, and a damaged newer one.
			if err := os.WriteFile(filepath.Join(dir, "0000000000000100.seg"), content, 0o600); err != nil {
				t.Fatal(err)
			}
			o = open(t, dir, fileoutbox.Options{})
			if got := ids(t, o); !equalInts(got, span(1, 3)) {
				t.Fatalf("holds %v", got)
			}
			fill(t, o, 4, 4)
			_ = o.Close()
			o = open(t, dir, fileoutbox.Options{})
			if got := ids(t, o); !equalInts(got, span(1, 4)) {
				t.Fatalf("holds %v after appending", got)
			}
		})
	}
}

// A record damaged after Open is dropped by Peek with an error log, not
// handed out and not a crash.
func TestDamagedAfterOpen(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, fileoutbox.Options{})
	fill(t, o, 1, 3)
	seg := segments(t, dir)[0]
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if _, err := f.WriteAt([]byte{0xff, 0xff}, st.Size()/2); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	got := ids(t, o)
	if len(got) != 2 || o.Lost() != 1 {
		t.Fatalf("holds %v, lost %d", got, o.Lost())
	}
	if n, _ := o.Len(); n != 2 {
		t.Fatalf("Len = %d", n)
	}
}

// FuzzOpen: whatever a segment holds, Open and Peek never panic.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	o, err := fileoutbox.Open(dir, fileoutbox.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := o.Append(context.Background(), outboxtest.Msg(i, 20), t0); err != nil {
			f.Fatal(err)
		}
	}
	_ = o.Close()
	seed, err := os.ReadFile(filepath.Join(dir, "0000000000000000.seg"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "0000000000000000.seg"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		o, err := fileoutbox.Open(dir, fileoutbox.Options{NoSync: true})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer o.Close()
		if _, err := o.Peek(context.Background(), 100); err != nil {
			t.Fatalf("Peek: %v", err)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts fileoutbox.Options
		par  bool
	}{
		{"Fsync", fileoutbox.Options{}, false},
		{"Fsync/Parallel", fileoutbox.Options{}, true},
		{"NoSync", fileoutbox.Options{NoSync: true}, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bc.opts.Limit = domain.OutboxLimit{Messages: 1 << 30, Bytes: 1 << 40}
			o, err := fileoutbox.Open(b.TempDir(), bc.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer o.Close()
			m := outboxtest.Msg(1, 200)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			if bc.par {
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := o.Append(ctx, m, t0); err != nil {
							b.Error(err)
							return
						}
					}
				})
			} else {
				for range b.N {
					if _, err := o.Append(ctx, m, t0); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// Appends from several goroutines while a reader delivers and removes, in
// segments so small that rotation and deletion race the fsyncs: every
// message is read once, in each writer's order, and nothing is left.
func TestConcurrentAppendAndRemoveWithRotation(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, fileoutbox.Options{SegmentSize: 400})
	const writers, each = 4, 100
	ctx := context.Background()
	errs := make(chan error, writers)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for w := range writers {
			go func() {
				for i := range each {
					if _, err := o.Append(ctx, outboxtest.Msg(w*each+i, 40), t0); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range writers {
			if err := <-errs; err != nil {
				t.Errorf("Append: %v", err)
			}
		}
	}()
	last := map[int]int{}
	seen := 0
	deadline := time.After(time.Minute)
	for seen < writers*each {
		select {
		case <-deadline:
			t.Fatalf("read %d of %d", seen, writers*each)
		default:
		}
		es, err := o.Peek(ctx, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			n, _ := strconv.Atoi(e.Message.Properties["seq"])
			w := n / each
			if p, ok := last[w]; ok && n <= p {
				t.Fatalf("writer %d: %d after %d", w, n, p)
			}
			last[w] = n
			seen++
		}
		if len(es) == 0 {
			runtime.Gosched() // the writers are behind
			continue
		}
		if err := o.Remove(ctx, es[len(es)-1].Seq); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if n, b := o.Len(); n != 0 || b != 0 {
		t.Fatalf("Len = %d, %d", n, b)
	}
	_ = o.Close()
	if n := len(segments(t, dir)); n > 2 {
		t.Fatalf("%d segments left after everything was delivered", n)
	}
	o = open(t, dir, fileoutbox.Options{SegmentSize: 400})
	if got := ids(t, o); len(got) != 0 {
		t.Fatalf("after reopening: %v", got)
	}
}
