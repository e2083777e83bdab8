package mqtt_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/adapters/mqtt"
	"github.com/iotc-go/iotc/bench/benchkit"
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
