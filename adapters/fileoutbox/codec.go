package fileoutbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"time"

	"github.com/iotc-go/iotc/domain"
)

// A segment file is a sequence of records, each framed as
//
//	length  uint32, big endian: the payload's length
//	crc     uint32, big endian: CRC-32C (Castagnoli) of the payload
//	payload kind byte, then the kind's fields
//
// kindMessage: seq uint64, enqueued int64 (Unix ns), creation-time flag
// byte and int64 (Unix ns), then message id, correlation id, content
// type, content encoding, component and body, each a uvarint length and
// its bytes, then a uvarint count of application properties and each key
// and value the same way.
//
// kindRemoved: seq uint64, every message up to it was removed.
const (
	kindMessage byte = 1
	kindRemoved byte = 2

	headerSize = 8
	// maxPayload bounds a record's payload: a 256 KiB message and its
	// properties with room to spare. A larger length is corruption.
	maxPayload = 1 << 20
	// seqOffset is where the seq sits in a payload (after the kind byte).
	seqOffset = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a record that cannot be decoded.
var errCorrupt = errors.New("corrupt record")

// encodeMessage returns the framed record of m with seq 0; setSeq fills it
// in and seals the frame.
func encodeMessage(m domain.Message, enqueued time.Time) []byte {
	n := headerSize + 1 + 8 + 8 + 1 + 8 + 6*binary.MaxVarintLen64 + binary.MaxVarintLen64 +
		len(m.MessageID) + len(m.CorrelationID) + len(m.ContentType) + len(m.ContentEncoding) + len(m.Component) + len(m.Body)
	for k, v := range m.Properties {
		n += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	b := make([]byte, headerSize, n)
	b = append(b, kindMessage)
	b = binary.BigEndian.AppendUint64(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(enqueued.UnixNano()))
	if m.CreationTime.IsZero() {
		b = append(b, 0)
		b = binary.BigEndian.AppendUint64(b, 0)
	} else {
		b = append(b, 1)
		b = binary.BigEndian.AppendUint64(b, uint64(m.CreationTime.UnixNano()))
	}
	str := func(s []byte) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	str([]byte(m.MessageID))
	str([]byte(m.CorrelationID))
	str([]byte(m.ContentType))
	str([]byte(m.ContentEncoding))
	str([]byte(m.Component))
	str(m.Body)
	keys := slices.Sorted(maps.Keys(m.Properties))
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		str([]byte(k))
		str([]byte(m.Properties[k]))
	}
	return b
}

// encodeRemoved returns the framed record "removed through seq".
func encodeRemoved(seq uint64) []byte {
	b := make([]byte, headerSize, headerSize+9)
	b = append(b, kindRemoved)
	b = binary.BigEndian.AppendUint64(b, seq)
	seal(b)
	return b
}

// setSeq writes seq into a framed message record and seals it.
func setSeq(frame []byte, seq uint64) {
	binary.BigEndian.PutUint64(frame[headerSize+seqOffset:], seq)
	seal(frame)
}

// seal fills in the frame's length and checksum.
func seal(frame []byte) {
	p := frame[headerSize:]
	binary.BigEndian.PutUint32(frame[0:4], uint32(len(p)))
	binary.BigEndian.PutUint32(frame[4:8], crc32.Checksum(p, castagnoli))
}

// parseHeader returns the payload length a frame header announces, or an
// error for an impossible one.
func parseHeader(h []byte) (n int, crc uint32, err error) {
	l := binary.BigEndian.Uint32(h[0:4])
	if l == 0 || l > maxPayload {
		return 0, 0, fmt.Errorf("%w: payload length %d", errCorrupt, l)
	}
	return int(l), binary.BigEndian.Uint32(h[4:8]), nil
}

// record is a decoded payload.
type record struct {
	kind     byte
	seq      uint64
	enqueued time.Time
	msg      domain.Message
}

// decodePayload checks p against crc and decodes it. It never panics.
func decodePayload(p []byte, crc uint32) (record, error) {
	if crc32.Checksum(p, castagnoli) != crc {
		return record{}, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	return decode(p)
}

func decode(p []byte) (record, error) {
	bad := func(what string) (record, error) {
		return record{}, fmt.Errorf("%w: %s", errCorrupt, what)
	}
	if len(p) < 1+8 {
		return bad("short record")
	}
	r := record{kind: p[0], seq: binary.BigEndian.Uint64(p[1:9])}
	if r.seq == 0 {
		return bad("seq 0")
	}
	p = p[9:]
	switch r.kind {
	case kindRemoved:
		if len(p) != 0 {
			return bad("trailing bytes")
		}
		return r, nil
	case kindMessage:
	default:
		return bad(fmt.Sprintf("unknown kind %d", r.kind))
	}
	if len(p) < 8+1+8 {
		return bad("short message record")
	}
	r.enqueued = time.Unix(0, int64(binary.BigEndian.Uint64(p[0:8]))).UTC()
	if p[8] == 1 {
		r.msg.CreationTime = time.Unix(0, int64(binary.BigEndian.Uint64(p[9:17]))).UTC()
	} else if p[8] != 0 {
		return bad("creation time flag")
	}
	p = p[17:]
	str := func() ([]byte, bool) {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > uint64(len(p)-k) {
			return nil, false
		}
		s := p[k : k+int(n)]
		p = p[k+int(n):]
		return s, true
	}
	var fields [6][]byte
	for i := range fields {
		s, ok := str()
		if !ok {
			return bad("truncated field")
		}
		fields[i] = s
	}
	r.msg.MessageID = string(fields[0])
	r.msg.CorrelationID = string(fields[1])
	r.msg.ContentType = string(fields[2])
	r.msg.ContentEncoding = string(fields[3])
	r.msg.Component = string(fields[4])
	r.msg.Body = append([]byte{}, fields[5]...)
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)) {
		return bad("property count")
	}
	p = p[k:]
	if n > 0 {
		r.msg.Properties = make(map[string]string, n)
	}
	for range n {
		key, ok1 := str()
		val, ok2 := str()
		if !ok1 || !ok2 {
			return bad("truncated property")
		}
		r.msg.Properties[string(key)] = string(val)
	}
	if len(p) != 0 {
		return bad("trailing bytes")
	}
	return r, nil
}
