package core

import (
	"slices"
)

// The IoT Plug and Play convention that marks a twin object as a component.
const (
	// ComponentMarker is the key of a component object's marker.
	ComponentMarker = "__t"
	// ComponentMarkerValue is the marker's value.
	ComponentMarkerValue = "c"
)

// IsComponent reports whether a desired or reported value is an IoT Plug
// and Play component: an object whose "__t" is "c".
func IsComponent(v any) bool {
	m, ok := v.(map[string]any)
	return ok && m[ComponentMarker] == ComponentMarkerValue
}

// DeviceComponents returns the device's component names, sorted: those of
// its device template when one matches (DeviceModel), else the objects
// marked as components in its desired or reported properties. It returns
// ErrNotFound for an unknown device.
func (c *Core) DeviceComponents(id string) ([]string, error) {
	if m, ok := c.DeviceModel(id); ok {
		out := make([]string, 0, len(m.Components))
		for name := range m.Components {
			out = append(out, name)
		}
		slices.Sort(out)
		return out, nil
	}
	desired, reported, err := c.Twin(id)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, sec := range []map[string]any{desired, reported} {
		for k, v := range sec {
			if IsComponent(v) {
				seen[k] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for name := range seen {
		out = append(out, name)
	}
	slices.Sort(out)
	return out, nil
}
