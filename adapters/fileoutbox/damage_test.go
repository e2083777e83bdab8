package fileoutbox_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/iotc-go/iotc/adapters/fileoutbox"
	"github.com/iotc-go/iotc/domain"
)

// frames returns where each record of a segment file starts, reading the
// length field of each frame (4 bytes length, 4 bytes CRC, payload).
func frames(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	for off := 0; off < len(b); {
		offs = append(offs, off)
		off += 8 + int(binary.BigEndian.Uint32(b[off:]))
	}
	return offs
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func without(all []int, gone ...int) []int {
	return slices.DeleteFunc(slices.Clone(all), func(n int) bool { return slices.Contains(gone, n) })
}

// The damage disks and crashes do, to a segment holding 1,000 accepted
// messages: after reopening, everything but the damaged records is
// delivered, the loss is counted, and the damaged bytes are in the
// quarantine file beside the segment, as they were found.
func TestDamageCases(t *testing.T) {
	const total = 1000
	type result struct {
		// lost are the message numbers (1-based) not recovered.
		lost []int
		// quarantined is what the quarantine file must hold.
		quarantined []byte
		// seg is the segment damaged.
		seg  string
		want domain.OutboxDamage // Quarantine filled in by the test
	}
	cases := []struct {
		name    string
		segSize int64
		// damage changes the files in dir and says what to expect.
		damage func(t *testing.T, segs []string) result
	}{
		{
			name: "LengthField",
			damage: func(t *testing.T, segs []string) result {
				b, offs := readFile(t, segs[0]), frames(t, segs[0])
				binary.BigEndian.PutUint32(b[offs[99]:], 983_040)
				writeFile(t, segs[0], b)
				return result{lost: []int{100}, quarantined: b[offs[99]:offs[100]], seg: segs[0],
					want: domain.OutboxDamage{Lost: 1, QuarantinedBytes: int64(offs[100] - offs[99])}}
			},
		},
		{
			name: "FlippedByte",
			damage: func(t *testing.T, segs []string) result {
				b, offs := readFile(t, segs[0]), frames(t, segs[0])
				b[offs[99]+40] ^= 0x10
				writeFile(t, segs[0], b)
				return result{lost: []int{100}, quarantined: b[offs[99]:offs[100]], seg: segs[0],
					want: domain.OutboxDamage{Lost: 1, QuarantinedBytes: int64(offs[100] - offs[99])}}
			},
		},
		{
			name:    "FirstOfTwoSegments",
			segSize: 100_000,
			damage: func(t *testing.T, segs []string) result {
				if len(segs) != 2 {
					t.Fatalf("%d segments, want 2", len(segs))
				}
				b, offs := readFile(t, segs[0]), frames(t, segs[0])
				b[offs[99]+40] ^= 0x10
				writeFile(t, segs[0], b)
				return result{lost: []int{100}, quarantined: b[offs[99]:offs[100]], seg: segs[0],
					want: domain.OutboxDamage{Lost: 1, QuarantinedBytes: int64(offs[100] - offs[99])}}
			},
		},
		{
			name: "CutTail",
			damage: func(t *testing.T, segs []string) result {
				b, offs := readFile(t, segs[0]), frames(t, segs[0])
				b = b[:len(b)-37]
				writeFile(t, segs[0], b)
				return result{lost: []int{1000}, quarantined: b[offs[999]:], seg: segs[0],
					want: domain.OutboxDamage{Torn: 1, QuarantinedBytes: int64(len(b) - offs[999])}}
			},
		},
		{
			name: "AppendedJunk",
			damage: func(t *testing.T, segs []string) result {
				junk := []byte("some other program wrote this line here\n")
				writeFile(t, segs[0], append(readFile(t, segs[0]), junk...))
				return result{quarantined: junk, seg: segs[0],
					want: domain.OutboxDamage{QuarantinedBytes: int64(len(junk))}}
			},
		},
		{
			name: "ZeroedBlock",
			damage: func(t *testing.T, segs []string) result {
				b, offs := readFile(t, segs[0]), frames(t, segs[0])
				const blk, size = 40 * 1024, 4096
				clear(b[blk : blk+size])
				writeFile(t, segs[0], b)
				// The records that overlap the block are lost; the damaged
				// stretch runs from the first of them to the next intact one.
				var lost []int
				first, next := -1, -1
				for i, off := range offs {
					end := len(b)
					if i+1 < len(offs) {
						end = offs[i+1]
					}
					if off < blk+size && end > blk {
						lost = append(lost, i+1)
						if first < 0 {
							first = off
						}
						next = end
					}
				}
				if len(lost) < 2 {
					t.Fatalf("the block overlaps %d records", len(lost))
				}
				return result{lost: lost, quarantined: b[first:next], seg: segs[0],
					want: domain.OutboxDamage{Lost: uint64(len(lost)), QuarantinedBytes: int64(next - first)}}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := fileoutbox.Options{NoSync: true, SegmentSize: tc.segSize}
			o := open(t, dir, opts)
			fill(t, o, 1, total)
			_ = o.Close()
			res := tc.damage(t, segments(t, dir))

			o = open(t, dir, opts)
			want := without(span(1, total), res.lost...)
			if got := ids(t, o); !equalInts(got, want) {
				t.Fatalf("recovered %d messages, want %d (all but %v)", len(got), len(want), res.lost)
			}
			q := res.seg + ".quarantine"
			res.want.Quarantine = []string{q}
			got := o.Damage()
			if got.Lost != res.want.Lost || got.Torn != res.want.Torn || got.QuarantinedBytes != res.want.QuarantinedBytes || !slices.Equal(got.Quarantine, res.want.Quarantine) {
				t.Fatalf("Damage() = %+v, want %+v", got, res.want)
			}
			if qb := readFile(t, q); !bytes.Equal(qb, res.quarantined) {
				t.Fatalf("quarantine holds %d bytes, want the %d damaged bytes", len(qb), len(res.quarantined))
			}
			// The damage was moved out: reopening finds none, and appends
			// go on after what was recovered.
			fill(t, o, total+1, total+1)
			_ = o.Close()
			o = open(t, dir, opts)
			if d := o.Damage(); d.Any() || len(o.Recovery().Corrupt) != 0 {
				t.Fatalf("second Open found damage again: %+v", o.Recovery())
			}
			if got := ids(t, o); !equalInts(got, append(want, total+1)) {
				t.Fatalf("after reopening: %d messages, want %d", len(got), len(want)+1)
			}
		})
	}
}

// When the damaged bytes cannot be moved aside, Open fails with
// ErrOutboxDamaged naming the segment, and leaves the segment as it was.
func TestDamageCannotBeQuarantined(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, fileoutbox.Options{NoSync: true})
	fill(t, o, 1, 10)
	_ = o.Close()
	seg := segments(t, dir)[0]
	b, offs := readFile(t, seg), frames(t, seg)
	b[offs[4]+20] ^= 0x01
	writeFile(t, seg, b)
	// A directory where the quarantine file would go.
	if err := os.Mkdir(seg+".quarantine", 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := fileoutbox.Open(dir, fileoutbox.Options{NoSync: true})
	if !errors.Is(err, domain.ErrOutboxDamaged) {
		t.Fatalf("Open = %v, want ErrOutboxDamaged", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(filepath.Base(seg))) {
		t.Fatalf("the error does not name the segment: %v", err)
	}
	if after := readFile(t, seg); !bytes.Equal(after, b) {
		t.Fatal("the segment was changed")
	}
}
