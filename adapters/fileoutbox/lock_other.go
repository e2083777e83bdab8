//go:build !unix

package fileoutbox

import "os"

// lockFile does nothing where flock does not exist: the caller must not
// open one directory from two processes.
func lockFile(*os.File) error { return nil }
