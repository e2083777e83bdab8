package domain

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// CredentialKind says how a device proves its identity.
type CredentialKind int

// Credential kinds. The values of the first three match the Python iotc
// IOTCConnectType for parity.
const (
	// KindGroupKey is a symmetric enrollment-group key; the device key is
	// derived from it and the registration id.
	KindGroupKey CredentialKind = 1
	// KindX509 is an X.509 client certificate.
	KindX509 CredentialKind = 2
	// KindDeviceKey is the device's own symmetric key.
	KindDeviceKey CredentialKind = 3
	// KindConnectionString is a hub connection string; DPS is skipped.
	KindConnectionString CredentialKind = 4
)

func (k CredentialKind) String() string {
	switch k {
	case KindGroupKey:
		return "group key"
	case KindX509:
		return "x509"
	case KindDeviceKey:
		return "device key"
	case KindConnectionString:
		return "connection string"
	}
	return fmt.Sprintf("CredentialKind(%d)", int(k))
}

// Credential is the secret a device connects with. Its String and
// GoString methods never print the secret.
type Credential struct {
	Kind CredentialKind
	// Key is the base64 group or device key (KindGroupKey, KindDeviceKey).
	Key string
	// CertFile and KeyFile are PEM file paths (KindX509), read with
	// ReadFile at every connection (a certificate renewed on disk is
	// picked up at the next one).
	CertFile, KeyFile string
	// ReadFile reads CertFile and KeyFile; the composition root (package
	// iotc) sets os.ReadFile: domain itself touches no file. Required
	// with CertFile or KeyFile.
	ReadFile func(name string) ([]byte, error)
	// CertPEM and KeyPEM are PEM contents, used when the files are empty.
	CertPEM, KeyPEM []byte
	// Passphrase decrypts an encrypted key: PKCS#8 "ENCRYPTED PRIVATE KEY"
	// (PBES2, OpenSSL 3's default) or legacy "Proc-Type: 4,ENCRYPTED" PEM.
	Passphrase string
	// ConnectionString is "HostName=...;DeviceId=...;SharedAccessKey=..."
	// or "HostName=...;DeviceId=...;x509=true" with the certificate in the
	// X.509 fields (KindConnectionString).
	ConnectionString string
}

// String describes the credential without its secret.
func (c Credential) String() string {
	switch c.Kind {
	case KindX509:
		if c.CertFile != "" {
			return "x509(" + c.CertFile + ")"
		}
		return "x509(pem)"
	case 0:
		return "none"
	}
	return c.Kind.String() + "(<redacted>)"
}

// GoString keeps %#v from printing the secret.
func (c Credential) GoString() string { return c.String() }

// Validate checks that the credential is usable: a base64 key for key
// kinds, a certificate and key for X.509, a parsable connection string.
// Errors wrap ErrInvalidConfig (and ErrInvalidKey for bad keys).
func (c Credential) Validate() error {
	switch c.Kind {
	case KindGroupKey, KindDeviceKey:
		if err := ValidateKey(c.Key); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalidConfig, c.Kind, err)
		}
	case KindX509:
		if !c.hasCertAndKey() {
			return fmt.Errorf("%w: x509 needs a certificate and a key, as files or PEM", ErrInvalidConfig)
		}
	case KindConnectionString:
		cs, err := ParseConnectionString(c.ConnectionString)
		if err != nil {
			return err
		}
		if cs.X509 && !c.hasCertAndKey() {
			return fmt.Errorf("%w: an x509=true connection string needs a certificate and a key, as files or PEM", ErrInvalidConfig)
		}
		if !cs.X509 && (c.CertFile != "" || len(c.CertPEM) > 0) {
			return fmt.Errorf("%w: a certificate was given but the connection string has no x509=true", ErrInvalidConfig)
		}
	default:
		return fmt.Errorf("%w: no credential", ErrInvalidConfig)
	}
	return nil
}

// DeviceKey returns the symmetric key the device signs with: the derived
// key for a group key, the key itself for a device key or connection
// string. It never changes c, so a group key can be derived again for
// re-provisioning.
func (c Credential) DeviceKey(registrationID string) (string, error) {
	switch c.Kind {
	case KindGroupKey:
		return DeriveDeviceKey(c.Key, registrationID)
	case KindDeviceKey:
		return c.Key, ValidateKey(c.Key)
	case KindConnectionString:
		cs, err := ParseConnectionString(c.ConnectionString)
		if err != nil {
			return "", err
		}
		if cs.X509 {
			return "", fmt.Errorf("%w: an x509=true connection string has no symmetric key", ErrInvalidConfig)
		}
		return cs.SharedAccessKey, ValidateKey(cs.SharedAccessKey)
	}
	return "", fmt.Errorf("%w: %s has no symmetric key", ErrInvalidConfig, c.Kind)
}

// hasCertAndKey: exactly one of file and PEM for each.
func (c Credential) hasCertAndKey() bool {
	return (c.CertFile == "") != (len(c.CertPEM) == 0) && (c.KeyFile == "") != (len(c.KeyPEM) == 0)
}

