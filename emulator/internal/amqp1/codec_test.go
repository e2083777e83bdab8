package amqp1

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodeWireForms(t *testing.T) {
	t.Parallel()
	ts := time.UnixMilli(1700000000123).UTC()
	uuid := UUID{0: 1, 15: 0xff}
	tests := []struct {
		name string
		in   []byte
		want any
	}{
		{"null", []byte{0x40}, nil},
		{"true", []byte{0x41}, true},
		{"false", []byte{0x42}, false},
		{"boolean true", []byte{0x56, 0x01}, true},
		{"boolean false", []byte{0x56, 0x00}, false},
		{"ubyte", []byte{0x50, 0xfe}, uint8(0xfe)},
		{"ushort", []byte{0x60, 0x12, 0x34}, uint16(0x1234)},
		{"uint0", []byte{0x43}, uint32(0)},
		{"smalluint", []byte{0x52, 0x07}, uint32(7)},
		{"uint", []byte{0x70, 0, 1, 0, 0}, uint32(65536)},
		{"ulong0", []byte{0x44}, uint64(0)},
		{"smallulong", []byte{0x53, 0x10}, uint64(0x10)},
		{"ulong", []byte{0x80, 0, 0, 0, 1, 0, 0, 0, 0}, uint64(1 << 32)},
		{"byte", []byte{0x51, 0xff}, int8(-1)},
		{"short", []byte{0x61, 0xff, 0xfe}, int16(-2)},
		{"smallint", []byte{0x54, 0xfd}, int32(-3)},
		{"int", []byte{0x71, 0xff, 0xff, 0xff, 0xfc}, int32(-4)},
		{"smalllong", []byte{0x55, 0x05}, int64(5)},
		{"long", []byte{0x81, 0x80, 0, 0, 0, 0, 0, 0, 0}, int64(math.MinInt64)},
		{"float", []byte{0x72, 0x3f, 0x80, 0, 0}, float32(1)},
		{"double", []byte{0x82, 0x40, 0, 0, 0, 0, 0, 0, 0}, float64(2)},
		{"timestamp", append([]byte{0x83}, be64(uint64(ts.UnixMilli()))...), ts},
		{"uuid", append([]byte{0x98}, uuid[:]...), uuid},
		{"char", []byte{0x73, 0, 0, 0, 'x'}, Char('x')},
		{"vbin8", []byte{0xa0, 2, 1, 2}, []byte{1, 2}},
		{"vbin32", []byte{0xb0, 0, 0, 0, 2, 1, 2}, []byte{1, 2}},
		{"str8", []byte{0xa1, 2, 'h', 'i'}, "hi"},
		{"str32", []byte{0xb1, 0, 0, 0, 2, 'h', 'i'}, "hi"},
		{"sym8", []byte{0xa3, 3, 'a', 'b', 'c'}, Symbol("abc")},
		{"sym32", []byte{0xb3, 0, 0, 0, 3, 'a', 'b', 'c'}, Symbol("abc")},
		{"list0", []byte{0x45}, []any{}},
		{"list8", []byte{0xc0, 4, 2, 0x41, 0x52, 9}, []any{true, uint32(9)}},
		{"list32", []byte{0xd0, 0, 0, 0, 7, 0, 0, 0, 2, 0x41, 0x52, 9}, []any{true, uint32(9)}},
		{"map8", []byte{0xc1, 6, 2, 0xa3, 1, 'k', 0x50, 7}, Map{{Symbol("k"), uint8(7)}}},
		{"map32", []byte{0xd1, 0, 0, 0, 9, 0, 0, 0, 2, 0xa3, 1, 'k', 0x50, 7}, Map{{Symbol("k"), uint8(7)}}},
		{"array8 sym8", []byte{0xe0, 6, 2, 0xa3, 1, 'a', 1, 'b'}, []Symbol{"a", "b"}},
		{"array32 sym32", []byte{0xf0, 0, 0, 0, 15, 0, 0, 0, 2, 0xb3, 0, 0, 0, 1, 'a', 0, 0, 0, 1, 'b'}, []Symbol{"a", "b"}},
		{"array8 str8", []byte{0xe0, 4, 1, 0xa1, 1, 'z'}, []string{"z"}},
		{"array8 int", []byte{0xe0, 10, 2, 0x71, 0, 0, 0, 1, 0, 0, 0, 2}, Array{int32(1), int32(2)}},
		{"array8 described", []byte{0xe0, 5, 2, 0x00, 0x53, 0x24, 0x45}, Array{Described{uint64(0x24), []any{}}, Described{uint64(0x24), []any{}}}},
		{"described", []byte{0x00, 0x53, 0x24, 0x45}, Described{uint64(0x24), []any{}}},
		{"described symbolic", []byte{0x00, 0xa3, 3, 'a', ':', 'b', 0x40}, Described{Symbol("a:b"), nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, n, err := Decode(tc.in)
			if err != nil {
				t.Fatalf("Decode(% x): %v", tc.in, err)
			}
			if n != len(tc.in) {
				t.Errorf("consumed %d of %d bytes", n, len(tc.in))
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	for i := range 8 {
		b[7-i] = byte(v >> (8 * i))
	}
	return b
}

func TestEncodeCompactForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   any
		want []byte
	}{
		{uint32(0), []byte{0x43}},
		{uint32(200), []byte{0x52, 200}},
		{uint32(300), []byte{0x70, 0, 0, 1, 0x2c}},
		{uint64(0), []byte{0x44}},
		{uint64(5), []byte{0x53, 5}},
		{int32(-1), []byte{0x54, 0xff}},
		{int64(1000), []byte{0x81, 0, 0, 0, 0, 0, 0, 0x03, 0xe8}},
		{true, []byte{0x41}},
		{[]any{}, []byte{0x45}},
		{"hi", []byte{0xa1, 2, 'h', 'i'}},
		{Symbol("s"), []byte{0xa3, 1, 's'}},
		{[]Symbol{"a"}, []byte{0xe0, 4, 1, 0xa3, 1, 'a'}},
		{map[string]any{"b": nil, "a": true}, []byte{0xc1, 9, 4, 0xa3, 1, 'a', 0x41, 0xa3, 1, 'b', 0x40}},
	}
	for _, tc := range tests {
		got, err := Encode(tc.in)
		if err != nil {
			t.Fatalf("Encode(%#v): %v", tc.in, err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("Encode(%#v) = % x, want % x", tc.in, got, tc.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 300)
	values := []any{
		nil, true, false, uint8(1), uint16(2), uint32(3), uint32(1 << 20), uint64(4), uint64(1 << 40),
		int8(-5), int16(-6), int32(-7), int32(-70000), int64(-8), int64(-1 << 40),
		float32(1.5), float64(-2.25), time.UnixMilli(1234567).UTC(), UUID{1, 2, 3},
		[]byte{}, []byte{1, 2, 3}, []byte(long), "", "héllo", long, Symbol("sym"), Symbol(long), Char('é'),
		Decimal32{1, 2, 3, 4}, Decimal64{1}, Decimal128{2},
		[]any{uint32(1), "two", []any{Symbol("three")}},
		make([]any, 300),
		Map{{Symbol("a"), int32(1)}, {uint64(2), []byte{9}}, {"s", Map{}}},
		[]Symbol{"x", Symbol(long)}, []string{"p", "q"},
		Array{int64(1), int64(2)}, Array{[]any{true}, []any{}}, Array{Map{{"k", "v"}}},
		Array{Described{uint64(0x24), []any{}}},
		Described{Symbol("x:y"), Map{{Symbol("k"), "v"}}},
	}
	for _, v := range values {
		b, err := Encode(v)
		if err != nil {
			t.Fatalf("Encode(%#v): %v", v, err)
		}
		got, n, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Encode(%#v)): %v", v, err)
		}
		if n != len(b) {
			t.Errorf("%#v: consumed %d of %d", v, n, len(b))
		}
		if !reflect.DeepEqual(got, v) {
			t.Errorf("round trip: got %#v, want %#v", got, v)
		}
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	t.Parallel()
	deep := bytes.Repeat([]byte{0xc0, 0xff, 1}, MaxDepth+2) // nested list8 of list8 ...
	tests := map[string][]byte{
		"empty":                {},
		"unknown code":         {0x01},
		"truncated uint":       {0x70, 0, 0},
		"vbin8 past end":       {0xa0, 5, 1},
		"vbin32 huge":          {0xb0, 0xff, 0xff, 0xff, 0xff},
		"str bad utf8":         {0xa1, 1, 0xff},
		"list8 size past end":  {0xc0, 10, 1, 0x40},
		"list8 count too big":  {0xc0, 2, 200, 0x40},
		"list32 count huge":    {0xd0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x40},
		"list trailing bytes":  {0xc0, 3, 1, 0x40, 0x40},
		"map odd count":        {0xc1, 2, 1, 0x40},
		"array zero-width big": {0xf0, 0, 0, 0, 5, 0x7f, 0xff, 0xff, 0xff, 0x40},
		"array no constructor": {0xe0, 1, 1},
		"boolean bad byte":     {0x56, 2},
		"descriptor not ulong": {0x00, 0xa1, 1, 'x', 0x40},
		"described truncated":  {0x00, 0x53},
		"too deep":             deep,
		"array described deep": {0xe0, 3, 1, 0x00, 0x00},
	}
	for name, in := range tests {
		_, _, err := Decode(in)
		if !errors.Is(err, ErrDecode) {
			t.Errorf("%s: Decode(% x) error = %v, want ErrDecode", name, in, err)
		}
	}
}

func TestEncodeRejects(t *testing.T) {
	t.Parallel()
	for _, v := range []any{struct{}{}, Array{int32(1), "mixed"}, make(chan int)} {
		if _, err := Encode(v); !errors.Is(err, ErrEncode) {
			t.Errorf("Encode(%T) error = %v, want ErrEncode", v, err)
		}
	}
}

func TestMapAccessors(t *testing.T) {
	t.Parallel()
	m := Map{{Symbol("a"), 1}, {[]byte{1}, 2}, {"b", 3}}
	if v, ok := m.Get(Symbol("a")); !ok || v != 1 {
		t.Errorf("Get(a) = %v, %v", v, ok)
	}
	if _, ok := m.Get(Symbol("zz")); ok {
		t.Error("Get(zz) found")
	}
	if _, err := m.Fields(); err == nil {
		t.Error("Fields with a binary key: no error")
	}
	f, err := Map{{Symbol("a"), 1}, {"b", 2}}.Fields()
	if err != nil || f["a"] != 1 || f["b"] != 2 {
		t.Errorf("Fields = %v, %v", f, err)
	}
	if got := (UUID{0x12, 0x34, 15: 0xab}).String(); got != "12340000-0000-0000-0000-0000000000ab" {
		t.Errorf("UUID.String = %s", got)
	}
}
