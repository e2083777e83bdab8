package benchkit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
)

// ConnectWorkers is how many goroutines connect the devices of a footprint
// run (and send their one message each).
const ConnectWorkers = 32

// ProcStats is one process's footprint at one moment.
type ProcStats struct {
	// RSS is the resident set size (VmRSS of /proc/self/status), bytes.
	RSS uint64 `json:"rss"`
	// Heap is runtime.MemStats.HeapAlloc: live heap after the GC, bytes.
	Heap uint64 `json:"heap"`
	// Goroutines is runtime.NumGoroutine.
	Goroutines int `json:"goroutines"`
}

// ReadProcStats collects garbage twice, returns the freed memory to the
// operating system (debug.FreeOSMemory) and reads this process's RSS, live
// heap and goroutine count. It fails only where /proc/self/status cannot be
// read or holds no VmRSS line (not Linux).
func ReadProcStats() (ProcStats, error) {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := ProcStats{Heap: ms.HeapAlloc, Goroutines: runtime.NumGoroutine()}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return st, fmt.Errorf("benchkit: read RSS: %w", err)
	}
	if st.RSS, err = ParseVmRSS(b); err != nil {
		return st, err
	}
	return st, nil
}

// ParseVmRSS returns the VmRSS of a /proc/PID/status text in bytes. It
// fails when there is no VmRSS line or its value is not "<number> kB".
func ParseVmRSS(status []byte) (uint64, error) {
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("benchkit: malformed VmRSS line %q", line)
		}
		n, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("benchkit: malformed VmRSS line %q", line)
		}
		return n * 1024, nil
	}
	return 0, errors.New("benchkit: no VmRSS line in the process status")
}

// RaiseFileLimit raises this process's open-file limit (RLIMIT_NOFILE) to
// its hard limit, so that 10,000 connections fit from a shell whose soft
// limit is 1,024. Children started afterwards inherit it.
func RaiseFileLimit() error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("benchkit: getrlimit: %w", err)
	}
	if rl.Cur >= rl.Max {
		return nil
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("benchkit: setrlimit: %w", err)
	}
	return nil
}

// FileLimit is this process's soft open-file limit (0 when unknown).
func FileLimit() uint64 {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	return rl.Cur
}

// Parallel runs f(i) for every i in [0,n) on workers goroutines and
// returns the first error (the others still run).
func Parallel(n, workers int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}
