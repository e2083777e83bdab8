package mqttcore

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/domain"
)

func TestUsernames(t *testing.T) {
	t.Parallel()
	got := HubUsername("myhub.azure-devices.net", "dev1", "dtmi:com:example:Thermostat;1", "iotc-go/0.1.0")
	want := "myhub.azure-devices.net/dev1/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1&DeviceClientType=iotc-go%2F0.1.0"
	if got != want {
		t.Fatalf("HubUsername = %q\nwant %q", got, want)
	}
	if got := HubUsername("h", "d", "", ""); got != "h/d/?api-version=2021-04-12" {
		t.Fatalf("HubUsername without model = %q", got)
	}
	got = DPSUsername("0ne00000001", "dev1", "iotc-go/0.1.0")
	want = "0ne00000001/registrations/dev1/api-version=2019-03-31&ClientVersion=iotc-go%2F0.1.0"
	if got != want {
		t.Fatalf("DPSUsername = %q\nwant %q", got, want)
	}
}

func TestTopicBuilders(t *testing.T) {
	t.Parallel()
	m := domain.Message{Body: []byte(`{}`), Component: "thermostat1", Properties: map[string]string{"a b": "c/d"}}
	if got, want := TelemetryTopic("dev1", m.PropertyBag().Encode()),
		"devices/dev1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&%24.sub=thermostat1&a%20b=c%2Fd"; got != want {
		t.Fatalf("TelemetryTopic = %q\nwant %q", got, want)
	}
	if got := CloudToDeviceFilter("dev1"); got != "devices/dev1/messages/devicebound/#" {
		t.Fatalf("CloudToDeviceFilter = %q", got)
	}
	if got := MethodResponseTopic(200, "7"); got != "$iothub/methods/res/200/?$rid=7" {
		t.Fatalf("MethodResponseTopic = %q", got)
	}
}

func TestParseTwinResponseTopic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		topic string
		want  TwinResponse
		err   bool
	}{
		{topic: "$iothub/twin/res/200/?$rid=10", want: TwinResponse{Status: 200, RID: "10"}},
		{topic: "$iothub/twin/res/204/?$rid=11&$version=2", want: TwinResponse{Status: 204, RID: "11", Version: 2, HasVersion: true}},
		{topic: "$iothub/twin/res/204/?$version=5&$rid=ab-cd", want: TwinResponse{Status: 204, RID: "ab-cd", Version: 5, HasVersion: true}},
		{topic: "$iothub/twin/res/429/?%24rid=3", want: TwinResponse{Status: 429, RID: "3"}},
		{topic: "$iothub/twin/res/200/$rid=4", want: TwinResponse{Status: 200, RID: "4"}},
		{topic: "$iothub/twin/res/200/?$version=1", err: true},
		{topic: "$iothub/twin/res/abc/?$rid=1", err: true},
		{topic: "$iothub/twin/res/20/?$rid=1", err: true},
		{topic: "$iothub/twin/res/200", err: true},
		{topic: "$iothub/twin/res/204/?$rid=1&$version=x", err: true},
		{topic: "$iothub/twin/PATCH/properties/desired/?$version=1", err: true},
		{topic: "", err: true},
	}
	for _, tt := range tests {
		got, err := ParseTwinResponseTopic(tt.topic)
		if (err != nil) != tt.err {
			t.Errorf("ParseTwinResponseTopic(%q) error = %v, want error %v", tt.topic, err, tt.err)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("ParseTwinResponseTopic(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
	}
}

func TestParseMethodRequestTopic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		topic, name, rid string
		err              bool
	}{
		{"$iothub/methods/POST/getMaxMinReport/?$rid=1", "getMaxMinReport", "1", false},
		{"$iothub/methods/POST/thermostat1*reboot/?$rid=abc-def", "thermostat1*reboot", "abc-def", false},
		{"$iothub/methods/POST/with%20space/?$rid=2", "with space", "2", false},
		{"$iothub/methods/POST/a/b/?$rid=3", "a/b", "3", false},
		{"$iothub/methods/POST/bad%zz/?$rid=4", "bad%zz", "4", false},
		{"$iothub/methods/POST/x/?foo=1&$rid=5", "x", "5", false},
		{"$iothub/methods/POST//?$rid=1", "", "", true},
		{"$iothub/methods/POST/x/?$rid=", "", "", true},
		{"$iothub/methods/POST/x", "", "", true},
		{"$iothub/methods/res/200/?$rid=1", "", "", true},
	}
	for _, tt := range tests {
		name, rid, err := ParseMethodRequestTopic(tt.topic)
		if (err != nil) != tt.err {
			t.Errorf("ParseMethodRequestTopic(%q) error = %v, want error %v", tt.topic, err, tt.err)
			continue
		}
		if name != tt.name || rid != tt.rid {
			t.Errorf("ParseMethodRequestTopic(%q) = %q, %q, want %q, %q", tt.topic, name, rid, tt.name, tt.rid)
		}
	}
}

