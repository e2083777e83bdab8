package benchkit

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator"
)

// The footprint machinery: every path is measured in a process of its own
// (the bench re-executed with its footprint-child flag) against an
// emulator of its own (the bench re-executed with its emulator flag), so
// that the RSS of one path holds none of the memory another path freed
// but the process kept, and the emulator's holds nothing of an earlier
// path's sessions. The parent creates the devices through the emulator
// child's API (no DPS), hands them to the footprint child on stdin and
// asks the emulator child for its own footprint before and while the
// devices are connected.

// Device is a device created on the emulator: its id and primary key.
type Device struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// EmulatorInfo is what the emulator child prints on its first line.
type EmulatorInfo struct {
	MQTTAddr string `json:"mqttAddr"`
	AMQPAddr string `json:"amqpAddr"`
	HubHost  string `json:"hubHost"`
	CAPEM    []byte `json:"caPEM"`
}

// creator is what the emulator child's "create" command needs.
type creator interface {
	CreateDevice(id string) (string, error)
}

// ServeEmulator runs in the emulator child: it starts an emulator on
// loopback ports (MQTT, WebSockets and AMQP; no REST API), prints an
// EmulatorInfo line on out and then answers one JSON line per command line
// read from in, until in ends:
//
//	create N   creates N devices (ids dev-000001 on, continuing) and answers {"devices":[{"id":...,"key":...}]}
//	stats      answers the emulator process's ProcStats (after GC and FreeOSMemory)
//
// A failed command answers {"error":"..."}.
func ServeEmulator(in io.Reader, out io.Writer) error {
	e, err := emulator.Start(context.Background(), &emulator.Options{
		MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	defer e.Close()
	info := EmulatorInfo{MQTTAddr: e.MQTTAddr(), AMQPAddr: e.AMQPAddr(), HubHost: e.HubHost(), CAPEM: e.CACertPEM()}
	if err := json.NewEncoder(out).Encode(info); err != nil {
		return err
	}
	return serveCommands(e, ReadProcStats, in, out)
}

// serveCommands answers the emulator child's commands (see ServeEmulator).
func serveCommands(c creator, stats func() (ProcStats, error), in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	seq := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var reply any
		var err error
		switch {
		case len(f) == 2 && f[0] == "create":
			var n int
			if n, err = strconv.Atoi(f[1]); err != nil || n < 0 {
				err = fmt.Errorf("create: bad count %q", f[1])
				break
			}
			devs := make([]Device, 0, n)
			for range n {
				seq++
				d := Device{ID: fmt.Sprintf("dev-%06d", seq)}
				if d.Key, err = c.CreateDevice(d.ID); err != nil {
					err = fmt.Errorf("create %s: %w", d.ID, err)
					break
				}
				devs = append(devs, d)
			}
			reply = struct {
				Devices []Device `json:"devices"`
			}{devs}
		case len(f) == 1 && f[0] == "stats":
			reply, err = stats()
		default:
			err = fmt.Errorf("unknown command %q", sc.Text())
		}
		if err != nil {
			reply = struct {
				Error string `json:"error"`
			}{err.Error()}
		}
		if err := enc.Encode(reply); err != nil {
			return err
		}
	}
	return sc.Err()
}

// EmulatorChild is an emulator running in a child process (see
// ServeEmulator); its methods are safe for concurrent use.
type EmulatorChild struct {
	// Info says how to reach it.
	Info EmulatorInfo
	// Roots holds its CA.
	Roots *x509.CertPool

	mu    sync.Mutex
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// StartEmulatorChild starts this program with the given arguments (its
// flag that makes it call ServeEmulator) and reads the EmulatorInfo line.
func StartEmulatorChild(args ...string) (*EmulatorChild, error) {
	cmd, stdin, out, err := startSelf(args...)
	if err != nil {
		return nil, err
	}
	c := &EmulatorChild{cmd: cmd, stdin: stdin, out: out}
	line, err := out.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &c.Info)
	}
	if err == nil {
		c.Roots = x509.NewCertPool()
		if !c.Roots.AppendCertsFromPEM(c.Info.CAPEM) {
			err = errors.New("bad CA PEM")
		}
	}
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("emulator child: %w", err)
	}
	return c, nil
}

// startSelf starts this program's executable with args, stdin and stdout
// piped, stderr shared.
func startSelf(args ...string) (*exec.Cmd, io.WriteCloser, *bufio.Reader, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	return cmd, stdin, bufio.NewReaderSize(stdout, 1<<16), nil
}

