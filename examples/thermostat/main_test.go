package main

import (
	"os"
	"strings"
	"testing"

	"github.com/iotc-go/iotc/examples/internal/sampletest"
)

func TestMain(m *testing.M) {
	sampletest.MainOr(m, main) // the test binary is the program when a test runs it so
	os.Exit(m.Run())
}

// TestProgram runs the program: -h exits 0; against the embedded emulator
// it says how to move the target temperature (a curl with the emulator's
// API token, and its dashboard).
func TestProgram(t *testing.T) {
	if code, _, stderr := sampletest.RunMain(t, "-h"); code != 0 || !strings.Contains(stderr, "-count") {
		t.Errorf("-h: exit %d\n%s", code, stderr)
	}
	code, stdout, stderr := sampletest.RunMain(t, "-count", "1", "-interval", "10ms")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"curl --cacert ", "/api/devices/thermostat-01/components/thermostat1/properties?api-version=2022-07-31", "Authorization: SharedAccessSignature", `"targetTemperature"`, "dashboard: https://"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the output does not say how to set the target (%s):\n%s", want, stdout)
		}
	}
}
