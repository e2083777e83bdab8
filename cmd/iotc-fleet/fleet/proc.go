package fleet

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// procStats are this process's memory and goroutine figures.
type procStats struct {
	rss, peakRSS, heap uint64
	goroutines         int
}

// readProc reads VmRSS and VmHWM from /proc/self/status (0 where there is
// no /proc), the heap in use and the goroutine count.
func readProc() procStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p := procStats{heap: ms.HeapInuse, goroutines: runtime.NumGoroutine()}
	p.rss, p.peakRSS = ProcessRSS("self")
	return p
}

// ProcessRSS returns the resident set size and its peak (VmRSS, VmHWM) in
// bytes of process pid ("self" for this one), or zeros where /proc is
// missing or unreadable.
func ProcessRSS(pid string) (rss, peak uint64) {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			peak = n << 10
		}
	}
	return rss, peak
}