// call sends one command line and decodes the one-line answer into v.
func (c *EmulatorChild) call(command string, v any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.stdin, command+"\n"); err != nil {
		return fmt.Errorf("emulator child: %s: %w", command, err)
	}
	line, err := c.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("emulator child: %s: %w", command, err)
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(line, &e) == nil && e.Error != "" {
		return fmt.Errorf("emulator child: %s", e.Error)
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("emulator child: %s: %w", command, err)
	}
	return nil
}

// CreateDevices creates n devices on the emulator (with individual keys,
// so they connect to the hub without DPS).
func (c *EmulatorChild) CreateDevices(n int) ([]Device, error) {
	var r struct {
		Devices []Device `json:"devices"`
	}
	if err := c.call("create "+strconv.Itoa(n), &r); err != nil {
		return nil, err
	}
	if len(r.Devices) != n {
		return nil, fmt.Errorf("emulator child: created %d devices, not %d", len(r.Devices), n)
	}
	return r.Devices, nil
}

// Stats returns the emulator process's footprint.
func (c *EmulatorChild) Stats() (ProcStats, error) {
	var st ProcStats
	err := c.call("stats", &st)
	return st, err
}

// Target is device d on the listener at addr.
func (c *EmulatorChild) Target(addr string, d Device) Target {
	return Target{Addr: addr, HubHost: c.Info.HubHost, RootCAs: c.Roots, DeviceID: d.ID, Key: d.Key}
}

// Close ends the child (it stops when its stdin closes) and waits for it.
func (c *EmulatorChild) Close() error {
	_ = c.stdin.Close()
	return c.cmd.Wait()
}

// footprintJob is what the parent hands a footprint child on stdin.
type footprintJob struct {
	Path    string   `json:"path"`
	Addr    string   `json:"addr"`
	HubHost string   `json:"hubHost"`
	CAPEM   []byte   `json:"caPEM"`
	Devices []Device `json:"devices"`
	// Profile, when set, is the prefix of the heap and goroutine profiles
	// the child writes while the devices are connected.
	Profile string `json:"profile,omitempty"`
}

// footprintReport is the footprint child's answer.
type footprintReport struct {
	Before     ProcStats     `json:"before"`
	After      ProcStats     `json:"after"`
	ConnectAll time.Duration `json:"connectAll"`
	ConnectCPU time.Duration `json:"connectCPU"`
	Error      string        `json:"error,omitempty"`
}

// connectTimeout bounds one device's connect work in a footprint child.
const connectTimeout = 5 * time.Minute

// FootprintChild runs in a footprint child (the bench started with its
// footprint-child flag). It reads a job from in, measures its own
// ProcStats, connects every device of the job through the job's path
// (one of paths(port, roots), by name) with ConnectWorkers goroutines,
// sends one message on each connection, measures again and writes a
// report line on out. It then keeps the devices connected until in ends
// (the parent measures the emulator meanwhile) and returns without
// closing them: the process exit closes the sockets.
func FootprintChild(ctx context.Context, paths func(port int, roots *x509.CertPool) []Path, in io.Reader, out io.Writer) error {
	br := bufio.NewReaderSize(in, 1<<16)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("footprint child: read job: %w", err)
	}
	var job footprintJob
	if err := json.Unmarshal(line, &job); err != nil {
		return fmt.Errorf("footprint child: job: %w", err)
	}
	// The connections stay open until the process exits.
	_, rep, err := runFootprintJob(ctx, paths, job)
	if err != nil {
		rep.Error = err.Error()
	}
	if err := json.NewEncoder(out).Encode(rep); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, br) // connected until the parent is done
	return nil
}

