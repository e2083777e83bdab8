package fileoutbox

import "os"

// WithSyncHook returns opts whose outbox calls hook with every file it
// fsyncs, right after the fsync succeeded.
func WithSyncHook(opts Options, hook func(f *os.File)) Options {
	opts.syncFile = func(f *os.File) error {
		if err := f.Sync(); err != nil {
			return err
		}
		hook(f)
		return nil
	}
	return opts
}
