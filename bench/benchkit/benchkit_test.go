package benchkit

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotc-go/iotc/adapters/mqtt"
	"github.com/iotc-go/iotc/emulator"
)

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tbench\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 100 kB\n"
	got, err := ParseVmRSS([]byte(status))
	if err != nil || got != 12345*1024 {
		t.Fatalf("ParseVmRSS = %d, %v; want %d", got, err, 12345*1024)
	}
	for _, bad := range []string{
		"Name:\tbench\nVmPeak:\t900 kB\n", // no VmRSS
		"VmRSS:\t12345 MB\n",              // wrong unit
		"VmRSS:\tlots kB\n",               // not a number
		"VmRSS:\n",                        // no value
	} {
		if n, err := ParseVmRSS([]byte(bad)); err == nil {
			t.Errorf("ParseVmRSS(%q) = %d, nil; want an error", bad, n)
		}
	}
}

func TestReadProcStats(t *testing.T) {
	st, err := ReadProcStats()
	if err != nil {
		t.Skipf("no /proc/self/status here: %v", err) // not Linux
	}
	if st.RSS == 0 || st.Heap == 0 || st.Goroutines < 1 {
		t.Fatalf("ReadProcStats = %+v; want every field set", st)
	}
}

func TestRatioVerdict(t *testing.T) {
	for _, c := range []struct {
		v, base, limit float64
		want           string
	}{
		{151, 100, 1.15, "1.51x over"},
		{115, 100, 1.15, "1.15x ok"},
		{115.4, 100, 1.15, "1.15x ok"}, // judged as printed
		{115.6, 100, 1.15, "1.16x over"},
		{90, 100, 1.1, "0.90x ok"},
		{5, 0, 1.1, "n/a"},
		{5, -3, 1.1, "n/a"},
	} {
		if got := RatioVerdict(c.v, c.base, c.limit); got != c.want {
			t.Errorf("RatioVerdict(%v, %v, %v) = %q; want %q", c.v, c.base, c.limit, got, c.want)
		}
	}
}

func TestDiffVerdict(t *testing.T) {
	for _, c := range []struct {
		v, base, limit float64
		want           string
	}{
		{15, 10, 2, "+5.0 over"},
		{12, 10, 2, "+2.0 ok"},
		{12.04, 10, 2, "+2.0 ok"},
		{12.06, 10, 2, "+2.1 over"},
		{9, 10, 2, "-1.0 ok"},
		{10.01, 10, 2, "+0.0 ok"},
		{9.99, 10, 2, "+0.0 ok"}, // no "-0.0"
	} {
		if got := DiffVerdict(c.v, c.base, c.limit); got != c.want {
			t.Errorf("DiffVerdict(%v, %v, %v) = %q; want %q", c.v, c.base, c.limit, got, c.want)
		}
	}
}

func TestFootprintResultPerDevice(t *testing.T) {
	r := FootprintResult{
		Devices:        4,
		ClientBefore:   ProcStats{RSS: 1000, Heap: 800, Goroutines: 3},
		Client:         ProcStats{RSS: 5000, Heap: 600, Goroutines: 43},
		EmulatorBefore: ProcStats{RSS: 2000, Goroutines: 10},
		Emulator:       ProcStats{RSS: 2400, Goroutines: 18},
	}
	if r.RSS() != 1000 || r.Heap() != -50 || r.Goroutines() != 10 || r.EmulatorRSS() != 100 || r.EmulatorGoroutines() != 2 {
		t.Fatalf("per device: RSS %v heap %v goroutines %v emulator RSS %v goroutines %v; want 1000 -50 10 100 2",
			r.RSS(), r.Heap(), r.Goroutines(), r.EmulatorRSS(), r.EmulatorGoroutines())
	}
}

func TestPrintFootprint(t *testing.T) {
	mk := func(name string, rss, heap uint64, g int, took time.Duration) FootprintResult {
		return FootprintResult{Path: name, Devices: 10, ClientBefore: ProcStats{RSS: 1 << 20}, Client: ProcStats{RSS: 1<<20 + rss*10, Heap: heap * 10, Goroutines: g * 10}, ConnectAll: took, ConnectCPU: took / 2}
	}
	// Medians: sdk's three runs have 2, 9 and 2 KiB of RSS per device.
	res := []PathFootprint{
		{Path: "sdk", Runs: []FootprintResult{mk("sdk", 2048, 1024, 12, 2*time.Second), mk("sdk", 9216, 1024, 12, 9*time.Second), mk("sdk", 2048, 1024, 12, 2*time.Second)}},
		{Path: "raw", Runs: []FootprintResult{mk("raw", 1024, 1024, 10, 2*time.Second), mk("raw", 1024, 1024, 10, 2*time.Second), mk("raw", 1024, 1024, 10, 2*time.Second)}},
	}
	var b bytes.Buffer
	PrintFootprint(&b, res, "raw", DefaultTargets)
	out := b.String()
	for _, want := range []string{"2.0 KiB", "against raw", "2.00x over", "1.00x ok", "+2.0 ok", "emulator per connected device", "median of 3 run(s)", "9s (0.0)", "100.00ms", "1.00x\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "x ok")+strings.Count(out, "x over") != 3 {
		t.Errorf("want one ratio line (3 ratios) for the one SDK path:\n%s", out)
	}
}

