package samplesini

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotc-go/iotc/domain"
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

// TestSeedParity: a key sample takes DeviceKey or GroupKey; HubName becomes
// a cached hub (the seed's MemStorage), which the client tries before DPS.
func TestSeedParity(t *testing.T) {
	f, err := Parse(strings.NewReader("[G]\nScopeId = s\nDeviceId = d\nGroupKey = AAAA\nHubName = hub.example\n[D]\nScopeId = s\nDeviceId = d\nDeviceKey = AAAA\n[N]\nScopeId = s\nDeviceId = d\n"))
	if err != nil {
		t.Fatal(err)
	}
	g, _ := f.Device("G")
	cfg, err := g.Config(AuthKey)
	if err != nil || !strings.HasPrefix(cfg.Credential.String(), "group key") {
		t.Fatalf("GroupKey section: %v, %v", cfg.Credential, err)
	}
	if cfg.CredentialStore == nil {
		t.Fatal("HubName is ignored")
	}
	rec, err := cfg.CredentialStore.Load(context.Background())
	if err != nil || rec.Hub != "hub.example" || rec.DeviceID != "d" || !rec.Matches("s", "d") || rec.Kind != domain.KindGroupKey {
		t.Errorf("cached hub = %+v, %v", rec, err)
	}
	d, _ := f.Device("D")
	if cfg, err := d.Config(AuthKey); err != nil || !strings.HasPrefix(cfg.Credential.String(), "device key") || cfg.CredentialStore != nil {
		t.Errorf("DeviceKey section: %v, %v", cfg.Credential, err)
	}
	n, _ := f.Device("N")
	if _, err := n.Config(AuthKey); err == nil || !strings.Contains(err.Error(), "DeviceKey or GroupKey") {
		t.Errorf("no key: %v", err)
	}
}
