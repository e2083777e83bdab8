package sas

import (
	"bufio"
	"errors"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

type vector struct{ kind, key, input, want string }

// vectors reads testdata/vectors.tsv, made by testdata/vectors.sh with the
// openssl command line (not with this code).
func vectors(t *testing.T, kind string) []vector {
	t.Helper()
	f, err := os.Open("testdata/vectors.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []vector
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), "\t")
		if len(p) != 4 {
			t.Fatalf("bad vector line %q", sc.Text())
		}
		if p[0] == kind {
			out = append(out, vector{p[0], p[1], strings.ReplaceAll(p[2], `\n`, "\n"), p[3]})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 8 {
		t.Fatalf("only %d %s vectors", len(out), kind)
	}
	return out
}

// TestDeriveKeyVectors: the device key is HMAC-SHA256 of the registration
// id as given: mixed case and '-' '.' included, never lowercased.
func TestDeriveKeyVectors(t *testing.T) {
	seen := map[string]string{}
	for _, v := range vectors(t, "derive") {
		got, err := DeriveKey(v.key, v.input)
		if err != nil || got != v.want {
			t.Errorf("DeriveKey(%s, %q) = %q, %v; want %q", v.key[:6], v.input, got, err, v.want)
		}
		seen[v.key+"/"+v.input] = got
	}
	g := vectors(t, "derive")[0].key
	if seen[g+"/Device-01"] == seen[g+"/device-01"] {
		t.Fatal("Device-01 and device-01 derive the same key")
	}
}

func token(sr, se, sig string) string {
	return Prefix + "sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se
}

// TestVerifyVectors checks signatures computed by openssl: accepted with
// the right key and sr as signed, refused with another key, another se or
// another sr; an expired one reports ErrExpired.
func TestVerifyVectors(t *testing.T) {
	now := time.Unix(1800000000, 0)
	for _, v := range vectors(t, "sign") {
		sr, se, _ := strings.Cut(v.input, "\n")
		tok, err := Parse(token(sr, se, v.want))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		n, _ := strconv.ParseInt(se, 10, 64)
		want := error(nil)
		if n <= now.Unix() {
			want = ErrExpired
		}
		if err := tok.Verify(v.key, now); !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("Verify(sr=%s se=%s) = %v, want %v", sr, se, err, want)
		}
		other := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
		if err := tok.Verify(other, now); !errors.Is(err, ErrBadSignature) {
			t.Errorf("Verify with another key = %v", err)
		}
		moved, _ := Parse(token(sr, se+"1", v.want))
		if err := moved.Verify(v.key, now); !errors.Is(err, ErrBadSignature) {
			t.Errorf("Verify with se changed = %v", err)
		}
	}
}

