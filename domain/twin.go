package domain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Twin property markers of IoT Plug and Play.
const (
	// ComponentMarker is the key that marks an object as a component.
	ComponentMarker = "__t"
	// ComponentMarkerValue is its value.
	ComponentMarkerValue = "c"
	versionKey           = "$version"
	metadataKey          = "$metadata"
)

// Twin is the properties section of a device twin as the device sees it.
type Twin struct {
	Desired         map[string]any
	Reported        map[string]any
	DesiredVersion  int64
	ReportedVersion int64
}

// maxTwinDepth bounds JSON nesting accepted from the service.
const maxTwinDepth = 64

func decodeObject(b []byte) (map[string]any, error) {
	if err := checkDepth(b, maxTwinDepth); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after JSON object", ErrMalformed)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: expected a JSON object", ErrMalformed)
	}
	return m, nil
}

func checkDepth(b []byte, limit int) error {
	depth := 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > limit {
				return fmt.Errorf("%w: JSON nested deeper than %d", ErrMalformed, limit)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

func versionOf(m map[string]any) (int64, error) {
	v, ok := m[versionKey]
	if !ok {
		return 0, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%w: $version is not a number", ErrMalformed)
	}
	i, err := n.Int64()
	if err != nil {
		return 0, fmt.Errorf("%w: $version %q: %v", ErrMalformed, n, err)
	}
	return i, nil
}

// ParseTwin parses a twin GET response {"desired":{...},"reported":{...}}.
// Missing sections are empty. It returns an error wrapping ErrMalformed.
func ParseTwin(b []byte) (Twin, error) {
	m, err := decodeObject(b)
	if err != nil {
		return Twin{}, err
	}
	t := Twin{Desired: map[string]any{}, Reported: map[string]any{}}
	for key, dst := range map[string]*map[string]any{"desired": &t.Desired, "reported": &t.Reported} {
		v, ok := m[key]
		if !ok || v == nil {
			continue
		}
		sec, ok := v.(map[string]any)
		if !ok {
			return Twin{}, fmt.Errorf("%w: twin %s is not an object", ErrMalformed, key)
		}
		*dst = sec
	}
	if t.DesiredVersion, err = versionOf(t.Desired); err != nil {
		return Twin{}, err
	}
	if t.ReportedVersion, err = versionOf(t.Reported); err != nil {
		return Twin{}, err
	}
	return t, nil
}

// Property is one writable property the service asked for.
type Property struct {
	// Component is empty for a root property.
	Component string
	Name      string
	// Value is the desired value as JSON.
	Value json.RawMessage
	// Version is the desired section $version the value belongs to; it is
	// the version the acknowledgement ("av") must carry.
	Version int64
}

// Unmarshal decodes the desired value into v.
func (p Property) Unmarshal(v any) error {
	if err := json.Unmarshal(p.Value, v); err != nil {
		return fmt.Errorf("iotc: property %s: %w", p.Name, err)
	}
	return nil
}

// IsComponent reports whether a desired or reported value is an IoT Plug
// and Play component: an object whose "__t" is "c".
func IsComponent(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	return m[ComponentMarker] == ComponentMarkerValue
}

func rawJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// ParseDesiredPatch parses a desired-properties patch (or a whole desired
// section) into its properties, splitting components. Keys starting with
// '$' are metadata and skipped. Properties come out in a stable order:
// root first, then components, each sorted by name.
func ParseDesiredPatch(b []byte) (version int64, props []Property, err error) {
	m, err := decodeObject(b)
	if err != nil {
		return 0, nil, err
	}
	if version, err = versionOf(m); err != nil {
		return 0, nil, err
	}
	return version, flattenDesired(m, version), nil
}

func flattenDesired(m map[string]any, version int64) []Property {
	var root, comps []Property
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if strings.HasPrefix(k, "$") {
			continue
		}
		v := m[k]
		if IsComponent(v) {
			cm := v.(map[string]any)
			for _, sk := range slices.Sorted(maps.Keys(cm)) {
				if sk == ComponentMarker || strings.HasPrefix(sk, "$") {
					continue
				}
				comps = append(comps, Property{Component: k, Name: sk, Value: rawJSON(cm[sk]), Version: version})
			}
			continue
		}
		root = append(root, Property{Name: k, Value: rawJSON(v), Version: version})
	}
	return append(root, comps...)
}

// AllDesired lists every desired property, acknowledged or not, with the
// section $version.
func (t Twin) AllDesired() []Property {
	return flattenDesired(t.Desired, t.DesiredVersion)
}

// PendingDesired lists the desired properties the device has not
// acknowledged at their version: no reported entry, or a reported "av"
// older than the version the property was last written at (taken from
// $metadata when the service gives it, else the section $version).
func (t Twin) PendingDesired() []Property {
	var out []Property
	meta, _ := t.Desired[metadataKey].(map[string]any)
	for _, p := range flattenDesired(t.Desired, t.DesiredVersion) {
		written := t.DesiredVersion
		md := meta
		reported := t.Reported
		if p.Component != "" {
			md, _ = meta[p.Component].(map[string]any)
			reported, _ = t.Reported[p.Component].(map[string]any)
		}
		if pm, ok := md[p.Name].(map[string]any); ok {
			if n, ok := pm["$lastUpdatedVersion"].(json.Number); ok {
				if v, err := n.Int64(); err == nil && v > 0 {
					written = v
				}
			}
		}
		if ackedVersion(reported[p.Name]) >= written {
			continue
		}
		out = append(out, p)
	}
	return out
}

func ackedVersion(v any) int64 {
	m, ok := v.(map[string]any)
	if !ok {
		return -1
	}
	n, ok := m["av"].(json.Number)
	if !ok {
		return -1
	}
	i, err := n.Int64()
	if err != nil {
		return -1
	}
	return i
}

// PropertyAck is the device's answer to one writable property, reported
// as {"value":..., "ac":status, "av":version, "ad":description}.
type PropertyAck struct {
	// Status is the "ac" code: 200 applied, 202 pending (report a final
	// ack later), 4xx/5xx refused. 0 means 200.
	Status int
	// Description is the "ad" text, optional.
	Description string
	// Value is the value the device applied; nil reports the desired value.
	Value any
}

// AckPatch builds the reported patch that acknowledges p, wrapping it in
// its component with "__t":"c" when p belongs to one.
func AckPatch(p Property, ack PropertyAck) map[string]any {
	status := ack.Status
	if status == 0 {
		status = 200
	}
	var value any = p.Value
	if ack.Value != nil {
		value = ack.Value
	}
	entry := map[string]any{"value": value, "ac": status, "av": p.Version}
	if ack.Description != "" {
		entry["ad"] = ack.Description
	}
	return ReportedPatch(p.Component, map[string]any{p.Name: entry})
}

// ReportedPatch wraps props in the component's object with "__t":"c", or
// returns them as they are for the root component (empty name).
func ReportedPatch(component string, props map[string]any) map[string]any {
	if component == "" {
		return props
	}
	inner := make(map[string]any, len(props)+1)
	maps.Copy(inner, props)
	inner[ComponentMarker] = ComponentMarkerValue
	return map[string]any{component: inner}
}

// MergePatch merges src into dst, one level of components deep, so that
// several acknowledgements can go out as one reported patch.
func MergePatch(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok && IsComponent(sm) && IsComponent(dm) {
				maps.Copy(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// EncodeReported encodes a reported patch and checks it against
// MaxTwinSectionSize (ErrMessageTooLarge).
func EncodeReported(patch any) ([]byte, error) {
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("iotc: encode reported properties: %w", err)
	}
	if len(b) > MaxTwinSectionSize {
		return nil, fmt.Errorf("%w: reported patch of %d bytes exceeds the twin section limit of %d", ErrMessageTooLarge, len(b), MaxTwinSectionSize)
	}
	return b, nil
}
