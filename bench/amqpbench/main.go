// Command amqpbench measures the AMQP transport against a bare go-amqp
// client, side by side in one run:
//
//  1. throughput: 256-byte JSON telemetry sent unsettled, each message
//     waiting for the hub's accepted disposition (the AMQP equivalent of
//     MQTT QoS 1), through the SDK (iotc.Client, and adapters/amqp alone)
//     and through bare go-amqp clients, to the same in-process emulator,
//     with 1 and with 100 messages in flight, every path connected at once
//     and -rounds rounds of -messages messages each, the paths alternating
//     order each round; it prints the median msgs/s, the median of the
//     per-round ratios to raw go-amqp with their range, and the process CPU
//     time and heap allocations per message (client and emulator: the
//     difference between two paths is the client's). Two more bare paths
//     show what the SDK adds: a bare sender with nothing but the CBS
//     put-token and its telemetry link, and the same with the message-id
//     every iotc.Client message carries;
//  2. footprint: -devices devices connected at once through each path, the
//     path in a process of its own (this program re-executed with
//     -footprint-child) against an emulator process of its own (re-executed
//     with -serve-emulator); it prints RSS, live heap and goroutines per
//     connected device and the connect-all time, the SDK paths' ratios to
//     raw go-amqp with issue 17's targets, and the emulator's RSS and
//     goroutines per connected device.
//
// raw go-amqp, the baseline, does the connect work of adapters/amqp and
// iotc.Client: TLS, SASL ANONYMOUS, one session, a CBS put-token (its two
// links detached after it), the telemetry sender, the method pair, the
// twin pair and the cloud-to-device receiver with the adapter's addresses,
// link properties, credits and settle modes, a receiving goroutine on each
// of the three receivers (go-amqp delivers only to Receive calls), the
// desired-properties subscription (twin PUT) and a twin GET.
//
// Usage: go run ./bench/amqpbench [-messages 2000] [-rounds 25] [-inflight 1,100] [-devices 1000] [-footprint-rounds 1]
// [-throughput-emulator inprocess|none] [-paths client,amqp,bare,msgid,raw] [-cpuprofile file]
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/adapters/amqp"
	"github.com/iotc-go/iotc/bench/benchkit"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
)

// baselineKey is raw go-amqp's key; it always runs.
const baselineKey = "raw"

// throughputOnly are the keys of the paths the footprint test leaves out
// (variants of a bare sender, for the throughput comparison).
var throughputOnly = []string{"bare", "msgid"}

