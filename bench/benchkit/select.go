package benchkit

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// SelectKeys parses a -paths value (comma-separated path keys) against
// paths and returns the keys in the order of paths, with baseline always
// included (the ratios need it). An unknown key is an error naming the
// known ones.
func SelectKeys(list string, paths []Path, baseline string) ([]string, error) {
	want := map[string]bool{baseline: true}
	for f := range strings.SplitSeq(list, ",") {
		k := strings.TrimSpace(f)
		if k == "" {
			continue
		}
		if !slices.ContainsFunc(paths, func(p Path) bool { return p.Key == k }) {
			known := make([]string, len(paths))
			for i, p := range paths {
				known[i] = p.Key
			}
			return nil, fmt.Errorf("unknown path %q in -paths (known: %s)", k, strings.Join(known, ", "))
		}
		want[k] = true
	}
	var keys []string
	for _, p := range paths {
		if want[p.Key] {
			keys = append(keys, p.Key)
		}
	}
	return keys, nil
}

// Selected returns the paths whose key is in keys, in their order.
func Selected(paths []Path, keys []string) []Path {
	var out []Path
	for _, p := range paths {
		if slices.Contains(keys, p.Key) {
			out = append(out, p)
		}
	}
	return out
}

// Names returns the paths' names.
func Names(paths []Path) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = p.Name
	}
	return out
}

// Sample is one timed run of one path.
type Sample struct {
	Rate   float64 // messages per second
	CPU    float64 // process CPU time per message, µs (the emulator's included when it runs in this process)
	Allocs float64 // process heap allocations per message (runtime.MemStats.Mallocs)
}

// TimedRun sends messages with send, inflight at a time (see Run), and
// measures the rate and this process's CPU time and heap allocations per
// message.
func TimedRun(ctx context.Context, send Sender, messages, inflight int) (Sample, error) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	cpu0 := ProcessCPU()
	elapsed, err := Run(ctx, send, messages, inflight)
	cpu1 := ProcessCPU()
	runtime.ReadMemStats(&m1)
	if err != nil {
		return Sample{}, err
	}
	n := float64(messages)
	return Sample{
		Rate:   n / elapsed.Seconds(),
		CPU:    float64((cpu1 - cpu0).Microseconds()) / n,
		Allocs: float64(m1.Mallocs-m0.Mallocs) / n,
	}, nil
}

// ProcessCPU is the user plus system CPU time of this process so far (0
// when unknown).
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Rates returns the Rate of each sample.
func Rates(s []Sample) []float64 { return pick(s, func(x Sample) float64 { return x.Rate }) }

// CPUs returns the CPU of each sample.
func CPUs(s []Sample) []float64 { return pick(s, func(x Sample) float64 { return x.CPU }) }

// Allocs returns the Allocs of each sample.
func Allocs(s []Sample) []float64 { return pick(s, func(x Sample) float64 { return x.Allocs }) }

func pick(s []Sample, f func(Sample) float64) []float64 {
	out := make([]float64, len(s))
	for i, x := range s {
		out[i] = f(x)
	}
	return out
}
