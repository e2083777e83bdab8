package domain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestSplitMethodName(t *testing.T) {
	tests := []struct{ in, comp, name string }{
		{"reboot", "", "reboot"},
		{"commandComponent*cmd1", "commandComponent", "cmd1"},
		{"a*b*c", "a", "b*c"},
		{"", "", ""},
	}
	for _, tt := range tests {
		c, n := SplitMethodName(tt.in)
		if c != tt.comp || n != tt.name {
			t.Errorf("SplitMethodName(%q) = %q,%q", tt.in, c, n)
		}
	}
	for _, tt := range []struct{ in, comp, name string }{
		{"component*command_name", "component", "command_name"},
		{"Commands:setLed", "", "setLed"},
		{"Commands:comp*setLed", "comp", "setLed"},
		{"setLed", "", "setLed"},
	} {
		c, n := ParseQueuedCommandName(tt.in)
		if c != tt.comp || n != tt.name {
			t.Errorf("ParseQueuedCommandName(%q) = %q,%q", tt.in, c, n)
		}
	}
}

func TestCommandResponseEncode(t *testing.T) {
	s, b, err := CommandResponse{}.Encode()
	if err != nil || s != 200 || string(b) != "{}" {
		t.Errorf("zero = %d %s %v", s, b, err)
	}
	s, b, err = CommandResponse{Status: 404, Payload: map[string]string{"error": "no"}}.Encode()
	if err != nil || s != 404 || string(b) != `{"error":"no"}` {
		t.Errorf("404 = %d %s %v", s, b, err)
	}
	if _, _, err := (CommandResponse{Payload: json.RawMessage("{bad")}).Encode(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("invalid raw: %v", err)
	}
	if _, _, err := (CommandResponse{Payload: strings.Repeat("x", MaxMethodPayloadSize)}).Encode(); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("large: %v", err)
	}
	if _, _, err := (CommandResponse{Payload: func() {}}).Encode(); err == nil {
		t.Error("func payload accepted")
	}
}

func TestMessage(t *testing.T) {
	m, err := NewJSONMessage(map[string]any{"temperature": 21.5})
	if err != nil {
		t.Fatal(err)
	}
	m.Component = "thermostat1"
	m.MessageID = "m1"
	m.CreationTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m.Properties = map[string]string{"z": "1", "alert": "yes"}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	want := "%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.sub=thermostat1&iothub-creation-time-utc=2026-01-02T03%3A04%3A05Z&alert=yes&z=1"
	if got := m.PropertyBag().Encode(); got != want {
		t.Errorf("bag = %s\nwant  %s", got, want)
	}
	for _, k := range []string{"$.ct", "iothub-app", ""} {
		bad := Message{Body: []byte("{}"), Properties: map[string]string{k: "x"}}
		if err := bad.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("key %q: %v", k, err)
		}
	}
	big := Message{Body: make([]byte, MaxTelemetrySize-10), Properties: map[string]string{"k": "0123456789"}}
	if err := big.Validate(); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("big: %v", err)
	}
	if _, err := NewJSONMessage(make(chan int)); err == nil {
		t.Error("chan encoded")
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: 10 * time.Second}
	want := []time.Duration{1, 2, 4, 8, 10, 10, 10}
	for n, w := range want {
		if got := b.Ceiling(n); got != w*time.Second {
			t.Errorf("Ceiling(%d) = %v, want %v", n, got, w*time.Second)
		}
	}
	if got := b.Ceiling(1 << 30); got != 10*time.Second {
		t.Errorf("huge attempt = %v", got)
	}
	if got := b.Delay(2, 0.5); got != 2*time.Second {
		t.Errorf("Delay(2,.5) = %v", got)
	}
	if got := b.Delay(2, 7); got != 4*time.Second {
		t.Errorf("Delay clamps r: %v", got)
	}
	if got := (Backoff{}).Ceiling(0); got != DefaultBackoffBase {
		t.Errorf("default base %v", got)
	}
	if err := (Backoff{Base: time.Minute, Cap: time.Second}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate: %v", err)
	}
}

func TestIsRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("x: %w", ErrUnauthorized), false},
		{&HubError{Op: "twin", Status: 401}, false},
		{&HubError{Op: "twin", Status: 404}, false},
		{&HubError{Op: "twin", Status: 429}, true},
		{&HubError{Op: "twin", Status: 503}, true},
		{&HubError{Op: "twin", Status: 400}, false},
		{ErrMessageTooLarge, false},
		{context.Canceled, false},
		{context.DeadlineExceeded, true},
		{ErrNotConnected, true},
		{&ProvisioningError{Status: "failed"}, false},
		{errors.New("connection reset"), true},
	}
	for _, tt := range tests {
		if got := IsRetryable(tt.err); got != tt.want {
			t.Errorf("IsRetryable(%v) = %v", tt.err, got)
		}
	}
	if !errors.Is(&HubError{Status: 429}, ErrThrottled) || errors.Is(&HubError{Status: 500}, ErrThrottled) {
		t.Error("HubError.Is")
	}
	if !errors.Is(fmt.Errorf("w: %w", &ProvisioningError{Status: DPSDisabled}), ErrUnauthorized) {
		t.Error("disabled enrollment should match ErrUnauthorized")
	}
}

