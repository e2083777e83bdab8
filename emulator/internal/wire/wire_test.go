package wire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseUsername(t *testing.T) {
	tests := []struct {
		name, in string
		want     Username
		wantErr  bool
	}{
		{name: "C hub", in: "myhub.azure-devices.net/dev1/?api-version=2020-09-30&DeviceClientType=iothubclient%2F1.15.0&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
			want: Username{Role: RoleHub, Host: "myhub.azure-devices.net", DeviceID: "dev1", APIVersion: "2020-09-30", ModelID: "dtmi:com:example:Thermostat;1"}},
		{name: "Node hub unencoded model", in: "localhost/dev-2/?api-version=2021-04-12&model-id=dtmi:com:example:Thermostat;1&DeviceClientType=azure-iot-device%2F1.0",
			want: Username{Role: RoleHub, Host: "localhost", DeviceID: "dev-2", APIVersion: "2021-04-12", ModelID: "dtmi:com:example:Thermostat;1"}},
		{name: "docs hub", in: "h/d/?api-version=2021-04-12", want: Username{Role: RoleHub, Host: "h", DeviceID: "d", APIVersion: "2021-04-12"}},
		{name: "hub no query", in: "h/d", want: Username{Role: RoleHub, Host: "h", DeviceID: "d"}},
		{name: "hub module", in: "h/d/m/?api-version=1", want: Username{Role: RoleHub, Host: "h", DeviceID: "d", ModuleID: "m", APIVersion: "1"}},
		{name: "hub device named registrations", in: "h/registrations/?api-version=1", want: Username{Role: RoleHub, Host: "h", DeviceID: "registrations", APIVersion: "1"}},
		{name: "C dps", in: "0ne00000001/registrations/dev1/api-version=2021-06-01&ClientVersion=1.15.0",
			want: Username{Role: RoleDPS, IDScope: "0ne00000001", RegistrationID: "dev1", APIVersion: "2021-06-01"}},
		{name: "python dps", in: "0ne00000001/registrations/dev1/api-version=2019-03-31&ClientVersion=azure-iot-device-provisioning-py%2F2.14.0",
			want: Username{Role: RoleDPS, IDScope: "0ne00000001", RegistrationID: "dev1", APIVersion: "2019-03-31"}},
		{name: "dps no query", in: "0ne1/registrations/r", want: Username{Role: RoleDPS, IDScope: "0ne1", RegistrationID: "r"}},
		{name: "empty", in: "", wantErr: true},
		{name: "one segment", in: "justhost", wantErr: true},
		{name: "empty device", in: "h//?api-version=1", wantErr: true},
		{name: "too many segments", in: "a/b/c/d/?x=1", wantErr: true},
		{name: "dps empty scope", in: "/registrations/r/api-version=1", wantErr: true},
		{name: "too long", in: strings.Repeat("a", MaxUsernameLen+1), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseUsername(tc.in)
			if tc.wantErr {
				if err == nil || !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseUsername(%q) = %+v, %v; want ErrMalformed", tc.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseUsername(%q): %v", tc.in, err)
			}
			got.Query = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseUsername(%q) =\n %+v\nwant\n %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseTopic(t *testing.T) {
	tests := []struct {
		in      string
		want    Topic
		wantErr bool
	}{
		{in: "devices/d1/messages/events/%24.ct=application%2Fjson&a=b", want: Topic{Kind: KindTelemetry, DeviceID: "d1", PropertyBag: "%24.ct=application%2Fjson&a=b"}},
		{in: "devices/d1/messages/events/", want: Topic{Kind: KindTelemetry, DeviceID: "d1"}},
		{in: "devices/d1/messages/events", want: Topic{Kind: KindTelemetry, DeviceID: "d1"}},
		{in: "devices/d1/messages/eventsX", wantErr: true},
		{in: "devices/d1/messages/devicebound/x", wantErr: true},
		{in: "devices//messages/events/", wantErr: true},
		{in: "$iothub/twin/GET/?$rid=10", want: Topic{Kind: KindTwinGet, RID: "10"}},
		{in: "$iothub/twin/GET/?$rid=", wantErr: true},
		{in: "$iothub/twin/GET/", wantErr: true},
		{in: "$iothub/twin/PATCH/properties/reported/?$rid=ab-c&$version=3", want: Topic{Kind: KindTwinPatchReported, RID: "ab-c"}},
		{in: "$iothub/twin/PATCH/properties/desired/?$version=3", wantErr: true},
		{in: "$iothub/twin/res/200/?$rid=1", wantErr: true},
		{in: "$iothub/methods/res/200/?$rid=7", want: Topic{Kind: KindMethodResponse, RID: "7", Status: 200}},
		{in: "$iothub/methods/res/abc/?$rid=7", wantErr: true},
		{in: "$iothub/methods/POST/x/?$rid=7", wantErr: true},
		{in: "$dps/registrations/PUT/iotdps-register/?$rid=1", want: Topic{Kind: KindDPSRegister, RID: "1"}},
		{in: "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.abc", want: Topic{Kind: KindDPSPoll, RID: "2", OperationID: "4.abc"}},
		{in: "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2", wantErr: true},
		{in: "devices/+/messages/events/", wantErr: true},
		{in: "other/topic", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseTopic(tc.in)
		if tc.wantErr {
			if err == nil || !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseTopic(%q) = %+v, %v; want ErrMalformed", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseTopic(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestPermissions(t *testing.T) {
	tel := func(id string) Topic { return Topic{Kind: KindTelemetry, DeviceID: id} }
	if !PublishAllowed(RoleHub, "a", tel("a")) || PublishAllowed(RoleHub, "a", tel("b")) {
		t.Error("telemetry permission must follow the device id")
	}
	if PublishAllowed(RoleHub, "a", Topic{Kind: KindDPSRegister}) || PublishAllowed(RoleDPS, "a", tel("a")) {
		t.Error("roles must not cross")
	}
	subs := []struct {
		role   Role
		filter string
		ok     bool
	}{
		{RoleHub, "$iothub/twin/res/#", true},
		{RoleHub, "$iothub/methods/POST/#", true},
		{RoleHub, "devices/a/messages/devicebound/#", true},
		{RoleHub, "devices/b/messages/devicebound/#", false},
		{RoleHub, "devices/+/messages/devicebound/#", false},
		{RoleHub, "#", false},
		{RoleHub, "$dps/registrations/res/#", false},
		{RoleHub, "$iothub/twin/res/#/x", false},
		{RoleDPS, "$dps/registrations/res/#", true},
		{RoleDPS, "$iothub/twin/res/#", false},
	}
	for _, s := range subs {
		if got := SubscribeAllowed(s.role, "a", s.filter); got != s.ok {
			t.Errorf("SubscribeAllowed(%v, a, %q) = %v, want %v", s.role, s.filter, got, s.ok)
		}
	}
}

func TestMatchFilter(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", true},
		{"$iothub/twin/res/#", "$iothub/twin/res", true},
		{"$iothub/methods/POST/#", "$iothub/methods/POST/m/?$rid=1", true},
		{"$iothub/methods/POST/+/x", "$iothub/methods/POST/m/x", true},
		{"$iothub/methods/POST/+", "$iothub/methods/POST/m/x", false},
		{"#", "$iothub/twin/res/200", false},
		{"+/twin/res/#", "$iothub/twin/res/200", false},
		{"devices/a/messages/devicebound/#", "devices/a/messages/devicebound/%24.mid=1", true},
		{"devices/a/messages/devicebound/#", "devices/b/messages/devicebound/%24.mid=1", false},
		{"a/#/b", "a/x/b", false},
	}
	for _, tc := range tests {
		if got := MatchFilter(tc.filter, tc.topic); got != tc.want {
			t.Errorf("MatchFilter(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{
		"myhub.azure-devices.net/dev1/?api-version=2020-09-30&model-id=dtmi%3Ax%3B1",
		"h/d/?api-version=2021-04-12&model-id=dtmi:x;1", "h/d/m/?a=b", "h/registrations/?x",
		"0ne1/registrations/r/api-version=2019-03-31&ClientVersion=x%2F1", "/registrations//", "a/registrations/?/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUsername(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		switch u.Role {
		case RoleHub:
			if u.Host == "" || u.DeviceID == "" || strings.Contains(u.DeviceID, "/") {
				t.Fatalf("hub user name %q parsed to %+v", s, u)
			}
		case RoleDPS:
			if u.IDScope == "" || u.RegistrationID == "" || strings.ContainsAny(u.RegistrationID, "/?") {
				t.Fatalf("DPS user name %q parsed to %+v", s, u)
			}
		default:
			t.Fatalf("no role for %q", s)
		}
	})
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{
		"devices/d1/messages/events/%24.ct=application%2Fjson", "$iothub/twin/GET/?$rid=1",
		"$iothub/twin/PATCH/properties/reported/?$rid=2&$version=1", "$iothub/methods/res/200/?$rid=3",
		"$dps/registrations/PUT/iotdps-register/?$rid=1", "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=x",
	} {
		f.Add(s, "d1")
	}
	f.Fuzz(func(t *testing.T, s, id string) {
		tp, err := ParseTopic(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if tp != (Topic{}) || PublishAllowed(RoleHub, id, tp) {
				t.Fatalf("failed parse of %q returned %+v", s, tp)
			}
			return
		}
		if tp.Kind != KindTelemetry && tp.RID == "" {
			t.Fatalf("%q parsed without $rid: %+v", s, tp)
		}
		if tp.Kind == KindTelemetry && PublishAllowed(RoleHub, id, tp) && !strings.HasPrefix(s, "devices/"+id+"/") {
			t.Fatalf("device %q allowed to publish to %q", id, s)
		}
		_ = SubscribeAllowed(RoleHub, id, s)
		_ = MatchFilter(s, s)
	})
}

// A device reaches only its own cloud-to-device and telemetry topics:
// dev1 is not a prefix of dev10, and device ids are case-sensitive.
func TestDeviceTopicsAreTheDevicesOwn(t *testing.T) {
	for _, f := range []string{"devices/dev10/messages/devicebound/#", "devices/dev1x/messages/devicebound/#", "devices/DEV1/messages/devicebound/#", "devices/+/messages/devicebound/#", "devices/dev1/messages/devicebound"} {
		if SubscribeAllowed(RoleHub, "dev1", f) {
			t.Errorf("dev1 may subscribe to %s", f)
		}
	}
	if !SubscribeAllowed(RoleHub, "dev1", "devices/dev1/messages/devicebound/#") {
		t.Error("dev1 may not subscribe to its own cloud-to-device topic")
	}
	for _, topic := range []string{"devices/DEV1/messages/events/", "devices/Dev1/messages/events/", "devices/dev10/messages/events/"} {
		tp, err := ParseTopic(topic)
		if err != nil {
			t.Fatal(err)
		}
		if PublishAllowed(RoleHub, "dev1", tp) {
			t.Errorf("dev1 may publish telemetry on %s", topic)
		}
	}
}
