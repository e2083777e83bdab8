package core

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCoreImportsNoProtocol keeps the model free of protocol code: neither
// the core nor anything it imports (transitively) may be mochi, the AMQP
// engine or application layer, a front-end, the MQTT grammar (wire), a
// WebSocket or HTTP library, a store adapter or SQLite, or the SDK's own
// packages (so that a bug cannot hide on both sides).
func TestCoreImportsNoProtocol(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list gave %d packages: %q", len(deps), out)
	}
	forbidden := []string{
		"github.com/mochi-mqtt/",
		"github.com/iotc-go/iotc/emulator/internal/amqp1",
		"github.com/iotc-go/iotc/emulator/internal/amqphub",
		"github.com/iotc-go/iotc/emulator/internal/mqtthub",
		"github.com/iotc-go/iotc/emulator/internal/restapi",
		"github.com/iotc-go/iotc/emulator/internal/dashboard",
		"github.com/iotc-go/iotc/emulator/internal/wslistener",
		"github.com/iotc-go/iotc/emulator/internal/wire",  // the MQTT grammar
		"github.com/iotc-go/iotc/emulator/internal/store", // its adapters
		"modernc.org/sqlite",
		"github.com/Azure/go-amqp",
		"github.com/gorilla/websocket",
		"github.com/coder/websocket",
		"nhooyr.io/websocket",
		"net/http",
		"github.com/iotc-go/iotc/domain",
		"github.com/iotc-go/iotc/ports",
		"github.com/iotc-go/iotc/app",
		"github.com/iotc-go/iotc/adapters",
	}
	seen := false
	for _, d := range deps {
		if d == "github.com/iotc-go/iotc/emulator/internal/core" {
			seen = true
		}
		for _, f := range forbidden {
			if d == strings.TrimSuffix(f, "/") || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("core depends on %s", d)
			}
		}
	}
	if !seen {
		t.Fatalf("go list did not list the core itself: %q", deps)
	}
}