func TestParseDesiredPatchTopic(t *testing.T) {
	t.Parallel()
	if v, err := ParseDesiredPatchTopic("$iothub/twin/PATCH/properties/desired/?$version=8"); err != nil || v != 8 {
		t.Fatalf("= %d, %v", v, err)
	}
	if v, err := ParseDesiredPatchTopic("$iothub/twin/PATCH/properties/desired/"); err != nil || v != 0 {
		t.Fatalf("without version = %d, %v", v, err)
	}
	for _, bad := range []string{"$iothub/twin/PATCH/properties/desired/?$version=x", "$iothub/twin/PATCH/properties/reported/?$rid=1"} {
		if _, err := ParseDesiredPatchTopic(bad); err == nil {
			t.Errorf("ParseDesiredPatchTopic(%q) accepted", bad)
		}
	}
}

func TestParseCloudToDeviceTopic(t *testing.T) {
	t.Parallel()
	bag, err := ParseCloudToDeviceTopic("dev1", "devices/dev1/messages/devicebound/%24.mid=abc&%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound&color=red&nullprop")
	if err != nil {
		t.Fatal(err)
	}
	m := domain.ParseCloudMessage([]byte("hello"), bag)
	if m.MessageID() != "abc" || m.Properties["color"] != "red" || m.Properties["$.to"] != "/devices/dev1/messages/devicebound" {
		t.Fatalf("properties = %v", m.Properties)
	}
	if _, ok := m.Properties["nullprop"]; !ok {
		t.Fatalf("null property lost: %v", m.Properties)
	}
	if bag, err := ParseCloudToDeviceTopic("dev1", "devices/dev1/messages/devicebound"); err != nil || len(bag) != 0 {
		t.Fatalf("empty bag = %v, %v", bag, err)
	}
	if _, err := ParseCloudToDeviceTopic("dev1", "devices/dev2/messages/devicebound/a=b"); err == nil {
		t.Fatal("accepted another device's topic")
	}
	if _, err := ParseCloudToDeviceTopic("dev1", "devices/dev1/messages/devicebound/a=%zz"); !errors.Is(err, domain.ErrMalformed) {
		t.Fatalf("bad escape: %v, want ErrMalformed", err)
	}
}

