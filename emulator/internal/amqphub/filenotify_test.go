package amqphub

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// TestFileNotifications: a successful upload's notification reaches the
// service's /messages/serviceBound/filenotifications receiver, one per
// message; a released one comes again; a failed upload makes none.
func TestFileNotifications(t *testing.T) {
	h := startHarness(t, false)
	ctx := context.Background()
	for _, ok := range []bool{false, true} {
		u, err := h.m.BeginFileUpload(ctx, "dev1", "log.txt", "blobs.example:443/acct", "fileuploads", time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.m.EndFileUpload(ctx, "dev1", u.CorrelationID, core.FileUploadResult{Success: ok, StatusCode: 200, Size: 42}); err != nil {
			t.Fatal(err)
		}
	}
	c := h.dial(t, nil)
	s := session(t, c)
	if _, err := s.NewReceiver(testCtx(t), "/messages/serviceBound/filenotifications", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("receiver before put-token: %v, want unauthorized-access", err)
	}
	s = session(t, c)
	if code, desc := newCBS(t, s).putToken(t, testHost, serviceToken(t, h, "service")); code != 200 {
		t.Fatalf("put-token: %d %s", code, desc)
	}
	fn, err := s.NewReceiver(testCtx(t), "/messages/serviceBound/filenotifications", &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	m, err := fn.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var n core.FileNotification
	if err := json.Unmarshal(m.GetData(), &n); err != nil {
		t.Fatalf("notification body %q: %v", m.GetData(), err)
	}
	if n.DeviceID != "dev1" || n.BlobName != "dev1/log.txt" || n.BlobSizeInBytes != 42 ||
		n.BlobURI != "https://blobs.example:443/acct/fileuploads/dev1/log.txt" || m.Properties == nil || *m.Properties.ContentType != fileNotificationContentType {
		t.Fatalf("notification %+v", n)
	}
	if err := fn.ReleaseMessage(testCtx(t), m); err != nil {
		t.Fatal(err)
	}
	m, err = fn.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fn.AcceptMessage(testCtx(t), m); err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool { return h.m.PendingFileNotifications() == 0 }) {
		t.Fatal("an accepted notification is still pending (or the failed upload made one)")
	}
}
