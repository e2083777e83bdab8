// Package fileupload is IoT Hub's device file upload API on the hub host:
//
//   - POST /devices/{id}/files {"blobName": ...} answers
//     {correlationId, hostName, containerName, blobName, sasToken} (a SAS
//     for https://{hostName}/{containerName}/{blobName}), at most
//     core.MaxActiveFileUploads active uploads per device (403006
//     DeviceMaximumActiveFileUploadLimitExceeded beyond);
//   - POST /devices/{id}/files/notifications with {correlationId,
//     isSuccess, statusCode, statusDescription}, the correlation id in the
//     body (REST reference) or in the path
//     (/files/notifications/{correlationId}, as the Node SDK sends it),
//     answered 204; a successful upload queues the service's file upload
//     notification.
//
// Devices authenticate with a SAS token in the Authorization header or a
// TLS client certificate, checked by the core. Uploads go to a Storage:
// the emulator's blob endpoint, or a storage account named by a
// connection string (the emulator's option or IoT Central's fileUploads
// configuration).
package fileupload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// MaxBody is the largest request body read.
const MaxBody = 64 << 10

// Handler serves the device file upload routes. Create it with New.
type Handler struct {
	core     *core.Core
	log      *slog.Logger
	mux      *http.ServeMux
	fallback http.Handler
	storage  Storage
	tls      *tls.Config

	mu    sync.Mutex
	byCS  map[string]Storage // storages of IoT Central's connection strings
	ready map[string]bool    // containers made, by storage host and name
}

// Config configures New.
type Config struct {
	// Core is the model.
	Core *core.Core
	// Storage is where uploads go unless IoT Central's fileUploads
	// configuration names a connection string.
	Storage Storage
	// StorageTLS is the TLS configuration of requests to storage accounts
	// named by connection strings (nil: the system roots).
	StorageTLS *tls.Config
	// Fallback serves every other path (the hub's service API).
	Fallback http.Handler
	// Logger receives one line per refused request (never a token); nil
	// discards.
	Logger *slog.Logger
}

// New returns the handler.
func New(cfg Config) *Handler {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{core: cfg.Core, log: log, mux: http.NewServeMux(), fallback: cfg.Fallback, storage: cfg.Storage, tls: cfg.StorageTLS,
		byCS: map[string]Storage{}, ready: map[string]bool{}}
	h.mux.HandleFunc("POST /devices/{id}/files", h.device(h.start))
	h.mux.HandleFunc("POST /devices/{id}/files/notifications", h.device(h.notify))
	h.mux.HandleFunc("POST /devices/{id}/files/notifications/{cid}", h.device(h.notify))
	return h
}

// ServeHTTP implements http.Handler: the file upload routes, or Fallback.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := h.mux.Handler(r); pattern == "" {
		if h.fallback == nil {
			http.NotFound(w, r)
			return
		}
		h.fallback.ServeHTTP(w, r)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// device authenticates the device of the path before fn.
