// Package longtest gates the long tests (the fault matrices, the soaks)
// so that the default "go test -race ./..." stays within a few minutes on
// a small machine: they run only with IOTC_LONG_TESTS=1, which .ci/run
// sets, so CI runs every one of them. The default run keeps one short case
// of each, so a regression still fails it.
package longtest

import (
	"os"
	"testing"
)

// Env is the environment variable that enables the long tests ("1").
const Env = "IOTC_LONG_TESTS"

// Enabled reports whether the long tests run (Env is "1").
func Enabled() bool { return os.Getenv(Env) == "1" }

// Require skips t, saying how to run it, unless the long tests are
// enabled.
func Require(t testing.TB) {
	t.Helper()
	if !Enabled() {
		t.Skipf("a long test: %s=1 runs it (.ci/run does)", Env)
	}
}
