package iotc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/adapters/fileupload"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/ports"
)

// patternReader streams n pseudo-random bytes (seeded) without holding
// them, so a 64 MB upload costs no 64 MB buffer in the test.
type patternReader struct {
	r *rand.ChaCha8
	n int64
}

func newPattern(seed byte, n int64) *patternReader {
	var s [32]byte
	s[0] = seed
	return &patternReader{r: rand.NewChaCha8(s), n: n}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	n, _ := p.r.Read(b)
	p.n -= int64(n)
	return n, nil
}

func patternSum(seed byte, n int64) [32]byte {
	h := sha256.New()
	_, _ = io.Copy(h, newPattern(seed, n))
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// uploadConfig is config with the hub's HTTPS port (the WebSocket
// listener) for file uploads.
func uploadConfig(t *testing.T, emu *emulator.Emulator, id string) iotc.Config {
	cfg := config(t, emu, id)
	cfg.WebSocketPort = wsPort(t, emu)
	return cfg
}

// blobReader is an azblob client of the emulator's storage with its
// Shared Key (the service side reading what devices uploaded).
func blobReader(t *testing.T, emu *emulator.Emulator) *azblob.Client {
	t.Helper()
	c, err := azblob.NewClientFromConnectionString(emu.StorageConnectionString(), &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: emu.CAPool(), MinVersion: tls.VersionTLS12}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestUploadFile uploads 10 KB, 5 MB and a 64 MB stream over MQTT, then
// AMQP, reads each back byte for byte through azblob, and finds the
// upload ended with success and its size in the hub's records.
func TestUploadFile(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	rd := blobReader(t, emu)
	for _, tc := range []struct {
		name      string
		transport iotc.Transport
		size      int64
		opts      *iotc.UploadOptions
	}{
		{"10KB", iotc.MQTT, 10 << 10, nil},
		{"5MB", iotc.AMQP, 5 << 20, &iotc.UploadOptions{ContentType: "application/x-test", BlockSize: 1 << 20, Concurrency: 3}},
		{"64MB", iotc.MQTT, 64 << 20, &iotc.UploadOptions{BlockSize: 8 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "upload-" + strings.ToLower(tc.name)
			cfg := uploadConfig(t, emu, id)
			cfg.Transport = tc.transport
			if tc.transport == iotc.AMQP {
				cfg.Port = amqpPort(t, emu)
			}
			c := connect(t, cfg, nil)
			var progress atomic.Int64
			opts := tc.opts
			if opts == nil {
				opts = &iotc.UploadOptions{}
			}
			opts.Progress = func(n int64) { progress.Store(n) }
			seed := byte(tc.size % 251)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := c.UploadFile(ctx, "data/"+tc.name+".bin", newPattern(seed, tc.size), tc.size, opts)
			if err != nil {
				t.Fatalf("UploadFile: %v", err)
			}
			if res.BlobName != id+"/data/"+tc.name+".bin" || res.Size != tc.size || !strings.HasSuffix(res.BlobURL, "/fileuploads/"+res.BlobName) {
				t.Fatalf("result %+v", res)
			}
			if progress.Load() != tc.size {
				t.Errorf("last progress %d, want %d", progress.Load(), tc.size)
			}
			dl, err := rd.DownloadStream(ctx, "fileuploads", res.BlobName, nil)
			if err != nil {
				t.Fatalf("read back: %v", err)
			}
			h := sha256.New()
			n, err := io.Copy(h, dl.Body)
			dl.Body.Close()
			if err != nil || n != tc.size {
				t.Fatalf("read back %d bytes: %v", n, err)
			}
			var got [32]byte
			copy(got[:], h.Sum(nil))
			if got != patternSum(seed, tc.size) {
				t.Fatal("the blob's bytes differ from the stream's")
			}
			if tc.opts != nil && tc.opts.ContentType != "" && (dl.ContentType == nil || *dl.ContentType != tc.opts.ContentType) {
				t.Errorf("content type %v, want %s", dl.ContentType, tc.opts.ContentType)
			}
			ups := emu.FileUploads(id)
			if len(ups) != 1 || !ups[0].Success || ups[0].Size != tc.size || ups[0].CorrelationID != res.CorrelationID {
				t.Fatalf("hub records %+v", ups)
			}
		})
	}
}

// TestUploadFileConnectionKilled: the storage's connections are cut in the
// middle of a 16 MB upload (and stay down): UploadFile fails with an
// *UploadError that says what happened, and the hub got the failure
// notification.
func TestUploadFileConnectionKilled(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	const id = "upload-killed"
	cfg := uploadConfig(t, emu, id)
	up, err := fileupload.New(fileupload.Options{Port: wsPort(t, emu), RootCAs: emu.CAPool(), Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer up.CloseIdleConnections()
	cfg.FileUploader = up
	c := connect(t, cfg, nil)
	var cut atomic.Bool
	opts := &iotc.UploadOptions{BlockSize: 1 << 20, Concurrency: 1, Progress: func(n int64) {
		if n >= 4<<20 && cut.CompareAndSwap(false, true) {
			emu.BlobOutage(true)
		}
	}}
	const size = 16 << 20
	_, err = c.UploadFile(testCtx(t), "killed.bin", newPattern(1, size), size, opts)
	var ue *iotc.UploadError
	if !errors.As(err, &ue) {
		t.Fatalf("UploadFile: %v, want an *UploadError", err)
	}
	if ue.NotifyErr != nil || ue.CorrelationID == "" || !strings.Contains(err.Error(), "connection") || strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("error %v (notify error %v)", err, ue.NotifyErr)
	}
	ups := emu.FileUploads(id)
	if len(ups) != 1 || ups[0].Ended.IsZero() || ups[0].Success || ups[0].Description == "" {
		t.Fatalf("hub records %+v, want one failed upload with the error", ups)
	}
	t.Logf("error: %v; hub got status %d %q", err, ups[0].StatusCode, ups[0].Description)
	emu.BlobOutage(false)
	// The storage is back: the next upload works.
	if _, err := c.UploadFile(testCtx(t), "after.bin", newPattern(2, 1000), 1000, nil); err != nil {
		t.Fatalf("upload after the outage: %v", err)
	}
}

// TestUploadFileCanceled: ctx ends during the upload; the hub is still
// told of the failure.
func TestUploadFileCanceled(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	const id = "upload-canceled"
	c := connect(t, uploadConfig(t, emu, id), nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	opts := &iotc.UploadOptions{BlockSize: 1 << 20, Concurrency: 1, Progress: func(n int64) {
		if n >= 2<<20 {
			cancel()
		}
	}}
	_, err := c.UploadFile(ctx, "canceled.bin", newPattern(3, 8<<20), 8<<20, opts)
	var ue *iotc.UploadError
	if !errors.As(err, &ue) || !errors.Is(err, context.Canceled) || ue.NotifyErr != nil {
		t.Fatalf("UploadFile: %v, want an *UploadError wrapping context.Canceled, notified", err)
	}
	if ups := emu.FileUploads(id); len(ups) != 1 || ups[0].Ended.IsZero() || ups[0].Success {
		t.Fatalf("hub records %+v", ups)
	}
}

// tamper wraps the real uploader and changes the SAS the hub gave.
type tamper struct {
	ports.FileUploader
	fn func(*ports.FileUploadTarget)
}

func (t tamper) Upload(ctx context.Context, target ports.FileUploadTarget, up ports.BlobUpload) error {
	t.fn(&target)
	return t.FileUploader.Upload(ctx, target, up)
}

// TestUploadFileBadSAS: a SAS whose signature was altered, and a SAS that
// expired, are refused by the blob endpoint (403 AuthenticationFailed);
// UploadFile reports the storage error and the hub hears of the failure.
func TestUploadFileBadSAS(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	real, err := fileupload.New(fileupload.Options{Port: wsPort(t, emu), RootCAs: emu.CAPool(), Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer real.CloseIdleConnections()
	for _, tc := range []struct {
		name string
		fn   func(*ports.FileUploadTarget)
		ttl  time.Duration
	}{
		{"wrong signature", func(t *ports.FileUploadTarget) {
			t.SASToken = strings.Replace(t.SASToken, "sig=", "sig=AAAA", 1)
		}, 0},
		{"expired", func(*ports.FileUploadTarget) { time.Sleep(1500 * time.Millisecond) }, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := emu.SetFileUploadSettings(testCtx(t), emulator.FileUploadSettings{SASTTL: tc.ttl}); err != nil {
				t.Fatal(err)
			}
			id := "upload-sas-" + strings.ReplaceAll(tc.name, " ", "-")
			cfg := uploadConfig(t, emu, id)
			cfg.FileUploader = tamper{FileUploader: real, fn: tc.fn}
			c := connect(t, cfg, nil)
			_, err := c.UploadFile(testCtx(t), "x.bin", bytes.NewReader(make([]byte, 5000)), 5000, nil)
			var se *iotc.StorageError
			if !errors.As(err, &se) || se.Status != 403 || se.Code != "AuthenticationFailed" {
				t.Fatalf("UploadFile: %v, want the storage's 403 AuthenticationFailed", err)
			}
			if strings.Contains(err.Error(), "sig=") {
				t.Fatalf("the error shows the SAS: %v", err)
			}
			ups := emu.FileUploads(id)
			if len(ups) != 1 || ups[0].Success || ups[0].StatusCode != 403 {
				t.Fatalf("hub records %+v, want a failure with status 403", ups)
			}
		})
	}
}

// TestUploadFileReaderSize: a reader shorter than the declared size fails
// the upload before anything is committed.
func TestUploadFileReaderSize(t *testing.T) {
	t.Parallel()
	emu := startEmulator(t)
	const id = "upload-short"
	c := connect(t, uploadConfig(t, emu, id), nil)
	_, err := c.UploadFile(testCtx(t), "short.bin", newPattern(4, 3<<20), 5<<20, &iotc.UploadOptions{BlockSize: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "ended after") {
		t.Fatalf("UploadFile: %v, want the short reader reported", err)
	}
	_, err = blobReader(t, emu).ServiceClient().NewContainerClient("fileuploads").NewBlobClient(id+"/short.bin").GetProperties(testCtx(t), nil)
	if err == nil {
		t.Fatal("a short upload was committed")
	}
}

// TestUploadFileX509: a device with a certificate (no SAS) asks the hub
// for the upload with its TLS client certificate.
func TestUploadFileX509(t *testing.T) {
	t.Parallel()
	vec := filepath.Join("domain", "testdata", "pkcs8")
	caPEM, err := os.ReadFile(filepath.Join(vec, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	emu := startEmulator(t)
	if _, err := emu.PutEnrollmentGroup(emulator.EnrollmentGroup{ID: "x509-up", Enabled: true, CACertPEM: caPEM}); err != nil {
		t.Fatal(err)
	}
	cfg := uploadConfig(t, emu, "pkcs8-device")
	cfg.Credential = iotc.X509Files(filepath.Join(vec, "ec-cert.pem"), filepath.Join(vec, "ec-pkcs8-aes256.key"), "correct horse")
	c := connect(t, cfg, nil)
	res, err := c.UploadFile(testCtx(t), "x509.txt", strings.NewReader("from a certificate"), 18, nil)
	if err != nil {
		t.Fatalf("UploadFile: %v", err)
	}
	if ups := emu.FileUploads("pkcs8-device"); len(ups) != 1 || !ups[0].Success || ups[0].Size != 18 || res.BlobName != "pkcs8-device/x509.txt" {
		t.Fatalf("hub records %+v, result %+v", ups, res)
	}
}
