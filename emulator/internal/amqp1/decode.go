package amqp1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of compound values (lists, maps, arrays,
// described values) that [Decode] accepts; deeper input fails with
// [ErrDecode]. Performatives need a depth of about 5.
const MaxDepth = 32

// ErrDecode is wrapped by every error of [Decode] and [DecodePerformative]
// for malformed input: truncated values, lengths beyond the input, unknown
// format codes, invalid UTF-8, nesting beyond [MaxDepth].
var ErrDecode = errors.New("amqp1: decode error")

// Format codes of the AMQP type system (Part 1 §1.6).
const (
	codeDescribed  = 0x00
	codeNull       = 0x40
	codeTrue       = 0x41
	codeFalse      = 0x42
	codeUint0      = 0x43
	codeUlong0     = 0x44
	codeList0      = 0x45
	codeBoolean    = 0x56
	codeUbyte      = 0x50
	codeSmallUint  = 0x52
	codeSmallUlong = 0x53
	codeByte       = 0x51
	codeSmallInt   = 0x54
	codeSmallLong  = 0x55
	codeUshort     = 0x60
	codeShort      = 0x61
	codeUint       = 0x70
	codeInt        = 0x71
	codeFloat      = 0x72
	codeChar       = 0x73
	codeDecimal32  = 0x74
	codeUlong      = 0x80
	codeLong       = 0x81
	codeDouble     = 0x82
	codeTimestamp  = 0x83
	codeDecimal64  = 0x84
	codeDecimal128 = 0x94
	codeUUID       = 0x98
	codeVbin8      = 0xa0
	codeStr8       = 0xa1
	codeSym8       = 0xa3
	codeVbin32     = 0xb0
	codeStr32      = 0xb1
	codeSym32      = 0xb3
	codeList8      = 0xc0
	codeMap8       = 0xc1
	codeList32     = 0xd0
	codeMap32      = 0xd1
	codeArray8     = 0xe0
	codeArray32    = 0xf0
)

// Decode decodes one AMQP value from the start of b and reports how many
// bytes it used. Values map to Go as follows: null→nil, boolean→bool,
// ubyte/ushort/uint/ulong→uint8/uint16/uint32/uint64, byte/short/int/long→
// int8/int16/int32/int64, float/double→float32/float64, timestamp→time.Time
// (UTC), uuid→[UUID], binary→[]byte (a copy), string→string, symbol→[Symbol],
// char→[Char], list→[]any, map→[Map], array of symbol→[]Symbol, array of
// string→[]string, other arrays→[Array], described→[Described].
//
// Errors wrap [ErrDecode]. Every length is checked against the remaining
// input, nesting is bounded by [MaxDepth] and the number of decoded elements
// by len(b), so hostile input cannot make it allocate much more than len(b)
// values or panic.
func Decode(b []byte) (any, int, error) {
	d := decoder{buf: b, budget: len(b) + 1}
	v, err := d.value()
	if err != nil {
		return nil, d.pos, err
	}
	return v, d.pos, nil
}

type decoder struct {
	buf    []byte
	pos    int
	depth  int
	budget int
}

func (d *decoder) errf(format string, args ...any) error {
	return fmt.Errorf("%w: at offset %d: %s", ErrDecode, d.pos, fmt.Sprintf(format, args...))
}

func (d *decoder) remaining() int { return len(d.buf) - d.pos }

func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || n > d.remaining() {
		return nil, d.errf("need %d bytes, have %d", n, d.remaining())
	}
	b := d.buf[d.pos : d.pos+n]
	d.pos += n
	return b, nil
}

func (d *decoder) byte1() (byte, error) {
	if d.pos >= len(d.buf) {
		return 0, d.errf("unexpected end of input")
	}
	c := d.buf[d.pos]
	d.pos++
	return c, nil
}

func (d *decoder) spend() error {
	d.budget--
	if d.budget < 0 {
		return d.errf("too many elements for the input size")
	}
	return nil
}

// value decodes a constructor and its value.
func (d *decoder) value() (any, error) {
	if err := d.spend(); err != nil {
		return nil, err
	}
	code, err := d.byte1()
	if err != nil {
		return nil, err
	}
	if code == codeDescribed {
		return d.described()
	}
	return d.primitive(code)
}

