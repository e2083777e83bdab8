package domain

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseDesiredPatchSeedFixtures(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		version int64
		want    []Property
	}{
		{"root", `{"prop1":"value1","$version":1}`, 1, []Property{{Name: "prop1", Value: json.RawMessage(`"value1"`), Version: 1}}},
		{"component", `{"component1":{"__t":"c","prop1":"value1"},"$version":1}`, 1, []Property{{Component: "component1", Name: "prop1", Value: json.RawMessage(`"value1"`), Version: 1}}},
		{"mixed", `{"b":2,"comp":{"__t":"c","y":{"n":1},"x":true},"a":null,"obj":{"k":"v"},"$version":7}`, 7, []Property{
			{Name: "a", Value: json.RawMessage(`null`), Version: 7},
			{Name: "b", Value: json.RawMessage(`2`), Version: 7},
			{Name: "obj", Value: json.RawMessage(`{"k":"v"}`), Version: 7},
			{Component: "comp", Name: "x", Value: json.RawMessage(`true`), Version: 7},
			{Component: "comp", Name: "y", Value: json.RawMessage(`{"n":1}`), Version: 7},
		}},
		{"wrong marker is not a component", `{"c":{"__t":"x","p":1},"$version":2}`, 2, []Property{{Name: "c", Value: json.RawMessage(`{"__t":"x","p":1}`), Version: 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, props, err := ParseDesiredPatch([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if v != tt.version || !reflect.DeepEqual(props, tt.want) {
				t.Errorf("got %d %s, want %d %s", v, dump(props), tt.version, dump(tt.want))
			}
		})
	}
}

func dump(p []Property) string {
	var sb strings.Builder
	for _, x := range p {
		sb.WriteString(x.Component + "/" + x.Name + "=" + string(x.Value) + "; ")
	}
	return sb.String()
}

func TestParseDesiredPatchErrors(t *testing.T) {
	for _, in := range []string{``, `[]`, `null`, `{"$version":"x"}`, `{"a":1} {}`, `{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, `{"$version":1.5}`} {
		if _, _, err := ParseDesiredPatch([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseDesiredPatch(%.40q) err = %v, want ErrMalformed", in, err)
		}
	}
}

func TestPendingDesired(t *testing.T) {
	twin, err := ParseTwin([]byte(`{
	 "desired":{"fan":1,"light":true,"thermo":{"__t":"c","target":21,"mode":"auto"},"$version":5,
	   "$metadata":{"fan":{"$lastUpdatedVersion":2},"light":{"$lastUpdatedVersion":5},
	                "thermo":{"target":{"$lastUpdatedVersion":4},"mode":{"$lastUpdatedVersion":5}}}},
	 "reported":{"fan":{"value":1,"ac":200,"av":2},"light":{"value":false,"ac":200,"av":3},
	   "thermo":{"__t":"c","target":{"value":21,"ac":200,"av":4}},"$version":9}}`))
	if err != nil {
		t.Fatal(err)
	}
	if twin.DesiredVersion != 5 || twin.ReportedVersion != 9 {
		t.Fatalf("versions %d/%d", twin.DesiredVersion, twin.ReportedVersion)
	}
	var got []string
	for _, p := range twin.PendingDesired() {
		got = append(got, p.Component+"/"+p.Name)
		if p.Version != 5 {
			t.Errorf("%s/%s acked at version %d, want the section version 5", p.Component, p.Name, p.Version)
		}
	}
	want := []string{"/light", "thermo/mode"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("pending = %v, want %v", got, want)
	}

	// Without $metadata the section version decides.
	twin, _ = ParseTwin([]byte(`{"desired":{"a":1,"b":2,"$version":3},"reported":{"a":{"av":3},"b":{"av":2},"$version":1}}`))
	if p := twin.PendingDesired(); len(p) != 1 || p[0].Name != "b" {
		t.Errorf("pending without metadata = %s", dump(p))
	}
	// An empty twin has nothing pending and no error.
	twin, err = ParseTwin([]byte(`{}`))
	if err != nil || len(twin.PendingDesired()) != 0 {
		t.Errorf("empty twin: %v %v", err, twin.PendingDesired())
	}
	if _, err := ParseTwin([]byte(`{"desired":5}`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("desired not an object: %v", err)
	}
}

func TestAckPatch(t *testing.T) {
	root := AckPatch(Property{Name: "fan", Value: json.RawMessage(`3`), Version: 4}, PropertyAck{})
	b, _ := json.Marshal(root)
	if string(b) != `{"fan":{"ac":200,"av":4,"value":3}}` {
		t.Errorf("root ack = %s", b)
	}
	comp := AckPatch(Property{Component: "th", Name: "target", Value: json.RawMessage(`30`), Version: 9},
		PropertyAck{Status: 400, Description: "out of range", Value: 25})
	b, _ = json.Marshal(comp)
	if string(b) != `{"th":{"__t":"c","target":{"ac":400,"ad":"out of range","av":9,"value":25}}}` {
		t.Errorf("component ack = %s", b)
	}
	merged := map[string]any{}
	MergePatch(merged, comp)
	MergePatch(merged, AckPatch(Property{Component: "th", Name: "mode", Value: json.RawMessage(`"x"`), Version: 9}, PropertyAck{Status: 202}))
	MergePatch(merged, root)
	b, _ = json.Marshal(merged)
	if string(b) != `{"fan":{"ac":200,"av":4,"value":3},"th":{"__t":"c","mode":{"ac":202,"av":9,"value":"x"},"target":{"ac":400,"ad":"out of range","av":9,"value":25}}}` {
		t.Errorf("merged = %s", b)
	}
}

func TestEncodeReportedLimit(t *testing.T) {
	if _, err := EncodeReported(map[string]any{"x": strings.Repeat("a", MaxTwinSectionSize)}); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("err = %v", err)
	}
	b, err := EncodeReported(ReportedPatch("c", map[string]any{"p": 1}))
	if err != nil || string(b) != `{"c":{"__t":"c","p":1}}` {
		t.Errorf("EncodeReported = %s, %v", b, err)
	}
}

func FuzzParseDesiredPatch(f *testing.F) {
	f.Add([]byte(`{"component1":{"__t":"c","prop1":"value1"},"$version":1}`))
	f.Add([]byte(`{"a":{"b":[1,2,{"c":null}]},"$version":99999999999}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, props, err := ParseDesiredPatch(b)
		if err != nil {
			return
		}
		for _, p := range props {
			if p.Version != v || !json.Valid(p.Value) {
				t.Fatalf("bad property %+v", p)
			}
			_ = AckPatch(p, PropertyAck{})
		}
		if tw, err := ParseTwin(b); err == nil {
			_ = tw.PendingDesired()
		}
	})
}
