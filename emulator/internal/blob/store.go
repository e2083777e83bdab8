// Package blob is the emulator's embedded Azure Blob endpoint: the subset
// of the Blob service REST API the official clients use to upload and read
// block blobs (create container, Put Blob, Put Block, Put Block List, Get
// Blob with ranges, Get Blob Properties, List Blobs, Delete Blob), with
// Shared Key and service SAS authorization (permissions, expiry, start and
// resource checked). Accounts are path-style, as Azurite's:
// https://host:port/{account}/{container}/{blob}.
//
// Blobs live in memory, or in a directory (the emulator's data directory)
// so they survive a restart. The package imports no other part of the
// emulator.
package blob

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Limits of the Blob service the endpoint keeps.
const (
	// MaxPutBlob is the largest Put Blob body (5000 MiB in Azure; the
	// emulator keeps 256 MiB so a stray request cannot fill the memory).
	MaxPutBlob = 256 << 20
	// MaxBlockSize is the largest Put Block body (4000 MiB in Azure;
	// 256 MiB here).
	MaxBlockSize = 256 << 20
	// MaxBlocks is the most blocks a blob commits (Azure's 50,000).
	MaxBlocks = 50000
	// MaxUncommitted is the most uncommitted blocks a blob holds (Azure's
	// 100,000).
	MaxUncommitted = 100000
)

// Errors of the store, mapped by the server to the Blob service's codes.
var (
	ErrContainerNotFound = errors.New("blob: container not found")
	ErrContainerExists   = errors.New("blob: container already exists")
	ErrBlobNotFound      = errors.New("blob: blob not found")
	ErrInvalidBlockList  = errors.New("blob: invalid block list")
	ErrTooLarge          = errors.New("blob: request body too large")
	ErrInvalidName       = errors.New("blob: invalid name")
)

// Props are a blob's properties.
type Props struct {
	// Name is the blob's name.
	Name string `json:"name"`
	// Size is its length in bytes.
	Size int64 `json:"size"`
	// ContentType, ContentEncoding, ContentMD5 (raw bytes) are as uploaded.
	ContentType     string `json:"contentType,omitempty"`
	ContentEncoding string `json:"contentEncoding,omitempty"`
	ContentMD5      []byte `json:"contentMD5,omitempty"`
	// ETag changes with every write.
	ETag string `json:"etag"`
	// Created and Modified are the creation and last write times.
	Created  time.Time `json:"created"`
	Modified time.Time `json:"modified"`
	// Metadata are the x-ms-meta-* headers.
	Metadata map[string]string `json:"metadata,omitempty"`
	// Blocks are the committed block ids and sizes.
	Blocks []Block `json:"blocks,omitempty"`
}

// Block is a block id and its size.
type Block struct {
	ID   string `json:"id"`
	Size int64  `json:"size"`
}

// Store keeps containers, blobs and uncommitted blocks, in memory or under
// a directory. It is safe for concurrent use.
type Store struct {
	dir string // "" keeps everything in memory
	mu  sync.Mutex
	// containers by name; each maps blob name to blob.
	containers map[string]*container
}

type container struct {
	created time.Time
	blobs   map[string]*blobEntry
	staged  map[string]map[string][]byte // blob name -> block id -> data
}

type blobEntry struct {
	props Props
	data  []byte // memory store
}

// NewStore returns a store in dir (created when missing, blobs loaded
// from it), or in memory when dir is "".
func NewStore(dir string) (*Store, error) {
	s := &Store{dir: dir, containers: map[string]*container{}}
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob: store directory: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: store directory: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		c := newContainer()
		if fi, err := e.Info(); err == nil {
			c.created = fi.ModTime().UTC()
		}
		files, err := filepath.Glob(filepath.Join(dir, e.Name(), "*.json"))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("blob: %w", err)
			}
			var p Props
			if err := json.Unmarshal(b, &p); err != nil {
				return nil, fmt.Errorf("blob: %s: %w", f, err)
			}
			c.blobs[p.Name] = &blobEntry{props: p}
		}
		s.containers[e.Name()] = c
	}
	return s, nil
}

func newContainer() *container {
	return &container{created: time.Now().UTC(), blobs: map[string]*blobEntry{}, staged: map[string]map[string][]byte{}}
}

// fileOf is the data file of a blob (its name hashed: blob names hold
// slashes and may be long).
func (s *Store) fileOf(cont, name string) string {
	h := sha256.Sum256([]byte(name))
	return filepath.Join(s.dir, cont, hex.EncodeToString(h[:16]))
}

// CreateContainer creates a container; ErrContainerExists when it exists.
func (s *Store) CreateContainer(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[name]; ok {
		return ErrContainerExists
	}
	if s.dir != "" {
		if err := os.MkdirAll(filepath.Join(s.dir, name), 0o700); err != nil {
			return fmt.Errorf("blob: %w", err)
		}
	}
	s.containers[name] = newContainer()
	return nil
}

// EnsureContainer creates the container when it is missing.
func (s *Store) EnsureContainer(name string) error {
	if err := s.CreateContainer(name); err != nil && !errors.Is(err, ErrContainerExists) {
		return err
	}
	return nil
}

func (s *Store) containerLocked(name string) (*container, error) {
	c, ok := s.containers[name]
	if !ok {
		return nil, ErrContainerNotFound
	}
	return c, nil
}

// Put writes a whole blob (Put Blob); the uncommitted blocks of the blob
// are dropped.
func (s *Store) Put(cont string, p Props, data []byte) (Props, error) {
	p.Blocks = nil
	return s.commit(cont, p, data)
}