func main() {
	if os.Getenv("AMQPBENCH_MEMPROFILE") != "" && os.Getenv("AMQPBENCH_SAMPLED") == "" { // AMQPBENCH_SAMPLED=1 keeps the default rate, for CPU profiles
		runtime.MemProfileRate = 1 // every allocation, for a precise heap profile
	}
	var (
		messages  = flag.Int("messages", 2000, "messages per timed run")
		rounds    = flag.Int("rounds", 25, "timed runs per path and in-flight level (medians are reported)")
		inflight  = flag.String("inflight", "1,100", "comma-separated in-flight levels")
		devices   = flag.Int("devices", 1000, "devices connected at once for the footprint test (0 skips it)")
		footRuns  = flag.Int("footprint-rounds", 1, "footprint runs per path, the paths rotating order (medians are reported)")
		where     = flag.String("throughput-emulator", "inprocess", "where the throughput runs' emulator lives: inprocess or none (none skips the throughput test)")
		pathsFlag = flag.String("paths", "client,amqp,bare,msgid,raw", "comma-separated paths to run: client (iotc.Client), amqp (adapters/amqp), bare and msgid (bare senders, throughput only), raw (raw go-amqp, the baseline, always run)")
		cpuprof   = flag.String("cpuprofile", "", "write a CPU profile of the throughput test to this file (samples labelled path=<name>)")
		serve     = flag.Bool("serve-emulator", false, "internal: run an emulator child (see benchkit.ServeEmulator)")
		child     = flag.Bool("footprint-child", false, "internal: run a footprint child (see benchkit.FootprintChild)")
	)
	flag.Parse()
	if err := benchkit.RaiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "amqpbench: warning:", err)
	}
	ctx := context.Background()
	switch {
	case *serve:
		exit(benchkit.ServeEmulator(os.Stdin, os.Stdout))
		return
	case *child:
		exit(benchkit.FootprintChild(ctx, allPaths, os.Stdin, os.Stdout))
		return
	}
	levels, err := benchkit.ParseLevels(*inflight)
	if err == nil && (*messages <= 0 || *rounds <= 0 || *footRuns <= 0 || *devices < 0) {
		err = fmt.Errorf("-messages, -rounds and -footprint-rounds must be positive, -devices not negative")
	}
	if err == nil && *where != "inprocess" && *where != "none" {
		err = fmt.Errorf("-throughput-emulator must be inprocess or none")
	}
	var keys []string
	if err == nil {
		keys, err = benchkit.SelectKeys(*pathsFlag, allPaths(0, nil), baselineKey)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "amqpbench: bad flags:", err)
		os.Exit(2)
	}
	fmt.Printf("amqpbench: %s, GOMAXPROCS=%d, %d-byte JSON body, unsettled sends (wait for accepted), open-file limit %d\n\n", runtime.Version(), runtime.GOMAXPROCS(0), benchkit.BodySize, benchkit.FileLimit())
	if *where == "inprocess" {
		if *cpuprof != "" {
			f, err := os.Create(*cpuprof)
			if err == nil {
				err = pprof.StartCPUProfile(f)
			}
			exit(err)
		}
		err = throughput(ctx, *messages, *rounds, levels, keys)
		if *cpuprof != "" {
			pprof.StopCPUProfile()
		}
		if err != nil {
			exit(fmt.Errorf("throughput: %w", err))
		}
	}
	if *devices > 0 {
		var fkeys []string
		for _, k := range keys {
			if !slices.Contains(throughputOnly, k) {
				fkeys = append(fkeys, k)
			}
		}
		names := benchkit.Names(benchkit.Selected(allPaths(0, nil), fkeys))
		fmt.Println("footprint connect work, every path: TLS, SASL ANONYMOUS, CBS put-token, 6 links (telemetry, method pair, twin pair, cloud-to-device), a receiving goroutine per receiver, twin PUT (desired subscription) and GET answered, one telemetry message")
		res, err := benchkit.RunFootprint(ctx, benchkit.FootprintConfig{
			Devices:      *devices,
			Paths:        names,
			EmulatorArgs: []string{"-serve-emulator"},
			ChildArgs:    []string{"-footprint-child"},
			Addr:         func(i benchkit.EmulatorInfo) string { return i.AMQPAddr },
			Profile:      os.Getenv("AMQPBENCH_MEMPROFILE"),
			Rounds:       *footRuns,
			Progress:     os.Stderr,
		})
		if err != nil {
			exit(fmt.Errorf("footprint: %w", err))
		}
		benchkit.PrintFootprint(os.Stdout, res, names[len(names)-1], benchkit.DefaultTargets)
	}
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "amqpbench:", err)
		os.Exit(1)
	}
}

// allPaths are every path of the bench, the baseline last.
func allPaths(port int, roots *x509.CertPool) []benchkit.Path {
	return []benchkit.Path{
		benchkit.FacadePath("sdk iotc.Client", iotc.AMQP, port).WithKey("client"),
		benchkit.TransportPath("sdk adapters/amqp", amqp.New(&amqp.Options{Port: port, RootCAs: roots})).WithKey("amqp"),
		rawAMQPPath("raw telemetry only", false, false).WithKey("bare"),
		rawAMQPPath("raw + message-id", false, true).WithKey("msgid"),
		rawAMQPPath("raw go-amqp", true, false).WithKey(baselineKey),
	}
}