func (d *decoder) enter() error {
	d.depth++
	if d.depth > MaxDepth {
		return d.errf("nesting deeper than %d", MaxDepth)
	}
	return nil
}

func (d *decoder) leave() { d.depth-- }

func (d *decoder) described() (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.leave()
	desc, err := d.value()
	if err != nil {
		return nil, err
	}
	switch desc.(type) {
	case uint64, Symbol:
	default:
		return nil, d.errf("descriptor of type %s, want ulong or symbol", describe(desc))
	}
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	return Described{Descriptor: desc, Value: v}, nil
}

// fixedWidth returns the width of the data of a fixed-width format code, or -1.
func fixedWidth(code byte) int {
	switch code >> 4 {
	case 0x4:
		return 0
	case 0x5:
		return 1
	case 0x6:
		return 2
	case 0x7:
		return 4
	case 0x8:
		return 8
	case 0x9:
		return 16
	}
	return -1
}

func (d *decoder) primitive(code byte) (any, error) {
	switch code {
	case codeNull:
		return nil, nil
	case codeTrue:
		return true, nil
	case codeFalse:
		return false, nil
	case codeUint0:
		return uint32(0), nil
	case codeUlong0:
		return uint64(0), nil
	case codeList0:
		return []any{}, nil
	}
	if w := fixedWidth(code); w > 0 {
		b, err := d.take(w)
		if err != nil {
			return nil, err
		}
		return fixedValue(d, code, b)
	}
	switch code {
	case codeVbin8, codeStr8, codeSym8:
		n, err := d.byte1()
		if err != nil {
			return nil, err
		}
		return d.variable(code, int(n))
	case codeVbin32, codeStr32, codeSym32:
		b, err := d.take(4)
		if err != nil {
			return nil, err
		}
		return d.variable(code, lengthOf(b))
	case codeList8, codeMap8, codeArray8:
		size, err := d.byte1()
		if err != nil {
			return nil, err
		}
		return d.compound8or32(code, int(size), 1)
	case codeList32, codeMap32, codeArray32:
		b, err := d.take(4)
		if err != nil {
			return nil, err
		}
		return d.compound8or32(code, lengthOf(b), 4)
	}
	return nil, d.errf("unknown format code 0x%02x", code)
}

// lengthOf reads a 32-bit big-endian length as an int, saturating at MaxInt32
// so that it never wraps negative on any platform.
func lengthOf(b []byte) int {
	n := binary.BigEndian.Uint32(b)
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(n)
}

func fixedValue(d *decoder, code byte, b []byte) (any, error) {
	switch code {
	case codeBoolean:
		switch b[0] {
		case 0:
			return false, nil
		case 1:
			return true, nil
		}
		return nil, d.errf("boolean byte 0x%02x", b[0])
	case codeUbyte:
		return b[0], nil
	case codeSmallUint:
		return uint32(b[0]), nil
	case codeSmallUlong:
		return uint64(b[0]), nil
	case codeByte:
		return int8(b[0]), nil
	case codeSmallInt:
		return int32(int8(b[0])), nil
	case codeSmallLong:
		return int64(int8(b[0])), nil
	case codeUshort:
		return binary.BigEndian.Uint16(b), nil
	case codeShort:
		return int16(binary.BigEndian.Uint16(b)), nil
	case codeUint:
		return binary.BigEndian.Uint32(b), nil
	case codeInt:
		return int32(binary.BigEndian.Uint32(b)), nil
	case codeFloat:
		return math.Float32frombits(binary.BigEndian.Uint32(b)), nil
	case codeChar:
		return Char(binary.BigEndian.Uint32(b)), nil
	case codeDecimal32:
		return Decimal32(b), nil
	case codeUlong:
		return binary.BigEndian.Uint64(b), nil
	case codeLong:
		return int64(binary.BigEndian.Uint64(b)), nil
	case codeDouble:
		return math.Float64frombits(binary.BigEndian.Uint64(b)), nil
	case codeTimestamp:
		return time.UnixMilli(int64(binary.BigEndian.Uint64(b))).UTC(), nil
	case codeDecimal64:
		return Decimal64(b), nil
	case codeDecimal128:
		return Decimal128(b), nil
	case codeUUID:
		return UUID(b), nil
	}
	return nil, d.errf("unknown format code 0x%02x", code)
}

