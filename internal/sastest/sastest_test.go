package sastest

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/domain"
)

// Keys published in reference documentation (DPS symmetric-key docs and
// the SAS worked example).
const (
	docGroupKey   = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	docDerivedKey = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
)

// vectorLine is one line of domain/testdata/sas_vectors.tsv.
type vectorLine struct {
	line   int
	fields []string
}

// vectorsOf reads the lines of kind of domain/testdata/sas_vectors.tsv,
// made by its recipe with openssl and bash, so that the expected values
// never come from the code under test.
func vectorsOf(t *testing.T, kind string) []vectorLine {
	t.Helper()
	f, err := os.Open("../../domain/testdata/sas_vectors.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []vectorLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		fs := strings.Split(sc.Text(), "\t")
		if fs[0] == kind {
			out = append(out, vectorLine{line: n, fields: fs[1:]})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 6 {
		t.Fatalf("sas_vectors.tsv has %d %s vectors, want at least 6", len(out), kind)
	}
	return out
}

// TestVerifyIndependentTokens: the tokens openssl built verify.
func TestVerifyIndependentTokens(t *testing.T) {
	for _, v := range vectorsOf(t, "sas") {
		key, want := v.fields[0], v.fields[4]
		se, _ := strconv.ParseInt(v.fields[2], 10, 64)
		p, err := domain.ParseSAS(want)
		if err != nil {
			t.Fatalf("line %d: %v", v.line, err)
		}
		if err := Verify(p, key, time.Unix(se-1, 0)); err != nil {
			t.Errorf("line %d: Verify(openssl token) = %v", v.line, err)
		}
	}
}

// TestVerifyIndependentRawResourceTokens checks that tokens as the C SDK
// builds them (sr not encoded, signed as it appears) verify, also with the
// signature left unencoded, and that another key or resource does not.
func TestVerifyIndependentRawResourceTokens(t *testing.T) {
	plus := 0
	defer func() {
		if plus == 0 {
			t.Error("no vector has a '+' in its signature")
		}
	}()
	for _, v := range vectorsOf(t, "rawsr") {
		key, resource, seText, tok := v.fields[0], v.fields[1], v.fields[2], v.fields[3]
		se, _ := strconv.ParseInt(seText, 10, 64)
		p, err := domain.ParseSAS(tok)
		if err != nil {
			t.Errorf("line %d: ParseSAS: %v", v.line, err)
			continue
		}
		if p.RawResource != resource || p.Resource != resource {
			t.Errorf("line %d: sr parsed as %q / %q, want %q", v.line, p.RawResource, p.Resource, resource)
		}
		if err := Verify(p, key, time.Unix(se-1, 0)); err != nil {
			t.Errorf("line %d: Verify = %v", v.line, err)
		}
		if err := Verify(p, docGroupKey, time.Unix(se-1, 0)); !errors.Is(err, ErrBadSignature) {
			t.Errorf("line %d: Verify with another key = %v, want ErrBadSignature", v.line, err)
		}
		// Some clients leave the base64 sig unencoded: '+' must stay '+'.
		sig := tok[strings.Index(tok, "&sig=")+5 : strings.Index(tok, "&se=")]
		plain := strings.NewReplacer("%2B", "+", "%2F", "/", "%3D", "=").Replace(sig)
		if strings.Contains(plain, "+") {
			plus++
			pp, err := domain.ParseSAS(strings.Replace(tok, sig, plain, 1))
			if err != nil || Verify(pp, key, time.Unix(se-1, 0)) != nil {
				t.Errorf("line %d: token with the sig unencoded (%s) does not verify: %v", v.line, plain, err)
			}
		}
		// The same token for another resource must not verify.
		other := strings.Replace(tok, "/devices/", "/devices/x", 1)
		if p2, err := domain.ParseSAS(other); err != nil || !errors.Is(Verify(p2, key, time.Unix(se-1, 0)), ErrBadSignature) {
			t.Errorf("line %d: token moved to another device verifies (err %v)", v.line, err)
		}
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
		tok, err := domain.ParseSAS(tt.token)
		if err != nil {
			t.Fatalf("ParseSAS(%q): %v", tt.token, err)
		}
		if !MatchesResource(tok, "MyHub.azure-devices.net/devices/dev1") {
			t.Errorf("%q: resource %q does not match", tt.token, tok.Resource)
		}
		if err := Verify(tok, docDerivedKey, before); err != nil {
			t.Errorf("Verify(%q) = %v", tt.token, err)
		}
		if err := Verify(tok, docDerivedKey, time.Unix(1767225600, 0)); !errors.Is(err, domain.ErrTokenExpired) {
			t.Errorf("Verify at expiry = %v, want ErrTokenExpired", err)
		}
		if err := Verify(tok, docGroupKey, before); !errors.Is(err, ErrBadSignature) {
			t.Errorf("Verify with wrong key = %v, want ErrBadSignature", err)
		}
		if strings.Contains(tok.String(), tok.Signature) {
			t.Errorf("String() leaks the signature: %s", tok)
		}
	}
}
