// Package filestore keeps the device's credentials cache (the result of
// provisioning, domain.CachedCredentials) in a JSON file; it implements
// ports.CredentialStore.
//
// The file is replaced atomically (a temporary file in the same
// directory, fsync, rename, fsync of the directory) with mode 0600, so a
// crash leaves either the old record or the new one. A missing, unreadable
// or corrupt file reads as ports.ErrNoCredentials (with a warning for the
// last two), and the next successful provisioning replaces it.
package filestore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// MaxFileSize bounds the file Load reads: 64 KiB, far above a real
// record; a larger file is treated as corrupt.
const MaxFileSize = 64 << 10

// FileMode is the permission of the credentials file: 0600 (the record
// holds no secret, but it says which hub the device belongs to).
const FileMode fs.FileMode = 0o600

// Store is a credentials cache in one JSON file. It is safe for concurrent
// use; saves from several processes are atomic and the last one wins.
type Store struct {
	path string
	log  *slog.Logger
	mu   sync.Mutex
}

var _ ports.CredentialStore = (*Store)(nil)

// New returns a store for the file at path (created by the first Save,
// with its directory, mode 0700, if missing). logger receives warnings
// about unreadable or corrupt files; nil discards them.
func New(path string, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{path: path, log: logger}
}

// Path returns the file path of the store.
func (s *Store) Path() string { return s.path }

// Load returns the stored record. It returns an error wrapping
// ports.ErrNoCredentials when the file is missing, unreadable, larger
// than MaxFileSize, not valid JSON or incomplete (no hub or device id);
// all but a missing file are logged as warnings. It never panics.
func (s *Store) Load(ctx context.Context) (domain.CachedCredentials, error) {
	if err := ctx.Err(); err != nil {
		return domain.CachedCredentials{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := readLimited(s.path, MaxFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return domain.CachedCredentials{}, fmt.Errorf("%w: %s does not exist", ports.ErrNoCredentials, s.path)
	}
	if err != nil {
		s.log.Warn("credentials cache unreadable; it will be replaced after provisioning", "path", s.path, "err", err)
		return domain.CachedCredentials{}, fmt.Errorf("%w: %w", ports.ErrNoCredentials, err)
	}
	c, err := Decode(b)
	if err != nil {
		s.log.Warn("credentials cache corrupt; it will be replaced after provisioning", "path", s.path, "err", err)
		return domain.CachedCredentials{}, fmt.Errorf("%w: %s: %w", ports.ErrNoCredentials, s.path, err)
	}
	return c, nil
}

// readLimited reads at most limit bytes of path, failing when the file
// is larger.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("file larger than %d bytes", limit)
	}
	return b, nil
}

// Decode parses a credentials file. It returns an error for invalid JSON,
// trailing data or a record without hub or device id. It never panics.
func Decode(b []byte) (domain.CachedCredentials, error) {
	var c domain.CachedCredentials
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return domain.CachedCredentials{}, fmt.Errorf("%w: credentials file: %v", domain.ErrMalformed, err)
	}
	if dec.More() {
		return domain.CachedCredentials{}, fmt.Errorf("%w: credentials file: trailing data", domain.ErrMalformed)
	}
	if !c.Valid() {
		return domain.CachedCredentials{}, fmt.Errorf("%w: credentials file: no hub or device id", domain.ErrMalformed)
	}
	return c, nil
}

// Save writes c atomically with mode FileMode, replacing any previous
// (even corrupt) file. It fails with domain.ErrInvalidConfig for a record
// without hub or device id, with ctx's error when ctx has ended, and with
// the file system's error (wrapped) when the directory is not writable.
func (s *Store) Save(ctx context.Context, c domain.CachedCredentials) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !c.Valid() {
		return fmt.Errorf("%w: credentials record without hub or device id", domain.ErrInvalidConfig)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("filestore: encode: %w", err)
	}
	b = append(b, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	return writeAtomic(s.path, b)
}

// writeAtomic writes b to path through a synced temporary file renamed
// over it, then syncs the directory so that the rename survives a crash.
func writeAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("filestore: create directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("filestore: create temporary file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(FileMode); err != nil {
		return fmt.Errorf("filestore: chmod: %w", err)
	}
	if _, err = f.Write(b); err != nil {
		return fmt.Errorf("filestore: write: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("filestore: sync: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("filestore: close: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("filestore: rename: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		// Best effort: some platforms cannot sync a directory.
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
