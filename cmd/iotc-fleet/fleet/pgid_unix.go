//go:build unix

package fleet

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup keeps Ctrl-C in the terminal from reaching the child.
func ownProcessGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }
