package amqp1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// ErrEncode is wrapped by every error of [Encode]: a Go value with no AMQP
// mapping, an array with mixed element types, a value too large for a 32-bit
// length, or nesting deeper than [MaxDepth].
var ErrEncode = errors.New("amqp1: encode error")

// amqpAppender is implemented by the composite types of this package
// (performatives, terminus, delivery states) that encode themselves as
// described lists.
type amqpAppender interface {
	appendAMQP(b []byte, depth int) ([]byte, error)
}

// Encode encodes v with the most compact encoding (uint0/smalluint, list0/8,
// str8, sym8, ...), switching to the 32-bit forms when sizes need them.
// Accepted Go types are those [Decode] returns plus int (as long), uint (as
// ulong), map[Symbol]any and map[string]any (encoded with symbol keys, sorted
// for a stable output), the performative structs of this package and *Error.
// Errors wrap [ErrEncode].
func Encode(v any) ([]byte, error) {
	return appendValue(nil, v, 0)
}

func appendValue(b []byte, v any, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("%w: nesting deeper than %d", ErrEncode, MaxDepth)
	}
	switch v := v.(type) {
	case nil:
		return append(b, codeNull), nil
	case bool:
		if v {
			return append(b, codeTrue), nil
		}
		return append(b, codeFalse), nil
	case uint8:
		return append(b, codeUbyte, v), nil
	case uint16:
		return binary.BigEndian.AppendUint16(append(b, codeUshort), v), nil
	case uint32:
		switch {
		case v == 0:
			return append(b, codeUint0), nil
		case v < 256:
			return append(b, codeSmallUint, byte(v)), nil
		}
		return binary.BigEndian.AppendUint32(append(b, codeUint), v), nil
	case uint64:
		switch {
		case v == 0:
			return append(b, codeUlong0), nil
		case v < 256:
			return append(b, codeSmallUlong, byte(v)), nil
		}
		return binary.BigEndian.AppendUint64(append(b, codeUlong), v), nil
	case uint:
		return appendValue(b, uint64(v), depth)
	case int8:
		return append(b, codeByte, byte(v)), nil
	case int16:
		return binary.BigEndian.AppendUint16(append(b, codeShort), uint16(v)), nil
	case int32:
		if v >= -128 && v <= 127 {
			return append(b, codeSmallInt, byte(int8(v))), nil
		}
		return binary.BigEndian.AppendUint32(append(b, codeInt), uint32(v)), nil
	case int64:
		if v >= -128 && v <= 127 {
			return append(b, codeSmallLong, byte(int8(v))), nil
		}
		return binary.BigEndian.AppendUint64(append(b, codeLong), uint64(v)), nil
	case int:
		return appendValue(b, int64(v), depth)
	case amqpAppender:
		return v.appendAMQP(b, depth)
	}
	return appendWide(b, v, depth)
}

// wideCode is the constructor used for v inside an array (one constructor
// for every element), or 0 when v has no array form.
func wideCode(v any) byte {
	switch v.(type) {
	case bool:
		return codeBoolean
	case uint8:
		return codeUbyte
	case uint16:
		return codeUshort
	case uint32:
		return codeUint
	case uint64:
		return codeUlong
	case int8:
		return codeByte
	case int16:
		return codeShort
	case int32:
		return codeInt
	case int64:
		return codeLong
	case float32:
		return codeFloat
	case float64:
		return codeDouble
	case Char:
		return codeChar
	case Decimal32:
		return codeDecimal32
	case Decimal64:
		return codeDecimal64
	case Decimal128:
		return codeDecimal128
	case time.Time:
		return codeTimestamp
	case UUID:
		return codeUUID
	case []byte:
		return codeVbin32
	case string:
		return codeStr32
	case Symbol:
		return codeSym32
	case []any:
		return codeList32
	case Map:
		return codeMap32
	}
	return 0
}