// TestDecodedResourceSignatureRefused: a token that sends sr encoded but
// was signed over the decoded resource is refused (the mistake of an SDK
// that signs the wrong form); one that sends sr decoded and signed it so,
// or signed its canonical encoding, is accepted.
func TestDecodedResourceSignatureRefused(t *testing.T) {
	sigs := map[string]string{}
	var key string
	for _, v := range vectors(t, "sign") {
		if strings.HasSuffix(v.input, "\n4102444800") {
			sigs[strings.TrimSuffix(v.input, "\n4102444800")] = v.want
			key = v.key
		}
	}
	now := time.Unix(1800000000, 0)
	const enc, lower, dec = "localhost%2Fdevices%2FDevice-01", "localhost%2fdevices%2fDevice-01", "localhost/devices/Device-01"
	for _, tc := range []struct {
		name, sr, signed string
		want             error
	}{
		{"encoded, signed encoded", enc, enc, nil},
		{"encoded, signed lower-hex", enc, lower, nil},
		{"lower-hex, signed lower-hex", lower, lower, nil},
		{"decoded, signed decoded", dec, dec, nil},
		{"decoded, signed encoded", dec, enc, nil},
		{"encoded, signed decoded", enc, dec, ErrBadSignature},
		{"lower-hex, signed decoded", lower, dec, ErrBadSignature},
	} {
		tok, err := Parse(token(tc.sr, "4102444800", sigs[tc.signed]))
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.Verify(key, now); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: Verify = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestBuildVectors: Build signs sr as it sends it, the openssl vectors' form.
func TestBuildVectors(t *testing.T) {
	for _, v := range vectors(t, "sign") {
		sr, se, _ := strings.Cut(v.input, "\n")
		res, err := url.PathUnescape(sr)
		if err != nil || Escape(res) != sr {
			continue // only the canonical upper-hex encodings
		}
		n, _ := strconv.ParseInt(se, 10, 64)
		tokText, err := Build(v.key, res, time.Unix(n, 0), "")
		if err != nil {
			t.Fatal(err)
		}
		want := token(sr, se, v.want)
		if tokText != want {
			t.Errorf("Build(%q) = %q, want %q", res, tokText, want)
		}
	}
}

func TestParseRefusals(t *testing.T) {
	for _, bad := range []string{
		"", "sr=a&sig=b&se=1", Prefix + "sig=AAAA&se=1", Prefix + "sr=a&se=1", Prefix + "sr=a&sig=AAAA",
		Prefix + "sr=a&sig=AAAA&se=x", Prefix + "sr=a&sig=AAAA&se=-1", Prefix + "sr=a&sr=b&sig=AAAA&se=1",
		Prefix + "sr=%zz&sig=AAAA&se=1", Prefix + "sr=a&sig=!!!&se=1", Prefix + "sr=a&sig=AAAA&se=1&junk",
	} {
		if _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", bad, err)
		}
	}
	secret := "c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ=="
	_, err := Parse(Prefix + "sr=a&sig=" + secret + "&se=x")
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("error %v repeats the signature", err)
	}
	tok, err := Parse(Prefix + " SE=5&SKN=registration&Sig=AAAA&SR=a%2Fb&other=1")
	if err != nil || tok.Resource != "a/b" || tok.RawResource != "a%2Fb" || tok.KeyName != "registration" || tok.Expiry.Unix() != 5 {
		t.Fatalf("any field order and case: %+v, %v", tok, err)
	}
	if strings.Contains(tok.String(), "AAAA") {
		t.Fatal("String shows the signature")
	}
	if err := ValidKey("not base64!"); !errors.Is(err, ErrBadKey) {
		t.Fatalf("ValidKey: %v", err)
	}
	if _, err := DeriveKey("", "x"); !errors.Is(err, ErrBadKey) {
		t.Fatalf("DeriveKey with no key: %v", err)
	}
}

func TestNames(t *testing.T) {
	tok, err := Parse(token("Hub%2Fdevices%2FDev-1%2F", "9", "AAAA"))
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Names("hub/devices/dev-1") || tok.Names("hub/devices/dev-2") {
		t.Fatal("Names: case and trailing '/' ignored, nothing else")
	}
}

// FuzzBuildParseVerify: build -> parse -> verify round-trips for any
// resource and expiry, and any token text parses or fails without a panic.
func FuzzBuildParseVerify(f *testing.F) {
	f.Add("localhost/devices/Device-01", int64(4102444800), "registration")
	f.Add("0ne00/registrations/a.b-C", int64(1), "")
	f.Add("h/devices/ü €&=%", int64(0), "k n")
	f.Fuzz(func(t *testing.T, resource string, se int64, keyName string) {
		if se < 0 {
			se = -se
		}
		if se < 0 {
			return
		}
		const key = "dGhpcyBpcyBhIGdyb3VwIGtleSBvZiAzMiBieXRlcyE="
		text, err := Build(key, resource, time.Unix(se, 0), keyName)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := Parse(text)
		if err != nil {
			t.Fatalf("Parse(Build(%q)) = %v", resource, err)
		}
		if tok.Resource != resource || tok.Expiry.Unix() != se || tok.KeyName != keyName {
			t.Fatalf("round trip: %+v from %q %d %q", tok, resource, se, keyName)
		}
		if err := tok.Verify(key, time.Unix(se-1, 0)); err != nil {
			t.Fatalf("Verify(Build) = %v", err)
		}
		if err := tok.Verify(key, time.Unix(se, 0)); !errors.Is(err, ErrExpired) {
			t.Fatalf("Verify at se = %v, want ErrExpired", err)
		}
		_, _ = Parse(resource) // arbitrary text: an error, never a panic
	})
}
