// Package fileoutbox is a durable outbox (ports.Outbox) in a directory of
// append-only segment files, so that telemetry accepted by
// EnqueueTelemetry survives a crash, kill -9 and, with the default sync
// policy, power loss.
//
// Each Append writes one checksummed record (CRC-32C) at the end of the
// current segment and, unless Options.NoSync is set, fsyncs the segment
// before it returns; concurrent appends share one fsync (group commit).
// A removal appends a small "removed through" record without an fsync: a
// removal lost in a crash only means those messages are delivered again,
// with the same message id. A segment is deleted once everything in it was
// removed; a new one starts past Options.SegmentSize.
//
// Recovery, when the directory is opened: every segment is read in order.
// A record cut short at the end of the last segment (a write the crash
// interrupted, whose Append never returned) is cut off with a warning. A
// record that fails its checksum or cannot be decoded is corruption: it
// and the rest of its segment cannot be trusted, so the valid records
// before it are kept, the rest is reported (an Error log line, and
// Outbox.Recovery), and the file is left as it is, never written again,
// until its valid entries were delivered. Opening never panics on any file
// content; it fails only when the directory cannot be used (permissions,
// another process holding it: ErrLocked).
//
// A directory is used by one Outbox at a time: Open takes an advisory lock
// (flock) on the file LOCK in it.
package fileoutbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// DefaultSegmentSize is the size past which a new segment file starts:
// 4 MiB.
const DefaultSegmentSize = 4 << 20

// Modes of what the outbox creates: the messages are the device's data.
const (
	DirMode  fs.FileMode = 0o700
	FileMode fs.FileMode = 0o600
)

// ErrLocked is returned by Open when another Outbox, in this process or
// another, has the directory open.
var ErrLocked = errors.New("fileoutbox: the outbox directory is in use by another process")

// Options configures an Outbox. The zero value selects the defaults.
type Options struct {
	// Limit bounds the outbox; zero fields select the defaults of
	// domain.OutboxLimit (10,000 messages, 16 MiB).
	Limit domain.OutboxLimit
	// NoSync skips the fsync of each Append. An accepted message then
	// survives the process being killed (the kernel has it) but not a
	// power loss or kernel crash. Default false: fsync before returning.
	NoSync bool
	// SegmentSize is the size past which a new segment file starts.
	// Default DefaultSegmentSize (4 MiB).
	SegmentSize int64
	// Logger receives recovery and I/O warnings; nil discards them. No
	// message content is logged.
	Logger *slog.Logger
}

// Recovery is what Open found in the directory.
type Recovery struct {
	// Entries is how many messages were recovered.
	Entries int
	// TornBytes were cut off the end of the last segment: a write that a
	// crash interrupted (its Append had not returned).
	TornBytes int64
	// Corrupt lists the segments with a damaged record; the records from
	// there to the end of that segment were not recovered.
	Corrupt []CorruptSegment
}

// CorruptSegment is one damaged segment file.
type CorruptSegment struct {
	// Path is the segment file.
	Path string
	// Offset is where the first damaged record starts.
	Offset int64
	// LostBytes is how many bytes from Offset to the end of the file were
	// not recovered.
	LostBytes int64
	// Err says what was wrong.
	Err error
}

type segment struct {
	id       uint64
	path     string
	f        *os.File
	size     int64  // bytes of valid records
	lastSeq  uint64 // highest message seq in it, 0 for none
	readOnly bool   // damaged: never appended to
}

// ref locates one stored message.
type ref struct {
	seq  uint64
	seg  *segment
	off  int64
	n    int // frame length
	size int // domain.Message.Size
}

// Outbox is a durable outbox in a directory. It is safe for concurrent
// use.
type Outbox struct {
	dir  string
	opts Options
	log  *slog.Logger
	lock *os.File
	rec  Recovery

	mu       sync.Mutex
	segs     []*segment // in order; the last one is the tail
	refs     []ref      // refs[head:] are stored
	head     int
	bytes    int64
	next     uint64 // seq of the next append
	removed  uint64 // every seq up to it was removed
	closed   bool
	failed   error  // a write failed and could not be undone
	writeGen uint64 // appends written so far
	lost     int    // entries dropped because they were unreadable

	syncMu sync.Mutex
	synced uint64 // appends known to be on disk
}

