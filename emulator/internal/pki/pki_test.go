package pki

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadOrCreateIsStable(t *testing.T) {
	dir := t.TempDir()
	b1, err := LoadOrCreate(dir, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	b2, err := LoadOrCreate(dir, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1.CA.CertPEM, b2.CA.CertPEM) || !bytes.Equal(b1.Server.Certificate[0], b2.Server.Certificate[0]) {
		t.Fatal("second LoadOrCreate did not reuse the files")
	}
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(b1.CA.Cert)
	leaf, err := x509.ParseCertificate(b2.Server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("server certificate does not verify for %s: %v", host, err)
		}
	}
}

func TestLoadOrCreateRejectsForeignServerCert(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := other.IssueServer([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(filepath.Join(dir, ServerFile), leaf.CertPEM, filepath.Join(dir, ServerKeyFile), leaf.KeyPEM); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, []string{"localhost"}); err == nil {
		t.Fatal("a server certificate from another CA was accepted")
	}
}

func TestIssueClientChain(t *testing.T) {
	ca, err := NewCA("devices")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueClient("dev-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCertificates(ca.CertPEM)
	if err != nil || len(certs) != 1 {
		t.Fatalf("ParseCertificates = %v, %v", certs, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(certs[0])
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate does not verify: %v", err)
	}
	if leaf.Cert.Subject.CommonName != "dev-1" {
		t.Fatalf("CN %q", leaf.Cert.Subject.CommonName)
	}
	if _, err := ParseCertificates([]byte("not pem")); err == nil {
		t.Fatal("ParseCertificates accepted garbage")
	}
}

// TestLoadOrCreateReissuesForNewHosts: a stored server certificate that
// does not name a host asked for is replaced by one from the same CA, and
// the new one is kept.
func TestLoadOrCreateReissuesForNewHosts(t *testing.T) {
	dir := t.TempDir()
	b1, err := LoadOrCreate(dir, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if b1.Reissued != "" {
		t.Fatalf("first start reissued: %s", b1.Reissued)
	}
	b2, err := LoadOrCreate(dir, []string{"localhost", "127.0.0.1", "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if b2.Reissued == "" || !bytes.Equal(b1.CA.CertPEM, b2.CA.CertPEM) {
		t.Fatalf("reissued %q, same CA %v", b2.Reissued, bytes.Equal(b1.CA.CertPEM, b2.CA.CertPEM))
	}
	roots := x509.NewCertPool()
	roots.AddCert(b1.CA.Cert)
	leaf, err := x509.ParseCertificate(b2.Server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "vm"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("reissued certificate does not verify for %s: %v", host, err)
		}
	}
	b3, err := LoadOrCreate(dir, []string{"localhost", "127.0.0.1", "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if b3.Reissued != "" || !bytes.Equal(b3.Server.Certificate[0], b2.Server.Certificate[0]) {
		t.Fatalf("third start did not reuse the reissued certificate (%q)", b3.Reissued)
	}
}

func TestUnfit(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueServer([]string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if why := unfit(leaf.Cert, []string{"localhost", "127.0.0.1"}, now); why != "" {
		t.Errorf("fit certificate refused: %s", why)
	}
	if why := unfit(leaf.Cert, []string{"localhost", "10.0.0.9"}, now); why == "" {
		t.Error("certificate without 10.0.0.9 accepted for it")
	}
	if why := unfit(leaf.Cert, []string{"localhost"}, leaf.Cert.NotAfter.Add(-time.Hour)); why == "" {
		t.Error("certificate about to expire accepted")
	}
}
