package core

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestFileUploadLimitAndDelete: the 11th active upload is refused, an
// ended or expired one frees its slot, and deleting the device forgets
// its uploads.
func TestFileUploadLimitAndDelete(t *testing.T) {
	c := New(Config{IDScope: "0ne00TEST", HubHost: "hub"})
	defer c.Close()
	if _, _, err := c.PutDevice("d1", DeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var first FileUpload
	for i := range MaxActiveFileUploads {
		expiry := time.Now().Add(time.Hour)
		if i == 1 {
			expiry = time.Now().Add(-time.Second) // already expired: not active
		}
		u, err := c.BeginFileUpload(ctx, "d1", "f", "h", "c", expiry)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = u
		}
	}
	if _, err := c.BeginFileUpload(ctx, "d1", "f", "h", "c", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("the expired upload must not count: %v", err)
	}
	if _, err := c.BeginFileUpload(ctx, "d1", "f", "h", "c", time.Now().Add(time.Hour)); !errors.Is(err, ErrTooManyUploads) {
		t.Fatalf("11th active upload: %v", err)
	}
	if _, err := c.EndFileUpload(ctx, "d1", first.CorrelationID, FileUploadResult{Success: false, StatusCode: 500}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.BeginFileUpload(ctx, "d1", "f", "h", "c", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("after a failure notification: %v", err)
	}
	if _, err := c.BeginFileUpload(ctx, "nobody", "f", "h", "c", time.Now().Add(time.Hour)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
	if err := c.DeleteDevice("d1"); err != nil {
		t.Fatal(err)
	}
	if ups := c.FileUploads("d1"); len(ups) != 0 {
		t.Fatalf("%d uploads kept for a deleted device", len(ups))
	}
}
