package iotctest

import (
	"encoding/json"
	"maps"
	"time"
)

// section is one side of a twin as IoT Hub keeps it: properties, a
// $version that grows by one per update (from 1), and $metadata with the
// time (and, for desired, the version) each value was last written.
type section struct {
	props       map[string]any
	meta        map[string]any
	version     int64
	withVersion bool
}

func newSection(withVersion bool) *section {
	return &section{props: map[string]any{}, meta: map[string]any{}, version: 1, withVersion: withVersion}
}

// apply merges patch (null removes, objects merge, anything else replaces)
// and returns the new $version.
func (s *section) apply(patch map[string]any, now time.Time) int64 {
	s.version++
	merge(s.props, s.meta, patch, s.leaf(now), s.withVersion)
	return s.version
}

func (s *section) leaf(now time.Time) map[string]any {
	m := map[string]any{"$lastUpdated": now.UTC().Format("2006-01-02T15:04:05.0000000Z")}
	if s.withVersion {
		m["$lastUpdatedVersion"] = s.version
	}
	return m
}

func merge(dst, meta, patch map[string]any, leaf map[string]any, _ bool) {
	for k, v := range patch {
		if v == nil {
			delete(dst, k)
			delete(meta, k)
			continue
		}
		if pv, ok := v.(map[string]any); ok {
			sub, ok := dst[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				dst[k] = sub
			}
			sm, ok := meta[k].(map[string]any)
			if !ok {
				sm = map[string]any{}
			}
			maps.Copy(sm, leaf)
			meta[k] = sm
			merge(sub, sm, pv, leaf, false)
			continue
		}
		dst[k] = v
		meta[k] = maps.Clone(leaf)
	}
}

// doc returns the section as the hub sends it, with $version (and
// $metadata when meta is set), deep-copied.
func (s *section) doc(meta bool) map[string]any {
	out := deepCopy(s.props).(map[string]any)
	out["$version"] = s.version
	if meta {
		out["$metadata"] = deepCopy(s.meta)
	}
	return out
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		a := make([]any, len(t))
		for i, x := range t {
			a[i] = deepCopy(x)
		}
		return a
	}
	return v
}

// decodeObject decodes JSON with numbers kept as json.Number.
func decodeObject(b []byte) (map[string]any, error) {
	var m map[string]any
	d := json.NewDecoder(bytesReader(b))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}
