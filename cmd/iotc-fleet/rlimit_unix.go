//go:build unix

package main

import "syscall"

// needsChild reports whether devices client connections plus as many
// emulator-side ones exceed this process's file-descriptor limit.
func needsChild(devices int) bool {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return devices > 1000
	}
	return uint64(2*devices+256) > lim.Cur
}
