package sqlitestore

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/store/memstore"
)

// cpuTime is the CPU time (user and system) the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchInFlight is the number of goroutines applying at once, each waiting
// for its unit: 100 devices with a message in flight each.
const benchInFlight = 100

// BenchmarkApplyTelemetry applies units of one telemetry record with a
// 200-byte document from benchInFlight goroutines, each waiting for its
// commit, as the emulator does before it acknowledges a message; memstore
// runs side by side. It reports the mean and largest group (units/commit,
// max-units) and the CPU time of the process per unit (cpu-µs/op, steadier
// than ns/op on a shared machine). The history100 variants keep the last 100
// messages per device: each unit also trims the oldest, as the model does
// once a device's telemetry history is full.
func BenchmarkApplyTelemetry(b *testing.B) {
	doc := []byte(`{"body":"` + strings.Repeat("x", 200-len(`{"body":""}`)) + `"}`)
	if len(doc) != 200 {
		b.Fatalf("doc of %d bytes", len(doc))
	}
	run := func(b *testing.B, s core.Store, keep int64) {
		var dev atomic.Int64
		b.SetBytes(int64(len(doc)))
		b.SetParallelism((benchInFlight + 1) / 2) // times GOMAXPROCS goroutines
		cpu0 := cpuTime()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			id := fmt.Sprintf("dev%d", dev.Add(1))
			var seq int64
			for pb.Next() {
				seq++
				unit := []core.Change{{Op: core.OpPut, Record: core.Record{Kind: core.KindTelemetry, Device: id, Seq: seq, Doc: doc}}}
				if keep > 0 && seq > keep {
					unit = append(unit, core.Change{Op: core.OpTrim, Record: core.Record{Kind: core.KindTelemetry, Device: id, Seq: seq - keep}})
				}
				if err := <-s.Apply(unit); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		st := s.Stats()
		if st.Commits > 0 {
			b.ReportMetric(float64(st.Units)/float64(st.Commits), "units/commit")
			b.ReportMetric(float64(st.MaxUnits), "max-units")
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
	for _, sync := range []Synchronous{SyncNormal, SyncFull} {
		b.Run("sqlite-"+strings.ToLower(sync.String()), func(b *testing.B) {
			s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), Options{Synchronous: sync})
			if err != nil {
				b.Fatal(err)
			}
			run(b, s, 0)
		})
	}
	b.Run("memstore", func(b *testing.B) { run(b, memstore.New(), 0) })
	// A full history: each unit also trims the device's oldest message.
	b.Run("sqlite-normal-history100", func(b *testing.B) {
		s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), Options{})
		if err != nil {
			b.Fatal(err)
		}
		run(b, s, 100)
	})
	b.Run("memstore-history100", func(b *testing.B) { run(b, memstore.New(), 100) })
}

// BenchmarkApplyLatency applies one unit at a time and waits for it: ns/op
// is the latency of a commit alone, with each Synchronous.
func BenchmarkApplyLatency(b *testing.B) {
	doc := []byte(`{"body":"` + strings.Repeat("x", 200-len(`{"body":""}`)) + `"}`)
	for _, sync := range []Synchronous{SyncNormal, SyncFull} {
		b.Run("sqlite-"+strings.ToLower(sync.String()), func(b *testing.B) {
			s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), Options{Synchronous: sync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ResetTimer()
			for i := range b.N {
				if err := <-s.Apply([]core.Change{{Op: core.OpPut, Record: core.Record{Kind: core.KindTelemetry, Device: "d", Seq: int64(i), Doc: doc}}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
