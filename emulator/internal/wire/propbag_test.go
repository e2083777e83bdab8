package wire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeBag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Property
	}{
		{"", nil},
		{"?", nil},
		{"%24.mid=m-1&%24.ct=application%2Fjson&%24.ce=utf-8", []Property{{"$.mid", "m-1"}, {"$.ct", "application/json"}, {"$.ce", "utf-8"}}},
		{"?$.sub=thermostat1&alert=true", []Property{{"$.sub", "thermostat1"}, {"alert", "true"}}},
		{"unit=%C2%B0C&note=a+b&sp=a%20b", []Property{{"unit", "°C"}, {"note", "a b"}, {"sp", "a b"}}},
		{"flag&&x=", []Property{{"flag", ""}, {"x", ""}}},
		{"k=a=b", []Property{{"k", "a=b"}}},
		{"%24.cid=Corr.ID-7&Source=Sensor.A", []Property{{"$.cid", "Corr.ID-7"}, {"Source", "Sensor.A"}}},
	} {
		got, err := DecodeBag(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("DecodeBag(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"=v", "%zz=1", "k=%g0", "%=1", strings.Repeat("a", MaxPropertyBagLen+1)} {
		if _, err := DecodeBag(bad); !errors.Is(err, ErrBadPropertyBag) {
			t.Errorf("DecodeBag(%.20q) = %v, want ErrBadPropertyBag", bad, err)
		}
	}
}

func TestSplitBag(t *testing.T) {
	sys, app := SplitBag([]Property{{"$.mid", "1"}, {"unit", "C"}, {"$.sub", "c"}, {"unit", "F"}})
	if !reflect.DeepEqual(sys, map[string]string{"$.mid": "1", "$.sub": "c"}) || !reflect.DeepEqual(app, map[string]string{"unit": "F"}) {
		t.Fatalf("SplitBag = %v %v", sys, app)
	}
}

func TestC2DTopic(t *testing.T) {
	got := C2DTopic("Dev-1", "m1", map[string]string{"z": "last one", "a": "x/y", "method-name": "c*reboot"})
	want := "devices/Dev-1/messages/devicebound/%24.mid=m1&%24.to=%2Fdevices%2FDev-1%2Fmessages%2Fdevicebound&a=x%2Fy&method-name=c%2Areboot&z=last%20one"
	if got != want {
		t.Fatalf("C2DTopic = %q\nwant      %q", got, want)
	}
}

// FuzzBagRoundTrip: EncodeBag then DecodeBag gives the properties back
// (keys non-empty), and any text decodes or fails without a panic.
func FuzzBagRoundTrip(f *testing.F) {
	f.Add("$.mid", "m 1", "unit", "°C&=%+")
	f.Add("a", "", "b", "?")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		_, _ = DecodeBag(k1 + "=" + v1 + "&" + k2)
		if k1 == "" || k2 == "" {
			return
		}
		in := []Property{{k1, v1}, {k2, v2}}
		enc := EncodeBag(in)
		if len(enc) > MaxPropertyBagLen {
			return
		}
		got, err := DecodeBag(enc)
		if err != nil || !reflect.DeepEqual(got, in) {
			t.Fatalf("DecodeBag(EncodeBag(%q)) = %q, %v", in, got, err)
		}
	})
}
