package core

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/iotc-go/iotc/emulator/internal/pki"
	"github.com/iotc-go/iotc/emulator/internal/sas"
)

// RandomKey returns a random 64-byte base64 symmetric key.
func RandomKey() string {
	b := make([]byte, 64)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewUUID returns a random RFC 4122 version 4 UUID string.
func NewUUID() string {
	h := []byte(RandomHex(16))
	h[12] = '4'
	h[16] = "89ab"[h[16]%4]
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}

func deriveKey(groupKey, id string) (string, error) { return sas.DeriveKey(groupKey, id) }

// ValidID checks an IoT Hub device id (also used for groups): 1..128 ASCII
// letters, digits and - . % _ * ? ! ( ) , : = @ $ ' (no '/', '+' or '#',
// which would break MQTT topics), and never "." or ".." (IoT Hub refuses
// them: they would name a path segment, not a device). Errors wrap
// ErrInvalid.
func ValidID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: id must be 1..128 characters", ErrInvalid)
	}
	if id == "." || id == ".." {
		return fmt.Errorf("%w: id %q is not allowed", ErrInvalid, id)
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-.%_*?!(),:=@$'", r):
		default:
			return fmt.Errorf("%w: id %q has character %q", ErrInvalid, id, r)
		}
	}
	return nil
}

// NormalizeGroup validates g and fills its defaults (display name, missing
// symmetric keys). Errors wrap ErrInvalid.
func NormalizeGroup(g EnrollmentGroup) (EnrollmentGroup, error) {
	if err := ValidID(g.ID); err != nil {
		return g, fmt.Errorf("enrollment group: %w", err)
	}
	if g.DisplayName == "" {
		g.DisplayName = g.ID
	}
	if g.ETag == "" {
		g.ETag = newETag()
	}
	switch g.Type {
	case "":
		g.Type = GroupTypeIoT
	case GroupTypeIoT, GroupTypeIoTEdge:
	default:
		return g, fmt.Errorf("%w: enrollment group %s: type %q is neither %q nor %q", ErrInvalid, g.ID, g.Type, GroupTypeIoT, GroupTypeIoTEdge)
	}
	if g.IsX509() {
		if _, err := pki.ParseCertificates(g.CACertPEM); err != nil {
			return g, fmt.Errorf("%w: enrollment group %s: %v", ErrInvalid, g.ID, err)
		}
		g.CACertPEM = append([]byte(nil), g.CACertPEM...)
		g.PrimaryKey, g.SecondaryKey = "", ""
		return g, nil
	}
	if g.PrimaryKey == "" {
		g.PrimaryKey = RandomKey()
	}
	if g.SecondaryKey == "" {
		g.SecondaryKey = RandomKey()
	}
	for _, k := range []string{g.PrimaryKey, g.SecondaryKey} {
		if err := sas.ValidKey(k); err != nil {
			return g, fmt.Errorf("%w: enrollment group %s: key is not base64", ErrInvalid, g.ID)
		}
	}
	return g, nil
}