// appendWide encodes v with a constructor; variable-width values use the
// 8-bit form when they fit.
func appendWide(b []byte, v any, depth int) ([]byte, error) {
	switch v := v.(type) {
	case []byte:
		return appendVariable(b, codeVbin8, codeVbin32, v)
	case string:
		return appendVariable(b, codeStr8, codeStr32, []byte(v))
	case Symbol:
		return appendVariable(b, codeSym8, codeSym32, []byte(v))
	case []any:
		return appendList(b, v, depth)
	case Map:
		return appendMap(b, v, depth)
	case map[Symbol]any:
		keys := make([]Symbol, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		m := make(Map, 0, len(v))
		for _, k := range keys {
			m = append(m, MapEntry{Key: k, Value: v[k]})
		}
		return appendMap(b, m, depth)
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		m := make(Map, 0, len(v))
		for _, k := range keys {
			m = append(m, MapEntry{Key: Symbol(k), Value: v[k]})
		}
		return appendMap(b, m, depth)
	case []Symbol:
		elems := make(Array, len(v))
		short := true
		for i, s := range v {
			elems[i] = s
			short = short && len(s) < 256
		}
		if short {
			return appendArray(b, elems, codeSym8, nil, depth)
		}
		return appendArray(b, elems, codeSym32, nil, depth)
	case []string:
		elems := make(Array, len(v))
		for i, s := range v {
			elems[i] = s
		}
		return appendArray(b, elems, codeStr32, nil, depth)
	case Array:
		if len(v) == 0 {
			return appendArray(b, v, codeNull, nil, depth)
		}
		var desc any
		first := v[0]
		if d, ok := first.(Described); ok {
			desc, first = d.Descriptor, d.Value
		}
		code := wideCode(first)
		if code == 0 {
			return nil, fmt.Errorf("%w: array element of type %s", ErrEncode, describe(first))
		}
		return appendArray(b, v, code, desc, depth)
	case Described:
		b = append(b, codeDescribed)
		b, err := appendValue(b, v.Descriptor, depth+1)
		if err != nil {
			return nil, err
		}
		return appendValue(b, v.Value, depth+1)
	}
	code := wideCode(v)
	if code == 0 {
		return nil, fmt.Errorf("%w: no AMQP type for Go type %T", ErrEncode, v)
	}
	return appendBody(append(b, code), code, v, depth)
}

func appendVariable(b []byte, code8, code32 byte, data []byte) ([]byte, error) {
	if len(data) < 256 {
		b = append(b, code8, byte(len(data)))
		return append(b, data...), nil
	}
	if uint64(len(data)) > math.MaxUint32 {
		return nil, fmt.Errorf("%w: %d bytes exceed a 32-bit length", ErrEncode, len(data))
	}
	b = binary.BigEndian.AppendUint32(append(b, code32), uint32(len(data)))
	return append(b, data...), nil
}

// appendBody writes the data of v (no constructor) for the given wide code;
// v must have the Go type wideCode associates with code.
func appendBody(b []byte, code byte, v any, depth int) ([]byte, error) {
	bad := func() ([]byte, error) {
		return nil, fmt.Errorf("%w: %s does not fit format code 0x%02x (mixed array?)", ErrEncode, describe(v), code)
	}
	switch code {
	case codeNull:
		if v != nil {
			return bad()
		}
		return b, nil
	case codeBoolean:
		x, ok := v.(bool)
		if !ok {
			return bad()
		}
		if x {
			return append(b, 1), nil
		}
		return append(b, 0), nil
	case codeUbyte:
		x, ok := v.(uint8)
		if !ok {
			return bad()
		}
		return append(b, x), nil
	case codeByte:
		x, ok := v.(int8)
		if !ok {
			return bad()
		}
		return append(b, byte(x)), nil
	case codeUshort:
		x, ok := v.(uint16)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint16(b, x), nil
	case codeShort:
		x, ok := v.(int16)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint16(b, uint16(x)), nil
	case codeUint:
		x, ok := v.(uint32)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint32(b, x), nil
	case codeInt:
		x, ok := v.(int32)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint32(b, uint32(x)), nil
	case codeFloat:
		x, ok := v.(float32)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint32(b, math.Float32bits(x)), nil
	case codeChar:
		x, ok := v.(Char)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint32(b, uint32(x)), nil
	case codeDecimal32:
		x, ok := v.(Decimal32)
		if !ok {
			return bad()
		}
		return append(b, x[:]...), nil
	case codeUlong:
		x, ok := v.(uint64)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint64(b, x), nil
	case codeLong:
		x, ok := v.(int64)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint64(b, uint64(x)), nil
	case codeDouble:
		x, ok := v.(float64)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint64(b, math.Float64bits(x)), nil
	case codeTimestamp:
		x, ok := v.(time.Time)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint64(b, uint64(x.UnixMilli())), nil
	case codeDecimal64:
		x, ok := v.(Decimal64)
		if !ok {
			return bad()
		}
		return append(b, x[:]...), nil
	case codeDecimal128:
		x, ok := v.(Decimal128)
		if !ok {
			return bad()
		}
		return append(b, x[:]...), nil
	case codeUUID:
		x, ok := v.(UUID)
		if !ok {
			return bad()
		}
		return append(b, x[:]...), nil
	case codeVbin32, codeStr32, codeSym32, codeSym8:
		var data []byte
		switch x := v.(type) {
		case []byte:
			if code != codeVbin32 {
				return bad()
			}
			data = x
		case string:
			if code != codeStr32 {
				return bad()
			}
			data = []byte(x)
		case Symbol:
			if code != codeSym32 && code != codeSym8 {
				return bad()
			}
			data = []byte(x)
		default:
			return bad()
		}
		if code == codeSym8 {
			if len(data) > 255 {
				return bad()
			}
			return append(append(b, byte(len(data))), data...), nil
		}
		if uint64(len(data)) > math.MaxUint32 {
			return nil, fmt.Errorf("%w: %d bytes exceed a 32-bit length", ErrEncode, len(data))
		}
		return append(binary.BigEndian.AppendUint32(b, uint32(len(data))), data...), nil
	case codeList32, codeMap32:
		var (
			enc []byte
			err error
		)
		switch x := v.(type) {
		case []any:
			if code != codeList32 {
				return bad()
			}
			enc, err = appendList(nil, x, depth)
		case Map:
			if code != codeMap32 {
				return bad()
			}
			enc, err = appendMap(nil, x, depth)
		default:
			return bad()
		}
		if err != nil {
			return nil, err
		}
		// Re-frame the compact encoding as the 32-bit form.
		return appendCompound32(b, enc, depth)
	}
	return bad()
}

// appendCompound32 rewrites one encoded list or map (any width) as its
// 32-bit body: size(4) count(4) elements.
func appendCompound32(b, enc []byte, depth int) ([]byte, error) {
	var count int
	var elems []byte
	switch enc[0] {
	case codeList0:
		return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, 4), 0), nil
	case codeList8, codeMap8:
		count, elems = int(enc[2]), enc[3:]
	default:
		count, elems = int(binary.BigEndian.Uint32(enc[5:9])), enc[9:]
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(elems)+4))
	b = binary.BigEndian.AppendUint32(b, uint32(count))
	return append(b, elems...), nil
}