func TestOperationStatus(t *testing.T) {
	s, err := ParseOperationStatus([]byte(`{"operationId":"o","status":"Assigned","registrationState":{"assignedHub":"h","deviceId":"d","substatus":"initialAssignment"}}`))
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Assignment()
	if err != nil || a.Hub != "h" || a.DeviceID != "d" {
		t.Errorf("assignment %+v %v", a, err)
	}
	s, _ = ParseOperationStatus([]byte(`{"status":"failed","registrationState":{"errorCode":401002,"errorMessage":"no"}}`))
	_, err = s.Assignment()
	var pe *ProvisioningError
	if !errors.As(err, &pe) || pe.ErrorCode != 401002 || !errors.Is(err, ErrUnauthorized) {
		t.Errorf("failed: %v", err)
	}
	for _, in := range []string{`{"status":"assigned"}`, `{"status":"assigning"}`} {
		s, _ := ParseOperationStatus([]byte(in))
		if _, err := s.Assignment(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", in, err)
		}
	}
	if _, err := ParseOperationStatus([]byte(`{`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad json: %v", err)
	}
	if ClampPollInterval(-1) != DefaultPollInterval || ClampPollInterval(time.Hour) != MaxPollInterval || ClampPollInterval(3*time.Second) != 3*time.Second {
		t.Error("ClampPollInterval")
	}
	body, _ := RegistrationRequest{RegistrationID: "d1", ModelID: "dtmi:x;1", LegacyModelID: true}.Body()
	if string(body) != `{"payload":{"iotcModelId":"dtmi:x;1","modelId":"dtmi:x;1"},"registrationId":"d1"}` {
		t.Errorf("body %s", body)
	}
	body, _ = RegistrationRequest{RegistrationID: "d1"}.Body()
	if string(body) != `{"registrationId":"d1"}` {
		t.Errorf("body %s", body)
	}
}

func TestConnectionString(t *testing.T) {
	cs, err := ParseConnectionString("HostName=h.azure-devices.net;DeviceId=d1;SharedAccessKey=" + docDerivedKey)
	if err != nil || cs.HostName != "h.azure-devices.net" || cs.DeviceID != "d1" || cs.SharedAccessKey != docDerivedKey {
		t.Fatalf("%+v %v", cs, err)
	}
	if strings.Contains(cs.String(), docDerivedKey) {
		t.Error("String leaks the key")
	}
	for _, bad := range []string{"", "HostName=h", "HostName=h;DeviceId=d", "junk"} {
		if _, err := ParseConnectionString(bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	c := Credential{Kind: KindConnectionString, ConnectionString: "hostname=h;deviceid=d;sharedaccesskey=" + docDerivedKey}
	if k, err := c.DeviceKey("ignored"); err != nil || k != docDerivedKey {
		t.Errorf("DeviceKey %v", err)
	}
}

func TestCredentialNeverPrintsSecret(t *testing.T) {
	for _, c := range []Credential{
		{Kind: KindGroupKey, Key: docGroupKey},
		{Kind: KindDeviceKey, Key: docDerivedKey},
		{Kind: KindConnectionString, ConnectionString: "HostName=h;DeviceId=d;SharedAccessKey=" + docDerivedKey},
		{Kind: KindX509, CertFile: "c.pem", KeyFile: "k.pem", Passphrase: "hunter2"},
	} {
		for _, s := range []string{c.String(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
			if strings.Contains(s, docGroupKey) || strings.Contains(s, docDerivedKey) || strings.Contains(s, "hunter2") {
				t.Errorf("secret printed: %s", s)
			}
		}
	}
	g := Credential{Kind: KindGroupKey, Key: docGroupKey}
	k1, _ := g.DeviceKey(docRegID)
	k2, _ := g.DeviceKey(docRegID)
	if k1 != docDerivedKey || k2 != docDerivedKey || g.Key != docGroupKey {
		t.Error("deriving twice must give the same key and keep the group key")
	}
	if err := (Credential{Kind: KindGroupKey, Key: "%%"}).Validate(); !errors.Is(err, ErrInvalidKey) || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate bad key: %v", err)
	}
	if err := (Credential{Kind: KindX509, CertFile: "c"}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate x509 without key: %v", err)
	}
	if err := (Credential{}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate none: %v", err)
	}
}

// FuzzParseConnectionString formats a connection string from fuzzed
// fields (keys in fuzzed case and order), parses it and checks the
// fields; and checks that fuzzed text never leaks the key in String.
func FuzzParseConnectionString(f *testing.F) {
	f.Add("h.azure-devices.net", "d1", "", docDerivedKey, false, uint8(0), uint8(0), "HostName=h;DeviceId=d;SharedAccessKey=k")
	f.Add("MyHub.azure-devices.net", "Dev-1.A", "mod", "", true, uint8(5), uint8(0xff), "hostname=h;;deviceid=d;x509=TRUE")
	f.Add("h", "d=e", "m", "a==", false, uint8(3), uint8(0x2a), " HostName = h ;DeviceId=d;SharedAccessKey=k==;junk")
	f.Fuzz(func(t *testing.T, host, device, module, key string, x509 bool, order, caseBits uint8, text string) {
		usable := func(v string) bool { return v != "" && !strings.Contains(v, ";") && strings.TrimSpace(v) == v }
		if usable(host) && usable(device) && (module == "" || usable(module)) && (x509 || usable(key)) {
			fields := [][2]string{{"HostName", host}, {"DeviceId", device}}
			if module != "" {
				fields = append(fields, [2]string{"ModuleId", module})
			}
			if x509 {
				fields = append(fields, [2]string{"x509", "true"})
			} else {
				fields = append(fields, [2]string{"SharedAccessKey", key})
			}
			for i := len(fields) - 1; i > 0; i-- {
				j := int(order) % (i + 1)
				fields[i], fields[j] = fields[j], fields[i]
				order /= uint8(i + 1)
			}
			parts := make([]string, len(fields))
			for i, kv := range fields {
				k := kv[0]
				if caseBits&(1<<i) != 0 {
					k = strings.ToUpper(k)
				} else if caseBits&(1<<(i+4)) != 0 {
					k = strings.ToLower(k)
				}
				parts[i] = k + "=" + kv[1]
			}
			s := strings.Join(parts, ";")
			cs, err := ParseConnectionString(s)
			if err != nil {
				t.Fatalf("ParseConnectionString(%q): %v", s, err)
			}
			wantKey := key
			if x509 {
				wantKey = ""
			}
			if cs.HostName != host || cs.DeviceID != device || cs.ModuleID != module || cs.X509 != x509 || cs.SharedAccessKey != wantKey {
				t.Fatalf("ParseConnectionString(%q) = %+v", s, cs)
			}
			if x509 {
				// String of an X.509 string holds no secret: it must parse back.
				again, err := ParseConnectionString(cs.String())
				if err != nil || again != cs {
					t.Fatalf("ParseConnectionString(String()) = %+v, %v; want %+v", again, err, cs)
				}
			}
		}
		cs, err := ParseConnectionString(text)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		if cs.HostName == "" || cs.DeviceID == "" || (cs.SharedAccessKey == "" && !cs.X509) {
			t.Fatalf("ParseConnectionString(%q) accepted an incomplete %+v", text, cs)
		}
		if cs.SharedAccessKey != "" && strings.Contains(cs.String(), "SharedAccessKey="+cs.SharedAccessKey+";") {
			t.Fatal("key printed")
		}
		if cs.SharedAccessKey != "" && !strings.Contains(cs.String(), "<redacted>") {
			t.Fatalf("String() = %q shows no redaction", cs.String())
		}
	})
}

func FuzzMethodNames(f *testing.F) {
	f.Add("thermostat1*getMaxMinReport")
	f.Add("Commands:comp*setLed")
	f.Add("::**")
	f.Fuzz(func(t *testing.T, s string) {
		c, n := SplitMethodName(s)
		if c != "" && c+ComponentSeparator+n != s {
			t.Fatalf("SplitMethodName(%q) = %q,%q loses data", s, c, n)
		}
		if c == "" && n != s && !strings.HasPrefix(s, ComponentSeparator) {
			t.Fatalf("root command %q renamed to %q", s, n)
		}
		qc, qn := ParseQueuedCommandName(s)
		if strings.Contains(qc, ":") || (qc == "" && strings.Contains(qn, ":")) {
			t.Fatalf("ParseQueuedCommandName(%q) kept a prefix: %q,%q", s, qc, qn)
		}
	})
}

func TestEncodePropertiesMatchesValidateAndEncode(t *testing.T) {
	bagOf := func(m Message) int { return m.Size() - len(m.Body) }
	root := Message{}
	msgs := []Message{
		{Body: []byte(`{"a":1}`)},
		{Body: []byte(`{"a":1}`), Component: "thermostat1"},
		{Body: []byte("x"), ContentType: "text/plain", ContentEncoding: "ascii"},
		{Body: []byte(`{}`), MessageID: "m1", CorrelationID: "c1", CreationTime: time.Unix(1, 0)},
		{Body: []byte(`{}`), Properties: map[string]string{"k": "v", "a b": "c&d"}},
		{Body: []byte(`{}`), Properties: map[string]string{"only": "one/val ue+é"}},
		{Body: []byte(`{}`), CreationTime: time.Unix(2, 5), Properties: map[string]string{PropCreationTimeUTC: "dropped", "z": "1", "y~": "2"}},
		{Body: []byte(`{}`), Properties: map[string]string{PropCreationTimeUTC: "kept without CreationTime"}},
		{Body: []byte(`{}`), MessageID: "id with spaces & = ?", Component: "comp/1", ContentType: "application/json; charset=utf-8"},
		{Body: []byte(`{}`), Properties: map[string]string{"$.mid": "reserved"}},
		{Body: []byte(`{}`), Properties: map[string]string{"": "empty key"}},
		{Body: make([]byte, MaxTelemetrySize-bagOf(root))},
		{Body: make([]byte, MaxTelemetrySize-bagOf(root)+1)},
	}
	for i, m := range msgs {
		got, gotErr := m.EncodeProperties()
		wantErr := m.Validate()
		want := ""
		if wantErr == nil {
			want = m.PropertyBag().Encode()
		}
		if got != want || !errors.Is(gotErr, wantErr) && (gotErr == nil) != (wantErr == nil) {
			t.Errorf("message %d: EncodeProperties = %q, %v; want %q, %v", i, got, gotErr, want, wantErr)
		}
		if (gotErr == nil) != (wantErr == nil) || errors.Is(gotErr, ErrMessageTooLarge) != errors.Is(wantErr, ErrMessageTooLarge) {
			t.Errorf("message %d: error %v, want %v", i, gotErr, wantErr)
		}
	}
	if _, err := msgs[len(msgs)-1].EncodeProperties(); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("one byte over the limit: %v", err)
	}
	if _, err := msgs[len(msgs)-2].EncodeProperties(); err != nil {
		t.Errorf("exactly at the limit: %v", err)
	}
	const prefix = "devices/d/messages/events/"
	for i, m := range msgs[:5] {
		want, _ := m.EncodeProperties()
		if got, err := m.EncodeTopic(prefix); err != nil || got != prefix+want {
			t.Errorf("message %d: EncodeTopic = %q, %v; want %q", i, got, err, prefix+want)
		}
	}
}

// The telemetry topic of a common message is built in one allocation
// (the send path's cost per message).
func TestEncodeTopicAllocatesOnce(t *testing.T) {
	m := Message{Body: []byte(`{"t":1}`), MessageID: "0b5e7c1e-6f0a-4c1e-9d3b-2a6f1c9e8d7a", Component: "thermostat1", Properties: map[string]string{"alert": "high"}}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := m.EncodeTopic("devices/d/messages/events/"); err != nil {
			t.Fatal(err)
		}
	}); n != 1 {
		t.Fatalf("EncodeTopic made %v allocations, want 1", n)
	}
}

