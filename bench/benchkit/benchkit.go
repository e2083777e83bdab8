// Package benchkit holds what the benchmarks share: the 256-byte JSON
// message, a device on an emulator, the paths compared (the facade, a bare
// transport session and raw paho, the baseline, each doing the same connect
// work), the driver that keeps a given number of messages in flight, and
// the footprint machinery that measures every path in a process of its own
// (footprint.go).
package benchkit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// BodySize is the size of the telemetry body the benchmarks send.
const BodySize = 256

// Body returns a BodySize-byte JSON object.
func Body() []byte {
	head := `{"temperature":21.5,"humidity":40.25,"pressure":1013.2,"status":"ok","pad":"`
	tail := `"}`
	b := head + strings.Repeat("x", BodySize-len(head)-len(tail)) + tail
	return []byte(b)
}

// Target says where and as whom a path connects.
type Target struct {
	// Addr is "host:port" of the MQTT/TLS listener.
	Addr string
	// HubHost is the hub host name (TLS server name, SAS audience).
	HubHost string
	// RootCAs verifies the server.
	RootCAs *x509.CertPool
	// DeviceID and Key are the device's identity and symmetric key.
	DeviceID, Key string
}

// Sender sends one telemetry message and returns when the hub acked it.
type Sender func(ctx context.Context) error

// Conn is one connected device on a path.
type Conn struct {
	// Send sends one message and waits for its PUBACK.
	Send Sender
	// Close disconnects and waits for the client's goroutines.
	Close func() error
}

// Path is one way of sending telemetry.
type Path struct {
	// Name labels the path in reports ("sdk adapters/mqtt", "raw paho").
	Name string
	// Key is the short name a bench's -paths flag selects it by ("client",
	// "mqtt", "raw"); "" when the bench has no such flag.
	Key string
	// Connect connects device t, does the connect work of the SDK's
	// iotc.Client (subscriptions or links, a twin GET) and returns its
	// sender.
	Connect func(ctx context.Context, t Target) (Conn, error)
}

// WithKey returns p with Key set.
func (p Path) WithKey(key string) Path {
	p.Key = key
	return p
}

// noEvents discards hub events.
type noEvents struct{}

func (noEvents) OnDesiredPatch([]byte)                                                  {}
func (noEvents) OnMethod(ports.MethodRequest, func(context.Context, int, []byte) error) {}
func (noEvents) OnCloudMessage(_ domain.CloudMessage, settle func(domain.Outcome)) {
	settle(domain.Complete)
}

// TransportPath sends through a ports.Transport session: SendTelemetry
// of a domain.Message with the BodySize body (validation, property bag
// and topic built for each message, as an application would). After
// connecting it reads the twin once (GetTwin), as iotc.Client does for
// its initial sync, so that the connect work is the same.
func TransportPath(name string, tr ports.Transport) Path {
	return Path{Name: name, Connect: func(ctx context.Context, t Target) (Conn, error) {
		sas, err := HubSAS(t)
		if err != nil {
			return Conn{}, err
		}
		s, err := tr.Connect(ctx, ports.HubConnection{Host: t.HubHost, DeviceID: t.DeviceID, Auth: ports.Auth{SASToken: sas}}, noEvents{})
		if err != nil {
			return Conn{}, err
		}
		if _, err := s.GetTwin(ctx); err != nil {
			_ = s.Close()
			return Conn{}, fmt.Errorf("twin get: %w", err)
		}
		body := Body()
		return Conn{
			Send:  func(ctx context.Context) error { return s.SendTelemetry(ctx, domain.Message{Body: body}) },
			Close: s.Close,
		}, nil
	}}
}

// RawPahoPath is the baseline: a bare paho client (protocol 3.1.1, TLS,
// persistent session, no auto-reconnect, paho's defaults otherwise) doing
// the SDK's connect work (see PahoConn) and publishing the same bytes to
// the same topic at QoS 1, waiting for PUBACK, with the topic computed
// once.
func RawPahoPath() Path {
	return Path{Name: "raw paho", Connect: func(ctx context.Context, t Target) (Conn, error) {
		sas, err := HubSAS(t)
		if err != nil {
			return Conn{}, err
		}
		opts := paho.NewClientOptions().
			AddBroker("tls://" + t.Addr).
			SetTLSConfig(&tls.Config{ServerName: t.HubHost, RootCAs: t.RootCAs, MinVersion: tls.VersionTLS12}).
			SetClientID(t.DeviceID).
			SetUsername(PahoUsername(t)).
			SetPassword(sas).
			SetProtocolVersion(4).
			SetCleanSession(false).
			SetAutoReconnect(false).
			SetKeepAlive(4 * time.Minute)
		return PahoConn(ctx, t, opts)
	}}
}

// Run sends total messages with send, inflight at a time (inflight
// goroutines each sending one after the other), and returns the elapsed
// time. It stops at the first error.
func Run(ctx context.Context, send Sender, total, inflight int) (time.Duration, error) {
	if total <= 0 || inflight <= 0 {
		return 0, errors.New("benchkit: total and inflight must be positive")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var left atomic.Int64
	left.Store(int64(total))
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	start := time.Now()
	for range min(inflight, total) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := send(ctx); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return elapsed, fmt.Errorf("benchkit: send: %w", first)
	}
	return elapsed, nil
}
