package emulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/blob"
	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/fileupload"
)

// BlobAccount is the account name of the embedded blob endpoint (URLs
// https://{host}:{port}/iotcemulator/{container}/{blob}).
const BlobAccount = "iotcemulator"

// DataDirBlobs is the directory inside Options.DataDir that holds the
// embedded blob endpoint's blobs; DataDirBlobKeyFile its account key
// (mode 0600).
const (
	DataDirBlobs       = "blobs"
	DataDirBlobKeyFile = "blob-account-key"
)

// blobEndpoint is the embedded blob endpoint's listener.
type blobEndpoint struct {
	ln  *outageListener
	srv *http.Server
	key string
}

// startFileUploads makes the upload storage: the embedded blob endpoint
// (its own TLS listener) unless Options.StorageConnectionString names an
// account, and the file upload API the hub host serves (see
// fileUploadRoutes).
func (e *Emulator) startFileUploads() error {
	log := e.log.With("component", "fileupload")
	if cs := e.cfg.storageCS; cs != "" {
		st, err := fileupload.NewExternal(cs, e.storageTLS())
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		e.upStorage = st
		return nil
	}
	if e.cfg.blobAddr == "-" {
		return nil
	}
	key := base64.StdEncoding.EncodeToString([]byte(core.RandomHex(32)))
	dir := ""
	if e.cfg.dataDir != "" {
		dir = filepath.Join(e.cfg.dataDir, DataDirBlobs)
		k, err := keptToken(filepath.Join(e.cfg.dataDir, DataDirBlobKeyFile), key)
		if err != nil {
			return err
		}
		key = k
	}
	st, err := blob.NewStore(dir)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	srv, err := blob.NewServer(BlobAccount, key, st, e.log.With("component", "blob"))
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	ln, err := net.Listen("tcp", e.cfg.blobAddr)
	if err != nil {
		return fmt.Errorf("emulator: blob listener: %w", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	emb, err := fileupload.NewEmbedded(srv, key, net.JoinHostPort(e.cfg.hubHost, port))
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("emulator: %w", err)
	}
	e.upStorage = emb
	// No read or write timeout: a blob body may be large and slow; the
	// headers are bounded.
	hs := &http.Server{
		Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: e.cfg.limits.HTTPIdleTimeout,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	ol := &outageListener{Listener: ln, conns: map[net.Conn]struct{}{}}
	e.blob = &blobEndpoint{ln: ol, srv: hs, key: key}
	tln := tls.NewListener(ol, e.serverTLS())
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := hs.Serve(tln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("blob endpoint stopped", "error", err)
		}
	}()
	return nil
}

// storageTLS trusts the system roots and the emulator's own CA (so a
// local Azurite can serve a certificate the emulator's CA signed).
func (e *Emulator) storageTLS() *tls.Config {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	pool.AddCert(e.bundle.CA.Cert)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
}

// fileUploadRoutes serves the device file upload API on the hub host and
// passes every other path to next.
func (e *Emulator) fileUploadRoutes(next http.Handler) http.Handler {
	return fileupload.New(fileupload.Config{
		Core: e.core, Storage: e.upStorage, StorageTLS: e.storageTLS(), Fallback: next,
		Logger: e.log.With("component", "fileupload"),
	})
}

func (e *Emulator) closeBlob() error {
	if e.blob == nil {
		return nil
	}
	if err := e.blob.srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// BlobURL is the embedded blob endpoint's account URL
// ("https://127.0.0.1:port/iotcemulator"), or "" when it is disabled or
// Options.StorageConnectionString is set.
func (e *Emulator) BlobURL() string {
	if e.blob == nil {
		return ""
	}
	return "https://" + e.blob.ln.Addr().String() + "/" + BlobAccount
}

// StorageConnectionString is the connection string of the storage that
// receives uploads: the embedded blob endpoint's (BlobEndpoint=BlobURL(),
// its account key; the CA of CAFile signs its certificate), or
// Options.StorageConnectionString. It is a secret: do not log it.
func (e *Emulator) StorageConnectionString() string {
	if e.cfg.storageCS != "" {
		return e.cfg.storageCS
	}
	if e.blob == nil {
		return ""
	}
	return "DefaultEndpointsProtocol=https;AccountName=" + BlobAccount + ";AccountKey=" + e.blob.key + ";BlobEndpoint=" + e.BlobURL() + ";"
}

// FileUpload is one file upload of a device (see FileUploads).
type FileUpload = core.FileUpload

// FileUploads lists device id's file uploads, oldest first: the active
// ones and the last core.MaxFileUploadHistory ended ones.
func (e *Emulator) FileUploads(id string) []FileUpload { return e.core.FileUploads(id) }

// FileUploadSettings is the file upload configuration (IoT Central's
// fileUploads resource): container, SAS token lifetime, an optional
// storage connection string, and whether uploads are disabled.
type FileUploadSettings = core.FileUploadConfig

// SetFileUploadSettings replaces the file upload configuration (see
// FileUploadSettings; a zero Container or SASTTL takes its default:
// "fileuploads", one hour). It returns an error wrapping ErrInvalid for a
// bad container name or a TTL over 48 hours.
func (e *Emulator) SetFileUploadSettings(ctx context.Context, s FileUploadSettings) (FileUploadSettings, error) {
	return e.core.SetFileUploadSettings(ctx, s, "")
}

// BlobOutage simulates a storage outage (a fault for tests): while on is
// true, every connection to the embedded blob endpoint is closed at once
// and new ones are closed as soon as they are accepted. It does nothing
// when the endpoint is disabled.
func (e *Emulator) BlobOutage(on bool) {
	if e.blob != nil {
		e.blob.ln.outage(on)
	}
}

// outageListener tracks its connections so that BlobOutage can cut them.
type outageListener struct {
	net.Listener
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

func (l *outageListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.down {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		tc := &trackedConn{Conn: c, l: l}
		l.conns[tc] = struct{}{}
		l.mu.Unlock()
		return tc, nil
	}
}

func (l *outageListener) outage(on bool) {
	l.mu.Lock()
	l.down = on
	var cut []net.Conn
	if on {
		for c := range l.conns {
			cut = append(cut, c)
		}
	}
	l.mu.Unlock()
	for _, c := range cut {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *outageListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
