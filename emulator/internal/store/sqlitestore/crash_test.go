package sqlitestore

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// crashEnv names the database file the crash child writes to.
const crashEnv = "SQLITESTORE_CRASH_CHILD_DB"

const (
	crashWorkers = 32
	// crashAfter is how many acknowledged units the parent reads before it
	// kills the child.
	crashAfter = 3000
)

// TestCrashChild is the child of TestKillNineLosesNothingAcknowledged: it
// applies units from many goroutines and prints "ack <worker> <i>" for each
// unit once its channel said nil, until it is killed.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("the child of TestKillNineLosesNothingAcknowledged")
	}
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out sync.Mutex
	stop := time.After(2 * time.Minute) // the parent kills it well before
	var wg sync.WaitGroup
	for w := range crashWorkers {
		wg.Go(func() {
			dev := fmt.Sprintf("dev%d", w)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				doc := fmt.Sprintf(`{"w":%d,"i":%d,"pad":%q}`, w, i, strings.Repeat("p", 150))
				err := <-s.Apply([]core.Change{
					// Telemetry numbers are unique in the kind: worker in the high bits.
					put(telemetry(dev, int64(w)<<32|int64(i), doc)),
					put(core.Record{Kind: core.KindC2D, Device: dev, Key: fmt.Sprintf("m%d", i), Seq: int64(i), Doc: []byte(doc)}),
					put(device(dev, fmt.Sprintf(`{"last":%d}`, i))),
				})
				if err != nil {
					t.Error(err)
					return
				}
				out.Lock()
				_, _ = fmt.Fprintf(os.Stdout, "ack %d %d\n", w, i)
				out.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestKillNineLosesNothingAcknowledged runs TestCrashChild, kills it with
// SIGKILL once it acknowledged crashAfter units, and finds every unit it
// acknowledged, each unit whole, in the reopened file.
func TestKillNineLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[int]int{} // worker -> highest i acknowledged (units per worker go in order)
	count, killed := 0, false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "ack" {
			continue
		}
		w, err1 := strconv.Atoi(f[1])
		i, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			t.Fatalf("child printed %q", sc.Text())
		}
		if prev, ok := acked[w]; ok && i != prev+1 || !ok && i != 0 {
			t.Fatalf("worker %d acknowledged %d after %d", w, i, prev)
		}
		acked[w] = i
		count++
		if count == crashAfter && !killed {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
		// Lines already in the pipe were acknowledged too: read them all.
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("the child ended after %d acknowledgements (%v) before it was killed", count, err)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child ended with %v, not by SIGKILL", cmd.ProcessState)
	}
	t.Logf("killed after %d acknowledged units (%d read in all)", crashAfter, count)

	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("reopening after kill -9: %v", err)
	}
	defer s.Close()
	recs, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Per worker: the telemetry seqs, the c2d seqs and the device's last.
	type found struct {
		tel, c2d map[int64]bool
		last     int
	}
	byDev := map[string]*found{}
	get := func(dev string) *found {
		if byDev[dev] == nil {
			byDev[dev] = &found{tel: map[int64]bool{}, c2d: map[int64]bool{}, last: -1}
		}
		return byDev[dev]
	}
	for _, r := range recs {
		switch r.Kind {
		case core.KindTelemetry:
			get(r.Device).tel[r.Seq&0xffffffff] = true
		case core.KindC2D:
			get(r.Device).c2d[r.Seq] = true
		case core.KindDevice:
			var d struct{ Last int }
			if err := json.Unmarshal(r.Doc, &d); err != nil {
				t.Fatal(err)
			}
			get(r.Key).last = d.Last
		}
	}
	for w, hi := range acked {
		f := get(fmt.Sprintf("dev%d", w))
		for i := range int64(hi) + 1 {
			if !f.tel[i] || !f.c2d[i] {
				t.Fatalf("worker %d: unit %d was acknowledged but is lost (telemetry %v, c2d %v)", w, i, f.tel[i], f.c2d[i])
			}
		}
		if f.last < hi {
			t.Fatalf("worker %d: device at unit %d, but unit %d was acknowledged", w, f.last, hi)
		}
	}
	// Every unit is whole: a worker's units are 0..last, each with its
	// three records, nothing beyond.
	for dev, f := range byDev {
		if len(f.tel) != f.last+1 || len(f.c2d) != f.last+1 {
			t.Fatalf("%s: device at unit %d with %d telemetry and %d c2d records: a unit was committed in part", dev, f.last, len(f.tel), len(f.c2d))
		}
	}
}
