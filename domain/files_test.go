package domain

import (
	"errors"
	"go/build"
	"testing"
)

// TestDomainTouchesNoFile: domain imports no package that reaches the
// file system; certificate files are read through Credential.ReadFile,
// which the composition root sets.
func TestDomainTouchesNoFile(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		switch imp {
		case "os", "io/fs", "io/ioutil", "path/filepath", "os/exec":
			t.Errorf("domain imports %s", imp)
		}
	}
}

// TestCertificateFilesNeedAReader: certificate files without ReadFile are
// a configuration error, not a silent empty certificate.
func TestCertificateFilesNeedAReader(t *testing.T) {
	c := Credential{Kind: KindX509, CertFile: "cert.pem", KeyFile: "key.pem"}
	if _, err := c.TLSCertificate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("TLSCertificate without ReadFile = %v, want ErrInvalidConfig", err)
	}
	read := 0
	c.ReadFile = func(string) ([]byte, error) { read++; return nil, errors.New("no such file") }
	if _, err := c.TLSCertificate(); !errors.Is(err, ErrInvalidConfig) || read != 1 {
		t.Fatalf("TLSCertificate = %v after %d reads, want ErrInvalidConfig after 1", err, read)
	}
}
