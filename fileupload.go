package iotc

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net/url"
	"sync"

	"github.com/iotc-go/iotc/adapters/fileupload"
	"github.com/iotc-go/iotc/app"
	"github.com/iotc-go/iotc/ports"
)

// UploadOptions tune UploadFile (content type, block size, concurrency, a
// progress callback); nil or the zero value takes the defaults: 4 MiB
// blocks, 4 in flight, the storage's default content type.
type UploadOptions = app.UploadOptions

// UploadResult describes a finished upload (blob URL without SAS, blob
// name, the hub's correlation id, size).
type UploadResult = app.UploadResult

// UploadError is an upload that failed after the hub handed out its
// target; the hub was told of the failure unless NotifyErr says otherwise.
type UploadError = app.UploadError

// StorageError is the storage account's refusal of a blob request (HTTP
// status and Blob service error code, such as 403 AuthenticationFailed).
type StorageError = fileupload.StorageError

// uploads builds the file uploader on first use. It keeps only what that
// needs of the Config (a copy of the whole Config in every client cost
// an idle client about 3 % of its heap: the footprint target), and makes
// its logger on first use too.
type uploads struct {
	mu      sync.Mutex
	done    bool
	port    int
	rootCAs *x509.CertPool
	proxy   *url.URL
	log     *slog.Logger // the client's; the uploader's is derived from it
	up      ports.FileUploader
	err     error
}

func newUploads(cfg Config, log *slog.Logger) *uploads {
	return &uploads{port: cfg.fileUploadPort(), rootCAs: cfg.RootCAs, proxy: cfg.Proxy, log: log, up: cfg.FileUploader}
}

// fileUploadPort is the hub's HTTPS port: WebSocketPort, else Port when
// Transport is a WebSocket transport, else 443.
func (cfg Config) fileUploadPort() int {
	if cfg.WebSocketPort != 0 {
		return cfg.WebSocketPort
	}
	if cfg.Transport == MQTTWebSockets || cfg.Transport == AMQPWebSockets {
		return cfg.Port
	}
	return 0
}

func (u *uploads) uploader() (ports.FileUploader, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.done {
		u.done = true
		if u.up == nil {
			up, err := fileupload.New(fileupload.Options{
				Port: u.port, RootCAs: u.rootCAs, Proxy: u.proxy, Logger: withAttr(u.log, "component", "fileupload"),
			})
			if err == nil {
				u.up = up
			}
			u.err = err
		}
	}
	return u.up, u.err
}

// UploadFile uploads size bytes of r as the blob name (the hub stores it
// as "{deviceId}/{name}" in the container linked to it) with IoT Hub's
// file upload: it asks the hub for a SAS URI over HTTPS on the hub's
// HTTPS port (see Config.WebSocketPort) with the device's SAS token or
// certificate, through Config.Proxy or the environment's proxy as the
// WebSocket transports, whatever transport the client uses; uploads the
// blob with the official Azure Blob client (blocks of opts.BlockSize,
// opts.Concurrency at once, its retries); then notifies the hub, which
// tells the service. It waits for a connection to learn the hub, as
// SendTelemetry does. When the upload fails or ctx ends, the hub is
// notified of the failure with the error and UploadFile returns an
// *UploadError (wrapping a *StorageError when the storage refused). A
// reader that holds fewer or more than size bytes fails the upload
// before the blob is committed. IoT Hub allows 10 concurrent uploads
// per device: the 11th fails with a *HubError, status 403, code 403006.
func (c *Client) UploadFile(ctx context.Context, name string, r io.Reader, size int64, opts *UploadOptions) (UploadResult, error) {
	up, err := c.uploads.uploader()
	if err != nil {
		return UploadResult{}, err
	}
	var o UploadOptions
	if opts != nil {
		o = *opts
	}
	return c.app.UploadFile(ctx, up, name, r, size, o)
}

// close ends the uploader's idle connections (Close).
func (u *uploads) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if cl, ok := u.up.(interface{ CloseIdleConnections() }); ok && u.done {
		cl.CloseIdleConnections()
	}
}
