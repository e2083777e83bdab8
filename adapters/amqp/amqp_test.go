package amqp_test

import (
	"net"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/adapters/amqp"
	"github.com/iotc-go/iotc/adapters/amqpws"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// portOf is the port of an emulator listener address.
func portOf(t testing.TB, addr string) int {
	t.Helper()
	_, portText, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("emulator address %q: %v", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("emulator port %q: %v", portText, err)
	}
	return port
}

// newTLS builds the AMQP over TLS adapter for an emulator.
func newTLS(t testing.TB) contract.NewTransport {
	return func(e *emulator.Emulator) ports.Transport {
		return amqp.New(&amqp.Options{Port: portOf(t, e.AMQPAddr()), RootCAs: e.CAPool()})
	}
}

// newWS builds the AMQP over WebSockets adapter for an emulator,
// connecting directly.
func newWS(t testing.TB) contract.NewTransport {
	return func(e *emulator.Emulator) ports.Transport {
		return amqpws.New(&amqpws.Options{Port: portOf(t, e.WebSocketAddr()), RootCAs: e.CAPool(), NoProxy: true})
	}
}

func TestContract(t *testing.T) {
	contract.RunTransport(t, newTLS(t))
}

func TestContractWebSockets(t *testing.T) {
	contract.RunTransport(t, newWS(t))
}

func TestRenewInPlace(t *testing.T) {
	t.Run("amqp", func(t *testing.T) { t.Parallel(); contract.RunRenewInPlace(t, newTLS(t)) })
	t.Run("amqpws", func(t *testing.T) { t.Parallel(); contract.RunRenewInPlace(t, newWS(t)) })
}
