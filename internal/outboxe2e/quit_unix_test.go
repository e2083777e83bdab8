//go:build unix

package outboxe2e

import (
	"os"
	"syscall"
)

// quit asks a child to print its goroutine stacks and exit.
func quit(p *os.Process) error { return p.Signal(syscall.SIGQUIT) }