var _ ports.Outbox = (*Outbox)(nil)

var segName = regexp.MustCompile(`^([0-9a-f]{16})\.seg$`)

// Open opens (creating it, mode 0700, when missing) the outbox in dir and
// recovers what it holds (see the package documentation). It fails with
// domain.ErrInvalidConfig for an empty dir or a negative limit, ErrLocked
// when the directory is in use, and a wrapped file-system error when it
// cannot be read or written; damaged content is reported by Recovery and
// the logger, never an error.
func Open(dir string, opts Options) (*Outbox, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: empty outbox directory", domain.ErrInvalidConfig)
	}
	if err := opts.Limit.Validate(); err != nil {
		return nil, err
	}
	if opts.SegmentSize < 0 {
		return nil, fmt.Errorf("%w: negative segment size", domain.ErrInvalidConfig)
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	opts.Limit = opts.Limit.WithDefaults()
	o := &Outbox{dir: dir, opts: opts, log: opts.Logger, next: 1}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	o.log = o.log.With("outbox_dir", dir)
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return nil, fmt.Errorf("fileoutbox: create directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, FileMode)
	if err != nil {
		return nil, fmt.Errorf("fileoutbox: open lock file: %w", err)
	}
	if err := lockFile(lock); err != nil {
		_ = lock.Close()
		return nil, err
	}
	o.lock = lock
	if err := o.recover(); err != nil {
		o.closeFiles()
		return nil, err
	}
	return o, nil
}

// Recovery returns what Open found.
func (o *Outbox) Recovery() Recovery { return o.rec }

// Dir returns the outbox directory.
func (o *Outbox) Dir() string { return o.dir }

func (o *Outbox) recover() error {
	des, err := os.ReadDir(o.dir)
	if err != nil {
		return fmt.Errorf("fileoutbox: read directory: %w", err)
	}
	var ids []uint64
	for _, de := range des {
		m := segName.FindStringSubmatch(de.Name())
		if m == nil || !de.Type().IsRegular() {
			continue
		}
		id, _ := strconv.ParseUint(m[1], 16, 64)
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var maxSeq uint64
	for i, id := range ids {
		last := i == len(ids)-1
		s := &segment{id: id, path: filepath.Join(o.dir, fmt.Sprintf("%016x.seg", id))}
		flag := os.O_RDONLY
		if last {
			flag = os.O_RDWR
		}
		if s.f, err = os.OpenFile(s.path, flag, 0); err != nil {
			return fmt.Errorf("fileoutbox: open segment: %w", err)
		}
		o.segs = append(o.segs, s)
		if err := o.scan(s, last, &maxSeq); err != nil {
			return err
		}
	}
	// Drop what was removed, and segments that hold nothing else.
	for o.head < len(o.refs) && o.refs[o.head].seq <= o.removed {
		o.head++
	}
	o.refs = slices.Clone(o.refs[o.head:])
	o.head = 0
	for _, r := range o.refs {
		o.bytes += int64(r.size)
	}
	o.next = max(maxSeq, o.removed) + 1
	o.rec.Entries = len(o.refs)
	if len(o.segs) == 0 || o.tail().readOnly {
		if err := o.newSegment(); err != nil {
			return err
		}
	}
	o.deleteRemoved()
	if o.rec.TornBytes > 0 {
		o.log.Warn("outbox: cut off a write interrupted by a crash", "bytes", o.rec.TornBytes)
	}
	for _, c := range o.rec.Corrupt {
		o.log.Error("outbox: damaged segment; the records after the damage are lost", "path", c.Path, "offset", c.Offset, "lost_bytes", c.LostBytes, "err", c.Err)
	}
	if len(o.refs) > 0 {
		o.log.Info("outbox: recovered messages", "messages", len(o.refs), "bytes", o.bytes)
	}
	return nil
}

// scan reads segment s, indexing its messages.
func (o *Outbox) scan(s *segment, last bool, maxSeq *uint64) error {
	st, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("fileoutbox: stat segment: %w", err)
	}
	fileSize := st.Size()
	br := bufio.NewReaderSize(io.NewSectionReader(s.f, 0, fileSize), 64<<10)
	var off int64
	var h [headerSize]byte
	damaged := func(torn bool, err error) error {
		if torn && last {
			o.rec.TornBytes += fileSize - off
			if terr := s.f.Truncate(off); terr != nil {
				return fmt.Errorf("fileoutbox: cut off a torn write: %w", terr)
			}
			s.size = off
			return nil
		}
		o.rec.Corrupt = append(o.rec.Corrupt, CorruptSegment{Path: s.path, Offset: off, LostBytes: fileSize - off, Err: err})
		s.size = off
		s.readOnly = true
		return nil
	}
	for off < fileSize {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return damaged(true, fmt.Errorf("%w: truncated header", errCorrupt))
		}
		n, crc, err := parseHeader(h[:])
		if err != nil {
			return damaged(false, err)
		}
		if off+headerSize+int64(n) > fileSize {
			return damaged(true, fmt.Errorf("%w: truncated record", errCorrupt))
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			return fmt.Errorf("fileoutbox: read segment: %w", err)
		}
		r, err := decodePayload(p, crc)
		if err != nil {
			// A bad last record of the last segment is a torn write.
			return damaged(off+headerSize+int64(n) == fileSize, err)
		}
		switch r.kind {
		case kindRemoved:
			o.removed = max(o.removed, r.seq)
		case kindMessage:
			if r.seq <= *maxSeq {
				return damaged(false, fmt.Errorf("%w: seq %d after %d", errCorrupt, r.seq, *maxSeq))
			}
			*maxSeq = r.seq
			s.lastSeq = r.seq
			o.refs = append(o.refs, ref{seq: r.seq, seg: s, off: off, n: headerSize + n, size: r.msg.Size()})
		}
		off += headerSize + int64(n)
	}
	s.size = off
	return nil
}

