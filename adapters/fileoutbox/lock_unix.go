//go:build unix

package fileoutbox

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockFile takes an exclusive advisory lock on f, failing at once with
// ErrLocked when another process holds it. The lock ends with the
// process, also when it is killed.
func lockFile(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return ErrLocked
	}
	if err != nil {
		return fmt.Errorf("fileoutbox: lock: %w", err)
	}
	return nil
}
