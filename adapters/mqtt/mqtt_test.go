package mqtt_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/adapters/mqtt"
	"github.com/iotc-go/iotc/bench/benchkit"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newTransport builds the adapter for an emulator: its port and its CA.
func newTransport(t testing.TB) contract.NewTransport {
	return func(e *emulator.Emulator) ports.Transport {
		_, portText, err := net.SplitHostPort(e.MQTTAddr())
		if err != nil {
			t.Fatalf("emulator address %q: %v", e.MQTTAddr(), err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			t.Fatalf("emulator port %q: %v", portText, err)
		}
		return mqtt.New(&mqtt.Options{Port: port, RootCAs: e.CAPool()})
	}
}

func TestContract(t *testing.T) {
	contract.RunTransport(t, newTransport(t))
}

// BenchmarkTelemetry sends 256-byte JSON telemetry at QoS 1 through the
// adapter and, as the baseline, through raw paho, to the same in-process
// emulator, with 1 and 100 messages in flight. Compare the msgs/s metrics.
func BenchmarkTelemetry(b *testing.B) {
	s := contract.Start(b, newTransport(b))
	port, err := strconv.Atoi(s.E.MQTTAddr()[strings.LastIndexByte(s.E.MQTTAddr(), ':')+1:])
	if err != nil {
		b.Fatal(err)
	}
	paths := []benchkit.Path{
		benchkit.TransportPath("sdk", mqtt.New(&mqtt.Options{Port: port, RootCAs: s.E.CAPool()})),
		benchkit.RawPahoPath(),
	}
	for _, inflight := range []int{1, 100} {
		for _, p := range paths {
			b.Run(fmt.Sprintf("%s/inflight=%d", strings.ReplaceAll(p.Name, " ", "_"), inflight), func(b *testing.B) {
				ctx := context.Background()
				id, key := s.NewDevice(b)
				c, err := p.Connect(ctx, benchkit.Target{Addr: s.E.MQTTAddr(), HubHost: s.E.HubHost(), RootCAs: s.E.CAPool(), DeviceID: id, Key: key})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				b.SetBytes(benchkit.BodySize)
				b.ResetTimer()
				elapsed, err := benchkit.Run(ctx, c.Send, b.N, inflight)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			})
		}
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestNoSecretsInLogs(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := contract.Start(t, func(e *emulator.Emulator) ports.Transport {
		port, err := strconv.Atoi(e.MQTTAddr()[strings.LastIndexByte(e.MQTTAddr(), ':')+1:])
		if err != nil {
			t.Fatal(err)
		}
		return mqtt.New(&mqtt.Options{Port: port, RootCAs: e.CAPool(), Logger: logger})
	})
	ctx, cancel := context.WithTimeout(context.Background(), contract.StepTimeout)
	defer cancel()
	id, key := s.NewDevice(t)
	dpsSAS, err := domain.BuildSAS(key, domain.DPSResource(s.E.IDScope(), id), time.Now().Add(time.Hour), domain.DPSKeyName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tr.Provision(ctx, ports.ProvisioningRequest{Host: contract.DPSHost, IDScope: s.E.IDScope(),
		Registration: domain.RegistrationRequest{RegistrationID: id}, Auth: ports.Auth{SASToken: dpsSAS}}); err != nil {
		t.Fatal(err)
	}
	sess, _ := s.Connect(t, ctx, id, key)
	if err := s.E.DisconnectDevice(id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Done():
	case <-ctx.Done():
		t.Fatal("the session did not end after DisconnectDevice")
	}
	wrong := s.HubSAS(t, id, "d3JvbmcgZGV2aWNlIGtleSB3cm9uZyBkZXZpY2Uga2V5")
	_, err = s.Tr.Connect(ctx, ports.HubConnection{Host: s.E.HubHost(), DeviceID: id, Auth: ports.Auth{SASToken: wrong}}, contract.NewRecorder())
	if err == nil {
		t.Fatal("Connect with a wrong key succeeded")
	}
	for _, text := range []string{err.Error(), sess.Err().Error(), logs.String()} {
		for _, secret := range []string{key, dpsSAS, wrong, "sig="} {
			if strings.Contains(text, secret) {
				t.Fatalf("secret %q leaked into %q", secret, text)
			}
		}
	}
	if !strings.Contains(logs.String(), "hub: connection lost") {
		t.Fatalf("debug log lacks the connection loss; log:\n%s", logs.String())
	}
}