func (o *Outbox) tail() *segment { return o.segs[len(o.segs)-1] }

// newSegment starts a new tail segment whose first record carries the
// removal watermark, so that the seq keeps growing once older segments are
// deleted. Called with mu held (or during Open).
func (o *Outbox) newSegment() error {
	var id uint64
	if len(o.segs) > 0 {
		id = o.tail().id + 1
	}
	s := &segment{id: id, path: filepath.Join(o.dir, fmt.Sprintf("%016x.seg", id))}
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_EXCL|os.O_RDWR, FileMode)
	if err != nil {
		return fmt.Errorf("fileoutbox: create segment: %w", err)
	}
	s.f = f
	if o.removed > 0 {
		b := encodeRemoved(o.removed)
		if _, err := f.WriteAt(b, 0); err != nil {
			_ = f.Close()
			_ = os.Remove(s.path)
			return fmt.Errorf("fileoutbox: write segment: %w", err)
		}
		s.size = int64(len(b))
	}
	if !o.opts.NoSync {
		if err := f.Sync(); err != nil {
			_ = f.Close()
			_ = os.Remove(s.path)
			return fmt.Errorf("fileoutbox: sync segment: %w", err)
		}
		syncDir(o.dir)
	}
	o.segs = append(o.segs, s)
	return nil
}

// syncDir makes a created or deleted file name durable (best effort: some
// platforms cannot sync a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// deleteRemoved deletes the segments, other than the tail, whose every
// message was removed. Called with mu held.
func (o *Outbox) deleteRemoved() {
	keep := o.segs[:0]
	for i, s := range o.segs {
		if i == len(o.segs)-1 || s.lastSeq > o.removed {
			keep = append(keep, s)
			continue
		}
		_ = s.f.Close()
		if err := os.Remove(s.path); err != nil {
			o.log.Warn("outbox: cannot delete a delivered segment", "path", s.path, "err", err)
		}
	}
	clear(o.segs[len(keep):])
	o.segs = keep
}