func (h *Handler) device(fn func(w http.ResponseWriter, r *http.Request, id string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var certs []*x509.Certificate
		if r.TLS != nil {
			certs = r.TLS.PeerCertificates
		}
		token := r.Header.Get("Authorization")
		if token == "" && len(certs) == 0 {
			h.fail(w, r, http.StatusUnauthorized, "IotHubUnauthorizedAccess", 401002, "no SAS token and no client certificate")
			return
		}
		if _, err := h.core.AuthenticateHub(id, token, certs); err != nil {
			h.writeError(w, r, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		if err := fn(w, r, id); err != nil {
			h.writeError(w, r, err)
		}
	}
}

// storageFor returns the storage of the configuration.
func (h *Handler) storageFor(cfg core.FileUploadConfig) (Storage, error) {
	if cfg.ConnectionString == "" {
		if h.storage == nil {
			return nil, fmt.Errorf("%w: no storage is configured for file uploads", errNoStorage)
		}
		return h.storage, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.byCS[cfg.ConnectionString]; ok {
		return s, nil
	}
	s, err := NewExternal(cfg.ConnectionString, h.tls)
	if err != nil {
		return nil, err
	}
	h.byCS[cfg.ConnectionString] = s
	return s, nil
}

var errNoStorage = errors.New("fileupload: no storage")

type startRequest struct {
	BlobName string `json:"blobName"`
}

type startResponse struct {
	CorrelationID string `json:"correlationId"`
	HostName      string `json:"hostName"`
	ContainerName string `json:"containerName"`
	BlobName      string `json:"blobName"`
	SASToken      string `json:"sasToken"`
}

func (h *Handler) start(w http.ResponseWriter, r *http.Request, id string) error {
	var req startRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	cfg := h.core.FileUploadSettings()
	st, err := h.storageFor(cfg)
	if err != nil {
		return err
	}
	key := fmt.Sprintf("%p/%s", st, cfg.Container)
	h.mu.Lock()
	made := h.ready[key]
	h.mu.Unlock()
	if !made {
		if err := st.EnsureContainer(r.Context(), cfg.Container); err != nil {
			return fmt.Errorf("%w: %w", errStorage, err)
		}
		h.mu.Lock()
		h.ready[key] = true
		h.mu.Unlock()
	}
	expiry := time.Now().Add(cfg.SASTTL)
	u, err := h.core.BeginFileUpload(r.Context(), id, req.BlobName, st.HostName(), cfg.Container, expiry)
	if err != nil {
		return err
	}
	token, err := st.Sign(u.Container, u.BlobName, expiry)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, startResponse{
		CorrelationID: u.CorrelationID, HostName: u.HostName, ContainerName: u.Container, BlobName: u.BlobName, SASToken: token,
	})
	return nil
}

var errStorage = errors.New("the storage account refused")

type notifyRequest struct {
	CorrelationID     string `json:"correlationId"`
	IsSuccess         *bool  `json:"isSuccess"`
	StatusCode        int    `json:"statusCode"`
	StatusDescription string `json:"statusDescription"`
}

func (h *Handler) notify(w http.ResponseWriter, r *http.Request, id string) error {
	var req notifyRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if cid := r.PathValue("cid"); cid != "" {
		req.CorrelationID = cid
	}
	if req.CorrelationID == "" || req.IsSuccess == nil {
		return fmt.Errorf("%w: correlationId and isSuccess are required", core.ErrInvalid)
	}
	res := core.FileUploadResult{Success: *req.IsSuccess, StatusCode: req.StatusCode, Description: req.StatusDescription}
	if res.Success {
		var u *core.FileUpload
		for _, x := range h.core.FileUploads(id) {
			if x.CorrelationID == req.CorrelationID {
				u = &x
			}
		}
		if u != nil {
			if st, err := h.storageOfHost(u.HostName); err == nil {
				ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
				res.Size, res.LastModified, err = st.Properties(ctx, u.Container, u.BlobName)
				cancel()
				if err != nil {
					h.log.Info("uploaded blob's properties not read", "device_id", id, "blob", u.BlobName, "error", err)
				}
			}
		}
	}
	if _, err := h.core.EndFileUpload(r.Context(), id, req.CorrelationID, res); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// storageOfHost finds the storage whose host name an upload named.
func (h *Handler) storageOfHost(host string) (Storage, error) {
	if h.storage != nil && h.storage.HostName() == host {
		return h.storage, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.byCS {
		if s.HostName() == host {
			return s, nil
		}
	}
	return nil, errNoStorage
}

func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: the body is not the expected JSON: %v", core.ErrInvalid, err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, core.ErrTooManyUploads):
		h.fail(w, r, http.StatusForbidden, "DeviceMaximumActiveFileUploadLimitExceeded", 403006, err.Error())
	case errors.Is(err, core.ErrNotFound):
		h.fail(w, r, http.StatusNotFound, "DeviceNotFound", 404001, err.Error())
	case errors.Is(err, core.ErrUnauthorized), errors.Is(err, core.ErrForbidden):
		h.fail(w, r, http.StatusUnauthorized, "IotHubUnauthorizedAccess", 401002, err.Error())
	case errors.Is(err, core.ErrThrottled):
		h.fail(w, r, http.StatusTooManyRequests, "ThrottlingException", 429001, err.Error())
	case errors.As(err, &mbe):
		h.fail(w, r, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", 413001, err.Error())
	case errors.Is(err, core.ErrInvalid):
		h.fail(w, r, http.StatusBadRequest, "ArgumentInvalid", 400004, err.Error())
	case errors.Is(err, errStorage), errors.Is(err, errNoStorage), errors.Is(err, ErrConnectionString):
		h.fail(w, r, http.StatusInternalServerError, "ServerError", 500001, "file upload storage: "+err.Error())
	default:
		h.fail(w, r, http.StatusInternalServerError, "ServerError", 500001, err.Error())
	}
}

// fail writes IoT Hub's error body; texts come from errors that never
// hold a token or key.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, code string, num int, text string) {
	h.log.Info("file upload request refused", "method", r.Method, "path", r.URL.Path, "status", status, "code", code, "error", text)
	w.Header().Set("iothub-errorcode", code)
	writeJSON(w, status, map[string]any{
		"Message":          fmt.Sprintf("ErrorCode:%s;%s", code, text),
		"ExceptionMessage": fmt.Sprintf("Tracking ID:%s-TimeStamp:%s (errorCode %d)", core.RandomHex(16), time.Now().UTC().Format("01/02/2006 15:04:05"), num),
	})
}