func TestSelectKeys(t *testing.T) {
	paths := []Path{{Key: "client"}, {Key: "mqtt"}, {Key: "raw"}}
	got, err := SelectKeys(" mqtt ,client", paths, "raw")
	if err != nil || !slices.Equal(got, []string{"client", "mqtt", "raw"}) {
		t.Fatalf("SelectKeys = %v, %v; want [client mqtt raw]", got, err)
	}
	if got, err = SelectKeys("client", paths, "raw"); err != nil || !slices.Equal(got, []string{"client", "raw"}) {
		t.Fatalf("SelectKeys(client) = %v, %v; want the baseline added", got, err)
	}
	if _, err := SelectKeys("client,amqp", paths, "raw"); err == nil || !strings.Contains(err.Error(), "amqp") {
		t.Fatalf("SelectKeys(amqp) err = %v; want it to name the unknown key", err)
	}
	if sel := Selected(paths, []string{"raw", "client"}); len(sel) != 2 || sel[0].Key != "client" || sel[1].Key != "raw" {
		t.Fatalf("Selected = %v; want client, raw in the paths' order", sel)
	}
}

func TestParallel(t *testing.T) {
	var sum, calls atomic.Int64
	errOdd := errors.New("odd")
	err := Parallel(1000, 7, func(i int) error {
		calls.Add(1)
		sum.Add(int64(i))
		if i == 501 {
			return errOdd
		}
		return nil
	})
	if !errors.Is(err, errOdd) || calls.Load() != 1000 || sum.Load() != 999*1000/2 {
		t.Fatalf("Parallel: err %v, %d calls, sum %d; want errOdd, 1000 calls, sum %d", err, calls.Load(), sum.Load(), 999*1000/2)
	}
}

// fakeCreator records the devices created and fails on one id.
type fakeCreator struct {
	ids  []string
	fail string
}

func (f *fakeCreator) CreateDevice(id string) (string, error) {
	if id == f.fail {
		return "", errors.New("refused")
	}
	f.ids = append(f.ids, id)
	return "key-" + id, nil
}

func TestServeCommands(t *testing.T) {
	fc := &fakeCreator{fail: "dev-000005"}
	stats := func() (ProcStats, error) { return ProcStats{RSS: 7, Heap: 8, Goroutines: 9}, nil }
	in := strings.NewReader("create 2\ncreate 1\nstats\nbogus\ncreate x\ncreate 3\n")
	var out bytes.Buffer
	if err := serveCommands(fc, stats, in, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d answers; want 6:\n%s", len(lines), out.String())
	}
	var devs struct{ Devices []Device }
	if err := json.Unmarshal([]byte(lines[0]), &devs); err != nil || len(devs.Devices) != 2 ||
		devs.Devices[0] != (Device{ID: "dev-000001", Key: "key-dev-000001"}) || devs.Devices[1].ID != "dev-000002" {
		t.Fatalf("create 2 answered %s", lines[0])
	}
	if err := json.Unmarshal([]byte(lines[1]), &devs); err != nil || len(devs.Devices) != 1 || devs.Devices[0].ID != "dev-000003" {
		t.Fatalf("create 1 answered %s; want dev-000003 (ids continue)", lines[1])
	}
	var st ProcStats
	if err := json.Unmarshal([]byte(lines[2]), &st); err != nil || st != (ProcStats{RSS: 7, Heap: 8, Goroutines: 9}) {
		t.Fatalf("stats answered %s", lines[2])
	}
	for i, want := range map[int]string{3: "unknown command", 4: "bad count", 5: "refused"} {
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(lines[i]), &e); err != nil || !strings.Contains(e.Error, want) {
			t.Errorf("answer %d = %s; want an error with %q", i, lines[i], want)
		}
	}
	if !slices.Equal(fc.ids, []string{"dev-000001", "dev-000002", "dev-000003", "dev-000004"}) {
		t.Errorf("created %v", fc.ids)
	}
}

// TestFootprintJob runs a footprint child's measurement in this process
// against an in-process emulator: every device of the job connects through
// raw paho and the bare adapter with their connect work and sends its one
// message.
func TestFootprintJob(t *testing.T) {
	ctx := context.Background()
	e, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	paths := func(port int, roots *x509.CertPool) []Path {
		return []Path{RawPahoPath(), TransportPath("sdk adapters/mqtt", mqtt.New(&mqtt.Options{Port: port, RootCAs: roots}))}
	}
	for _, name := range []string{"raw paho", "sdk adapters/mqtt"} {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			job := footprintJob{Path: name, Addr: e.MQTTAddr(), HubHost: e.HubHost(), CAPEM: e.CACertPEM()}
			for i := range 3 {
				id := fmt.Sprintf("job-%s-%d", strings.NewReplacer(" ", "-", "/", "-").Replace(name), i)
				key, err := e.CreateDevice(id)
				if err != nil {
					t.Fatal(err)
				}
				job.Devices = append(job.Devices, Device{ID: id, Key: key})
			}
			conns, rep, err := runFootprintJob(ctx, paths, job)
			defer func() {
				for _, c := range conns {
					if c.Close != nil {
						_ = c.Close()
					}
				}
			}()
			if err != nil {
				t.Fatal(err)
			}
			if rep.ConnectAll <= 0 || rep.After.Goroutines < rep.Before.Goroutines+3 {
				t.Fatalf("report %+v; want a connect time and at least a goroutine per connection", rep)
			}
			for _, d := range job.Devices {
				h, err := e.TelemetryHistory(d.ID, emulator.TelemetryFilter{})
				if err != nil || len(h) != 1 {
					t.Fatalf("device %s: telemetry history %d messages, %v; want its one message", d.ID, len(h), err)
				}
			}
		})
	}
	if _, _, err := runFootprintJob(ctx, paths, footprintJob{Path: "nope", Addr: e.MQTTAddr(), CAPEM: e.CACertPEM()}); err == nil {
		t.Fatal("unknown path: no error")
	}
}