// Append stores m. It returns once the record is written and, unless
// Options.NoSync, synced to disk. Errors: domain.ErrOutboxFull over the
// limit, domain.ErrClosed after Close, ctx's error, or a wrapped I/O error
// (the message is then not stored).
func (o *Outbox) Append(ctx context.Context, m domain.Message, enqueued time.Time) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	size := m.Size()
	frame := encodeMessage(m, enqueued)
	if len(frame)-headerSize > maxPayload {
		return 0, fmt.Errorf("%w: message of %d bytes", domain.ErrMessageTooLarge, len(frame))
	}
	o.mu.Lock()
	if err := o.usable(); err != nil {
		o.mu.Unlock()
		return 0, err
	}
	if err := o.opts.Limit.Admit(len(o.refs)-o.head, o.bytes, size); err != nil {
		o.mu.Unlock()
		return 0, fmt.Errorf("fileoutbox: %w", err)
	}
	t := o.tail()
	if t.size > 0 && t.size+int64(len(frame)) > o.opts.SegmentSize {
		if err := o.rotate(); err != nil {
			o.mu.Unlock()
			return 0, err
		}
		t = o.tail()
	}
	seq := o.next
	setSeq(frame, seq)
	if err := o.write(t, frame); err != nil {
		o.mu.Unlock()
		return 0, err
	}
	o.next++
	o.refs = append(o.refs, ref{seq: seq, seg: t, off: t.size - int64(len(frame)), n: len(frame), size: size})
	o.bytes += int64(size)
	t.lastSeq = seq
	o.writeGen++
	gen := o.writeGen
	o.mu.Unlock()
	if o.opts.NoSync {
		return seq, nil
	}
	if err := o.syncThrough(gen); err != nil {
		return 0, err
	}
	return seq, nil
}

// usable returns why the outbox cannot be used, or nil. Called with mu
// held.
func (o *Outbox) usable() error {
	if o.closed {
		return domain.ErrClosed
	}
	return o.failed
}

// write appends frame to t, undoing a partial write. Called with mu held.
func (o *Outbox) write(t *segment, frame []byte) error {
	if _, err := t.f.WriteAt(frame, t.size); err != nil {
		if terr := t.f.Truncate(t.size); terr != nil {
			o.failed = fmt.Errorf("fileoutbox: a write failed and could not be undone: %w", terr)
			o.log.Error("outbox: unusable until reopened", "err", o.failed)
		}
		return fmt.Errorf("fileoutbox: write: %w", err)
	}
	t.size += int64(len(frame))
	return nil
}

// rotate syncs the tail (so the appends in it are durable before the
// next segment's) and starts a new one. Called with mu held.
func (o *Outbox) rotate() error {
	if !o.opts.NoSync {
		if err := o.tail().f.Sync(); err != nil {
			return fmt.Errorf("fileoutbox: sync segment: %w", err)
		}
	}
	if err := o.newSegment(); err != nil {
		return err
	}
	o.deleteRemoved()
	return nil
}

// syncThrough returns once the appends up to gen are on disk. One fsync
// covers every append written before it started (group commit).
func (o *Outbox) syncThrough(gen uint64) error {
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	if o.synced >= gen {
		return nil
	}
	o.mu.Lock()
	if err := o.usable(); err != nil {
		o.mu.Unlock()
		return err
	}
	upTo := o.writeGen
	f := o.tail().f
	o.mu.Unlock()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("fileoutbox: sync: %w", err)
	}
	// A segment closed meanwhile was synced when the next one started, or
	// everything in it was delivered.
	o.synced = upTo
	return nil
}

