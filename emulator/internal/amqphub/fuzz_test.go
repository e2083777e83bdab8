package amqphub

import (
	"strings"
	"testing"

	"github.com/Azure/go-amqp"
)

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"$cbs", "/devices/dev1/messages/events", "amqps://h.net/devices/dev1/messages/devicebound",
		"/devices/d%2F1/methods/devicebound", "AMQPS://H/DEVICES/x/TWIN/", "0ne00000001/registrations/reg1",
		"amqps://global.azure-devices-provisioning.net/0ne/registrations/r?api-version=1",
		"/devices/a/modules/m/messages/events", "amqps://", "//", "/devices//twin",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAddress(s)
		if err != nil {
			return
		}
		switch a.kind {
		case nodeCBS:
		case nodeDPS:
			if a.scope == "" || a.regID == "" || strings.Contains(a.regID, "/") {
				t.Fatalf("%q: DPS address %+v", s, a)
			}
		case nodeTelemetry, nodeC2D, nodeMethods, nodeTwin:
			if a.deviceID == "" || strings.ContainsAny(a.deviceID, "/\x00") {
				t.Fatalf("%q: hub address %+v", s, a)
			}
			if strings.ContainsAny(a.deviceID, "%?") || a.moduleID != "" {
				return
			}
			// Re-building the relative address names the same node.
			suffix := map[nodeKind]string{nodeTelemetry: "/messages/events", nodeC2D: "/messages/devicebound",
				nodeMethods: "/methods/devicebound", nodeTwin: "/twin"}[a.kind]
			b, err := parseAddress("/devices/" + a.deviceID + suffix)
			if err != nil || b.kind != a.kind || b.deviceID != a.deviceID {
				t.Fatalf("%q: rebuilt %+v %v, want %+v", s, b, err, a)
			}
		default:
			t.Fatalf("%q: kind %d", s, a.kind)
		}
	})
}

func FuzzParseAudience(f *testing.F) {
	for _, s := range []string{
		"myhub.azure-devices.net/devices/dev1", "myhub.azure-devices.net%2Fdevices%2Fdev1",
		"myhub.azure-devices.net%2fdevices%2fdev1", "h/devices/d/modules/m", "h/devices/", "%zz", "a+b/devices/c+d",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAudience(s)
		if err != nil {
			return
		}
		if a.host == "" || a.deviceID == "" || strings.Contains(a.host, "/") || strings.Contains(a.deviceID, "/") {
			t.Fatalf("%q: %+v", s, a)
		}
	})
}

func FuzzParsePlainUser(f *testing.F) {
	for _, s := range []string{"dev1@sas.myhub", "0ne00000001/registrations/reg1", "@sas.x", "a@sas.", "x@SAS.root.h", "/registrations/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parsePlainUser(s)
		if err != nil {
			return
		}
		if u.isDPS() {
			if u.scope == "" || u.regID == "" {
				t.Fatalf("%q: %+v", s, u)
			}
			return
		}
		if u.deviceID == "" || u.hubName == "" {
			t.Fatalf("%q: %+v", s, u)
		}
	})
}

// FuzzMessageMapping feeds arbitrary encoded messages through every
// mapping this package applies to device messages.
func FuzzMessageMapping(f *testing.F) {
	seeds := []*amqp.Message{
		{Properties: &amqp.MessageProperties{MessageID: "m", CorrelationID: amqp.UUID{1}, ContentType: ptr("application/json")},
			ApplicationProperties: map[string]any{"a": "b", "IoThub-status": int32(200), "n": uint64(1 << 63)},
			Annotations:           amqp.Annotations{amqp.Symbol("dt-subject"): "c", amqp.Symbol("operation"): "PATCH", amqp.Symbol("resource"): "/properties/reported/"},
			Data:                  [][]byte{[]byte("{}"), []byte("x")}},
		{Value: "SharedAccessSignature sr=a&sig=b&se=1"},
		{Annotations: amqp.Annotations{int64(5): "x"}, Value: []byte{1, 2}},
	}
	for _, m := range seeds {
		b, err := m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		tel := telemetryOf(m)
		if len(tel.Body) != bodyLen(m) {
			t.Fatalf("body %d bytes, bodyLen %d", len(tel.Body), bodyLen(m))
		}
		_, _, _ = parseTwinRequest(m)
		v, _ := appProp(m, propMethodStatus)
		_, _ = intOf(v)
		_, _ = appProp(m, "iotdps-operation-type")
		if m.Properties != nil {
			if s, ok := m.Properties.CorrelationID.(string); ok {
				if u, ok := parseUUID(s); ok && !strings.EqualFold(formatUUID(u), strings.Trim(s, "{}")) {
					t.Fatalf("uuid %q round-trips to %q", s, formatUUID(u))
				}
			}
		}
	})
}