// runFootprintJob does a footprint child's measurement and returns the
// connections it made (those made before an error included).
func runFootprintJob(ctx context.Context, paths func(port int, roots *x509.CertPool) []Path, job footprintJob) ([]Conn, footprintReport, error) {
	var rep footprintReport
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(job.CAPEM) {
		return nil, rep, errors.New("bad CA PEM")
	}
	port, err := PortOf(job.Addr)
	if err != nil {
		return nil, rep, err
	}
	var p *Path
	for _, q := range paths(port, roots) {
		if q.Name == job.Path {
			p = &q
			break
		}
	}
	if p == nil {
		return nil, rep, fmt.Errorf("no path %q", job.Path)
	}
	n := len(job.Devices)
	if rep.Before, err = ReadProcStats(); err != nil {
		return nil, rep, err
	}
	conns := make([]Conn, n)
	if job.Profile != "" { // the connect phase's CPU profile, beside the heap profile
		name := job.Profile + "-" + strings.NewReplacer(" ", "_", "/", "_", ".", "_").Replace(p.Name) + ".connect-cpu.pprof"
		if f, err := os.Create(name); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer f.Close()
				defer pprof.StopCPUProfile() // stopped below; a second stop does nothing
			} else {
				_ = f.Close()
			}
		}
	}
	cpu0 := ProcessCPU()
	start := time.Now()
	err = Parallel(n, ConnectWorkers, func(i int) error {
		d := job.Devices[i]
		cctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		c, err := p.Connect(cctx, Target{Addr: job.Addr, HubHost: job.HubHost, RootCAs: roots, DeviceID: d.ID, Key: d.Key})
		if err != nil {
			return fmt.Errorf("%s: connect %s: %w", p.Name, d.ID, err)
		}
		conns[i] = c
		return nil
	})
	rep.ConnectAll = time.Since(start)
	rep.ConnectCPU = ProcessCPU() - cpu0
	pprof.StopCPUProfile()
	if err != nil {
		return conns, rep, err
	}
	// One message each, so that every connection has been used.
	err = Parallel(n, ConnectWorkers, func(i int) error {
		sctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		if err := conns[i].Send(sctx); err != nil {
			return fmt.Errorf("%s: send %s: %w", p.Name, job.Devices[i].ID, err)
		}
		return nil
	})
	if err != nil {
		return conns, rep, err
	}
	if rep.After, err = ReadProcStats(); err != nil {
		return conns, rep, err
	}
	if job.Profile != "" {
		writeProfiles(job.Profile + "-" + strings.NewReplacer(" ", "_", "/", "_", ".", "_").Replace(p.Name))
	}
	return conns, rep, nil
}

// writeProfiles writes a heap profile (prefix.heap.pprof) and a goroutine
// profile with counts per stack (prefix.goroutine.txt); failures are
// reported on stderr only.
func writeProfiles(prefix string) {
	for _, pr := range []struct {
		name, file string
		debug      int
	}{{"heap", prefix + ".heap.pprof", 0}, {"goroutine", prefix + ".goroutine.txt", 1}} {
		f, err := os.Create(pr.file)
		if err == nil {
			err = pprof.Lookup(pr.name).WriteTo(f, pr.debug)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "footprint child: profile:", err)
		}
	}
}

// FootprintConfig configures RunFootprint.
type FootprintConfig struct {
	// Devices is how many devices each path connects at once.
	Devices int
	// Paths are the names of the paths to measure, in order; each must be
	// one of those the footprint child's paths function returns.
	Paths []string
	// EmulatorArgs start this program as an emulator child
	// ("-serve-emulator"); ChildArgs as a footprint child.
	EmulatorArgs, ChildArgs []string
	// Addr picks the listener the paths connect to.
	Addr func(EmulatorInfo) string
	// Profile, when set, makes every footprint child write heap and
	// goroutine profiles with this prefix.
	Profile string
	// Rounds is how many times every path is measured, the paths in a
	// rotated order each round (0 means 1); the report gives medians.
	Rounds int
	// Progress receives a line per path measured (nil: none).
	Progress io.Writer
}

// FootprintResult is one path's footprint run.
type FootprintResult struct {
	// Path is the path's name; Devices how many it connected.
	Path    string
	Devices int
	// ClientBefore and Client are the footprint child's ProcStats just
	// before connecting and with every device connected.
	ClientBefore, Client ProcStats
	// EmulatorBefore and Emulator are the emulator child's, with the
	// devices created but not connected and with them connected.
	EmulatorBefore, Emulator ProcStats
	// ConnectAll is how long connecting every device took; ConnectCPU
	// the footprint child's CPU time (user and system) meanwhile, which
	// depends less on the machine's load.
	ConnectAll, ConnectCPU time.Duration
	// Load is the machine's 1-minute load average when the footprint
	// child started (0 when unknown).
	Load float64
}

// perDevice is (after - before) / n for one field of ProcStats.
func perDevice(after, before uint64, n int) float64 {
	return (float64(after) - float64(before)) / float64(n)
}

// RSS is the client's RSS per connected device, bytes.
func (r FootprintResult) RSS() float64 { return perDevice(r.Client.RSS, r.ClientBefore.RSS, r.Devices) }

// Heap is the client's live heap per connected device, bytes.
func (r FootprintResult) Heap() float64 {
	return perDevice(r.Client.Heap, r.ClientBefore.Heap, r.Devices)
}

// Goroutines is the client's goroutines per connected device.
func (r FootprintResult) Goroutines() float64 {
	return perDevice(uint64(r.Client.Goroutines), uint64(r.ClientBefore.Goroutines), r.Devices)
}

