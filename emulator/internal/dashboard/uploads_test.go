package dashboard

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// withUploads is the fake with file uploads.
type withUploads struct{ *fake }

func (withUploads) FileUploads(id string) []Upload {
	return []Upload{
		{BlobName: id + "/old.log", Started: time.Unix(100, 0), State: "failed", Detail: "500 disk full"},
		{BlobName: id + "/new.log", Started: time.Unix(200, 0), State: "succeeded", Detail: "42 bytes"},
	}
}

// TestDevicePageListsUploads: the device page lists the uploads newest
// first with their outcome; a backend without uploads shows none.
func TestDevicePageListsUploads(t *testing.T) {
	h, err := New(withUploads{newFake()}, token, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := do(h, "GET", "/devices/d1", "", authed).Body.String()
	i, j := strings.Index(body, "d1/new.log"), strings.Index(body, "d1/old.log")
	if i < 0 || j < 0 || i > j || !strings.Contains(body, "42 bytes") || !strings.Contains(body, "500 disk full") {
		t.Fatalf("device page uploads section:\n%s", body[max(0, strings.Index(body, `id="uploads"`)):])
	}
	body = do(serve(t, newFake(), nil), "GET", "/devices/d1", "", authed).Body.String()
	if !strings.Contains(body, "No file uploads.") {
		t.Fatal("a backend without uploads must show none")
	}
}

// TestCoreBackendUploads maps the core's records.
func TestCoreBackendUploads(t *testing.T) {
	c := core.New(core.Config{IDScope: "0ne00TEST", HubHost: "hub"})
	defer c.Close()
	if _, _, err := c.PutDevice("d1", core.DeviceSpec{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	u, err := c.BeginFileUpload(ctx, "d1", "a.txt", "blob:1/acct", "fileuploads", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.BeginFileUpload(ctx, "d1", "b.txt", "blob:1/acct", "fileuploads", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EndFileUpload(ctx, "d1", u.CorrelationID, core.FileUploadResult{Success: true, StatusCode: 201, Size: 9}); err != nil {
		t.Fatal(err)
	}
	ups := coreBackend{c}.FileUploads("d1")
	if len(ups) != 2 || ups[0].State != "succeeded" || ups[0].Detail != "9 bytes" || ups[1].State != "uploading" ||
		ups[0].URL != "https://blob:1/acct/fileuploads/d1/a.txt" {
		t.Fatalf("uploads %+v", ups)
	}
}
