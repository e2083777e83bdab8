package main

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotc-go/iotc/domain"
)

const (
	rootName  = "root-ca"
	interName = "intermediate-ca"
)

func (c *common) path(name string) string { return filepath.Join(c.out, name) }

// validID checks a device id as IoT Hub does (letters, digits and
// - . _ : ; at most 128), so that no file name can escape -out.
func validID(id string) error {
	if id == "" {
		return errors.New("-id is required: the device id, which becomes the certificate's CN")
	}
	if len(id) > 128 {
		return errors.New("-id: at most 128 characters")
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._:", r)) {
			return fmt.Errorf("-id %q: only letters, digits and - . _ : are allowed", id)
		}
	}
	if id == "." || id == ".." || strings.HasSuffix(id, ".") {
		return fmt.Errorf("-id %q: must not end with a dot", id)
	}
	return nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
}

// issue signs a certificate for a new P-256 key. parent and parentKey nil
// make it self-signed.
func issue(tmpl *x509.Certificate, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, nil, err
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func caTemplate(cn string, days, pathLen int) *x509.Certificate {
	now := time.Now().Add(-5 * time.Minute)
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now,
		NotAfter:              now.Add(time.Duration(days) * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
}

func leafTemplate(cn string, days int) *x509.Certificate {
	now := time.Now().Add(-5 * time.Minute)
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now,
		NotAfter:              now.Add(time.Duration(days) * 24 * time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

func makeCA(dir, cn string, inter bool, days int, pass string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	pathLen := 0
	if inter {
		pathLen = 1
	}
	root, rootKey, err := issue(caTemplate(cn, days, pathLen), nil, nil)
	if err != nil {
		return nil, err
	}
	var files []string
	if err := writePair(dir, rootName, []*x509.Certificate{root}, rootKey, pass, &files); err != nil {
		return nil, err
	}
	// A stale intermediate signed by an older root would make devices fail.
	_ = os.Remove(filepath.Join(dir, interName+".pem"))
	_ = os.Remove(filepath.Join(dir, interName+".key"))
	if inter {
		ic, ik, err := issue(caTemplate(cn+" intermediate", days, 0), root, rootKey)
		if err != nil {
			return nil, err
		}
		if err := writePair(dir, interName, []*x509.Certificate{ic}, ik, pass, &files); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// signer loads the CA that signs devices: the intermediate if present.
func signer(dir, pass string) (certs []*x509.Certificate, key crypto.Signer, err error) {
	name := interName
	if _, err := os.Stat(filepath.Join(dir, interName+".pem")); err != nil {
		name = rootName
	}
	return loadPair(dir, name, pass)
}

func makeDevice(dir, id string, days int, pass string) ([]string, error) {
	ca, caKey, err := signer(dir, pass)
	if err != nil {
		return nil, err
	}
	cert, key, err := issue(leafTemplate(id, days), ca[0], caKey)
	if err != nil {
		return nil, err
	}
	chain := []*x509.Certificate{cert}
	if !isSelfSigned(ca[0]) {
		chain = append(chain, ca[0])
	}
	var files []string
	return files, writePair(dir, id, chain, key, pass, &files)
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil && string(c.RawIssuer) == string(c.RawSubject)
}

func makeVerification(dir, ca, code string, days int, pass string) (string, error) {
	certs, key, err := loadPair(dir, ca, pass)
	if err != nil {
		return "", err
	}
	tmpl := leafTemplate(code, days)
	tmpl.ExtKeyUsage = nil
	cert, _, err := issue(tmpl, certs[0], key)
	if err != nil {
		return "", err
	}
	f := filepath.Join(dir, "verification.pem")
	return f, os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
}

func writePair(dir, name string, chain []*x509.Certificate, key *ecdsa.PrivateKey, pass string, files *[]string) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	block := &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	if pass != "" {
		enc, err := encryptPKCS8(der, pass)
		if err != nil {
			return err
		}
		block = &pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: enc}
	}
	kf := filepath.Join(dir, name+".key")
	// Remove first: WriteFile keeps the mode of an existing file.
	_ = os.Remove(kf)
	if err := os.WriteFile(kf, pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	var certPEM []byte
	for _, c := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	cf := filepath.Join(dir, name+".pem")
	if err := os.WriteFile(cf, certPEM, 0o644); err != nil {
		return err
	}
	*files = append(*files, cf, kf)
	return nil
}

func loadPair(dir, name, pass string) ([]*x509.Certificate, crypto.Signer, error) {
	cf, kf := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	cred := domain.Credential{Kind: domain.KindX509, CertFile: cf, KeyFile: kf, ReadFile: os.ReadFile, Passphrase: pass}
	tc, err := cred.TLSCertificate()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("no CA in %s: run `iotc-certs ca -out %s` first", dir, dir)
		}
		return nil, nil, fmt.Errorf("load %s: %w", name, err)
	}
	var certs []*x509.Certificate
	for _, der := range tc.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("load %s: %w", name, err)
		}
		certs = append(certs, c)
	}
	key, ok := tc.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("load %s: the key cannot sign", name)
	}
	return certs, key, nil
}

// encryptPKCS8 wraps a PKCS#8 DER key in an EncryptedPrivateKeyInfo with
// PBES2: PBKDF2-HMAC-SHA256 (100,000 iterations; OpenSSL writes 2048, 16-byte salt) and
// AES-256-CBC, which `openssl pkey -passin` and domain.DecryptPKCS8 read.
func encryptPKCS8(der []byte, pass string) ([]byte, error) {
	salt := make([]byte, 16)
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	const iter = 100_000
	key, err := pbkdf2.Key(sha256.New, pass, salt, iter, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	n := aes.BlockSize - len(der)%aes.BlockSize
	plain := append(append([]byte(nil), der...), make([]byte, n)...)
	for i := len(der); i < len(plain); i++ {
		plain[i] = byte(n)
	}
	ct := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, plain)

	type algo struct {
		Algorithm  asn1.ObjectIdentifier
		Parameters asn1.RawValue `asn1:"optional"`
	}
	raw := func(v any) (asn1.RawValue, error) {
		b, err := asn1.Marshal(v)
		return asn1.RawValue{FullBytes: b}, err
	}
	null := asn1.RawValue{FullBytes: []byte{5, 0}}
	kdfParams, err := raw(struct {
		Salt      []byte
		Iter      int
		KeyLength int
		PRF       algo
	}{salt, iter, 32, algo{asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}, null}})
	if err != nil {
		return nil, err
	}
	ivRaw, err := raw(iv)
	if err != nil {
		return nil, err
	}
	pbes2, err := raw(struct{ KDF, Enc algo }{
		algo{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}, kdfParams},
		algo{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}, ivRaw},
	})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		Algo algo
		Data []byte
	}{algo{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}, pbes2}, ct})
}
