package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// UploadOptions tune UploadFile. The zero value uploads with the
// uploader's defaults and no progress callback.
type UploadOptions struct {
	// ContentType is the blob's content type. Default: none given (the
	// storage answers application/octet-stream).
	ContentType string
	// BlockSize is the size of each uploaded block. Default: the
	// uploader's (4 MiB).
	BlockSize int64
	// Concurrency is how many blocks are uploaded at once. Default: the
	// uploader's (4).
	Concurrency int
	// Progress, when not nil, is called with the bytes read from the file
	// so far, from the uploader's goroutines, one call at a time.
	Progress func(uploaded int64)
}

// UploadResult describes a finished upload.
type UploadResult struct {
	// BlobURL is https://{host}/{container}/{blob} (no SAS).
	BlobURL string
	// BlobName is the blob's name in the container ("{device}/{name}").
	BlobName string
	// CorrelationID is the hub's id of the upload.
	CorrelationID string
	// Size is the number of bytes uploaded.
	Size int64
}

// UploadError is an upload that failed after the hub gave a target: the
// hub was notified of the failure (Notified) unless that failed too
// (NotifyErr).
type UploadError struct {
	// CorrelationID is the hub's id of the upload.
	CorrelationID string
	// Err is why the upload failed (the storage's refusal, the reader's
	// error, ctx's end).
	Err error
	// NotifyErr is the failure notification's own error, nil when the hub
	// took it.
	NotifyErr error
}

func (e *UploadError) Error() string {
	s := fmt.Sprintf("iotc: upload file: %v", e.Err)
	if e.NotifyErr != nil {
		s += fmt.Sprintf(" (and the failure notification failed: %v)", e.NotifyErr)
	}
	return s
}

func (e *UploadError) Unwrap() error { return e.Err }

// notifyTimeout bounds the failure notification sent after ctx ended.
const notifyTimeout = 30 * time.Second

// UploadFile uploads size bytes of r as blob name through the hub's file
// upload feature, with up: it asks the hub for a SAS URI (over HTTPS, with
// the device's SAS token or certificate, whatever transport the session
// uses), uploads the blob, and notifies the hub of the outcome (success,
// or failure with the error). It waits for a session to learn the hub
// (as SendTelemetry does). When ctx ends during the upload, the hub is
// still told of the failure (within 30 s). Errors: those of waiting for a
// session; the hub's refusal of the SAS request (*domain.HubError, 403
// with code 403006 beyond IoT Hub's 10 concurrent uploads per device;
// domain.ErrUnauthorized); *UploadError when the upload failed (the hub
// was notified); the success notification's error.
func (c *Client) UploadFile(ctx context.Context, up ports.FileUploader, name string, r io.Reader, size int64, o UploadOptions) (UploadResult, error) {
	if up == nil {
		return UploadResult{}, fmt.Errorf("%w: no file uploader", domain.ErrInvalidConfig)
	}
	if name == "" {
		return UploadResult{}, fmt.Errorf("%w: upload file: empty blob name", domain.ErrInvalidConfig)
	}
	if size < 0 || r == nil {
		return UploadResult{}, fmt.Errorf("%w: upload file: a reader and a size of 0 or more are needed", domain.ErrInvalidConfig)
	}
	s, err := c.hold.wait(ctx, nil, c.opts.FailFast)
	if err != nil {
		return UploadResult{}, fmt.Errorf("iotc: upload file: %w", err)
	}
	c.hold.mu.RLock()
	var hub, id string
	if c.assign != nil {
		hub, id = c.assign.hub, c.assign.deviceID
	}
	c.hold.mu.RUnlock()
	c.hold.release(s)
	if hub == "" {
		return UploadResult{}, fmt.Errorf("iotc: upload file: %w", errNobodyConnects)
	}
	auth, _, err := c.auth(domain.HubResource(hub, id), "")
	if err != nil {
		return UploadResult{}, err
	}
	conn := ports.HubConnection{Host: hub, DeviceID: id, Auth: auth}
	t, err := up.StartUpload(ctx, conn, name)
	if err != nil {
		return UploadResult{}, fmt.Errorf("iotc: upload file: %w", err)
	}
	c.log.Info("file upload started", "blob", t.BlobName, "correlation_id", t.CorrelationID, "bytes", size)
	err = up.Upload(ctx, t, ports.BlobUpload{
		Body: r, Size: size, ContentType: o.ContentType, BlockSize: o.BlockSize, Concurrency: o.Concurrency, Progress: o.Progress,
	})
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w: %w", err, ctx.Err())
		}
		status := http.StatusInternalServerError
		var st interface{ HTTPStatus() int }
		if errors.As(err, &st) {
			status = st.HTTPStatus()
		}
		nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
		nerr := up.NotifyUpload(nctx, conn, t.CorrelationID, ports.FileUploadResult{Success: false, StatusCode: status, Description: err.Error()})
		cancel()
		c.log.Warn("file upload failed", "blob", t.BlobName, "correlation_id", t.CorrelationID, "err", err, "notify_err", nerr)
		return UploadResult{}, &UploadError{CorrelationID: t.CorrelationID, Err: err, NotifyErr: nerr}
	}
	if err := up.NotifyUpload(ctx, conn, t.CorrelationID, ports.FileUploadResult{Success: true, StatusCode: http.StatusCreated, Description: "uploaded"}); err != nil {
		return UploadResult{}, fmt.Errorf("iotc: upload file: the blob is uploaded but the notification failed: %w", err)
	}
	c.log.Info("file upload done", "blob", t.BlobName, "correlation_id", t.CorrelationID)
	return UploadResult{BlobURL: t.BlobURL(), BlobName: t.BlobName, CorrelationID: t.CorrelationID, Size: size}, nil
}
