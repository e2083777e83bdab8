//go:build !unix

package outboxe2e

import "os"

// quit ends a child (no SIGQUIT here to make it print its stacks).
func quit(p *os.Process) error { return p.Kill() }
