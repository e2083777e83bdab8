// Package fileupload implements ports.FileUploader: IoT Hub's file upload
// API over HTTPS (POST /devices/{id}/files and
// /devices/{id}/files/notifications, api-version 2021-04-12) with the
// device's SAS token or X.509 certificate, and the blob upload with the
// official Azure Blob client (github.com/Azure/azure-sdk-for-go/sdk/storage/azblob:
// block upload, retries and checksums are its job). Both go through the
// same HTTP CONNECT proxy settings as the WebSocket transports.
package fileupload

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/iotc-go/iotc/adapters/internal/wsdial"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// APIVersion is the IoT Hub API version of the file upload requests.
const APIVersion = "2021-04-12"

// Defaults of a blob upload.
const (
	// DefaultBlockSize is the block size when BlobUpload.BlockSize is 0
	// (4 MiB, the Node SDK's).
	DefaultBlockSize = 4 << 20
	// DefaultConcurrency is how many blocks are in flight when
	// BlobUpload.Concurrency is 0.
	DefaultConcurrency = 4
	// MaxBlockSize is the Blob service's largest block (4000 MiB).
	MaxBlockSize = 4000 << 20
)

// Options configure New. The zero value connects to port 443 with the
// system roots and the proxy of the environment.
type Options struct {
	// Port is the hub's HTTPS port. Default 443.
	Port int
	// RootCAs verifies the hub and the storage; nil means the system roots.
	RootCAs *x509.CertPool
	// Proxy is the HTTP CONNECT proxy (http://[user:password@]host:port);
	// nil uses HTTPS_PROXY and NO_PROXY from the environment (loopback
	// addresses are never proxied), as the WebSocket transports do.
	Proxy *url.URL
	// Retries is how many times azblob retries a failed storage request.
	// Default 3; a negative value retries none.
	Retries int
	// Logger receives one line per upload (never a token); nil discards.
	Logger *slog.Logger
}

// Uploader is the ports.FileUploader adapter. Create it with New.
type Uploader struct {
	opts  Options
	proxy wsdial.ProxyFunc
	log   *slog.Logger

	mu      sync.Mutex
	clients map[*tls.Certificate]*http.Client // by client certificate (nil: none)
}

var _ ports.FileUploader = (*Uploader)(nil)

// New returns an uploader. Errors wrap domain.ErrInvalidConfig: a proxy
// that is not http://host:port, a port out of range.
func New(opts Options) (*Uploader, error) {
	if opts.Port == 0 {
		opts.Port = 443
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("%w: fileupload: port %d", domain.ErrInvalidConfig, opts.Port)
	}
	if opts.Retries == 0 {
		opts.Retries = 3
	}
	proxy, _, err := wsdial.Proxy("fileupload", opts.Proxy, false)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Uploader{opts: opts, proxy: proxy, log: log, clients: map[*tls.Certificate]*http.Client{}}, nil
}

// client is the HTTP client of one identity (a client certificate or
// none), kept so that connections are reused.
func (u *Uploader) client(cert *tls.Certificate) *http.Client {
	u.mu.Lock()
	defer u.mu.Unlock()
	if c, ok := u.clients[cert]; ok {
		return c
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: u.opts.RootCAs}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{
		Proxy: func(r *http.Request) (*url.URL, error) {
			if isLoopback(r.URL.Hostname()) {
				return nil, nil
			}
			return u.proxy(r)
		},
		TLSClientConfig:     tc,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 30 * time.Second,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	c := &http.Client{Transport: tr}
	u.clients[cert] = c
	return c
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CloseIdleConnections closes the idle connections of every client.
func (u *Uploader) CloseIdleConnections() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.clients {
		c.CloseIdleConnections()
	}
}

func (u *Uploader) hubURL(conn ports.HubConnection, path string) string {
	host := conn.Host
	if u.opts.Port != 443 {
		host = net.JoinHostPort(conn.Host, strconv.Itoa(u.opts.Port))
	}
	return "https://" + host + "/devices/" + url.PathEscape(conn.DeviceID) + path + "?api-version=" + APIVersion
}

// post sends a JSON request to the hub and decodes a JSON answer into out
// (when not nil).
func (u *Uploader) post(ctx context.Context, op string, conn ports.HubConnection, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", domain.ErrMalformed, op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.hubURL(conn, path), bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", domain.ErrInvalidConfig, op, err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Accept", "application/json")
	if conn.Auth.SASToken != "" {
		req.Header.Set("Authorization", conn.Auth.SASToken)
	}
	res, err := u.client(conn.Auth.Certificate).Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, scrub(err))
	}
	defer res.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("%s: reading the answer: %w", op, scrub(err))
	}
	if res.StatusCode/100 != 2 {
		return hubError(op, res.StatusCode, rb)
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			return fmt.Errorf("%w: %s: the hub's answer is not JSON: %w", domain.ErrMalformed, op, err)
		}
	}
	return nil
}

