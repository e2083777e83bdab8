// Package sastest verifies SAS tokens as a hub does, for the SDK's test
// doubles (the app tests' mocked hub). The SDK only builds and reads
// tokens (package domain); checking a signature is the service's job, and
// the emulator has its own implementation, so that a bug cannot hide by
// being on both sides.
package sastest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/iotc-go/iotc/domain"
)

// ErrBadSignature reports a SAS token whose signature does not match the
// key.
var ErrBadSignature = errors.New("SAS token signature does not match")

// Verify checks t's signature with the base64 key and its expiry against
// now. The HMAC is computed over sr exactly as it appears in the token;
// the decoded, lowercase-hex and uppercase-hex forms are also accepted,
// because the official SDKs disagree on how to encode sr. It returns
// domain.ErrInvalidKey, ErrBadSignature or domain.ErrTokenExpired.
func Verify(t domain.SASToken, key string, now time.Time) error {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key))
	if err != nil || len(k) == 0 {
		return domain.ErrInvalidKey
	}
	got, err := base64.StdEncoding.DecodeString(t.Signature)
	if err != nil {
		return ErrBadSignature
	}
	se := t.RawExpiry
	if se == "" {
		se = strconv.FormatInt(t.Expiry.Unix(), 10)
	}
	enc := domain.EscapeComponent(t.Resource)
	ok := false
	for _, sr := range []string{t.RawResource, t.Resource, enc, lowerHexEscapes(enc)} {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(sr + "\n" + se))
		if hmac.Equal(m.Sum(nil), got) {
			ok = true
			break
		}
	}
	if !ok {
		return ErrBadSignature
	}
	if !t.Expiry.After(now) {
		return domain.ErrTokenExpired
	}
	return nil
}

// MatchesResource reports whether t's decoded sr names resource, ignoring
// case and a trailing slash.
func MatchesResource(t domain.SASToken, resource string) bool {
	a := strings.TrimSuffix(t.Resource, "/")
	b := strings.TrimSuffix(resource, "/")
	return strings.EqualFold(a, b)
}

// lowerHexEscapes rewrites %2F style escapes to %2f, as the C SDK encodes.
func lowerHexEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			for j := i + 1; j <= i+2; j++ {
				if b[j] >= 'A' && b[j] <= 'F' {
					b[j] += 'a' - 'A'
				}
			}
			i += 2
		}
	}
	return string(b)
}