// Link properties and twin vocabulary of IoT Hub, as adapters/amqp sends
// them.
const (
	propClientVersion      = "com.microsoft:client-version"
	propAPIVersion         = "com.microsoft:api-version"
	propChannelCorrelation = "com.microsoft:channel-correlation-id"
	hubAPIVersion          = "2021-04-12"
	rawClientVersion       = "raw-go-amqp"
	resourceDesired        = "/notifications/twin/properties/desired"
)

// rawAMQPPath is a bare go-amqp client. With connectWork it does what
// adapters/amqp does on Connect plus iotc.Client's twin GET (see the
// package comment); without, it authenticates with one CBS put-token and
// attaches the telemetry sender only. It sends the same body with the
// same properties as the SDK, waiting for each disposition; with
// messageID each message carries a fresh uuid message-id, as every
// message of iotc.Client does (it is what lets the hub's consumers drop
// the duplicates of at-least-once delivery).
func rawAMQPPath(name string, connectWork, messageID bool) benchkit.Path {
	return benchkit.Path{Name: name, Connect: func(ctx context.Context, t benchkit.Target) (benchkit.Conn, error) {
		sas, err := benchkit.HubSAS(t)
		if err != nil {
			return benchkit.Conn{}, err
		}
		conn, err := goamqp.Dial(ctx, "amqps://"+t.Addr, &goamqp.ConnOptions{
			TLSConfig:   &tls.Config{ServerName: t.HubHost, RootCAs: t.RootCAs, MinVersion: tls.VersionTLS12},
			HostName:    t.HubHost,
			SASLType:    goamqp.SASLTypeAnonymous(),
			IdleTimeout: amqp.DefaultIdleTimeout,
			Properties:  map[string]any{propClientVersion: rawClientVersion},
		})
		if err != nil {
			return benchkit.Conn{}, err
		}
		fail := func(err error) (benchkit.Conn, error) { _ = conn.Close(); return benchkit.Conn{}, err }
		sess, err := conn.NewSession(ctx, nil)
		if err != nil {
			return fail(err)
		}
		if err := putToken(ctx, sess, domain.HubResource(t.HubHost, t.DeviceID), sas); err != nil {
			return fail(err)
		}
		var snd *goamqp.Sender
		if connectWork {
			snd, err = attachAll(ctx, sess, t.DeviceID)
		} else {
			snd, err = sess.NewSender(ctx, "/devices/"+t.DeviceID+"/messages/events", nil)
		}
		if err != nil {
			return fail(err)
		}
		body := benchkit.Body()
		ct, ce := domain.DefaultContentType, domain.DefaultContentEncoding
		return benchkit.Conn{
			Send: func(ctx context.Context) error {
				p := &goamqp.MessageProperties{ContentType: &ct, ContentEncoding: &ce}
				if messageID {
					p.MessageID = uuid()
				}
				return snd.Send(ctx, &goamqp.Message{Properties: p, Data: [][]byte{body}}, nil)
			},
			Close: conn.Close,
		}, nil
	}}
}

