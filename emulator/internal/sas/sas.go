// Package sas is the emulator's own handling of shared access signatures:
// parsing a token, checking its signature and expiry, deriving a device key
// from an enrollment group key, and (for tests and tools) building a token.
// It is written apart from the SDK's domain package on purpose, so that a
// mistake in one cannot hide behind the same mistake in the other; both are
// checked against vectors computed outside this code base (testdata).
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every token.
const Prefix = "SharedAccessSignature "

// Errors of this package; match them with errors.Is.
var (
	// ErrMalformed reports a token that cannot be parsed.
	ErrMalformed = errors.New("sas: malformed token")
	// ErrBadKey reports a key that is empty or not base64.
	ErrBadKey = errors.New("sas: key is not base64")
	// ErrBadSignature reports a signature that does not match the key.
	ErrBadSignature = errors.New("sas: signature does not match")
	// ErrExpired reports a token whose se is not after now.
	ErrExpired = errors.New("sas: token expired")
)

// Token is a parsed token. String never shows the signature.
type Token struct {
	// RawResource is sr exactly as sent; Resource is it percent-decoded.
	RawResource, Resource string
	// Expiry is se.
	Expiry time.Time
	// KeyName is skn, "" when absent.
	KeyName string

	rawExpiry string
	sig       []byte
}

// String describes the token without its signature.
func (t Token) String() string {
	return fmt.Sprintf("SAS(sr=%s se=%d skn=%s)", t.Resource, t.Expiry.Unix(), t.KeyName)
}

// Parse reads "SharedAccessSignature sr=..&sig=..&se=..[&skn=..]" with the
// fields in any order; other fields are ignored. Errors wrap ErrMalformed
// and never repeat the signature.
func Parse(token string) (Token, error) {
	var t Token
	rest, ok := strings.CutPrefix(strings.TrimSpace(token), "SharedAccessSignature")
	if !ok {
		return t, fmt.Errorf("%w: no SharedAccessSignature prefix", ErrMalformed)
	}
	rest = strings.TrimSpace(rest)
	got := map[string]string{}
	for _, field := range strings.Split(rest, "&") {
		name, value, ok := strings.Cut(field, "=")
		if !ok {
			return t, fmt.Errorf("%w: a field has no '='", ErrMalformed)
		}
		name = strings.ToLower(name)
		if name != "sr" && name != "sig" && name != "se" && name != "skn" {
			continue
		}
		if _, dup := got[name]; dup {
			return t, fmt.Errorf("%w: %s given twice", ErrMalformed, name)
		}
		got[name] = value
	}
	for _, name := range []string{"sr", "sig", "se"} {
		if _, ok := got[name]; !ok {
			return t, fmt.Errorf("%w: no %s", ErrMalformed, name)
		}
	}
	var err error
	t.RawResource = got["sr"]
	if t.Resource, err = url.QueryUnescape(got["sr"]); err != nil {
		return t, fmt.Errorf("%w: sr is not percent-encoded correctly", ErrMalformed)
	}
	// In sig a '+' is base64, not a space.
	sig, err := url.PathUnescape(got["sig"])
	if err != nil {
		return t, fmt.Errorf("%w: sig is not percent-encoded correctly", ErrMalformed)
	}
	if t.sig, err = base64.StdEncoding.DecodeString(sig); err != nil || len(t.sig) == 0 {
		return t, fmt.Errorf("%w: sig is not base64", ErrMalformed)
	}
	n, err := strconv.ParseInt(got["se"], 10, 64)
	if err != nil || n < 0 {
		return t, fmt.Errorf("%w: se is not a number of seconds", ErrMalformed)
	}
	t.Expiry, t.rawExpiry = time.Unix(n, 0), got["se"]
	if t.KeyName, err = url.QueryUnescape(got["skn"]); err != nil {
		return t, fmt.Errorf("%w: skn is not percent-encoded correctly", ErrMalformed)
	}
	return t, nil
}

func key(k string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k))
	if err != nil || len(b) == 0 {
		return nil, ErrBadKey
	}
	return b, nil
}

