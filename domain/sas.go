package domain

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SASPrefix starts every shared access signature token.
const SASPrefix = "SharedAccessSignature "

// DPSKeyName is the skn value the device SDKs send with provisioning tokens.
const DPSKeyName = "registration"

// DefaultTokenTTL is the lifetime of the SAS tokens the SDK mints when no
// other TTL is configured: one hour, as in the official device SDKs.
const DefaultTokenTTL = time.Hour

func decodeKey(key string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key))
	if err != nil || len(k) == 0 {
		return nil, ErrInvalidKey
	}
	return k, nil
}

func sign(key []byte, data string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// DeriveDeviceKey derives the device key of registrationID from a
// symmetric-key enrollment group key: base64(HMAC-SHA256(base64-decode(groupKey),
// registrationID)). It returns ErrInvalidKey when groupKey is not base64.
func DeriveDeviceKey(groupKey, registrationID string) (string, error) {
	k, err := decodeKey(groupKey)
	if err != nil {
		return "", err
	}
	return sign(k, registrationID), nil
}

// ValidateKey reports ErrInvalidKey when key is not a non-empty base64 string.
func ValidateKey(key string) error {
	_, err := decodeKey(key)
	return err
}

// HubResource is the SAS resource (audience) of a device on an IoT hub:
// "{host}/devices/{deviceID}".
func HubResource(host, deviceID string) string { return host + "/devices/" + deviceID }

// DPSResource is the SAS resource of a registration at the Device
// Provisioning Service: "{idScope}/registrations/{registrationID}".
func DPSResource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// EscapeComponent percent-encodes s for a query string or a SAS field the
// way the Node and Python SDKs do: uppercase hex, space as %20.
func EscapeComponent(s string) string {
	if escapedLen(s) == len(s) {
		return s
	}
	var sb strings.Builder
	sb.Grow(escapedLen(s))
	writeEscaped(&sb, s)
	return sb.String()
}

// unreserved reports whether b is sent as is by EscapeComponent (RFC 3986
// unreserved characters); every other byte becomes %XX.
func unreserved(b byte) bool { return unreservedTable[b] }

var unreservedTable = func() (t [256]bool) {
	for b := range 256 {
		t[b] = 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
			b == '-' || b == '_' || b == '.' || b == '~'
	}
	return t
}()

// escapedLen is len(EscapeComponent(s)).
func escapedLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			n += 2
		}
	}
	return n
}

// writeEscaped writes EscapeComponent(s) to sb.
func writeEscaped(sb *strings.Builder, s string) {
	const hex = "0123456789ABCDEF"
	start := 0
	for i := 0; i < len(s); i++ {
		if unreserved(s[i]) {
			continue
		}
		sb.WriteString(s[start:i])
		sb.WriteByte('%')
		sb.WriteByte(hex[s[i]>>4])
		sb.WriteByte(hex[s[i]&0x0f])
		start = i + 1
	}
	sb.WriteString(s[start:])
}

// BuildSAS returns a SAS token for resource signed with the base64 key,
// valid until expiry. The resource is URL-encoded in the token (sr) and the
// signature is computed over that encoded form, as the docs show. keyName
// is added as skn when not empty. It returns ErrInvalidKey for a bad key.
func BuildSAS(key, resource string, expiry time.Time, keyName string) (string, error) {
	k, err := decodeKey(key)
	if err != nil {
		return "", err
	}
	sr := EscapeComponent(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	tok := SASPrefix + "sr=" + sr + "&sig=" + EscapeComponent(sign(k, sr+"\n"+se)) + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + EscapeComponent(keyName)
	}
	return tok, nil
}

// SASToken is a parsed shared access signature.
type SASToken struct {
	// RawResource is sr exactly as it appears in the token (encoded or not).
	RawResource string
	// Resource is sr URL-decoded.
	Resource string
	// Signature is sig URL-decoded (base64 text).
	Signature string
	// Expiry is se.
	Expiry time.Time
	// KeyName is skn URL-decoded, empty when absent.
	KeyName string
	// RawExpiry is se exactly as it appears in the token.
	RawExpiry string
}

// String never shows the signature, so a token can be logged safely.
func (t SASToken) String() string {
	return fmt.Sprintf("SAS(sr=%s se=%d skn=%s sig=<redacted>)", t.Resource, t.Expiry.Unix(), t.KeyName)
}

// ParseSAS parses a token of the form "SharedAccessSignature k=v&k=v..."
// with sr, sig and se in any order and skn optional. Unknown fields are
// ignored. It returns an error wrapping ErrMalformedToken when a required
// field is missing, repeated or undecodable.
func ParseSAS(token string) (SASToken, error) {
	var t SASToken
	body, ok := strings.CutPrefix(strings.TrimSpace(token), strings.TrimSpace(SASPrefix))
	if !ok {
		return t, fmt.Errorf("%w: missing %q prefix", ErrMalformedToken, strings.TrimSpace(SASPrefix))
	}
	body = strings.TrimSpace(body)
	seen := map[string]bool{}
	for _, part := range strings.Split(body, "&") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return t, fmt.Errorf("%w: field %q has no value", ErrMalformedToken, k)
		}
		k = strings.ToLower(k)
		switch k {
		case "sr", "sig", "se", "skn":
		default:
			continue
		}
		if seen[k] {
			return t, fmt.Errorf("%w: field %s repeated", ErrMalformedToken, k)
		}
		seen[k] = true
		dec, err := url.QueryUnescape(v)
		if err != nil {
			return t, fmt.Errorf("%w: field %s: %v", ErrMalformedToken, k, err)
		}
		switch k {
		case "sr":
			t.RawResource, t.Resource = v, dec
		case "sig":
			// A '+' in base64 left unencoded must stay a '+'.
			if d, err := url.PathUnescape(v); err == nil {
				dec = d
			}
			t.Signature = dec
		case "se":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return t, fmt.Errorf("%w: se %q is not a number of seconds", ErrMalformedToken, v)
			}
			t.Expiry, t.RawExpiry = time.Unix(n, 0), v
		case "skn":
			t.KeyName = dec
		}
	}
	for _, k := range []string{"sr", "sig", "se"} {
		if !seen[k] {
			return t, fmt.Errorf("%w: missing %s", ErrMalformedToken, k)
		}
	}
	return t, nil
}
