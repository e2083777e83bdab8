// Package twin keeps one section (desired or reported) of a device twin
// the way IoT Hub does: a JSON object, a $version that grows by one per
// update, and $metadata with the time (and for desired, the version) each
// property was last written. It does no locking: the owner serialises
// access.
package twin

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"
)

// ErrTooLarge is returned by Apply when the section would exceed its size limit.
var ErrTooLarge = errors.New("emulator: twin section too large")

// ErrInvalid is returned by ParseTwinPatch and NormalizePatch for a patch
// IoT Hub would refuse.
var ErrInvalid = errors.New("emulator: invalid twin patch")

// TimeFormat is how IoT Hub writes twin metadata times.
const TimeFormat = "2006-01-02T15:04:05.0000000Z"

// Section is the desired or the reported part of a twin.
type Section struct {
	props       map[string]any
	meta        map[string]any
	version     int64
	updated     time.Time
	withVersion bool
	maxLen      int
}

// NewSection returns an empty section at $version 1. withVersion adds
// $lastUpdatedVersion to metadata (IoT Hub does so for desired
// properties). maxLen bounds the JSON size of the properties (0 = no bound).
func NewSection(withVersion bool, maxLen int, now time.Time) *Section {
	return &Section{props: map[string]any{}, meta: map[string]any{}, version: 1, updated: now, withVersion: withVersion, maxLen: maxLen}
}

// Version is the current $version.
func (s *Section) Version() int64 { return s.version }

// Apply merges patch (already validated: see ParseTwinPatch) into
// the section: a null removes a property, an object merges into an
// existing object, anything else replaces. It increments $version and
// returns it. It returns ErrTooLarge, leaving the section unchanged, when
// the result would exceed the section's size limit.
func (s *Section) Apply(patch map[string]any, now time.Time) (int64, error) {
	props := deepCopy(s.props).(map[string]any)
	meta := deepCopy(s.meta).(map[string]any)
	next := s.version + 1
	s.merge(props, meta, patch, now, next)
	if s.maxLen > 0 {
		b, err := json.Marshal(props)
		if err != nil {
			return s.version, fmt.Errorf("emulator: twin section does not encode: %w", err)
		}
		if len(b) > s.maxLen {
			return s.version, fmt.Errorf("%w: %d bytes exceeds %d", ErrTooLarge, len(b), s.maxLen)
		}
	}
	s.props, s.meta, s.version, s.updated = props, meta, next, now
	return next, nil
}

func (s *Section) leafMeta(now time.Time, version int64) map[string]any {
	m := map[string]any{"$lastUpdated": now.UTC().Format(TimeFormat)}
	if s.withVersion {
		m["$lastUpdatedVersion"] = version
	}
	return m
}

func (s *Section) merge(dst, meta, patch map[string]any, now time.Time, version int64) {
	for k, v := range patch {
		if v == nil {
			delete(dst, k)
			delete(meta, k)
			continue
		}
		pm, isObj := v.(map[string]any)
		if !isObj {
			dst[k] = deepCopy(v)
			meta[k] = s.leafMeta(now, version)
			continue
		}
		cur, curIsObj := dst[k].(map[string]any)
		curMeta, metaIsObj := meta[k].(map[string]any)
		if !curIsObj || !metaIsObj {
			cur, curMeta = map[string]any{}, map[string]any{}
			dst[k] = cur
		}
		maps.Copy(curMeta, s.leafMeta(now, version))
		meta[k] = curMeta
		s.merge(cur, curMeta, pm, now, version)
	}
}

// Properties returns a deep copy of the properties, without $version and
// $metadata.
func (s *Section) Properties() map[string]any { return deepCopy(s.props).(map[string]any) }

// Document returns a deep copy of the section as IoT Hub shows it: the
// properties plus "$metadata" and "$version".
func (s *Section) Document() map[string]any {
	doc := s.Properties()
	meta := deepCopy(s.meta).(map[string]any)
	maps.Copy(meta, s.leafMeta(s.updated, s.version))
	doc["$metadata"] = meta
	doc["$version"] = s.version
	return doc
}

// WithVersion returns a copy of patch with "$version" set, the body of a
// desired-property push.
func WithVersion(patch map[string]any, version int64) map[string]any {
	out := deepCopy(patch).(map[string]any)
	out["$version"] = version
	return out
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = deepCopy(e)
		}
		return a
	}
	return v
}

// State is the persistent form of a Section: what a restarted emulator
// needs to show the same document and continue the same $version.
type State struct {
	Properties map[string]any `json:"properties"`
	Metadata   map[string]any `json:"metadata"`
	Version    int64          `json:"version"`
	Updated    time.Time      `json:"updated"`
}

// State returns a deep copy of the section in its persistent form.
func (s *Section) State() State {
	return State{
		Properties: s.Properties(),
		Metadata:   deepCopy(s.meta).(map[string]any),
		Version:    s.version,
		Updated:    s.updated,
	}
}

// Restore rebuilds a section from st (see State); withVersion and maxLen
// are as for NewSection. It returns an error for a $version below 1 and
// ErrTooLarge when the properties exceed maxLen.
func Restore(st State, withVersion bool, maxLen int) (*Section, error) {
	if st.Version < 1 {
		return nil, fmt.Errorf("emulator: twin section $version %d is below 1", st.Version)
	}
	s := &Section{props: map[string]any{}, meta: map[string]any{}, version: st.Version, updated: st.Updated, withVersion: withVersion, maxLen: maxLen}
	if st.Properties != nil {
		s.props = deepCopy(st.Properties).(map[string]any)
	}
	if st.Metadata != nil {
		s.meta = deepCopy(st.Metadata).(map[string]any)
	}
	if maxLen > 0 {
		b, err := json.Marshal(s.props)
		if err != nil {
			return nil, fmt.Errorf("emulator: twin section does not encode: %w", err)
		}
		if len(b) > maxLen {
			return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrTooLarge, len(b), maxLen)
		}
	}
	return s, nil
}