func (s *Store) commit(cont string, p Props, data []byte) (Props, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.containerLocked(cont)
	if err != nil {
		return Props{}, err
	}
	now := time.Now().UTC()
	p.Size = int64(len(data))
	p.Modified = now
	p.Created = now
	if old, ok := c.blobs[p.Name]; ok {
		p.Created = old.props.Created
	}
	p.ETag = fmt.Sprintf("\"0x%X\"", now.UnixNano())
	if p.ContentMD5 == nil {
		sum := md5.Sum(data)
		p.ContentMD5 = sum[:]
	}
	e := &blobEntry{props: p}
	if s.dir == "" {
		e.data = data
	} else {
		f := s.fileOf(cont, p.Name)
		if err := writeFile(f, data); err != nil {
			return Props{}, err
		}
		meta, err := json.Marshal(p)
		if err != nil {
			return Props{}, fmt.Errorf("blob: %w", err)
		}
		if err := writeFile(f+".json", meta); err != nil {
			return Props{}, err
		}
	}
	c.blobs[p.Name] = e
	delete(c.staged, p.Name)
	return p, nil
}

func writeFile(name string, data []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	return nil
}

// StageBlock keeps an uncommitted block of a blob (Put Block).
func (s *Store) StageBlock(cont, name, id string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.containerLocked(cont)
	if err != nil {
		return err
	}
	m := c.staged[name]
	if m == nil {
		m = map[string][]byte{}
		c.staged[name] = m
	}
	if _, ok := m[id]; !ok && len(m) >= MaxUncommitted {
		return fmt.Errorf("%w: more than %d uncommitted blocks", ErrInvalidBlockList, MaxUncommitted)
	}
	m[id] = data
	return nil
}

// BlockRef is one entry of a Put Block List: an id and where to look for
// it ("Latest", "Uncommitted" or "Committed").
type BlockRef struct {
	ID   string
	Kind string
}

// CommitBlocks writes the blob from the listed blocks (Put Block List).
func (s *Store) CommitBlocks(cont string, p Props, refs []BlockRef) (Props, error) {
	if len(refs) > MaxBlocks {
		return Props{}, fmt.Errorf("%w: more than %d blocks", ErrInvalidBlockList, MaxBlocks)
	}
	s.mu.Lock()
	c, err := s.containerLocked(cont)
	if err != nil {
		s.mu.Unlock()
		return Props{}, err
	}
	staged := c.staged[p.Name]
	var committed []byte
	var committedBlocks []Block
	if old, ok := c.blobs[p.Name]; ok {
		committedBlocks = old.props.Blocks
		if committed, err = s.readLocked(cont, old); err != nil {
			s.mu.Unlock()
			return Props{}, err
		}
	}
	offsets := map[string][2]int64{}
	var off int64
	for _, b := range committedBlocks {
		offsets[b.ID] = [2]int64{off, b.Size}
		off += b.Size
	}
	var data []byte
	var blocks []Block
	for _, r := range refs {
		var part []byte
		found := false
		if r.Kind != "Committed" {
			part, found = staged[r.ID]
		}
		if !found && r.Kind != "Uncommitted" {
			if o, ok := offsets[r.ID]; ok {
				part, found = committed[o[0]:o[0]+o[1]], true
			}
		}
		if !found {
			s.mu.Unlock()
			return Props{}, fmt.Errorf("%w: block %q (%s) not found", ErrInvalidBlockList, r.ID, r.Kind)
		}
		data = append(data, part...)
		blocks = append(blocks, Block{ID: r.ID, Size: int64(len(part))})
	}
	s.mu.Unlock()
	p.Blocks = blocks
	return s.commit(cont, p, data)
}

func (s *Store) readLocked(cont string, e *blobEntry) ([]byte, error) {
	if s.dir == "" {
		return e.data, nil
	}
	b, err := os.ReadFile(s.fileOf(cont, e.props.Name))
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	return b, nil
}

// Properties returns a blob's properties.
func (s *Store) Properties(cont, name string) (Props, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.containerLocked(cont)
	if err != nil {
		return Props{}, err
	}
	e, ok := c.blobs[name]
	if !ok {
		return Props{}, ErrBlobNotFound
	}
	return e.props, nil
}

// Open returns a blob's properties and a reader of its bytes.
func (s *Store) Open(cont, name string) (Props, io.ReadSeekCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.containerLocked(cont)
	if err != nil {
		return Props{}, nil, err
	}
	e, ok := c.blobs[name]
	if !ok {
		return Props{}, nil, ErrBlobNotFound
	}
	if s.dir == "" {
		return e.props, nopCloser{bytes.NewReader(e.data)}, nil
	}
	f, err := os.Open(s.fileOf(cont, name))
	if err != nil {
		return Props{}, nil, fmt.Errorf("blob: %w", err)
	}
	return e.props, f, nil
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// Delete removes a blob.
func (s *Store) Delete(cont, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.containerLocked(cont)
	if err != nil {
		return err
	}
	if _, ok := c.blobs[name]; !ok {
		return ErrBlobNotFound
	}
	delete(c.blobs, name)
	delete(c.staged, name)
	if s.dir != "" {
		f := s.fileOf(cont, name)
		_ = os.Remove(f + ".json")
		_ = os.Remove(f)
	}
	return nil
}

// List returns the properties of a container's blobs whose name starts
// with prefix, sorted by name.
func (s *Store) List(cont, prefix string) ([]Props, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.containerLocked(cont)
	if err != nil {
		return nil, err
	}
	var out []Props
	for n, e := range c.blobs {
		if strings.HasPrefix(n, prefix) {
			out = append(out, e.props)
		}
	}
	slices.SortFunc(out, func(a, b Props) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func md5Of(b []byte) []byte {
	s := md5.Sum(b)
	return s[:]
}