// EmulatorRSS is the emulator's RSS per connected device, bytes.
func (r FootprintResult) EmulatorRSS() float64 {
	return perDevice(r.Emulator.RSS, r.EmulatorBefore.RSS, r.Devices)
}

// EmulatorGoroutines is the emulator's goroutines per connected device.
func (r FootprintResult) EmulatorGoroutines() float64 {
	return perDevice(uint64(r.Emulator.Goroutines), uint64(r.EmulatorBefore.Goroutines), r.Devices)
}

// PathFootprint is every footprint run of one path.
type PathFootprint struct {
	Path string
	Runs []FootprintResult
}

// median is the median of f over the runs.
func (p PathFootprint) median(f func(FootprintResult) float64) float64 {
	xs := make([]float64, len(p.Runs))
	for i, r := range p.Runs {
		xs[i] = f(r)
	}
	return Median(xs)
}

// RSS is the median of the runs' client RSS per device, bytes.
func (p PathFootprint) RSS() float64 { return p.median(FootprintResult.RSS) }

// Heap is the median of the runs' client heap per device, bytes.
func (p PathFootprint) Heap() float64 { return p.median(FootprintResult.Heap) }

// Goroutines is the median of the runs' client goroutines per device.
func (p PathFootprint) Goroutines() float64 { return p.median(FootprintResult.Goroutines) }

// ConnectAll is the median of the runs' connect-all times, seconds.
func (p PathFootprint) ConnectAll() float64 {
	return p.median(func(r FootprintResult) float64 { return r.ConnectAll.Seconds() })
}

// ConnectCPU is the median of the runs' client CPU time per device spent
// connecting, seconds.
func (p PathFootprint) ConnectCPU() float64 {
	return p.median(func(r FootprintResult) float64 { return r.ConnectCPU.Seconds() / float64(r.Devices) })
}

// EmulatorRSS is the median of the runs' emulator RSS per device, bytes.
func (p PathFootprint) EmulatorRSS() float64 { return p.median(FootprintResult.EmulatorRSS) }

// EmulatorGoroutines is the median of the runs' emulator goroutines per
// device.
func (p PathFootprint) EmulatorGoroutines() float64 {
	return p.median(FootprintResult.EmulatorGoroutines)
}

// RunFootprint measures every path of cfg cfg.Rounds times, each run in a
// footprint child of its own against a fresh emulator child holding
// cfg.Devices devices, and returns the runs by path in cfg.Paths' order.
func RunFootprint(ctx context.Context, cfg FootprintConfig) ([]PathFootprint, error) {
	if cfg.Devices <= 0 || len(cfg.Paths) == 0 {
		return nil, errors.New("benchkit: footprint needs a path and at least one device")
	}
	out := make([]PathFootprint, len(cfg.Paths))
	for i, name := range cfg.Paths {
		out[i].Path = name
	}
	for round := range max(cfg.Rounds, 1) {
		for k := range cfg.Paths {
			i := (k + round) % len(cfg.Paths) // rotate who goes first
			name := cfg.Paths[i]
			r, err := footprintOne(ctx, cfg, name)
			if err != nil {
				return out, fmt.Errorf("%s: %w", name, err)
			}
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "footprint: %s: %d devices connected in %s (load %.2f)\n", name, r.Devices, r.ConnectAll.Round(time.Millisecond), r.Load)
			}
			out[i].Runs = append(out[i].Runs, r)
		}
	}
	return out, nil
}

