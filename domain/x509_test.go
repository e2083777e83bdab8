package domain

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func selfSigned(t *testing.T, cn string) (certPEM, keyPEM []byte, keyDER []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), kd
}

func TestX509Credential(t *testing.T) {
	certPEM, keyPEM, keyDER := selfSigned(t, "device-42")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)

	for _, c := range []Credential{
		{Kind: KindX509, ReadFile: os.ReadFile, CertFile: certFile, KeyFile: keyFile},
		{Kind: KindX509, CertPEM: certPEM, KeyPEM: keyPEM},
	} {
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		cn, err := c.X509CommonName()
		if err != nil || cn != "device-42" {
			t.Errorf("CN = %q, %v", cn, err)
		}
	}

	//lint:ignore SA1019 testing legacy encrypted keys on purpose
	enc, err := x509.EncryptPEMBlock(rand.Reader, "EC PRIVATE KEY", keyDER, []byte("s3cret"), x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		t.Fatal(err)
	}
	encPEM := pem.EncodeToMemory(enc)
	good := Credential{Kind: KindX509, CertPEM: certPEM, KeyPEM: encPEM, Passphrase: "s3cret"}
	if _, err := good.TLSCertificate(); err != nil {
		t.Errorf("encrypted key with passphrase: %v", err)
	}
	for _, bad := range []Credential{
		{Kind: KindX509, CertPEM: certPEM, KeyPEM: encPEM, Passphrase: "n0tIt-x"},
		{Kind: KindX509, CertPEM: certPEM, KeyPEM: encPEM},
		{Kind: KindX509, ReadFile: os.ReadFile, CertFile: filepath.Join(dir, "missing.pem"), KeyFile: keyFile},
		{Kind: KindX509, CertPEM: []byte("junk"), KeyPEM: keyPEM},
		{Kind: KindX509, CertPEM: certPEM, KeyPEM: []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")},
		{Kind: KindDeviceKey, Key: docDerivedKey},
	} {
		_, err := bad.TLSCertificate()
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%v: err = %v, want ErrInvalidConfig", bad, err)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "n0tIt-x")) {
			t.Errorf("error leaks the passphrase: %v", err)
		}
	}
}