// Peek returns up to max of the oldest entries, read from disk. An entry
// whose record no longer reads back intact (the disk changed under the
// outbox) is dropped with an Error log line and counted by Lost; an I/O
// error is returned wrapped. Errors: domain.ErrClosed after Close, ctx's.
func (o *Outbox) Peek(ctx context.Context, max int) ([]ports.OutboxEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.usable(); err != nil {
		return nil, err
	}
	var out []ports.OutboxEntry
	for i := o.head; i < len(o.refs) && len(out) < max; {
		r := o.refs[i]
		e, err := o.read(r)
		if errors.Is(err, errCorrupt) {
			o.log.Error("outbox: a stored message no longer reads back; dropped", "seq", r.seq, "path", r.seg.path, "err", err)
			o.lost++
			o.bytes -= int64(r.size)
			o.refs = slices.Delete(o.refs, i, i+1)
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, e)
		i++
	}
	return out, nil
}

func (o *Outbox) read(r ref) (ports.OutboxEntry, error) {
	b := make([]byte, r.n)
	if _, err := r.seg.f.ReadAt(b, r.off); err != nil {
		if errors.Is(err, io.EOF) {
			return ports.OutboxEntry{}, fmt.Errorf("%w: segment shorter than expected", errCorrupt)
		}
		return ports.OutboxEntry{}, fmt.Errorf("fileoutbox: read: %w", err)
	}
	n, crc, err := parseHeader(b[:headerSize])
	if err != nil {
		return ports.OutboxEntry{}, err
	}
	if n != r.n-headerSize {
		return ports.OutboxEntry{}, fmt.Errorf("%w: length changed", errCorrupt)
	}
	rec, err := decodePayload(b[headerSize:], crc)
	if err != nil {
		return ports.OutboxEntry{}, err
	}
	if rec.kind != kindMessage || rec.seq != r.seq {
		return ports.OutboxEntry{}, fmt.Errorf("%w: unexpected record", errCorrupt)
	}
	return ports.OutboxEntry{Seq: rec.seq, Enqueued: rec.enqueued, Message: rec.msg}, nil
}

// Lost returns how many entries Peek dropped because their record no
// longer read back intact.
func (o *Outbox) Lost() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lost
}

// Remove deletes the entries with Seq at most through: it appends a
// "removed" record (not synced) and deletes the segments that hold
// nothing else. Errors: domain.ErrClosed after Close, ctx's, or a wrapped
// I/O error writing the record (the entries are removed from this
// process's view all the same, and come again after a restart).
func (o *Outbox) Remove(ctx context.Context, through uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.usable(); err != nil {
		return err
	}
	through = min(through, o.next-1)
	if through <= o.removed {
		return nil
	}
	for o.head < len(o.refs) && o.refs[o.head].seq <= through {
		o.bytes -= int64(o.refs[o.head].size)
		o.refs[o.head] = ref{}
		o.head++
	}
	if o.head > 64 && o.head*2 >= len(o.refs) {
		o.refs = slices.Clone(o.refs[o.head:])
		o.head = 0
	}
	o.removed = through
	t := o.tail()
	if o.head == len(o.refs) && t.size >= o.opts.SegmentSize {
		// Everything was delivered and the tail is full: start afresh.
		o.removed = o.next - 1
		if err := o.newSegment(); err != nil {
			return err
		}
		o.deleteRemoved()
		return nil
	}
	err := o.write(t, encodeRemoved(through))
	o.deleteRemoved()
	return err
}

// Len returns how many messages are stored and their bytes.
func (o *Outbox) Len() (int, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.refs) - o.head, o.bytes
}

// Close syncs and closes the files and releases the directory; the
// entries stay on disk for the next Open. It is idempotent.
func (o *Outbox) Close() error {
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	var err error
	if o.failed == nil {
		if serr := o.tail().f.Sync(); serr != nil {
			err = fmt.Errorf("fileoutbox: sync: %w", serr)
		}
	}
	o.closeFiles()
	return err
}

func (o *Outbox) closeFiles() {
	for _, s := range o.segs {
		_ = s.f.Close()
	}
	if o.lock != nil {
		_ = o.lock.Close()
	}
}