// LoadAverage is the machine's 1-minute load average (0 when unknown).
func LoadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func footprintOne(ctx context.Context, cfg FootprintConfig, name string) (FootprintResult, error) {
	res := FootprintResult{Path: name, Devices: cfg.Devices}
	emu, err := StartEmulatorChild(cfg.EmulatorArgs...)
	if err != nil {
		return res, err
	}
	defer emu.Close()
	devs, err := emu.CreateDevices(cfg.Devices)
	if err != nil {
		return res, err
	}
	if res.EmulatorBefore, err = emu.Stats(); err != nil {
		return res, err
	}
	job, err := json.Marshal(footprintJob{Path: name, Addr: cfg.Addr(emu.Info), HubHost: emu.Info.HubHost, CAPEM: emu.Info.CAPEM, Devices: devs, Profile: cfg.Profile})
	if err != nil {
		return res, err
	}
	res.Load = LoadAverage()
	cmd, stdin, out, err := startSelf(cfg.ChildArgs...)
	if err != nil {
		return res, fmt.Errorf("footprint child: %w", err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	if _, err := stdin.Write(append(job, '\n')); err != nil {
		return res, fmt.Errorf("footprint child: %w", err)
	}
	line, err := out.ReadBytes('\n')
	if err != nil {
		return res, fmt.Errorf("footprint child: %w", err)
	}
	var rep footprintReport
	if err := json.Unmarshal(line, &rep); err != nil {
		return res, fmt.Errorf("footprint child: %w", err)
	}
	if rep.Error != "" {
		return res, fmt.Errorf("footprint child: %s", rep.Error)
	}
	res.ClientBefore, res.Client, res.ConnectAll, res.ConnectCPU = rep.Before, rep.After, rep.ConnectAll, rep.ConnectCPU
	if res.Emulator, err = emu.Stats(); err != nil {
		return res, err
	}
	return res, ctx.Err()
}

// PrintFootprint writes the footprint tables of res (medians of each
// path's runs): per connected device for every path, every other path
// against baseline with t's verdicts, and the emulator per connected
// device in each path's runs.
func PrintFootprint(w io.Writer, res []PathFootprint, baseline string, t Targets) {
	if len(res) == 0 || len(res[0].Runs) == 0 {
		return
	}
	rounds := len(res[0].Runs)
	fmt.Fprintf(w, "footprint: %d devices per path, each path in a process of its own against an emulator process of its own; median of %d run(s) per path, the paths rotating order\n", res[0].Runs[0].Devices, rounds)
	fmt.Fprintln(w, "per connected device: after connecting all (32 goroutines) and one message each, then GC and FreeOSMemory, minus the same process just before connecting")
	fmt.Fprintf(w, "%-20s %11s %11s %14s %12s %13s   %-32s %s\n", "path", "RSS/dev", "heap/dev", "goroutines/dev", "connect all", "connect CPU/dev", "process RSS before -> connected", "connect all (load) per run")
	var base *PathFootprint
	for i, p := range res {
		if p.Path == baseline {
			base = &res[i]
		}
		before := p.median(func(r FootprintResult) float64 { return float64(r.ClientBefore.RSS) })
		after := p.median(func(r FootprintResult) float64 { return float64(r.Client.RSS) })
		var runs []string
		for _, r := range p.Runs {
			runs = append(runs, fmt.Sprintf("%s (%.1f)", r.ConnectAll.Round(time.Millisecond), r.Load))
		}
		fmt.Fprintf(w, "%-20s %11s %11s %14.1f %12s %12.2fms   %-32s %s\n", p.Path, KiB(p.RSS()), KiB(p.Heap()), p.Goroutines(),
			time.Duration(p.ConnectAll()*float64(time.Second)).Round(time.Millisecond), p.ConnectCPU()*1000, MiB(before)+" -> "+MiB(after), strings.Join(runs, " "))
	}
	if base != nil && len(res) > 1 {
		fmt.Fprintf(w, "\nagainst %s (targets: RSS and heap <= %.2fx, goroutines <= raw + %.0f, connect all <= %.2fx)\n", baseline, t.RSS, t.Goroutines, t.ConnectAll)
		fmt.Fprintf(w, "%-20s %-13s %-13s %-13s %-13s %s\n", "path", "RSS", "heap", "goroutines", "connect all", "connect CPU (no target; less load-sensitive)")
		for _, p := range res {
			if p.Path == baseline {
				continue
			}
			cpu := "n/a"
			if base.ConnectCPU() > 0 {
				cpu = fmt.Sprintf("%.2fx", p.ConnectCPU()/base.ConnectCPU())
			}
			fmt.Fprintf(w, "%-20s %-13s %-13s %-13s %-13s %s\n", p.Path,
				RatioVerdict(p.RSS(), base.RSS(), t.RSS), RatioVerdict(p.Heap(), base.Heap(), t.Heap),
				DiffVerdict(p.Goroutines(), base.Goroutines(), t.Goroutines),
				RatioVerdict(p.ConnectAll(), base.ConnectAll(), t.ConnectAll), cpu)
		}
	}
	fmt.Fprintln(w, "\nemulator per connected device (its own process; the devices exist before the path connects them)")
	fmt.Fprintf(w, "%-20s %11s %14s   %s\n", "connected by", "RSS/dev", "goroutines/dev", "emulator RSS before -> connected")
	for _, p := range res {
		before := p.median(func(r FootprintResult) float64 { return float64(r.EmulatorBefore.RSS) })
		after := p.median(func(r FootprintResult) float64 { return float64(r.Emulator.RSS) })
		fmt.Fprintf(w, "%-20s %11s %14.1f   %s -> %s\n", p.Path, KiB(p.EmulatorRSS()), p.EmulatorGoroutines(), MiB(before), MiB(after))
	}
}
