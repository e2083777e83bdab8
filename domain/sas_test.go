package domain

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Vectors published in reference documentation (DPS symmetric-key docs and
// the SAS worked example).
const (
	docGroupKey   = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	docRegID      = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	docDerivedKey = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
)

func TestDeriveDeviceKey(t *testing.T) {
	tests := []struct{ group, reg, want string }{
		{docGroupKey, docRegID, docDerivedKey},
		{"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==", "device1", "srOjRk/jAuMP64HVVEeUueDBMynyaFS/HIxOLlYvpfo="},
	}
	for _, tt := range tests {
		got, err := DeriveDeviceKey(tt.group, tt.reg)
		if err != nil || got != tt.want {
			t.Errorf("DeriveDeviceKey(%q) = %q, %v; want %q", tt.reg, got, err, tt.want)
		}
	}
	if _, err := DeriveDeviceKey("not base64!", "x"); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("bad key: err = %v, want ErrInvalidKey", err)
	}
	if _, err := DeriveDeviceKey("", "x"); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("empty key: err = %v, want ErrInvalidKey", err)
	}
}

func TestSASPublishedSignatures(t *testing.T) {
	// Tokens as the C SDK (raw sr) and Node/Python (encoded sr) build them.
	tests := []struct{ token string }{
		{"SharedAccessSignature sr=myhub.azure-devices.net/devices/dev1&sig=23cY6HBgW47J5%2BicuL79qnio1P%2Bu73PuVu05DK9EFxY%3D&se=1767225600"},
		{"SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=uZlUBGGFiUoAxLq8dU2BwroktLdITY1WBGxJduvxOMg%3D&se=1767225600"},
		{"SharedAccessSignature sig=uZlUBGGFiUoAxLq8dU2BwroktLdITY1WBGxJduvxOMg%3D&se=1767225600&sr=myhub.azure-devices.net%2Fdevices%2Fdev1"},
		{"SharedAccessSignature sr=myhub.azure-devices.net%2fdevices%2fdev1&sig=uZlUBGGFiUoAxLq8dU2BwroktLdITY1WBGxJduvxOMg%3D&skn=&se=1767225600"},
	}
	before := time.Unix(1767225600-10, 0)
	for _, tt := range tests {
		tok, err := ParseSAS(tt.token)
		if err != nil {
			t.Fatalf("ParseSAS(%q): %v", tt.token, err)
		}
		if !tok.MatchesResource("MyHub.azure-devices.net/devices/dev1") {
			t.Errorf("%q: resource %q does not match", tt.token, tok.Resource)
		}
		if err := tok.Verify(docDerivedKey, before); err != nil {
			t.Errorf("Verify(%q) = %v", tt.token, err)
		}
		if err := tok.Verify(docDerivedKey, time.Unix(1767225600, 0)); !errors.Is(err, ErrTokenExpired) {
			t.Errorf("Verify at expiry = %v, want ErrTokenExpired", err)
		}
		if err := tok.Verify(docGroupKey, before); !errors.Is(err, ErrBadSignature) {
			t.Errorf("Verify with wrong key = %v, want ErrBadSignature", err)
		}
		if strings.Contains(tok.String(), tok.Signature) {
			t.Errorf("String() leaks the signature: %s", tok)
		}
	}
}

func TestBuildSASRoundTrip(t *testing.T) {
	exp := time.Unix(1767225600, 0)
	tok, err := BuildSAS(docDerivedKey, "myhub.azure-devices.net/devices/dev1", exp, "")
	if err != nil {
		t.Fatal(err)
	}
	want := "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=uZlUBGGFiUoAxLq8dU2BwroktLdITY1WBGxJduvxOMg%3D&se=1767225600"
	if tok != want {
		t.Errorf("BuildSAS =\n %s\nwant\n %s", tok, want)
	}
	dps, err := BuildSAS(docDerivedKey, DPSResource("0ne00000001", "dev 1"), exp, DPSKeyName)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseSAS(dps)
	if err != nil {
		t.Fatal(err)
	}
	if p.Resource != "0ne00000001/registrations/dev 1" || p.KeyName != "registration" || !p.Expiry.Equal(exp) {
		t.Errorf("parsed %+v", p)
	}
	if err := p.Verify(docDerivedKey, exp.Add(-time.Second)); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestParseSASErrors(t *testing.T) {
	bad := []string{
		"",
		"sr=a&sig=b&se=1",
		"SharedAccessSignature sr=a&sig=b",
		"SharedAccessSignature sr=a&se=1",
		"SharedAccessSignature sig=a&se=1",
		"SharedAccessSignature sr=a&sig=b&se=x",
		"SharedAccessSignature sr=a&sig=b&se=-1",
		"SharedAccessSignature sr=a&sr=b&sig=b&se=1",
		"SharedAccessSignature sr=%zz&sig=b&se=1",
		"SharedAccessSignature sr&sig=b&se=1",
	}
	for _, s := range bad {
		if _, err := ParseSAS(s); !errors.Is(err, ErrMalformedToken) {
			t.Errorf("ParseSAS(%q) err = %v, want ErrMalformedToken", s, err)
		}
	}
}

func FuzzParseSAS(f *testing.F) {
	f.Add("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=uZlUBGGFiUoAxLq8dU2BwroktLdITY1WBGxJduvxOMg%3D&se=1767225600")
	f.Add("SharedAccessSignature sig=a&se=1&skn=registration&sr=x")
	f.Add("SharedAccessSignature sr=%&sig=%%&se=99999999999999999999")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseSAS(s)
		if err != nil {
			return
		}
		_ = tok.Verify(docDerivedKey, time.Unix(0, 0))
		_ = tok.MatchesResource("x")
		_ = tok.String()
	})
}
