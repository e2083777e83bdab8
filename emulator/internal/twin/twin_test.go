package twin

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestApplyMergesAndDeletes(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s := NewSection(true, 0, t0)
	if s.Version() != 1 {
		t.Fatalf("new section version %d, want 1", s.Version())
	}
	v, err := s.Apply(map[string]any{"a": 1.0, "obj": map[string]any{"x": 1.0, "y": "k", "n": nil}}, t0.Add(time.Second))
	if err != nil || v != 2 {
		t.Fatalf("Apply = %d, %v; want 2", v, err)
	}
	v, err = s.Apply(map[string]any{"a": nil, "obj": map[string]any{"x": nil, "z": true}}, t0.Add(2*time.Second))
	if err != nil || v != 3 {
		t.Fatalf("Apply = %d, %v; want 3", v, err)
	}
	want := map[string]any{"obj": map[string]any{"y": "k", "z": true}}
	if got := s.Properties(); !reflect.DeepEqual(got, want) {
		t.Fatalf("properties %v, want %v", got, want)
	}
	doc := s.Document()
	if doc["$version"] != int64(3) {
		t.Errorf("$version %v, want 3", doc["$version"])
	}
	meta := doc["$metadata"].(map[string]any)
	if meta["$lastUpdated"] != "2024-01-01T00:00:02.0000000Z" || meta["$lastUpdatedVersion"] != int64(3) {
		t.Errorf("section metadata %v", meta)
	}
	objMeta := meta["obj"].(map[string]any)
	if _, ok := objMeta["x"]; ok {
		t.Errorf("metadata of a deleted property kept: %v", objMeta)
	}
	if objMeta["y"].(map[string]any)["$lastUpdatedVersion"] != int64(2) || objMeta["z"].(map[string]any)["$lastUpdatedVersion"] != int64(3) {
		t.Errorf("per-property metadata %v", objMeta)
	}
	// The document is a copy.
	doc["obj"].(map[string]any)["y"] = "changed"
	if s.Properties()["obj"].(map[string]any)["y"] != "k" {
		t.Error("Document shares memory with the section")
	}
}

func TestApplyReplacesScalarWithObject(t *testing.T) {
	s := NewSection(false, 0, time.Now())
	if _, err := s.Apply(map[string]any{"a": 1.0}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(map[string]any{"a": map[string]any{"b": 2.0}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := s.Properties(); !reflect.DeepEqual(got, map[string]any{"a": map[string]any{"b": 2.0}}) {
		t.Fatalf("got %v", got)
	}
	if _, ok := s.Document()["$metadata"].(map[string]any)["$lastUpdatedVersion"]; ok {
		t.Error("reported metadata must not carry $lastUpdatedVersion")
	}
}

func TestApplyTooLargeLeavesSectionUnchanged(t *testing.T) {
	s := NewSection(false, 100, time.Now())
	if _, err := s.Apply(map[string]any{"a": "small"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	v, err := s.Apply(map[string]any{"b": strings.Repeat("x", 200)}, time.Now())
	if !errors.Is(err, ErrTooLarge) || v != 2 {
		t.Fatalf("Apply = %d, %v; want 2, ErrTooLarge", v, err)
	}
	if got := s.Properties(); !reflect.DeepEqual(got, map[string]any{"a": "small"}) || s.Version() != 2 {
		t.Fatalf("section changed after a refused patch: %v v%d", got, s.Version())
	}
}

func TestWithVersion(t *testing.T) {
	p := map[string]any{"a": 1.0}
	got := WithVersion(p, 7)
	if got["$version"] != int64(7) || got["a"] != 1.0 {
		t.Fatalf("WithVersion = %v", got)
	}
	if _, ok := p["$version"]; ok {
		t.Fatal("WithVersion changed its argument")
	}
}
