// Command mqttwsbench measures MQTT over WebSockets beside MQTT over TLS,
// each against raw paho on the same listener, in one run against one
// in-process emulator: 256-byte JSON telemetry at QoS 1 (each message
// waits for its PUBACK), with 1 and with 100 messages in flight. It prints
// msgs/s (median of -rounds runs, the paths alternating order each round)
// and each path's ratio to its baseline:
//
//   - sdk adapters/mqttws   vs raw paho wss: paho's own wss:// transport
//     to the same /$iothub/websocket listener;
//   - raw paho+nhooyr wss   vs raw paho wss: the WebSocket library the
//     adapter uses, under a bare paho client (what the adapter adds on
//     top of the library is the gap between this row and the SDK row);
//   - sdk adapters/mqtt     vs raw paho tls, as bench/mqttbench does.
//
// Usage: go run ./bench/mqttwsbench [-messages 20000] [-rounds 3] [-inflight 1,100]
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"github.com/iotc-go/iotc"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"nhooyr.io/websocket"

	"github.com/iotc-go/iotc/adapters/mqtt"
	"github.com/iotc-go/iotc/adapters/mqttws"
	"github.com/iotc-go/iotc/bench/benchkit"
	"github.com/iotc-go/iotc/emulator"
)

func main() {
	var (
		messages = flag.Int("messages", 20000, "messages per timed run")
		rounds   = flag.Int("rounds", 11, "timed runs per path and in-flight level, the paths alternating (the median is reported; single runs vary by 30 % on a loaded 2-core machine)")
		inflight = flag.String("inflight", "1,100", "comma-separated in-flight levels")
	)
	flag.Parse()
	levels, err := benchkit.ParseLevels(*inflight)
	if err != nil || *messages <= 0 || *rounds <= 0 {
		fmt.Fprintln(os.Stderr, "mqttwsbench: bad flags:", err)
		os.Exit(2)
	}
	fmt.Printf("mqttwsbench: %s, GOMAXPROCS=%d, %d-byte JSON body, QoS 1, in-process emulator\n\n", runtime.Version(), runtime.GOMAXPROCS(0), benchkit.BodySize)
	if err := run(context.Background(), *messages, *rounds, levels); err != nil {
		fmt.Fprintln(os.Stderr, "mqttwsbench:", err)
		os.Exit(1)
	}
}

// path is a benchkit.Path and the index of its baseline (itself for a
// baseline).
type path struct {
	benchkit.Path
	baseline int
}

func run(ctx context.Context, messages, rounds int, levels []int) error {
	e, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-"})
	if err != nil {
		return err
	}
	defer e.Close()
	mqttPort, err := benchkit.PortOf(e.MQTTAddr())
	if err != nil {
		return err
	}
	wsPort, err := benchkit.PortOf(e.WebSocketAddr())
	if err != nil {
		return err
	}
	wsURL := (&url.URL{Scheme: "wss", Host: net.JoinHostPort(e.HubHost(), strconv.Itoa(wsPort)), Path: mqttws.Path}).String()
	paths := []path{
		{benchkit.FacadePath("sdk iotc.Client mqttws", iotc.MQTTWebSockets, wsPort), 3},
		{benchkit.TransportPath("sdk adapters/mqttws", mqttws.New(&mqttws.Options{Port: wsPort, RootCAs: e.CAPool(), NoProxy: true})), 3},
		{rawPahoNhooyr(wsURL), 3},
		{rawPahoWS(wsURL), 3},
		{benchkit.TransportPath("sdk adapters/mqtt", mqtt.New(&mqtt.Options{Port: mqttPort, RootCAs: e.CAPool()})), 5},
		{benchkit.RawPahoPath(), 5},
	}
	paths[5].Name = "raw paho tls"
	seq := 0
	newDevice := func() (benchkit.Target, error) {
		seq++
		id := fmt.Sprintf("wsbench-%d", seq)
		key, err := e.CreateDevice(id)
		return benchkit.Target{Addr: e.MQTTAddr(), HubHost: e.HubHost(), RootCAs: e.CAPool(), DeviceID: id, Key: key}, err
	}
	fmt.Printf("throughput: %d messages per run, median of %d runs\n", messages, rounds)
	fmt.Printf("%-9s %-22s %12s %8s  %-16s\n", "in-flight", "path", "msgs/s", "ratio", "baseline")
	for _, level := range levels {
		rates := make([][]float64, len(paths))
		for r := range rounds {
			for k := range paths {
				i := (k + r) % len(paths) // alternate who goes first
				target, err := newDevice()
				if err != nil {
					return err
				}
				c, err := paths[i].Connect(ctx, target)
				if err != nil {
					return fmt.Errorf("%s: connect: %w", paths[i].Name, err)
				}
				if _, err := benchkit.Run(ctx, c.Send, min(1000, messages), level); err != nil { // warm-up
					_ = c.Close()
					return fmt.Errorf("%s: %w", paths[i].Name, err)
				}
				elapsed, err := benchkit.Run(ctx, c.Send, messages, level)
				_ = c.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", paths[i].Name, err)
				}
				rates[i] = append(rates[i], float64(messages)/elapsed.Seconds())
			}
		}
		for i, p := range paths {
			m := benchkit.Median(rates[i])
			fmt.Printf("%-9d %-22s %12.0f %8.2f  %-16s runs: %s\n", level, p.Name, m, m/benchkit.Median(rates[p.baseline]), paths[p.baseline].Name, benchkit.FormatRates(rates[i]))
		}
	}
	return nil
}

// pahoOptions are the raw baseline's client options: protocol 3.1.1,
// persistent session, no auto-reconnect, as benchkit.RawPahoPath.
func pahoOptions(t benchkit.Target, sas string) *paho.ClientOptions {
	return paho.NewClientOptions().
		SetTLSConfig(&tls.Config{ServerName: t.HubHost, RootCAs: t.RootCAs, MinVersion: tls.VersionTLS12}).
		SetClientID(t.DeviceID).
		SetUsername(benchkit.PahoUsername(t)).
		SetPassword(sas).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetKeepAlive(4 * time.Minute)
}

// rawPahoWS is paho's own wss:// transport to wsURL.
func rawPahoWS(wsURL string) benchkit.Path {
	return benchkit.Path{Name: "raw paho wss", Connect: func(ctx context.Context, t benchkit.Target) (benchkit.Conn, error) {
		sas, err := benchkit.HubSAS(t)
		if err != nil {
			return benchkit.Conn{}, err
		}
		return benchkit.PahoConn(ctx, t, pahoOptions(t, sas).AddBroker(wsURL))
	}}
}

// rawPahoNhooyr is a bare paho client over an nhooyr.io/websocket
// connection to wsURL (the library adapters/mqttws uses).
func rawPahoNhooyr(wsURL string) benchkit.Path {
	return benchkit.Path{Name: "raw paho+nhooyr wss", Connect: func(ctx context.Context, t benchkit.Target) (benchkit.Conn, error) {
		sas, err := benchkit.HubSAS(t)
		if err != nil {
			return benchkit.Conn{}, err
		}
		opts := pahoOptions(t, sas).AddBroker(wsURL).
			SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
				dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: t.HubHost, RootCAs: t.RootCAs, MinVersion: tls.VersionTLS12}}}
				ws, _, err := websocket.Dial(dctx, wsURL, &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"mqtt"}})
				if err != nil {
					return nil, err
				}
				// The connection lives until paho closes it.
				return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
			})
		return benchkit.PahoConn(ctx, t, opts)
	}}
}