// attachAll attaches the links adapters/amqp attaches (same addresses,
// properties, credits and settle modes), starts a receiving goroutine on
// each receiver (they end when the connection closes), subscribes to
// desired-property notifications and reads the twin. It returns the
// telemetry sender.
func attachAll(ctx context.Context, sess *goamqp.Session, id string) (*goamqp.Sender, error) {
	base := "/devices/" + id
	props := func(extra ...string) map[string]any {
		p := map[string]any{propClientVersion: rawClientVersion, propAPIVersion: hubAPIVersion}
		if len(extra) == 2 {
			p[extra[0]] = extra[1]
		}
		return p
	}
	tel, err := sess.NewSender(ctx, base+"/messages/events", &goamqp.SenderOptions{Properties: props()})
	if err != nil {
		return nil, err
	}
	methods := props(propChannelCorrelation, "methods:"+uuid())
	mReq, err := sess.NewReceiver(ctx, base+"/methods/devicebound", &goamqp.ReceiverOptions{Properties: methods, Credit: 10})
	if err != nil {
		return nil, err
	}
	if _, err := sess.NewSender(ctx, base+"/methods/devicebound", &goamqp.SenderOptions{Properties: methods}); err != nil {
		return nil, err
	}
	twin := props(propChannelCorrelation, "twin:"+uuid())
	settled := goamqp.SenderSettleModeSettled
	twSnd, err := sess.NewSender(ctx, base+"/twin", &goamqp.SenderOptions{Properties: twin, SettlementMode: &settled})
	if err != nil {
		return nil, err
	}
	twRcv, err := sess.NewReceiver(ctx, base+"/twin", &goamqp.ReceiverOptions{Properties: twin, Credit: 10, RequestedSenderSettleMode: &settled})
	if err != nil {
		return nil, err
	}
	c2d, err := sess.NewReceiver(ctx, base+"/messages/devicebound", &goamqp.ReceiverOptions{Properties: props(), Credit: amqp.DefaultCloudToDeviceCredit})
	if err != nil {
		return nil, err
	}
	replies := make(chan *goamqp.Message, 1)
	go receive(twRcv, func(m *goamqp.Message) {
		if m.Properties != nil && m.Properties.CorrelationID != nil {
			select {
			case replies <- m:
			default:
			}
		}
	})
	go receive(mReq, nil)
	go receive(c2d, nil)
	if err := twinRequest(ctx, twSnd, replies, "PUT", resourceDesired); err != nil {
		return nil, fmt.Errorf("desired subscription: %w", err)
	}
	if err := twinRequest(ctx, twSnd, replies, "GET", ""); err != nil {
		return nil, fmt.Errorf("twin get: %w", err)
	}
	return tel, nil
}

// receive accepts every message of r and hands it to handle (nil: none)
// until r fails (the connection closed).
func receive(r *goamqp.Receiver, handle func(*goamqp.Message)) {
	ctx := context.Background()
	for {
		m, err := r.Receive(ctx, nil)
		if err != nil {
			return
		}
		_ = r.AcceptMessage(ctx, m) // a no-op when pre-settled
		if handle != nil {
			handle(m)
		}
	}
}