// UsesX509 reports whether the device authenticates with a client
// certificate: an X.509 credential, or a connection string with
// x509=true (whose certificate and key are in CertFile/KeyFile or
// CertPEM/KeyPEM).
func (c Credential) UsesX509() bool {
	if c.Kind == KindX509 {
		return true
	}
	if c.Kind != KindConnectionString {
		return false
	}
	cs, err := ParseConnectionString(c.ConnectionString)
	return err == nil && cs.X509
}

// TLSCertificate loads the X.509 client certificate and key. An encrypted
// key, PKCS#8 PBES2 ("ENCRYPTED PRIVATE KEY", see DecryptPKCS8) or legacy
// PEM ("Proc-Type: 4,ENCRYPTED"), is decrypted with Passphrase.
// Errors wrap ErrInvalidConfig and never contain key material.
func (c Credential) TLSCertificate() (tls.Certificate, error) {
	if !c.UsesX509() {
		return tls.Certificate{}, fmt.Errorf("%w: %s is not an x509 credential", ErrInvalidConfig, c.Kind)
	}
	certPEM, keyPEM := c.CertPEM, c.KeyPEM
	var err error
	if (c.CertFile != "" || c.KeyFile != "") && c.ReadFile == nil {
		return tls.Certificate{}, fmt.Errorf("%w: certificate files given without a ReadFile to read them", ErrInvalidConfig)
	}
	if c.CertFile != "" {
		if certPEM, err = c.ReadFile(c.CertFile); err != nil {
			return tls.Certificate{}, fmt.Errorf("%w: read certificate: %w", ErrInvalidConfig, err)
		}
	}
	if c.KeyFile != "" {
		if keyPEM, err = c.ReadFile(c.KeyFile); err != nil {
			return tls.Certificate{}, fmt.Errorf("%w: read key: %w", ErrInvalidConfig, err)
		}
	}
	keyPEM, err = decryptKeyPEM(keyPEM, c.Passphrase)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: x509 key pair: %v", ErrInvalidConfig, err)
	}
	return cert, nil
}

func decryptKeyPEM(keyPEM []byte, passphrase string) ([]byte, error) {
	var out []byte
	rest := keyPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		//lint:ignore SA1019 legacy encrypted PEM keys are what devices ship with
		if x509.IsEncryptedPEMBlock(block) { //nolint:staticcheck
			if passphrase == "" {
				return nil, fmt.Errorf("%w: the private key is encrypted and no passphrase was given", ErrInvalidConfig)
			}
			der, err := x509.DecryptPEMBlock(block, []byte(passphrase)) //nolint:staticcheck
			if err != nil {
				if errors.Is(err, x509.IncorrectPasswordError) {
					return nil, fmt.Errorf("%w: wrong passphrase for the private key", ErrInvalidConfig)
				}
				return nil, fmt.Errorf("%w: decrypt private key: %v", ErrInvalidConfig, err)
			}
			block = &pem.Block{Type: block.Type, Bytes: der}
		} else if block.Type == "ENCRYPTED PRIVATE KEY" {
			der, err := DecryptPKCS8(block.Bytes, passphrase)
			if err != nil {
				return nil, err
			}
			block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
		}
		out = append(out, pem.EncodeToMemory(block)...)
	}
	if out == nil {
		return keyPEM, nil
	}
	return out, nil
}

// X509CommonName returns the subject CN of the first certificate of an
// X.509 credential: the registration and device id IoT Hub expects.
func (c Credential) X509CommonName() (string, error) {
	cert, err := c.TLSCertificate()
	if err != nil {
		return "", err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return "", fmt.Errorf("%w: parse certificate: %v", ErrInvalidConfig, err)
	}
	return leaf.Subject.CommonName, nil
}

// ConnectionString is a parsed device connection string.
type ConnectionString struct {
	HostName        string
	DeviceID        string
	ModuleID        string
	SharedAccessKey string
	X509            bool
}

// String never prints the key.
func (c ConnectionString) String() string {
	s := "HostName=" + c.HostName + ";DeviceId=" + c.DeviceID
	if c.ModuleID != "" {
		s += ";ModuleId=" + c.ModuleID
	}
	if c.X509 {
		return s + ";x509=true"
	}
	return s + ";SharedAccessKey=<redacted>"
}

// ParseConnectionString parses "HostName=h;DeviceId=d;SharedAccessKey=k"
// (keys case-insensitive, any order; x509=true instead of a key). Errors
// wrap ErrInvalidConfig and never contain the key.
func ParseConnectionString(s string) (ConnectionString, error) {
	var cs ConnectionString
	for _, part := range strings.Split(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return cs, fmt.Errorf("%w: connection string segment without '='", ErrInvalidConfig)
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "hostname":
			cs.HostName = v
		case "deviceid":
			cs.DeviceID = v
		case "moduleid":
			cs.ModuleID = v
		case "sharedaccesskey":
			cs.SharedAccessKey = v
		case "x509":
			cs.X509 = strings.EqualFold(v, "true")
		}
	}
	if cs.HostName == "" || cs.DeviceID == "" {
		return cs, fmt.Errorf("%w: connection string needs HostName and DeviceId", ErrInvalidConfig)
	}
	if cs.SharedAccessKey == "" && !cs.X509 {
		return cs, fmt.Errorf("%w: connection string needs SharedAccessKey or x509=true", ErrInvalidConfig)
	}
	return cs, nil
}
