package core

import (
	"errors"
	"testing"
)

// TestQueueC2DReturnsTheLockToken: the id QueueC2D returns is the one the
// device gets (and settles with); errors are SendCloudToDevice's.
func TestQueueC2DReturnsTheLockToken(t *testing.T) {
	c := newCoreWithDevice(t, "d")
	ctx := t.Context()
	id, err := c.QueueC2D(ctx, "d", []byte("x"), nil)
	if err != nil || id == "" {
		t.Fatalf("QueueC2D = %q, %v", id, err)
	}
	l := newFakeLink(FeatureC2D)
	if _, err := c.Attach("d", l, ""); err != nil {
		t.Fatal(err)
	}
	m, ok := c.NextC2D("d", l)
	if !ok || m.MessageID != id {
		t.Fatalf("delivered %+v, want message id %q", m, id)
	}
	if err := c.SettleC2D("d", l, id, Complete); err != nil {
		t.Fatal(err)
	}
	if _, err := c.QueueC2D(ctx, "nobody", nil, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("QueueC2D to an unknown device = %v, want ErrNotFound", err)
	}
	if id, err := c.QueueC2D(ctx, "d", make([]byte, MaxC2DBody+1), nil); !errors.Is(err, ErrTooLarge) || id != "" {
		t.Fatalf("QueueC2D of an oversized body = %q, %v, want ErrTooLarge", id, err)
	}
}

// TestUpdateDesiredReturnsTheVersion: the version UpdateDesired returns is
// the twin's new desired $version and the one pushed to the device.
func TestUpdateDesiredReturnsTheVersion(t *testing.T) {
	c := newCoreWithDevice(t, "d")
	ctx := t.Context()
	l := newFakeLink(FeatureDesired)
	if _, err := c.Attach("d", l, ""); err != nil {
		t.Fatal(err)
	}
	for want := int64(2); want <= 3; want++ {
		v, err := c.UpdateDesired(ctx, "d", "c1", map[string]any{"x": want})
		if err != nil || v != want {
			t.Fatalf("UpdateDesired = %d, %v, want %d", v, err, want)
		}
		desired, _, err := c.Twin("d")
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := desired["$version"].(int64); got != want {
			t.Fatalf("twin desired $version %v (%T), want %d", desired["$version"], desired["$version"], want)
		}
	}
	if v, err := c.UpdateDesired(ctx, "nobody", "", map[string]any{"x": 1}); !errors.Is(err, ErrNotFound) || v != 0 {
		t.Fatalf("UpdateDesired of an unknown device = %d, %v", v, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.desired) != 2 {
		t.Fatalf("%d patches pushed, want 2", len(l.desired))
	}
}
