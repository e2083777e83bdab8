package core

import (
	"errors"
	"testing"
)

func TestValidIDRefusesDotSegments(t *testing.T) {
	for _, id := range []string{".", "..", "", "a/b"} {
		if err := ValidID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidID(%q) = %v, want ErrInvalid", id, err)
		}
	}
	for _, id := range []string{"...", ".a", "a.", "dev-1"} {
		if err := ValidID(id); err != nil {
			t.Errorf("ValidID(%q) = %v", id, err)
		}
	}
}
