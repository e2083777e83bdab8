package twin

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseTwinPatch(t *testing.T) {
	// The root object plus MaxTwinDepth nested objects is the deepest allowed.
	deep := strings.Repeat(`{"a":`, MaxTwinDepth+2) + "1" + strings.Repeat("}", MaxTwinDepth+2)
	ok10 := strings.Repeat(`{"a":`, MaxTwinDepth+1) + "1" + strings.Repeat("}", MaxTwinDepth+1)
	tests := []struct {
		in      string
		wantErr bool
	}{
		{`{"batteryLevel":60,"obj":{"x":null}}`, false},
		{` {"a":[1,{"b":2}]} `, false},
		{`{"$version":4,"a":1}`, false},
		{`{"comp":{"__t":"c","p":{"value":1,"ac":200,"av":3}}}`, false},
		{ok10, false},
		{deep, true},
		{``, true},
		{` `, true},
		{`null`, true},
		{`[1]`, true},
		{`"x"`, true},
		{`{"a":1`, true},
		{`{"a.b":1}`, true},
		{`{"$x":1}`, true},
		{`{"a b":1}`, true},
		{`{"":1}`, true},
		{`{"a":{"b\u0001":1}}`, true},
		{`{"a":"` + strings.Repeat("x", MaxTwinStringLen+1) + `"}`, true},
		{`{"` + strings.Repeat("k", MaxTwinKeyLen+1) + `":1}`, true},
	}
	for _, tc := range tests {
		got, err := ParseTwinPatch([]byte(tc.in))
		if tc.wantErr {
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseTwinPatch(%.60q) = %v, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTwinPatch(%.60q): %v", tc.in, err)
			continue
		}
		if _, has := got["$version"]; has {
			t.Errorf("ParseTwinPatch(%q) kept $version", tc.in)
		}
	}
}

func FuzzParseTwinPatch(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":null}}`, `{"$version":3}`, `[]`, `{"a.b":1}`, `{"a":[{"b":1}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseTwinPatch(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// A valid patch stays valid when encoded again.
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("valid patch does not encode: %v", err)
		}
		if _, err := ParseTwinPatch(enc); err != nil {
			t.Fatalf("re-encoded patch %s refused: %v", enc, err)
		}
	})
}
