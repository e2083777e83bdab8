package wire

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// Property is one key/value pair of an MQTT property bag, in wire order.
type Property struct {
	Key, Value string
}

// MaxPropertyBagLen bounds the encoded property bag DecodeBag accepts.
const MaxPropertyBagLen = 64 << 10

// ErrBadPropertyBag reports a property bag that cannot be decoded.
var ErrBadPropertyBag = errors.New("wire: bad property bag")

// DecodeBag parses the property bag of a telemetry topic: "k=v&k=v", a
// leading '?' tolerated, keys and values percent-decoded once (so "%24.mid"
// is "$.mid"; '+' is a space), empty segments skipped, a key without '='
// given the value "". Errors wrap ErrBadPropertyBag: a bag over
// MaxPropertyBagLen, an empty key, a bad escape.
func DecodeBag(s string) ([]Property, error) {
	s = strings.TrimPrefix(s, "?")
	if len(s) > MaxPropertyBagLen {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadPropertyBag, len(s), MaxPropertyBagLen)
	}
	var out []Property
	for seg := range strings.SplitSeq(s, "&") {
		if seg == "" {
			continue
		}
		rk, rv, _ := strings.Cut(seg, "=")
		k, err := url.QueryUnescape(rk)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: bad escape", ErrBadPropertyBag, rk)
		}
		if k == "" {
			return nil, fmt.Errorf("%w: empty key", ErrBadPropertyBag)
		}
		v, err := url.QueryUnescape(rv)
		if err != nil {
			return nil, fmt.Errorf("%w: value of %q: bad escape", ErrBadPropertyBag, k)
		}
		out = append(out, Property{Key: k, Value: v})
	}
	return out, nil
}

// EncodeBag writes props as "k=v&k=v", each key and value percent-encoded
// once (a space as %20, '$' as %24).
func EncodeBag(props []Property) string {
	var b strings.Builder
	for i, p := range props {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(escape(p.Key))
		b.WriteByte('=')
		b.WriteString(escape(p.Value))
	}
	return b.String()
}

func escape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

// SplitBag separates system properties ("$."-prefixed) from application
// properties; a later duplicate key wins.
func SplitBag(props []Property) (system, app map[string]string) {
	system, app = map[string]string{}, map[string]string{}
	for _, p := range props {
		if strings.HasPrefix(p.Key, "$.") {
			system[p.Key] = p.Value
		} else {
			app[p.Key] = p.Value
		}
	}
	return system, app
}

// C2DTopic is the topic a cloud-to-device message is published on:
// the device's prefix, then the property bag "$.mid", "$.to" and the
// application properties sorted by name.
func C2DTopic(deviceID, messageID string, props map[string]string) string {
	bag := []Property{
		{Key: "$.mid", Value: messageID},
		{Key: "$.to", Value: "/devices/" + deviceID + "/messages/devicebound"},
	}
	for _, k := range slices.Sorted(maps.Keys(props)) {
		bag = append(bag, Property{Key: k, Value: props[k]})
	}
	return C2DFilterPrefix(deviceID) + EncodeBag(bag)
}
