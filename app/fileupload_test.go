package app

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/golang/mock/gomock"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/mocks"
	"github.com/iotc-go/iotc/ports"
)

// storageRefusal is a storage error that carries its HTTP status, as the
// azblob adapter's errors do.
type storageRefusal struct{ status int }

func (e storageRefusal) Error() string   { return "storage refused: AuthenticationFailed" }
func (e storageRefusal) HTTPStatus() int { return e.status }

// TestUploadFileNotifiesEveryOutcome drives UploadFile with a generated
// FileUploader mock: the hub learns of a success, of a storage refusal
// (with the storage's status and error) and of a cancelled upload (with a
// live context, though the caller's ended), and the caller gets an
// *UploadError for both failures.
func TestUploadFileNotifiesEveryOutcome(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.provisions(testHub, 1)
		e.hubConnects(connResult{hub: newHub(e.ctrl, emptyTwin)})
		c := e.client(e.options())
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		up := mocks.NewMockFileUploader(e.ctrl)
		target := ports.FileUploadTarget{CorrelationID: "corr-1", HostName: "blob.example/acct", ContainerName: "c", BlobName: testDev + "/log.txt", SASToken: "?sig=x"}
		isDevice := gomock.AssignableToTypeOf(ports.HubConnection{})
		up.EXPECT().StartUpload(gomock.Any(), isDevice, "log.txt").Return(target, nil).Times(3)

		// Success.
		up.EXPECT().Upload(gomock.Any(), target, gomock.Any()).DoAndReturn(func(_ context.Context, _ ports.FileUploadTarget, b ports.BlobUpload) error {
			if b.Size != 5 || b.ContentType != "text/plain" {
				t.Errorf("upload %+v", b)
			}
			return nil
		})
		up.EXPECT().NotifyUpload(gomock.Any(), isDevice, "corr-1", ports.FileUploadResult{Success: true, StatusCode: 201, Description: "uploaded"}).Return(nil)
		res, err := c.UploadFile(context.Background(), up, "log.txt", strings.NewReader("hello"), 5, UploadOptions{ContentType: "text/plain"})
		if err != nil || res.CorrelationID != "corr-1" || res.BlobName != testDev+"/log.txt" || res.Size != 5 {
			t.Fatalf("success: %+v, %v", res, err)
		}

		// The storage refuses: the hub is told with the storage's status.
		up.EXPECT().Upload(gomock.Any(), target, gomock.Any()).Return(storageRefusal{status: 403})
		up.EXPECT().NotifyUpload(gomock.Any(), isDevice, "corr-1", gomock.Any()).DoAndReturn(func(_ context.Context, _ ports.HubConnection, _ string, r ports.FileUploadResult) error {
			if r.Success || r.StatusCode != 403 || !strings.Contains(r.Description, "AuthenticationFailed") {
				t.Errorf("failure notification %+v", r)
			}
			return nil
		})
		_, err = c.UploadFile(context.Background(), up, "log.txt", strings.NewReader("hello"), 5, UploadOptions{})
		var ue *UploadError
		if !errors.As(err, &ue) || ue.NotifyErr != nil || ue.CorrelationID != "corr-1" {
			t.Fatalf("refused upload: %v", err)
		}

		// The caller cancels mid-upload: the notification still goes out,
		// on a context that has not ended.
		ctx, cancel := context.WithCancel(context.Background())
		up.EXPECT().Upload(gomock.Any(), target, gomock.Any()).DoAndReturn(func(ctx context.Context, _ ports.FileUploadTarget, _ ports.BlobUpload) error {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		})
		up.EXPECT().NotifyUpload(gomock.Any(), isDevice, "corr-1", gomock.Any()).DoAndReturn(func(nctx context.Context, _ ports.HubConnection, _ string, r ports.FileUploadResult) error {
			if nctx.Err() != nil {
				t.Errorf("the failure notification got an ended context: %v", nctx.Err())
			}
			if _, ok := nctx.Deadline(); !ok {
				t.Error("the failure notification has no deadline")
			}
			if r.Success || r.StatusCode != 500 {
				t.Errorf("cancel notification %+v", r)
			}
			return nil
		})
		_, err = c.UploadFile(ctx, up, "log.txt", strings.NewReader("hello"), 5, UploadOptions{})
		if !errors.As(err, &ue) || !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled upload: %v", err)
		}

		// Bad input never reaches the uploader.
		for _, bad := range []struct {
			name string
			size int64
		}{{"", 1}, {"x", -1}} {
			if _, err := c.UploadFile(context.Background(), up, bad.name, strings.NewReader(""), bad.size, UploadOptions{}); !errors.Is(err, domain.ErrInvalidConfig) {
				t.Errorf("UploadFile(%q, %d): %v", bad.name, bad.size, err)
			}
		}
	})
}
