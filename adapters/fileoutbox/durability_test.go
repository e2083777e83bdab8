package fileoutbox_test

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/iotc-go/iotc/adapters/fileoutbox"
	"github.com/iotc-go/iotc/internal/outboxtest"
)

// syncLog records, per file, the size it had when it was last fsynced.
type syncLog struct {
	mu     sync.Mutex
	synced map[string]int64
	count  int
}

func (l *syncLog) hook(f *os.File) {
	st, err := f.Stat()
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.synced[f.Name()] = st.Size()
	l.count++
}

func (l *syncLog) state(path string) (size int64, count int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.synced[path], l.count
}

// Every Append returns only once the segment, as far as it is written, was
// fsynced: an accepted message survives power loss. With NoSync, Append
// never fsyncs.
func TestAppendSyncsBeforeReturning(t *testing.T) {
	dir := t.TempDir()
	l := &syncLog{synced: map[string]int64{}}
	o := open(t, dir, fileoutbox.WithSyncHook(fileoutbox.Options{}, l.hook))
	for i := 1; i <= 5; i++ {
		if _, err := o.Append(context.Background(), outboxtest.Msg(i, 40), t0); err != nil {
			t.Fatal(err)
		}
		seg := segments(t, dir)[0]
		st, err := os.Stat(seg)
		if err != nil {
			t.Fatal(err)
		}
		if synced, _ := l.state(seg); synced != st.Size() {
			t.Fatalf("after Append %d the segment holds %d bytes, %d of them fsynced", i, st.Size(), synced)
		}
	}

	dir = t.TempDir()
	l = &syncLog{synced: map[string]int64{}}
	o = open(t, dir, fileoutbox.WithSyncHook(fileoutbox.Options{NoSync: true}, l.hook))
	fill(t, o, 1, 5)
	if _, n := l.state(segments(t, dir)[0]); n != 0 {
		t.Fatalf("%d fsyncs with NoSync", n)
	}
}

// Everything was delivered while the tail segment was full, so the outbox
// started a segment holding only the removal watermark. After a restart
// new messages are numbered past it, Remove removes them, and what was not
// removed is still there at the next restart.
func TestSeqPastRemovalWatermark(t *testing.T) {
	dir := t.TempDir()
	// Segments smaller than one record: every tail is full.
	opts := fileoutbox.Options{SegmentSize: 50, NoSync: true}
	o := open(t, dir, opts)
	seqs := fill(t, o, 1, 3)
	if err := o.Remove(context.Background(), seqs[2]); err != nil {
		t.Fatal(err)
	}
	_ = o.Close()
	o = open(t, dir, opts)
	s := fill(t, o, 4, 5)
	if s[0] <= seqs[2] {
		t.Fatalf("seq %d after the removal of everything through %d", s[0], seqs[2])
	}
	if err := o.Remove(context.Background(), s[0]); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, o); !equalInts(got, []int{5}) {
		t.Fatalf("holds %v after removing message 4", got)
	}
	_ = o.Close()
	o = open(t, dir, opts)
	if got := ids(t, o); !equalInts(got, []int{5}) {
		t.Fatalf("holds %v after a restart, want [5]", got)
	}
}