// scrub drops the URL (it holds no secret, but names the network address,
// which the ports contract keeps out of error texts) from a client error.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// hubError maps the hub's refusal to the domain's errors.
func hubError(op string, status int, body []byte) error {
	var e struct {
		Message string `json:"Message"`
	}
	_ = json.Unmarshal(body, &e)
	he := &domain.HubError{Op: op, Status: status, Message: e.Message}
	var ex struct {
		ExceptionMessage string `json:"ExceptionMessage"`
	}
	_ = json.Unmarshal(body, &ex)
	if i := strings.Index(ex.ExceptionMessage, "(errorCode "); i >= 0 {
		he.Code, _ = strconv.Atoi(strings.TrimSuffix(ex.ExceptionMessage[i+11:], ")"))
	}
	switch status {
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: %w", domain.ErrUnauthorized, he)
	case http.StatusNotFound:
		if he.Code == 0 || he.Code == 404001 {
			return fmt.Errorf("%w: %w", domain.ErrDeviceNotFound, he)
		}
	}
	return he
}

// StartUpload implements ports.FileUploader.
func (u *Uploader) StartUpload(ctx context.Context, conn ports.HubConnection, blobName string) (ports.FileUploadTarget, error) {
	var out struct {
		CorrelationID string `json:"correlationId"`
		HostName      string `json:"hostName"`
		ContainerName string `json:"containerName"`
		BlobName      string `json:"blobName"`
		SASToken      string `json:"sasToken"`
	}
	if err := u.post(ctx, "file upload SAS request", conn, "/files", map[string]string{"blobName": blobName}, &out); err != nil {
		return ports.FileUploadTarget{}, err
	}
	if out.CorrelationID == "" || out.HostName == "" || out.ContainerName == "" || out.BlobName == "" || out.SASToken == "" {
		return ports.FileUploadTarget{}, fmt.Errorf("%w: the hub's file upload answer lacks a field", domain.ErrMalformed)
	}
	t := ports.FileUploadTarget{CorrelationID: out.CorrelationID, HostName: out.HostName, ContainerName: out.ContainerName, BlobName: out.BlobName, SASToken: out.SASToken}
	if !strings.HasPrefix(t.SASToken, "?") {
		t.SASToken = "?" + t.SASToken
	}
	return t, nil
}

// NotifyUpload implements ports.FileUploader.
func (u *Uploader) NotifyUpload(ctx context.Context, conn ports.HubConnection, correlationID string, res ports.FileUploadResult) error {
	body := map[string]any{
		"correlationId": correlationID, "isSuccess": res.Success, "statusCode": res.StatusCode, "statusDescription": res.Description,
	}
	return u.post(ctx, "file upload notification", conn, "/files/notifications", body, nil)
}

