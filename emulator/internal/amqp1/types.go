package amqp1

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Symbol is the AMQP symbol type: an ASCII name such as an error condition or
// a capability. Encoded as sym8 when shorter than 256 bytes, else sym32.
type Symbol string

// UUID is the AMQP uuid type (RFC 4122 bytes in network order).
type UUID [16]byte

// String formats u in the canonical 8-4-4-4-12 lowercase hex form.
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// Char is the AMQP char type (a UTF-32 code point).
type Char rune

// Decimal32 carries the raw IEEE 754 decimal32 bytes; arithmetic is not supported.
type Decimal32 [4]byte

// Decimal64 carries the raw IEEE 754 decimal64 bytes; arithmetic is not supported.
type Decimal64 [8]byte

// Decimal128 carries the raw IEEE 754 decimal128 bytes; arithmetic is not supported.
type Decimal128 [16]byte

// MapEntry is one key/value pair of a [Map].
type MapEntry struct {
	// Key is any AMQP value (keys need not be comparable in Go, e.g. binary).
	Key any
	// Value is any AMQP value.
	Value any
}

// Map is a decoded AMQP map, in wire order. Keys may be of any AMQP type, so a
// Go map cannot hold every map; use [Map.Get] or [Map.Fields] to read it.
// Encoding a Map preserves its order. Duplicate keys are kept as decoded.
type Map []MapEntry

// Get returns the value of the first entry whose key equals key (compared with
// ==, so only comparable keys such as Symbol, string or integers match).
func (m Map) Get(key any) (any, bool) {
	for _, e := range m {
		if isComparable(e.Key) && e.Key == key {
			return e.Value, true
		}
	}
	return nil, false
}

// Fields converts a map whose keys are symbols or strings (the AMQP "fields"
// type) to a Go map keyed by string. It fails with an error naming the first
// key of another type.
func (m Map) Fields() (map[string]any, error) {
	if m == nil {
		return nil, nil
	}
	out := make(map[string]any, len(m))
	for _, e := range m {
		switch k := e.Key.(type) {
		case Symbol:
			out[string(k)] = e.Value
		case string:
			out[k] = e.Value
		default:
			return nil, fmt.Errorf("amqp1: fields key of type %T, want symbol", e.Key)
		}
	}
	return out, nil
}

// Array is a decoded AMQP array whose element type is not symbol or string
// (those decode to []Symbol and []string). All elements share one type;
// encoding an Array with mixed element types fails.
type Array []any

// Described is a described value whose descriptor is not known to this
// package: Descriptor is a Symbol or a uint64, Value any AMQP value.
type Described struct {
	// Descriptor is the symbolic (Symbol) or numeric (uint64) descriptor.
	Descriptor any
	// Value is the described value.
	Value any
}

// Error is the AMQP error type (Part 2 §2.8.14), carried by close, end,
// detach and the rejected outcome. A nil *Error means "no error".
type Error struct {
	// Condition is the error condition, e.g. [ErrCondUnauthorizedAccess]; mandatory on the wire.
	Condition Symbol
	// Description is an optional human-readable text.
	Description string
	// Info is optional extra information (the "fields" map); nil when absent.
	Info map[string]any
}

// Error implements error as "condition: description".
func (e *Error) Error() string {
	if e == nil {
		return "<nil>"
	}
	if e.Description == "" {
		return "amqp1: " + string(e.Condition)
	}
	return "amqp1: " + string(e.Condition) + ": " + e.Description
}

// Error conditions of the specification (Part 2 §2.8.15–2.8.18) and those the
// IoT Hub uses (com.microsoft:*).
const (
	ErrCondInternalError         Symbol = "amqp:internal-error"
	ErrCondNotFound              Symbol = "amqp:not-found"
	ErrCondUnauthorizedAccess    Symbol = "amqp:unauthorized-access"
	ErrCondDecodeError           Symbol = "amqp:decode-error"
	ErrCondResourceLimitExceeded Symbol = "amqp:resource-limit-exceeded"
	ErrCondNotAllowed            Symbol = "amqp:not-allowed"
	ErrCondInvalidField          Symbol = "amqp:invalid-field"
	ErrCondNotImplemented        Symbol = "amqp:not-implemented"
	ErrCondResourceLocked        Symbol = "amqp:resource-locked"
	ErrCondPreconditionFailed    Symbol = "amqp:precondition-failed"
	ErrCondResourceDeleted       Symbol = "amqp:resource-deleted"
	ErrCondIllegalState          Symbol = "amqp:illegal-state"
	ErrCondFrameSizeTooSmall     Symbol = "amqp:frame-size-too-small"
	ErrCondConnectionForced      Symbol = "amqp:connection:forced"
	ErrCondFramingError          Symbol = "amqp:connection:framing-error"
	ErrCondConnectionRedirect    Symbol = "amqp:connection:redirect"
	ErrCondWindowViolation       Symbol = "amqp:session:window-violation"
	ErrCondErrantLink            Symbol = "amqp:session:errant-link"
	ErrCondHandleInUse           Symbol = "amqp:session:handle-in-use"
	ErrCondUnattachedHandle      Symbol = "amqp:session:unattached-handle"
	ErrCondDetachForced          Symbol = "amqp:link:detach-forced"
	ErrCondTransferLimitExceeded Symbol = "amqp:link:transfer-limit-exceeded"
	ErrCondMessageSizeExceeded   Symbol = "amqp:link:message-size-exceeded"
	ErrCondLinkRedirect          Symbol = "amqp:link:redirect"
	ErrCondStolen                Symbol = "amqp:link:stolen"
	ErrCondServerBusy            Symbol = "com.microsoft:server-busy"
)

func isComparable(v any) bool {
	switch v.(type) {
	case nil, bool, uint8, uint16, uint32, uint64, int8, int16, int32, int64,
		float32, float64, string, Symbol, UUID, Char, Decimal32, Decimal64, Decimal128:
		return true
	}
	return false
}

func describe(v any) string {
	s := fmt.Sprintf("%T", v)
	return strings.TrimPrefix(s, "amqp1.")
}
