package mqttws_test

import (
	"net"
	"os"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/adapters/mqttws"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/contract"
	"github.com/iotc-go/iotc/ports"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(envProxyChild())
	}
	goleak.VerifyTestMain(m)
}

// wsPort is the port of the emulator's WebSocket listener.
func wsPort(t testing.TB, e *emulator.Emulator) int {
	t.Helper()
	_, portText, err := net.SplitHostPort(e.WebSocketAddr())
	if err != nil {
		t.Fatalf("emulator WebSocket address %q: %v", e.WebSocketAddr(), err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("emulator WebSocket port %q: %v", portText, err)
	}
	return port
}

// newTransport builds the adapter for an emulator, connecting directly
// (the environment's proxy settings are ignored).
func newTransport(t testing.TB) contract.NewTransport {
	return func(e *emulator.Emulator) ports.Transport {
		return mqttws.New(&mqttws.Options{Port: wsPort(t, e), RootCAs: e.CAPool(), NoProxy: true})
	}
}

func TestContract(t *testing.T) {
	contract.RunTransport(t, newTransport(t))
}
