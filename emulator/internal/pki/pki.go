// Package pki issues the emulator's certificates: a CA, a TLS server
// certificate signed by it, and (for tests and tools) client certificates.
// Keys are ECDSA P-256.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names used in a certificate directory.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
)

// Issuer is a CA able to sign certificates.
type Issuer struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
}

// Bundle is what the emulator serves with.
type Bundle struct {
	CA *Issuer
	// CAFile is the path of the CA PEM clients should trust.
	CAFile string
	// Server is the TLS server certificate (leaf then CA).
	Server tls.Certificate
	// Reissued, when not "", says why the stored server certificate was
	// replaced by a new one from the same CA (for example "it is not valid
	// for vm").
	Reissued string
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// NewCA creates a self-signed CA valid for ten years.
func NewCA(commonName string) (*Issuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"iotc-go emulator"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA: %w", err)
	}
	kp, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Issuer{Cert: cert, Key: key, KeyPEM: kp, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Leaf is an issued certificate with its key.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM []byte // leaf only
	KeyPEM  []byte
	// TLS is the leaf plus the issuer chain, ready for tls.Config.
	TLS tls.Certificate
}

// IssueServer signs a server certificate valid for a year for hosts (DNS
// names or IP addresses).
func (ca *Issuer) IssueServer(hosts []string) (*Leaf, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "iotc-go emulator"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(hosts) > 0 {
		tmpl.Subject.CommonName = hosts[0]
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl, time.Now().AddDate(1, 0, 0))
}

// IssueClient signs a client certificate with the given common name (the
// device id for IoT Hub X.509 authentication), valid for validity.
func (ca *Issuer) IssueClient(commonName string, validity time.Duration) (*Leaf, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, time.Now().Add(validity))
}

func (ca *Issuer) issue(tmpl *x509.Certificate, notAfter time.Time) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	tmpl.SerialNumber = sn
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = notAfter
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse certificate: %w", err)
	}
	kp, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Leaf{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  kp,
		TLS:     tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: cert},
	}, nil
}

// LoadOrCreate reads ca.pem, ca-key.pem, server.pem and server-key.pem
// from dir, creating dir and whichever pair is missing (the server
// certificate covers hosts). Key files are written with mode 0600. It
// returns an error when a file exists but does not parse, or when the
// server certificate was not issued by the CA.
func LoadOrCreate(dir string, hosts []string) (*Bundle, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pki: create %s: %w", dir, err)
	}
	caPath, caKeyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	ca, err := loadIssuer(caPath, caKeyPath)
	if errors.Is(err, os.ErrNotExist) {
		if ca, err = NewCA("iotc-go emulator CA"); err != nil {
			return nil, err
		}
		if err := writeFiles(caPath, ca.CertPEM, caKeyPath, ca.KeyPEM); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	srvPath, srvKeyPath := filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile)
	srv, err := tls.LoadX509KeyPair(srvPath, srvKeyPath)
	switch {
	case err == nil:
		leaf, perr := x509.ParseCertificate(srv.Certificate[0])
		if perr != nil {
			return nil, fmt.Errorf("pki: parse %s: %w", srvPath, perr)
		}
		if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
			return nil, fmt.Errorf("pki: %s was not issued by %s: %w", srvPath, caPath, err)
		}
		if why := unfit(leaf, hosts, time.Now()); why != "" {
			// Reissued from the same CA, so devices that trust it keep working.
			nl, ierr := ca.IssueServer(hosts)
			if ierr != nil {
				return nil, ierr
			}
			if err := writeFiles(srvPath, nl.CertPEM, srvKeyPath, nl.KeyPEM); err != nil {
				return nil, err
			}
			return &Bundle{CA: ca, CAFile: caPath, Server: nl.TLS, Reissued: why}, nil
		}
		srv.Leaf = leaf
		if len(srv.Certificate) == 1 {
			srv.Certificate = append(srv.Certificate, ca.Cert.Raw)
		}
	case errors.Is(err, os.ErrNotExist):
		leaf, ierr := ca.IssueServer(hosts)
		if ierr != nil {
			return nil, ierr
		}
		if err := writeFiles(srvPath, leaf.CertPEM, srvKeyPath, leaf.KeyPEM); err != nil {
			return nil, err
		}
		srv = leaf.TLS
	default:
		return nil, fmt.Errorf("pki: load %s: %w", srvPath, err)
	}
	return &Bundle{CA: ca, CAFile: caPath, Server: srv}, nil
}

// renewBefore is how long before its expiry a server certificate is reissued.
const renewBefore = 7 * 24 * time.Hour

// unfit says why a stored server certificate cannot serve hosts at now
// (a host it does not name, expired or about to expire), "" when it can.
func unfit(leaf *x509.Certificate, hosts []string, now time.Time) string {
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if err := leaf.VerifyHostname(h); err != nil {
			return fmt.Sprintf("it is not valid for %s", h)
		}
	}
	if now.Add(renewBefore).After(leaf.NotAfter) {
		return "it expires on " + leaf.NotAfter.UTC().Format(time.DateOnly)
	}
	return ""
}

func loadIssuer(certPath, keyPath string) (*Issuer, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load %s: %w", certPath, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("pki: parse %s: %w", certPath, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("pki: %s: only ECDSA CA keys are supported", keyPath)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", certPath)
	}
	return &Issuer{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

func writeFiles(certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("pki: write %s: %w", keyPath, err)
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("pki: write %s: %w", certPath, err)
	}
	return nil
}

// ParseCertificates decodes every CERTIFICATE block of pemData. It returns
// an error when there is none or one does not parse.
func ParseCertificates(pemData []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, pemData = pem.Decode(pemData)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("pki: no CERTIFICATE block in PEM data")
	}
	return out, nil
}

// EncodeCertificate returns the PEM encoding of c.
func EncodeCertificate(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