// EscapeComponent is url.QueryEscape with a space as %20, for every byte.
func FuzzEscapeComponent(f *testing.F) {
	for _, s := range []string{"", "abc", "$.mid", "a b+c", "application/json", "é~-_.", "\x00\xff%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
		if got := EscapeComponent(s); got != want {
			t.Fatalf("EscapeComponent(%q) = %q, want %q", s, got, want)
		}
	})
}

// Size is computed without building the bag; it must count exactly what
// the bag holds.
func TestMessageSizeMatchesItsPropertyBag(t *testing.T) {
	when := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	for i, m := range []Message{
		{Body: []byte(`{}`)},
		{Body: []byte(`{"a":1}`), MessageID: "m1", CorrelationID: "c1", Component: "thermostat1"},
		{Body: []byte(`x`), ContentType: "text/plain", ContentEncoding: "ascii", Properties: map[string]string{"a": "1", "bb": "22"}},
		{Body: []byte(`{}`), CreationTime: when, Properties: map[string]string{PropCreationTimeUTC: "ignored when CreationTime is set", "k": "v"}},
		{Body: []byte(`{}`), Properties: map[string]string{PropCreationTimeUTC: "2026-01-01T00:00:00Z"}},
	} {
		bag := m.PropertyBag()
		want := len(m.Body)
		for _, p := range bag {
			want += len(p.Key) + len(p.Value)
		}
		if got := m.Size(); got != want {
			t.Errorf("message %d: Size() = %d, the bag counts %d", i, got, want)
		}
	}
}

func TestClientProductCarriesTheVersion(t *testing.T) {
	if ClientProduct != "iotc-go/"+Version || Version == "" {
		t.Errorf("ClientProduct %q, Version %q", ClientProduct, Version)
	}
}