func TestParseDPSResponseTopic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		topic string
		want  DPSResponse
		err   bool
	}{
		{topic: "$dps/registrations/res/202/?$rid=1&retry-after=3", want: DPSResponse{Status: 202, RID: "1", RetryAfter: 3 * time.Second}},
		{topic: "$dps/registrations/res/200/?$rid=2", want: DPSResponse{Status: 200, RID: "2", RetryAfter: -1}},
		{topic: "$dps/registrations/res/429/?$rid=3&retry-after=0", want: DPSResponse{Status: 429, RID: "3", RetryAfter: 0}},
		{topic: "$dps/registrations/res/202/?$rid=4&retry-after=soon", want: DPSResponse{Status: 202, RID: "4", RetryAfter: -1}},
		{topic: "$dps/registrations/res/202/?$rid=5&retry-after=-3", want: DPSResponse{Status: 202, RID: "5", RetryAfter: -1}},
		{topic: "$dps/registrations/res/202/?$rid=6&retry-after=99999999999", want: DPSResponse{Status: 202, RID: "6", RetryAfter: domain.MaxPollInterval}},
		{topic: "$dps/registrations/res/202/?retry-after=1", err: true},
		{topic: "$dps/registrations/res/x/?$rid=1", err: true},
		{topic: "$dps/registrations/PUT/iotdps-register/?$rid=1", err: true},
	}
	for _, tt := range tests {
		got, err := ParseDPSResponseTopic(tt.topic)
		if (err != nil) != tt.err {
			t.Errorf("ParseDPSResponseTopic(%q) error = %v, want error %v", tt.topic, err, tt.err)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("ParseDPSResponseTopic(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
	}
}

func TestHubError(t *testing.T) {
	t.Parallel()
	he := hubError("twin get", 401, []byte(`{"errorCode":401002,"message":"`+strings.Repeat("x", 600)+`"}`))
	if he.Status != 401 || he.Code != 401002 || len(he.Message) != 512 || !errors.Is(he, domain.ErrUnauthorized) {
		t.Fatalf("hubError = %+v", he)
	}
	if he := hubError("x", 500, []byte("not json")); he.Code != 0 || he.Message != "" {
		t.Fatalf("hubError with a non-JSON body = %+v", he)
	}
}

// The fuzz targets check that the parsers never panic and that what they
// accept is consistent.

func FuzzParseTwinResponseTopic(f *testing.F) {
	f.Add("$iothub/twin/res/204/?$rid=11&$version=2")
	f.Add("$iothub/twin/res/200/?%24rid=%zz")
	f.Fuzz(func(t *testing.T, topic string) {
		r, err := ParseTwinResponseTopic(topic)
		if err == nil && (r.RID == "" || r.Status < 100 || r.Status > 999 || !strings.HasPrefix(topic, topicTwinResPrefix)) {
			t.Fatalf("accepted %q as %+v", topic, r)
		}
	})
}

func FuzzParseMethodRequestTopic(f *testing.F) {
	f.Add("$iothub/methods/POST/getMaxMinReport/?$rid=1")
	f.Add("$iothub/methods/POST/a%2/?$rid=&$rid=2")
	f.Fuzz(func(t *testing.T, topic string) {
		name, rid, err := ParseMethodRequestTopic(topic)
		if err == nil && (name == "" || rid == "") {
			t.Fatalf("accepted %q with name %q rid %q", topic, name, rid)
		}
	})
}

// FuzzParseDesiredPatchTopic formats a topic with a fuzzed $version and
// an extra query field before or after it, and checks that the version
// parses back; fuzzed topics that parse must be desired patches whose
// version formats and parses back the same.
func FuzzParseDesiredPatchTopic(f *testing.F) {
	f.Add(int64(8), "$rid", "1", false, "$iothub/twin/PATCH/properties/desired/?$version=8")
	f.Add(int64(-1), "a b", "c&d=e", true, "$iothub/twin/PATCH/properties/desired/?%24version=9223372036854775807")
	f.Add(int64(9223372036854775807), "", "", false, "$iothub/twin/PATCH/properties/desired/$version=x")
	f.Fuzz(func(t *testing.T, version int64, key, value string, before bool, topic string) {
		q := "$version=" + strconv.FormatInt(version, 10)
		if dk, err := url.QueryUnescape(domain.EscapeComponent(key)); err == nil && dk != "$version" {
			extra := domain.EscapeComponent(key) + "=" + domain.EscapeComponent(value)
			if before {
				q = extra + "&" + q
			} else {
				q += "&" + extra
			}
		}
		formatted := topicDesiredPrefix + "?" + q
		if got, err := ParseDesiredPatchTopic(formatted); err != nil || got != version {
			t.Fatalf("ParseDesiredPatchTopic(%q) = %d, %v; want %d", formatted, got, err, version)
		}
		v, err := ParseDesiredPatchTopic(topic)
		if err != nil {
			if !errors.Is(err, errTopic) {
				t.Fatalf("error %v does not wrap errTopic", err)
			}
			return
		}
		if !strings.HasPrefix(topic, topicDesiredPrefix) {
			t.Fatalf("accepted %q, which is no desired patch", topic)
		}
		if v != 0 && !strings.Contains(topic, "version=") {
			t.Fatalf("version %d from %q, which carries none", v, topic)
		}
		again := topicDesiredPrefix + "?$version=" + strconv.FormatInt(v, 10)
		if w, err := ParseDesiredPatchTopic(again); err != nil || w != v {
			t.Fatalf("version %d of %q formats as %q, which parses as %d, %v", v, topic, again, w, err)
		}
	})
}

func FuzzParseCloudToDeviceTopic(f *testing.F) {
	f.Add("devices/dev1/messages/devicebound/%24.mid=abc&color=red&x")
	f.Fuzz(func(t *testing.T, topic string) {
		bag, err := ParseCloudToDeviceTopic("dev1", topic)
		if err != nil {
			return
		}
		for _, p := range bag {
			if p.Key == "" {
				t.Fatalf("accepted an empty key in %q", topic)
			}
		}
	})
}

func FuzzParseDPSResponseTopic(f *testing.F) {
	f.Add("$dps/registrations/res/202/?$rid=1&retry-after=3")
	f.Add("$dps/registrations/res/202/?$rid=1&retry-after=9223372036854775807")
	f.Fuzz(func(t *testing.T, topic string) {
		r, err := ParseDPSResponseTopic(topic)
		if err != nil {
			return
		}
		if r.RID == "" || r.RetryAfter < -1 || r.RetryAfter > domain.MaxPollInterval {
			t.Fatalf("accepted %q as %+v", topic, r)
		}
	})
}

func TestProductInfoInTheClientVersion(t *testing.T) {
	if got := ClientVersion(""); got != DefaultClientVersion || DefaultClientVersion != "iotc-go/"+domain.Version {
		t.Errorf("ClientVersion(\"\") = %q", got)
	}
	v := ClientVersion("contoso-thermostat/2.1")
	if v != DefaultClientVersion+" contoso-thermostat/2.1" {
		t.Errorf("ClientVersion = %q", v)
	}
	u := HubUsername("hub.example", "dev1", "", v)
	if !strings.HasSuffix(u, "&DeviceClientType="+domain.EscapeComponent(v)) || strings.Contains(u, " ") {
		t.Errorf("user name %q does not carry the escaped product info", u)
	}
}
