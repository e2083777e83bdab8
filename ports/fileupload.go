package ports

import (
	"context"
	"io"
)

// FileUploadTarget is the hub's answer to a file upload request: where to
// upload, with a SAS token for that blob only.
type FileUploadTarget struct {
	// CorrelationID identifies the upload in its notification.
	CorrelationID string
	// HostName is the storage host (host[:port], then /{account} for a
	// path-style account such as Azurite's or the emulator's).
	HostName string
	// ContainerName and BlobName name the blob ("{device}/{name}").
	ContainerName string
	BlobName      string
	// SASToken is the blob's SAS query ("?sv=...").
	SASToken string
}

// BlobURL is https://{HostName}/{ContainerName}/{BlobName} without the SAS.
func (t FileUploadTarget) BlobURL() string {
	return "https://" + t.HostName + "/" + t.ContainerName + "/" + t.BlobName
}

// BlobUpload is one upload of bytes to a FileUploadTarget.
type BlobUpload struct {
	// Body holds Size bytes.
	Body io.Reader
	Size int64
	// ContentType is the blob's content type ("" lets the storage choose).
	ContentType string
	// BlockSize is the size of each block; 0 means the adapter's default.
	BlockSize int64
	// Concurrency is how many blocks are in flight; 0 means the adapter's
	// default.
	Concurrency int
	// Progress, when not nil, is called with the bytes uploaded so far, from
	// the adapter's goroutines, one call at a time.
	Progress func(uploaded int64)
}

// FileUploadResult is what the device tells the hub at the end.
type FileUploadResult struct {
	// Success is true when the blob is complete.
	Success bool
	// StatusCode is the storage's HTTP status (201 on success, the
	// storage's refusal or 500 otherwise).
	StatusCode int
	// Description is a short text (the storage error on failure).
	Description string
}

// FileUploader uploads a file through the hub's file upload feature:
// a SAS URI from the hub, the blob to storage, a notification to the hub.
// Errors follow the package contract: domain.ErrUnauthorized (wrapped)
// when the hub refuses the credentials, *domain.HubError with the hub's
// status (403006 when the device has 10 active uploads), or a retryable
// network error; no error text holds a token.
type FileUploader interface {
	// StartUpload asks the hub (over HTTPS, as conn.DeviceID with
	// conn.Auth) for a target to upload blobName to.
	StartUpload(ctx context.Context, conn HubConnection, blobName string) (FileUploadTarget, error)
	// Upload writes up's bytes to the target's blob. A storage refusal
	// carries the storage's status and error code in its text.
	Upload(ctx context.Context, target FileUploadTarget, up BlobUpload) error
	// NotifyUpload tells the hub how the upload of correlationID ended.
	NotifyUpload(ctx context.Context, conn HubConnection, correlationID string, res FileUploadResult) error
}
