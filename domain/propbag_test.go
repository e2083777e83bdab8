package domain

import (
	"reflect"
	"testing"
)

func TestPropertyBagEncode(t *testing.T) {
	b := PropertyBag{
		{Key: PropContentType, Value: "application/json"},
		{Key: PropContentEncoding, Value: "utf-8"},
		{Key: PropComponent, Value: "thermostat1"},
		{Key: "a b", Value: "x&y=z"},
		{Key: "flag", NoValue: true},
	}
	want := "%24.ct=application%2Fjson&%24.ce=utf-8&%24.sub=thermostat1&a%20b=x%26y%3Dz&flag"
	if got := b.Encode(); got != want {
		t.Fatalf("Encode = %q, want %q", got, want)
	}
	back, err := DecodePropertyBag(want)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, b) {
		t.Errorf("round trip = %+v, want %+v", back, b)
	}
}

func TestDecodePropertyBagVariants(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
	}{
		{"$.mid=1&$.ct=application%2Fjson", map[string]string{"$.mid": "1", "$.ct": "application/json"}},
		{"?%24.mid=abc&%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound&color=red", map[string]string{"$.mid": "abc", "$.to": "/devices/d1/messages/devicebound", "color": "red"}},
		{"method-name=Commands%3AsetLed&&empty=", map[string]string{"method-name": "Commands:setLed", "empty": ""}},
		{"", map[string]string{}},
	}
	for _, tt := range tests {
		b, err := DecodePropertyBag(tt.in)
		if err != nil {
			t.Fatalf("%q: %v", tt.in, err)
		}
		if got := b.Map(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: got %v, want %v", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"%zz=1", "a=%g1", "=v"} {
		if _, err := DecodePropertyBag(bad); err == nil {
			t.Errorf("DecodePropertyBag(%q) accepted", bad)
		}
	}
}

func FuzzPropertyBag(f *testing.F) {
	f.Add("%24.ct=application%2Fjson&%24.ce=utf-8&x=1")
	f.Add("a&b=&=c&%")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := DecodePropertyBag(s)
		if err != nil {
			return
		}
		again, err := DecodePropertyBag(b.Encode())
		if err != nil {
			t.Fatalf("re-decode of %q: %v", b.Encode(), err)
		}
		if len(again) != len(b) {
			t.Fatalf("round trip changed length: %v vs %v", b, again)
		}
		for i := range b {
			if b[i] != again[i] {
				t.Fatalf("round trip changed %v into %v", b[i], again[i])
			}
		}
	})
}
