package domain

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const vectorPass = "correct horse"

func readVector(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "pkcs8", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// plainDER is the unencrypted PKCS#8 DER of a plain vector key (which
// OpenSSL 3 writes as "PRIVATE KEY").
func plainDER(t *testing.T, name string) []byte {
	t.Helper()
	b, _ := pem.Decode(readVector(t, name))
	if b == nil || b.Type != "PRIVATE KEY" {
		t.Fatalf("%s: not a PKCS#8 PEM key", name)
	}
	return b.Bytes
}

// TestDecryptPKCS8OpenSSLVectors decrypts keys written by OpenSSL 3
// (testdata/pkcs8/gen.sh) and compares them with the plain originals.
func TestDecryptPKCS8OpenSSLVectors(t *testing.T) {
	for _, tc := range []struct{ file, plain string }{
		{"ec-pkcs8-aes256.key", "ec-plain.key"},        // openssl pkcs8 -topk8 -v2 aes-256-cbc
		{"ec-genpkey-aes256.key", ""},                  // openssl genpkey -aes256
		{"rsa-pkcs8-aes256.key", "rsa-plain.key"},      // RSA, same recipe
		{"rsa-genpkey-aes256.key", "rsa-plain.key"},    // openssl pkey -aes256
		{"ec-pkcs8-aes128-sha1.key", "ec-plain.key"},   // -v2 aes-128-cbc -v2prf hmacWithSHA1
		{"ec-pkcs8-aes192-sha512.key", "ec-plain.key"}, // -v2 aes-192-cbc -v2prf hmacWithSHA512
		{"ec-pkcs8-des3.key", "ec-plain.key"},          // -v2 des3
	} {
		t.Run(tc.file, func(t *testing.T) {
			block, _ := pem.Decode(readVector(t, tc.file))
			if block == nil || block.Type != "ENCRYPTED PRIVATE KEY" {
				t.Fatalf("not an encrypted PKCS#8 PEM")
			}
			der, err := DecryptPKCS8(block.Bytes, vectorPass)
			if err != nil {
				t.Fatalf("DecryptPKCS8: %v", err)
			}
			if _, err := x509.ParsePKCS8PrivateKey(der); err != nil {
				t.Fatalf("decrypted key does not parse: %v", err)
			}
			if tc.plain != "" && !bytes.Equal(der, plainDER(t, tc.plain)) {
				t.Errorf("decrypted key differs from %s", tc.plain)
			}
			for _, wrong := range []string{"correct horsf", "", "Correct horse"} {
				_, err := DecryptPKCS8(block.Bytes, wrong)
				if !errors.Is(err, ErrInvalidConfig) {
					t.Errorf("passphrase %q: err = %v, want ErrInvalidConfig", wrong, err)
				}
				if err != nil && wrong != "" && strings.Contains(err.Error(), wrong) {
					t.Errorf("error leaks the passphrase: %v", err)
				}
			}
		})
	}
}

// TestX509CredentialPKCS8 loads the OpenSSL-written encrypted keys through
// the credential, from files and PEM, with clear errors otherwise.
func TestX509CredentialPKCS8(t *testing.T) {
	dir := filepath.Join("testdata", "pkcs8")
	for _, key := range []string{"ec-pkcs8-aes256.key", "ec-genpkey-aes256.key"} {
		certFile := filepath.Join(dir, "ec-cert.pem")
		if key == "ec-genpkey-aes256.key" {
			// Not the certificate's key: the pair must be refused after
			// decrypting, which proves decryption ran.
			c := Credential{Kind: KindX509, ReadFile: os.ReadFile, CertFile: certFile, KeyFile: filepath.Join(dir, key), Passphrase: vectorPass}
			if _, err := c.TLSCertificate(); err == nil || !strings.Contains(err.Error(), "key pair") {
				t.Errorf("%s with another certificate: err = %v, want a key pair mismatch", key, err)
			}
			continue
		}
		c := Credential{Kind: KindX509, ReadFile: os.ReadFile, CertFile: certFile, KeyFile: filepath.Join(dir, key), Passphrase: vectorPass}
		if _, err := c.TLSCertificate(); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		cn, err := c.X509CommonName()
		if err != nil || cn != "pkcs8-device" {
			t.Errorf("CN = %q, %v", cn, err)
		}
		pc := Credential{Kind: KindX509, CertPEM: readVector(t, "ec-cert.pem"), KeyPEM: readVector(t, key), Passphrase: vectorPass}
		if _, err := pc.TLSCertificate(); err != nil {
			t.Errorf("PEM: %v", err)
		}
		for pass, want := range map[string]string{"": "no passphrase", "nope-nope": "wrong passphrase"} {
			c.Passphrase = pass
			_, err := c.TLSCertificate()
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
				t.Errorf("passphrase %q: err = %v, want %q", pass, err, want)
			}
		}
	}
	for key, want := range map[string]string{
		"ec-pkcs8-scrypt.key": "scrypt",
		"ec-pkcs8-v1.key":     "only PBES2",
	} {
		c := Credential{Kind: KindX509, ReadFile: os.ReadFile, CertFile: filepath.Join(dir, "ec-cert.pem"), KeyFile: filepath.Join(dir, key), Passphrase: vectorPass}
		_, err := c.TLSCertificate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig mentioning %q", key, err, want)
		}
	}
}