// ValidKey reports ErrBadKey for a key that is empty or not base64.
func ValidKey(k string) error {
	_, err := key(k)
	return err
}

func mac(k []byte, s string) []byte {
	h := hmac.New(sha256.New, k)
	h.Write([]byte(s))
	return h.Sum(nil)
}

// DeriveKey is the device key of a registration id under a group key:
// base64(HMAC-SHA256(base64decode(groupKey), registrationID)), the id
// taken byte for byte (case kept).
func DeriveKey(groupKey, registrationID string) (string, error) {
	k, err := key(groupKey)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(mac(k, registrationID)), nil
}

// Escape percent-encodes s as the SDKs encode sr: every byte but
// A-Z a-z 0-9 - _ . ~ becomes %XX (upper-case hex).
func Escape(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

// Verify checks the signature against the base64 key and the expiry
// against now. The signed string is sr, a newline and se as sent. sr counts
// as sent and in its canonical encodings (Escape, with upper- or lower-case
// hex), since the SDKs differ in how they encode it; a signature over the
// decoded resource of an encoded sr is refused. It returns ErrBadKey,
// ErrBadSignature or ErrExpired.
func (t Token) Verify(k string, now time.Time) error {
	kb, err := key(k)
	if err != nil {
		return err
	}
	enc := Escape(t.Resource)
	ok := false
	for _, sr := range []string{t.RawResource, enc, lowerHex(enc)} {
		if hmac.Equal(mac(kb, sr+"\n"+t.rawExpiry), t.sig) {
			ok = true
			break
		}
	}
	if !ok {
		return ErrBadSignature
	}
	if !t.Expiry.After(now) {
		return ErrExpired
	}
	return nil
}

// lowerHex rewrites the hex digits of %XX escapes in lower case.
func lowerHex(s string) string {
	b := []byte(s)
	for i := 0; i < len(b); i++ {
		if b[i] == '%' && i+2 < len(b) {
			for j := i + 1; j <= i+2; j++ {
				if 'A' <= b[j] && b[j] <= 'F' {
					b[j] += 'a' - 'A'
				}
			}
			i += 2
		}
	}
	return string(b)
}

// Names reports whether the decoded sr names resource, ignoring case and
// a trailing '/'.
func (t Token) Names(resource string) bool {
	return strings.EqualFold(strings.TrimSuffix(t.Resource, "/"), strings.TrimSuffix(resource, "/"))
}

// Build returns a token for resource signed with the base64 key: sr is the
// Escape form, signed as sent. keyName is added as skn unless "".
func Build(k, resource string, expiry time.Time, keyName string) (string, error) {
	kb, err := key(k)
	if err != nil {
		return "", err
	}
	sr := Escape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := base64.StdEncoding.EncodeToString(mac(kb, sr+"\n"+se))
	tok := Prefix + "sr=" + sr + "&sig=" + Escape(sig) + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + Escape(keyName)
	}
	return tok, nil
}

// HubResource is the audience of a device's hub token: "{host}/devices/{id}".
func HubResource(host, deviceID string) string { return host + "/devices/" + deviceID }

// DPSResource is the audience of a DPS token: "{scope}/registrations/{id}".
func DPSResource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// DPSKeyName is the skn DPS tokens carry.
const DPSKeyName = "registration"

// VerifyServiceBus checks the signature as Event Hubs and Service Bus
// sign it, with the key's text itself (not base64-decoded) as the HMAC
// key, over sr as sent or in the encodings Verify accepts; then the
// expiry. It returns ErrBadKey for an empty key, ErrBadSignature or
// ErrExpired.
func (t Token) VerifyServiceBus(k string, now time.Time) error {
	if k == "" {
		return ErrBadKey
	}
	enc := Escape(t.Resource)
	ok := false
	for _, sr := range []string{t.RawResource, enc, lowerHex(enc), strings.ToLower(enc)} {
		if hmac.Equal(mac([]byte(k), sr+"\n"+t.rawExpiry), t.sig) {
			ok = true
			break
		}
	}
	if !ok {
		return ErrBadSignature
	}
	if !t.Expiry.After(now) {
		return ErrExpired
	}
	return nil
}