// twinRequest sends one twin request and waits for the reply with its
// correlation-id and a status under 300.
func twinRequest(ctx context.Context, snd *goamqp.Sender, replies <-chan *goamqp.Message, operation, resource string) error {
	corr := uuid()
	ann := goamqp.Annotations{"operation": operation}
	if resource != "" {
		ann["resource"] = resource
	}
	if err := snd.Send(ctx, &goamqp.Message{Properties: &goamqp.MessageProperties{CorrelationID: corr}, Annotations: ann, Data: [][]byte{[]byte(" ")}}, nil); err != nil {
		return err
	}
	for {
		select {
		case m := <-replies:
			if got, _ := m.Properties.CorrelationID.(string); got != corr {
				continue
			}
			if st, ok := m.Annotations["status"].(int32); ok && st >= 300 {
				return fmt.Errorf("status %d", st)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// uuid returns a random uuid in its canonical text form.
func uuid() string { return domain.NewUUID().String() }

// putToken authenticates on $cbs and detaches the CBS links, as the
// adapter does.
func putToken(ctx context.Context, sess *goamqp.Session, audience, token string) error {
	snd, err := sess.NewSender(ctx, "$cbs", nil)
	if err != nil {
		return err
	}
	defer snd.Close(ctx)
	rcv, err := sess.NewReceiver(ctx, "$cbs", &goamqp.ReceiverOptions{TargetAddress: "cbs", Credit: 1})
	if err != nil {
		return err
	}
	defer rcv.Close(ctx)
	to, replyTo := "$cbs", "cbs"
	if err := snd.Send(ctx, &goamqp.Message{
		Properties:            &goamqp.MessageProperties{MessageID: "1", To: &to, ReplyTo: &replyTo},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience},
		Value:                 token,
	}, nil); err != nil {
		return err
	}
	m, err := rcv.Receive(ctx, nil)
	if err != nil {
		return err
	}
	_ = rcv.AcceptMessage(ctx, m)
	if code, _ := m.ApplicationProperties["status-code"].(int32); code != 200 {
		return fmt.Errorf("put-token: status %d", code)
	}
	return nil
}

func throughput(ctx context.Context, messages, rounds int, levels []int, keys []string) error {
	e, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer e.Close()
	port, err := benchkit.PortOf(e.AMQPAddr())
	if err != nil {
		return err
	}
	seq := 0
	newDevice := func() (benchkit.Target, error) {
		seq++
		id := fmt.Sprintf("bench-%d", seq)
		key, err := e.CreateDevice(id)
		return benchkit.Target{Addr: e.AMQPAddr(), HubHost: e.HubHost(), RootCAs: e.CAPool(), DeviceID: id, Key: key}, err
	}
	paths := benchkit.Selected(allPaths(port, e.CAPool()), keys)
	baseline := len(paths) - 1
	fmt.Printf("throughput (in-process emulator): %d messages per run, %d rounds on open connections, paths alternating order each round\n", messages, rounds)
	fmt.Printf("ratio: median of the per-round ratios to %s [min-max]; cpu and allocs: whole process (client and emulator) per message, medians\n", paths[baseline].Name)
	fmt.Printf("%-9s %-20s %9s %6s %13s %8s %7s\n", "in-flight", "path", "msgs/s", "ratio", "[spread]", "cpu µs", "allocs")
	for _, level := range levels {
		runs := make([][]benchkit.Sample, len(paths))
		// Every path stays connected through the rounds, so that a round
		// runs the paths back to back and a change of the machine's load
		// falls on all of them.
		conns := make([]benchkit.Conn, len(paths))
		closeAll := func() {
			for _, c := range conns {
				if c.Close != nil {
					_ = c.Close()
				}
			}
		}
		for i, p := range paths {
			target, err := newDevice()
			if err != nil {
				closeAll()
				return err
			}
			pprof.Do(ctx, pprof.Labels("path", p.Name), func(ctx context.Context) {
				if conns[i], err = p.Connect(ctx, target); err != nil {
					err = fmt.Errorf("%s: connect: %w", p.Name, err)
					return
				}
				if _, err = benchkit.Run(ctx, conns[i].Send, min(1000, messages), level); err != nil { // warm-up
					err = fmt.Errorf("%s: %w", p.Name, err)
				}
			})
			if err != nil {
				closeAll()
				return err
			}
		}
		for r := range rounds {
			for k := range paths {
				i := (k + r) % len(paths) // alternate who goes first
				var s benchkit.Sample
				pprof.Do(ctx, pprof.Labels("path", paths[i].Name), func(ctx context.Context) {
					if s, err = benchkit.TimedRun(ctx, conns[i].Send, messages, level); err != nil {
						err = fmt.Errorf("%s: %w", paths[i].Name, err)
					}
				})
				if err != nil {
					closeAll()
					return err
				}
				runs[i] = append(runs[i], s)
			}
		}
		closeAll()
		for i, p := range paths {
			ratios := make([]float64, len(runs[i]))
			for r, s := range runs[i] {
				ratios[r] = s.Rate / runs[baseline][r].Rate
			}
			rates := benchkit.Rates(runs[i])
			fmt.Printf("%-9d %-20s %9.0f %6.2f %13s %8.1f %7.1f   runs: %s\n", level, p.Name,
				benchkit.Median(rates), benchkit.Median(ratios), fmt.Sprintf("[%.2f-%.2f]", slices.Min(ratios), slices.Max(ratios)),
				benchkit.Median(benchkit.CPUs(runs[i])), benchkit.Median(benchkit.Allocs(runs[i])), benchkit.FormatRates(rates))
		}
	}
	fmt.Println()
	return nil
}