// TestDecryptPKCS8LiveOpenSSL encrypts a fresh key with the openssl on
// this machine (CI has OpenSSL 3) in its default format and decrypts it,
// so the stored vectors cannot drift from what openssl writes today.
func TestDecryptPKCS8LiveOpenSSL(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is needed by this test (CI installs it): %v", err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "k.pem")
	cmd := exec.Command(bin, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes-256-cbc", "-pass", "pass:"+vectorPass, "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, b)
	}
	block, _ := pem.Decode(readFile(t, out))
	if block == nil || block.Type != "ENCRYPTED PRIVATE KEY" {
		t.Fatalf("openssl did not write an encrypted PKCS#8 key")
	}
	if _, err := DecryptPKCS8(block.Bytes, vectorPass); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecryptPKCS8Malformed(t *testing.T) {
	block, _ := pem.Decode(readVector(t, "ec-pkcs8-aes256.key"))
	good := block.Bytes
	cases := map[string][]byte{
		"empty":     nil,
		"junk":      []byte("not asn1"),
		"truncated": good[:len(good)-7],
		"trailing":  append(append([]byte(nil), good...), 0),
	}
	for name, der := range cases {
		if _, err := DecryptPKCS8(der, vectorPass); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
	// Flip a ciphertext byte in the last block: the padding or the parse
	// fails, reported as a wrong passphrase or damaged file.
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0x55
	if _, err := DecryptPKCS8(bad, vectorPass); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("damaged: err = %v", err)
	}
}

func FuzzDecryptPKCS8(f *testing.F) {
	for _, n := range []string{"ec-pkcs8-aes256.key", "ec-pkcs8-des3.key", "ec-pkcs8-scrypt.key"} {
		b, err := os.ReadFile(filepath.Join("testdata", "pkcs8", n))
		if err != nil {
			f.Fatal(err)
		}
		block, _ := pem.Decode(b)
		f.Add(block.Bytes)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		// Never panics; errors always wrap ErrInvalidConfig.
		if _, err := DecryptPKCS8(der, vectorPass); err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestX509ConnectionString: "x509=true" plus a certificate is an X.509
// credential with no symmetric key; without a certificate, or a
// certificate with a SAS connection string, it is refused.
func TestX509ConnectionString(t *testing.T) {
	dir := filepath.Join("testdata", "pkcs8")
	cs := "HostName=hub.example.net;DeviceId=pkcs8-device;x509=true"
	c := Credential{Kind: KindConnectionString, ConnectionString: cs,
		ReadFile: os.ReadFile, CertFile: filepath.Join(dir, "ec-cert.pem"), KeyFile: filepath.Join(dir, "ec-pkcs8-aes256.key"), Passphrase: vectorPass}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !c.UsesX509() {
		t.Error("UsesX509 = false")
	}
	if _, err := c.TLSCertificate(); err != nil {
		t.Errorf("TLSCertificate: %v", err)
	}
	if _, err := c.DeviceKey("pkcs8-device"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("DeviceKey: err = %v, want ErrInvalidConfig", err)
	}
	for _, bad := range []Credential{
		{Kind: KindConnectionString, ConnectionString: cs},
		{Kind: KindConnectionString, ConnectionString: cs, ReadFile: os.ReadFile, CertFile: c.CertFile},
		{Kind: KindConnectionString, ConnectionString: "HostName=h;DeviceId=d;SharedAccessKey=" + docDerivedKey, ReadFile: os.ReadFile, CertFile: c.CertFile, KeyFile: c.KeyFile},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%v: Validate = %v, want ErrInvalidConfig", bad, err)
		}
	}
	sas := Credential{Kind: KindConnectionString, ConnectionString: "HostName=h;DeviceId=d;SharedAccessKey=" + docDerivedKey}
	if sas.UsesX509() || (Credential{Kind: KindDeviceKey}).UsesX509() {
		t.Error("UsesX509 = true for a SAS credential")
	}
}
