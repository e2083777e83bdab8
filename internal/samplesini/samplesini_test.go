package samplesini

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestSeedExampleFile parses the seed's documented samples.ini verbatim.
func TestSeedExampleFile(t *testing.T) {
	f, err := Load(filepath.Join("testdata", "seed-samples.ini"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Sections(), ","); got != "DEVICE_A,FileLog,EventHub" {
		t.Errorf("sections = %s", got)
	}
	d, err := f.Device("DEVICE_A")
	if err != nil {
		t.Fatal(err)
	}
	want := Device{
		Section: "DEVICE_A", ScopeID: "scopeid", DeviceID: "deviceid", DeviceKey: "device_key", GroupKey: "group_key",
		CertFile: filepath.Join("testdata", "path_to_cert_file"), KeyFile: filepath.Join("testdata", "path_to_key_file"),
		CertPassphrase: "optional password", ModelID: "optional model/template id", HubName: "optional (sync sample's MemStorage)",
	}
	if d != want {
		t.Errorf("device =\n%+v\nwant\n%+v", d, want)
	}
	if v, ok := f.Get("DEVICE_A", "local"); !ok || v != "yes" {
		t.Errorf("DEFAULT Local = %q, %v", v, ok)
	}
	if v, _ := f.Get("EventHub", "connectionstring"); v != "..." {
		t.Errorf("EventHub ConnectionString = %q", v)
	}
	if got := f.LogsPath(); got != filepath.Join("testdata", "logs") {
		t.Errorf("LogsPath = %q", got)
	}
	if _, err := f.Device("DEVICE_B"); !errors.Is(err, ErrNoSection) || !strings.Contains(err.Error(), "DEVICE_A") {
		t.Errorf("missing section: %v", err)
	}
	if _, err := f.Device("DEFAULT"); !errors.Is(err, ErrNoSection) {
		t.Errorf("DEFAULT as a device: %v", err)
	}
}

func TestParseSyntax(t *testing.T) {
	f, err := Parse(strings.NewReader("\ufeff# c\n[S]\nKey: v1\nmulti = a\n  b ; c\nurl = http://x/#frag\npw = p;w\n"))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"KEY": "v1", "multi": "a\nb", "url": "http://x/#frag", "pw": "p;w"} {
		if v, _ := f.Get("S", k); v != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	for _, bad := range []string{"k = v\n", "[S\n", "[]\n", "[S]\nnovalue\n", "[S]\n\n  cont\n", "[S]\n= v\n"} {
		if _, err := Parse(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line") {
			t.Errorf("%q: err = %v, want a line error", bad, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("[DEVICE_A]\nScopeId = x ; c\n")
	f.Fuzz(func(t *testing.T, s string) {
		ini, err := Parse(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, sec := range ini.Sections() {
			if _, err := ini.Device(sec); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestCredentialChoice(t *testing.T) {
	f, err := Parse(strings.NewReader("[A]\nScopeId=s\nDeviceId=d\nDeviceKey=a2V5\nGroupKey=Z3JvdXA=\n[X]\nCertFilePath=c.pem\nKeyFilePath=k.pem\nCertPassphrase=pw\n[N]\nScopeId=s\n[T]\nDeviceKey=a2V5\nTransport=AMQPWS\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := f.Device("A")
	for auth, want := range map[Auth]string{AuthAny: "device key", AuthDeviceKey: "device key", AuthGroupKey: "group key"} {
		c, err := a.Credential(auth)
		if err != nil || !strings.HasPrefix(c.String(), want) {
			t.Errorf("auth %d: %v, %v; want %s", auth, c, err, want)
		}
		if strings.Contains(c.String(), "a2V5") {
			t.Errorf("credential prints its key: %v", c)
		}
	}
	if _, err := a.Credential(AuthX509); err == nil {
		t.Error("AuthX509 without a certificate: no error")
	}
	x, _ := f.Device("X")
	if c, err := x.Credential(AuthAny); err != nil || !strings.HasPrefix(c.String(), "x509") {
		t.Errorf("X: %v, %v", c, err)
	}
	n, _ := f.Device("N")
	if _, err := n.Credential(AuthAny); err == nil || !strings.Contains(err.Error(), "[N]") {
		t.Errorf("N: %v", err)
	}
	tr, _ := f.Device("T")
	cfg, err := tr.Config(AuthAny)
	if err != nil || cfg.Transport.String() != "amqpws" {
		t.Errorf("T: %v, %v", cfg.Transport, err)
	}
	tr.Transport = "carrier-pigeon"
	if _, err := tr.Config(AuthAny); err == nil {
		t.Error("unknown transport: no error")
	}
}
