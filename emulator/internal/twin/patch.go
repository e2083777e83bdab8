package twin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Twin document limits enforced as IoT Hub does.
const (
	// MaxTwinDepth is the deepest nesting of objects below a section root.
	MaxTwinDepth = 10
	// MaxTwinKeyLen is the longest property name, in bytes.
	MaxTwinKeyLen = 1024
	// MaxTwinStringLen is the longest string value, in bytes.
	MaxTwinStringLen = 4096
	// MaxTwinSectionLen is the largest desired or reported section, in bytes
	// of JSON without $version and $metadata.
	MaxTwinSectionLen = 32 << 10
)

// ParseTwinPatch decodes and validates a twin patch (a reported PATCH body
// from a device, or a desired patch from the operator): it must be a JSON
// object; property names must be 1..MaxTwinKeyLen bytes with no control
// character, '.', '$' or space; objects nest at most MaxTwinDepth levels;
// strings are at most MaxTwinStringLen bytes. A top-level "$version" is
// tolerated and dropped. A null value means "delete this property". The
// body itself may be at most MaxTwinSectionLen bytes (plus white space).
// Errors wrap ErrInvalid.
func ParseTwinPatch(body []byte) (map[string]any, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty twin patch", ErrInvalid)
	}
	if len(body) > 4*MaxTwinSectionLen {
		return nil, fmt.Errorf("%w: twin patch of %d bytes is too large", ErrInvalid, len(body))
	}
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("%w: twin patch is not UTF-8", ErrInvalid)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("%w: twin patch is not JSON: %v", ErrInvalid, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: twin patch is not a JSON object", ErrInvalid)
	}
	delete(m, "$version")
	if err := checkObject(m, 0); err != nil {
		return nil, err
	}
	return m, nil
}

// NormalizePatch turns a Go value patch (any JSON-marshalable map) into
// the canonical decoded form ParseTwinPatch returns, with the same checks.
func NormalizePatch(patch map[string]any) (map[string]any, error) {
	if patch == nil {
		return nil, fmt.Errorf("%w: nil patch", ErrInvalid)
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("%w: patch does not encode as JSON: %v", ErrInvalid, err)
	}
	return ParseTwinPatch(b)
}

func checkObject(m map[string]any, depth int) error {
	if depth > MaxTwinDepth {
		return fmt.Errorf("%w: twin objects nest deeper than %d levels", ErrInvalid, MaxTwinDepth)
	}
	for k, v := range m {
		if err := checkKey(k); err != nil {
			return err
		}
		if err := checkValue(v, depth); err != nil {
			return err
		}
	}
	return nil
}

func checkValue(v any, depth int) error {
	switch x := v.(type) {
	case map[string]any:
		return checkObject(x, depth+1)
	case []any:
		for _, e := range x {
			if err := checkValue(e, depth); err != nil {
				return err
			}
		}
	case string:
		if len(x) > MaxTwinStringLen {
			return fmt.Errorf("%w: twin string value of %d bytes exceeds %d", ErrInvalid, len(x), MaxTwinStringLen)
		}
	}
	return nil
}

func checkKey(k string) error {
	if k == "" || len(k) > MaxTwinKeyLen {
		return fmt.Errorf("%w: twin property name of %d bytes", ErrInvalid, len(k))
	}
	if i := strings.IndexFunc(k, func(r rune) bool {
		return r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == '.' || r == '$' || r == ' '
	}); i >= 0 {
		return fmt.Errorf("%w: twin property name %q has a forbidden character", ErrInvalid, k)
	}
	return nil
}
