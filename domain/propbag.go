package domain

import (
	"fmt"
	"net/url"
	"strings"
)

// System property keys of the MQTT property bag (the part of a telemetry or
// cloud-to-device topic after the last '/'). On the wire '$' is sent as %24.
const (
	PropMessageID       = "$.mid"
	PropCorrelationID   = "$.cid"
	PropContentType     = "$.ct"
	PropContentEncoding = "$.ce"
	PropUserID          = "$.uid"
	PropTo              = "$.to"
	PropExpiry          = "$.exp"
	PropComponent       = "$.sub"
	PropCreationTime    = "$.ctime"
	PropInterfaceID     = "$.ifid"
	PropOutputName      = "$.on"
	// PropCreationTimeUTC is the application property IoT Hub reads as the
	// message creation time.
	PropCreationTimeUTC = "iothub-creation-time-utc"
	// PropMethodName is the cloud-to-device property IoT Central sets on a
	// command queued for an offline device.
	PropMethodName = "method-name"
)

// BagEntry is one key/value pair of a property bag, in the order it appears.
type BagEntry struct {
	Key   string
	Value string
	// NoValue is set for a key sent without '=' (a null value).
	NoValue bool
}

// PropertyBag is an ordered list of properties.
type PropertyBag []BagEntry

// Get returns the value of the first property named key.
func (b PropertyBag) Get(key string) (string, bool) {
	for _, p := range b {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// Map returns the properties as a map; a later duplicate key wins.
func (b PropertyBag) Map() map[string]string {
	m := make(map[string]string, len(b))
	for _, p := range b {
		m[p.Key] = p.Value
	}
	return m
}

// Encode writes the bag as "k=v&k=v" with keys and values URL-encoded
// exactly once (so "$.ct" becomes "%24.ct" and "application/json" becomes
// "application%2Fjson").
func (b PropertyBag) Encode() string {
	var sb strings.Builder
	for i, p := range b {
		if i > 0 {
			sb.WriteByte('&')
		}
		sb.WriteString(EscapeComponent(p.Key))
		if !p.NoValue {
			sb.WriteByte('=')
			sb.WriteString(EscapeComponent(p.Value))
		}
	}
	return sb.String()
}

// MaxPropertyBagLen bounds the encoded property bag accepted by
// DecodePropertyBag (IoT Hub allows 8 KiB of application properties; the
// bound leaves room for encoding).
const MaxPropertyBagLen = 64 << 10

// DecodePropertyBag parses "k=v&k=v" (a leading '?' is tolerated), URL-
// decoding keys and values, so "%24.mid" and "$.mid" both yield "$.mid".
// Empty segments are skipped. It returns an error for a bag over
// MaxPropertyBagLen, an empty key or an invalid escape.
func DecodePropertyBag(s string) (PropertyBag, error) {
	s = strings.TrimPrefix(s, "?")
	if len(s) > MaxPropertyBagLen {
		return nil, fmt.Errorf("iotc: property bag of %d bytes exceeds %d", len(s), MaxPropertyBagLen)
	}
	var bag PropertyBag
	for _, seg := range strings.Split(s, "&") {
		if seg == "" {
			continue
		}
		k, v, hasValue := strings.Cut(seg, "=")
		dk, err := url.QueryUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("iotc: property bag key %q: %w", k, err)
		}
		if dk == "" {
			return nil, fmt.Errorf("iotc: property bag has an empty key in %q", seg)
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("iotc: property bag value of %q: %w", dk, err)
		}
		bag = append(bag, BagEntry{Key: dk, Value: dv, NoValue: !hasValue})
	}
	return bag, nil
}