func (d *decoder) variable(code byte, n int) (any, error) {
	b, err := d.take(n)
	if err != nil {
		return nil, err
	}
	switch code {
	case codeVbin8, codeVbin32:
		return append([]byte{}, b...), nil
	case codeStr8, codeStr32:
		if !utf8.Valid(b) {
			return nil, d.errf("string is not valid UTF-8")
		}
		return string(b), nil
	default:
		return Symbol(b), nil
	}
}

// compound8or32 decodes a list, map or array whose size field (width bytes)
// has been read. size counts the bytes after the size field.
func (d *decoder) compound8or32(code byte, size, width int) (any, error) {
	body, err := d.take(size)
	if err != nil {
		return nil, err
	}
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.leave()
	sub := decoder{buf: body, depth: d.depth, budget: d.budget}
	var count int
	if width == 1 {
		c, err := sub.byte1()
		if err != nil {
			return nil, err
		}
		count = int(c)
	} else {
		c, err := sub.take(4)
		if err != nil {
			return nil, err
		}
		count = lengthOf(c)
	}
	// Every element needs at least one byte except array elements of a
	// zero-width type; the budget below bounds those.
	if count > sub.budget {
		return nil, d.errf("element count %d exceeds the input", count)
	}
	var v any
	switch code {
	case codeList8, codeList32:
		v, err = sub.list(count)
	case codeMap8, codeMap32:
		v, err = sub.mapOf(count)
	default:
		v, err = sub.array(count)
	}
	d.budget = sub.budget
	if err != nil {
		return nil, fmt.Errorf("%w (inside value at offset %d)", err, d.pos-size)
	}
	if sub.remaining() != 0 {
		return nil, d.errf("%d trailing bytes inside compound value", sub.remaining())
	}
	return v, nil
}

func (d *decoder) list(count int) (any, error) {
	if count > d.remaining() {
		return nil, d.errf("list count %d exceeds its %d bytes", count, d.remaining())
	}
	out := make([]any, 0, count)
	for range count {
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (d *decoder) mapOf(count int) (any, error) {
	if count%2 != 0 {
		return nil, d.errf("map with odd element count %d", count)
	}
	if count > d.remaining() {
		return nil, d.errf("map count %d exceeds its %d bytes", count, d.remaining())
	}
	out := make(Map, 0, count/2)
	for range count / 2 {
		k, err := d.value()
		if err != nil {
			return nil, err
		}
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		out = append(out, MapEntry{Key: k, Value: v})
	}
	return out, nil
}

// array decodes count elements sharing one constructor (possibly described).
func (d *decoder) array(count int) (any, error) {
	code, err := d.byte1()
	if err != nil {
		return nil, err
	}
	var desc any
	if code == codeDescribed {
		if err := d.enter(); err != nil {
			return nil, err
		}
		defer d.leave()
		desc, err = d.value()
		if err != nil {
			return nil, err
		}
		switch desc.(type) {
		case uint64, Symbol:
		default:
			return nil, d.errf("array descriptor of type %s", describe(desc))
		}
		code, err = d.byte1()
		if err != nil {
			return nil, err
		}
		if code == codeDescribed {
			return nil, d.errf("nested described array constructor")
		}
	}
	if desc == nil {
		switch code {
		case codeSym8, codeSym32:
			out := make([]Symbol, 0, min(count, d.remaining()))
			for range count {
				v, err := d.element(code)
				if err != nil {
					return nil, err
				}
				out = append(out, v.(Symbol))
			}
			return out, nil
		case codeStr8, codeStr32:
			out := make([]string, 0, min(count, d.remaining()))
			for range count {
				v, err := d.element(code)
				if err != nil {
					return nil, err
				}
				out = append(out, v.(string))
			}
			return out, nil
		}
	}
	out := make(Array, 0, min(count, d.remaining()+1))
	for range count {
		v, err := d.element(code)
		if err != nil {
			return nil, err
		}
		if desc != nil {
			v = Described{Descriptor: desc, Value: v}
		}
		out = append(out, v)
	}
	return out, nil
}

func (d *decoder) element(code byte) (any, error) {
	if err := d.spend(); err != nil {
		return nil, err
	}
	return d.primitive(code)
}