// Upload implements ports.FileUploader with azblob's block upload
// (UploadStream: Put Block per BlockSize, then Put Block List).
func (u *Uploader) Upload(ctx context.Context, t ports.FileUploadTarget, up ports.BlobUpload) error {
	bs := up.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if bs < 0 || bs > MaxBlockSize {
		return fmt.Errorf("%w: block size %d (1 byte to 4000 MiB)", domain.ErrInvalidConfig, bs)
	}
	conc := up.Concurrency
	if conc == 0 {
		conc = DefaultConcurrency
	}
	if conc < 0 {
		return fmt.Errorf("%w: concurrency %d", domain.ErrInvalidConfig, conc)
	}
	retries := u.opts.Retries
	if retries < 0 {
		retries = -1
	}
	copts := &blockblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: u.client(nil),
		Retry:     policy.RetryOptions{MaxRetries: int32(retries)},
	}}
	bb, err := blockblob.NewClientWithNoCredential(t.BlobURL()+t.SASToken, copts)
	if err != nil {
		return fmt.Errorf("%w: blob URL: %w", domain.ErrMalformed, err)
	}
	body := up.Body
	if up.Progress != nil {
		body = &progressReader{r: body, fn: up.Progress}
	}
	// A reader that ends early or runs long is the caller's mistake, told
	// before the blob is committed.
	counted := &countingReader{r: body, limit: up.Size}
	opts := &blockblob.UploadStreamOptions{BlockSize: bs, Concurrency: conc}
	if up.ContentType != "" {
		opts.HTTPHeaders = &blob.HTTPHeaders{BlobContentType: &up.ContentType}
	}
	if up.Size <= bs {
		// One request: Put Blob.
		data, rerr := io.ReadAll(counted)
		if rerr != nil {
			return fmt.Errorf("reading the file: %w", rerr)
		}
		if err := counted.check(); err != nil {
			return err
		}
		bo := &blockblob.UploadBufferOptions{HTTPHeaders: opts.HTTPHeaders, BlockSize: bs}
		_, err = bb.UploadBuffer(ctx, data, bo)
	} else {
		_, err = bb.UploadStream(ctx, &checkedReader{c: counted}, opts)
	}
	if err != nil {
		return storageError(err)
	}
	return nil
}

// storageError words a storage failure (status and error code) without
// the URL, which holds the SAS token.
func storageError(err error) error {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return &StorageError{Status: re.StatusCode, Code: re.ErrorCode}
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		// Without the addresses (the ports contract).
		return fmt.Errorf("blob upload: the connection to the storage failed (%s): %w", oe.Op, &connError{err: oe.Err})
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("blob upload: the storage closed the connection: %w", &connError{err: io.ErrUnexpectedEOF})
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("blob upload: %w", ue.Err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("blob upload: %w", err)
	}
	var se *sizeError
	if errors.As(err, &se) {
		return se
	}
	// azblob's own errors may quote the request URL: keep only the type
	// of failure.
	text := err.Error()
	if i := strings.Index(text, "?"); i >= 0 {
		text = text[:i] + "?<redacted>"
	}
	return fmt.Errorf("blob upload: %s", text)
}

// StorageError is the storage's refusal of a blob request.
type StorageError struct {
	// Status is the HTTP status (403 for a refused SAS, ...).
	Status int
	// Code is the Blob service's error code (AuthenticationFailed, ...).
	Code string
}

func (e *StorageError) Error() string {
	return fmt.Sprintf("blob upload: the storage refused: status %d %s", e.Status, e.Code)
}

type progressReader struct {
	r  io.Reader
	fn func(int64)
	n  int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.fn(p.n)
	}
	return n, err
}

// countingReader reads at most limit+1 bytes so that a reader longer than
// its declared size is caught.
type countingReader struct {
	r     io.Reader
	limit int64
	n     int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	if c.n > c.limit {
		return 0, io.EOF
	}
	if rem := c.limit + 1 - c.n; int64(len(b)) > rem {
		b = b[:rem]
	}
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

type sizeError struct{ got, want int64 }

func (e *sizeError) Error() string {
	if e.got > e.want {
		return fmt.Sprintf("blob upload: the reader holds more than the %d bytes declared", e.want)
	}
	return fmt.Sprintf("blob upload: the reader ended after %d of the %d bytes declared", e.got, e.want)
}

func (c *countingReader) check() error {
	if c.n != c.limit {
		return &sizeError{got: c.n, want: c.limit}
	}
	return nil
}

// checkedReader turns a size mismatch into a read error, so that azblob
// stops before committing the block list.
type checkedReader struct{ c *countingReader }

func (r *checkedReader) Read(b []byte) (int, error) {
	n, err := r.c.Read(b)
	if r.c.n > r.c.limit {
		return 0, &sizeError{got: r.c.n, want: r.c.limit}
	}
	if errors.Is(err, io.EOF) && r.c.n != r.c.limit {
		return n, &sizeError{got: r.c.n, want: r.c.limit}
	}
	return n, err
}

// HTTPStatus is the storage's status, reported to the hub in the failure
// notification.
func (e *StorageError) HTTPStatus() int { return e.Status }

// connError is a lost or refused storage connection (retryable).
type connError struct{ err error }

func (e *connError) Error() string   { return e.err.Error() }
func (e *connError) Unwrap() error   { return e.err }
func (e *connError) Timeout() bool   { return false }
func (e *connError) Temporary() bool { return true }
