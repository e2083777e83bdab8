package domain

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vectorLine is one line of testdata/sas_vectors.tsv: its kind and fields.
type vectorLine struct {
	line   int
	kind   string
	fields []string
}

// readVectors reads testdata/sas_vectors.tsv, made by
// testdata/sas_vectors.sh with openssl and bash (cross-checked with Node),
// so that the expected values never come from the code under test.
func readVectors(t *testing.T) []vectorLine {
	t.Helper()
	f, err := os.Open("testdata/sas_vectors.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []vectorLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		fs := strings.Split(l, "\t")
		want := map[string]int{"derive": 4, "sas": 6, "rawsr": 5}[fs[0]]
		if want == 0 || len(fs) != want {
			t.Fatalf("sas_vectors.tsv:%d: bad line %q", n, l)
		}
		out = append(out, vectorLine{line: n, kind: fs[0], fields: fs[1:]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func vectorsOf(t *testing.T, kind string) []vectorLine {
	t.Helper()
	var out []vectorLine
	for _, v := range readVectors(t) {
		if v.kind == kind {
			out = append(out, v)
		}
	}
	if len(out) < 6 {
		t.Fatalf("sas_vectors.tsv has %d %s vectors, want at least 6", len(out), kind)
	}
	return out
}

// TestDeriveDeviceKeyIndependentVectors checks the device key of mixed-case
// ids and ids with '-', '.', '_' and ':' against openssl: the registration
// id is signed exactly as given (lowercasing it changes the key).
func TestDeriveDeviceKeyIndependentVectors(t *testing.T) {
	mixed := 0
	for _, v := range vectorsOf(t, "derive") {
		group, id, want := v.fields[0], v.fields[1], v.fields[2]
		if id != strings.ToLower(id) {
			mixed++
		}
		got, err := DeriveDeviceKey(group, id)
		if err != nil || got != want {
			t.Errorf("line %d: DeriveDeviceKey(%q) = %q, %v; want %q (openssl)", v.line, id, got, err, want)
		}
		c := Credential{Kind: KindGroupKey, Key: group}
		if got, err := c.DeviceKey(id); err != nil || got != want {
			t.Errorf("line %d: Credential.DeviceKey(%q) = %q, %v; want %q", v.line, id, got, err, want)
		}
	}
	if mixed < 3 {
		t.Fatalf("only %d vectors have upper-case letters in the id", mixed)
	}
}

// TestBuildSASIndependentVectors checks whole tokens against openssl: sr
// is the URL-encoded resource and the signature is computed over that
// encoded form (signing the decoded resource gives another sig).
func TestBuildSASIndependentVectors(t *testing.T) {
	for _, v := range vectorsOf(t, "sas") {
		key, resource, seText, skn, want := v.fields[0], v.fields[1], v.fields[2], v.fields[3], v.fields[4]
		if skn == "-" {
			skn = ""
		}
		se, err := strconv.ParseInt(seText, 10, 64)
		if err != nil {
			t.Fatalf("line %d: se %q", v.line, seText)
		}
		got, err := BuildSAS(key, resource, time.Unix(se, 0), skn)
		if err != nil || got != want {
			t.Errorf("line %d: BuildSAS(%q) =\n %q, %v\nwant (openssl)\n %q", v.line, resource, got, err, want)
		}
		p, err := ParseSAS(want)
		if err != nil {
			t.Errorf("line %d: ParseSAS(openssl token): %v", v.line, err)
			continue
		}
		if p.Resource != resource || p.KeyName != skn || p.Expiry.Unix() != se {
			t.Errorf("line %d: ParseSAS = %+v, want resource %q skn %q se %d", v.line, p, resource, skn, se)
		}
	}
}