func appendList(b []byte, list []any, depth int) ([]byte, error) {
	if len(list) == 0 {
		return append(b, codeList0), nil
	}
	var elems []byte
	for _, e := range list {
		var err error
		elems, err = appendValue(elems, e, depth+1)
		if err != nil {
			return nil, err
		}
	}
	return appendCompound(b, codeList8, codeList32, len(list), elems)
}

func appendMap(b []byte, m Map, depth int) ([]byte, error) {
	var elems []byte
	for _, e := range m {
		var err error
		elems, err = appendValue(elems, e.Key, depth+1)
		if err != nil {
			return nil, err
		}
		elems, err = appendValue(elems, e.Value, depth+1)
		if err != nil {
			return nil, err
		}
	}
	return appendCompound(b, codeMap8, codeMap32, 2*len(m), elems)
}

func appendCompound(b []byte, code8, code32 byte, count int, elems []byte) ([]byte, error) {
	if count < 256 && len(elems)+1 < 256 {
		b = append(b, code8, byte(len(elems)+1), byte(count))
		return append(b, elems...), nil
	}
	if uint64(len(elems))+4 > math.MaxUint32 {
		return nil, fmt.Errorf("%w: compound value of %d bytes exceeds a 32-bit length", ErrEncode, len(elems))
	}
	b = append(b, code32)
	b = binary.BigEndian.AppendUint32(b, uint32(len(elems)+4))
	b = binary.BigEndian.AppendUint32(b, uint32(count))
	return append(b, elems...), nil
}

// appendArray writes an array whose elements all use constructor code,
// optionally described by desc.
func appendArray(b []byte, elems Array, code byte, desc any, depth int) ([]byte, error) {
	if depth+1 > MaxDepth {
		return nil, fmt.Errorf("%w: nesting deeper than %d", ErrEncode, MaxDepth)
	}
	var body []byte
	if desc != nil {
		body = append(body, codeDescribed)
		var err error
		body, err = appendValue(body, desc, depth+1)
		if err != nil {
			return nil, err
		}
	}
	body = append(body, code)
	for _, e := range elems {
		if desc != nil {
			d, ok := e.(Described)
			if !ok || d.Descriptor != desc {
				return nil, fmt.Errorf("%w: array mixes described and other elements", ErrEncode)
			}
			e = d.Value
		}
		var err error
		body, err = appendBody(body, code, e, depth+1)
		if err != nil {
			return nil, err
		}
	}
	return appendCompound(b, codeArray8, codeArray32, len(elems), body)
}
