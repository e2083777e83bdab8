package core

import (
	"encoding/json"
	"maps"
	"testing"
	"time"
)

// appendJSONString writes what encoding/json reads back as the string
// json.Marshal would have written (invalid UTF-8 as U+FFFD).
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uote\back`, "\x00\x01\x1f\n\r\t", "ünï€😀", "\xff\xfe bad", "\u2028\u2029", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encoded as %s: not JSON: %v", s, b, err)
		}
		ref, _ := json.Marshal(s)
		var want string
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%q: decoded %q, encoding/json gives %q", s, got, want)
		}
	})
}

// A telemetry document reads back as the message it was written from.
func TestTelemetryDocRoundTrip(t *testing.T) {
	received := time.Date(2026, 12, 7, 12, 0, 0, 123456789, time.UTC)
	for _, msg := range []Telemetry{
		{DeviceID: "d", Body: []byte(`{"t": 21.5}`), Received: received},
		{DeviceID: "d", ModuleID: "m", Component: "c\"1", MessageID: "mid\n", CorrelationID: "cid", ContentType: "application/json",
			ContentEncoding: "utf-8", AuthMethod: AuthMethodX509, Body: []byte{0xff, 0, 1},
			Properties: map[string]string{"a": "1", "b\x00": "\xff"}, System: map[string]string{PropUserID: "u"}, Received: received},
		{DeviceID: "d", Received: received},
		{DeviceID: "d", AuthMethod: AuthMethodPolicy, Received: received},
		{DeviceID: "d", AuthMethod: `{"scope":"module","type":"sas"}`, Received: received},
	} {
		b := appendTelemetryDoc(nil, msg)
		var doc telemetryDoc
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		body := []byte(doc.Body)
		if doc.BodyBase64 != nil {
			body = doc.BodyBase64
		}
		props := map[string]string{}
		for k, v := range msg.Properties {
			var s string
			_ = json.Unmarshal(appendJSONString(nil, v), &s)
			var ks string
			_ = json.Unmarshal(appendJSONString(nil, k), &ks)
			props[ks] = s
		}
		if doc.ModuleID != msg.ModuleID || doc.Component != msg.Component || doc.MessageID != msg.MessageID ||
			doc.CorrelationID != msg.CorrelationID || doc.ContentType != msg.ContentType || doc.ContentEncoding != msg.ContentEncoding ||
			authMethodOf(doc.AuthMethod) != msg.AuthMethod || string(body) != string(msg.Body) || !doc.Received.Equal(msg.Received) ||
			(len(props) > 0 || len(doc.Properties) > 0) && !maps.Equal(doc.Properties, props) || !maps.Equal(doc.System, msg.System) && len(msg.System) > 0 {
			t.Errorf("%s read back as %+v, from %+v", b, doc, msg)
		}
	}
}
