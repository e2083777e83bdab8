package restapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// FileUploads is IoT Central's file upload configuration
// (/api/fileUploads, 2022-07-31): the storage account devices upload to.
// The emulator also takes an empty connection string: its own blob
// endpoint. Answers show the connection string with its AccountKey
// redacted.
type FileUploads struct {
	// ConnectionString names the storage account ("" is the emulator's
	// embedded blob endpoint).
	ConnectionString string `json:"connectionString"`
	// Container is the blob container.
	Container string `json:"container"`
	// Account is the storage account name (read from the connection
	// string when empty).
	Account string `json:"account,omitempty"`
	// SasTTL is the SAS token lifetime as an ISO 8601 duration (PT1H).
	SasTTL string `json:"sasTtl,omitempty"`
	// State is "succeeded" once configured (read-only).
	State string `json:"state,omitempty"`
	// Etag is the configuration's etag (read-only).
	Etag string `json:"etag,omitempty"`
}

// FileUploadBackend keeps the file upload configuration; a backend
// without it answers 501 on /api/fileUploads.
type FileUploadBackend interface {
	// GetFileUploads returns the configuration, or ErrNotFound when none
	// was set.
	GetFileUploads(ctx context.Context) (FileUploads, error)
	// PutFileUploads replaces it; ifMatch ("" or "*": any) must be the
	// current etag (ErrPreconditionFailed). ErrValidation for a bad
	// container name or TTL.
	PutFileUploads(ctx context.Context, f FileUploads, ifMatch string) (FileUploads, error)
	// DeleteFileUploads removes it (ErrNotFound when none was set).
	DeleteFileUploads(ctx context.Context) error
}

func (h *handler) fileUploadRoutes() []route {
	return []route{{"/api/fileUploads", map[string]http.HandlerFunc{
		"GET": h.getFileUploads, "PUT": h.putFileUploads, "PATCH": h.patchFileUploads, "DELETE": h.deleteFileUploads,
	}}}
}

func (h *handler) fileUploads(w http.ResponseWriter, r *http.Request) (FileUploadBackend, bool) {
	fb, ok := h.b.(FileUploadBackend)
	if !ok {
		h.fail(w, r, http.StatusNotImplemented, "NotImplemented", "this backend keeps no file upload configuration")
	}
	return fb, ok
}

func (h *handler) getFileUploads(w http.ResponseWriter, r *http.Request) {
	if fb, ok := h.fileUploads(w, r); ok {
		f, err := fb.GetFileUploads(r.Context())
		h.respond(w, r, http.StatusOK, f, err)
	}
}

func (h *handler) putFileUploads(w http.ResponseWriter, r *http.Request) {
	fb, ok := h.fileUploads(w, r)
	if !ok {
		return
	}
	b, err := readBody(w, r)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	var f FileUploads
	if err := decodeJSON(b, &f); err != nil {
		h.failErr(w, r, err)
		return
	}
	if f.Container == "" {
		h.failErr(w, r, invalidf("container is required"))
		return
	}
	out, err := fb.PutFileUploads(r.Context(), f, r.Header.Get("If-Match"))
	h.respond(w, r, http.StatusOK, out, err)
}

func (h *handler) patchFileUploads(w http.ResponseWriter, r *http.Request) {
	fb, ok := h.fileUploads(w, r)
	if !ok {
		return
	}
	b, err := readBody(w, r)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	var patch struct {
		ConnectionString *string `json:"connectionString"`
		Container        *string `json:"container"`
		Account          *string `json:"account"`
		SasTTL           *string `json:"sasTtl"`
		Etag             *string `json:"etag"`
	}
	if err := decodeJSON(b, &patch); err != nil {
		h.failErr(w, r, err)
		return
	}
	cur, err := fb.GetFileUploads(r.Context())
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	if full, ok := fb.(interface {
		fullFileUploads(context.Context) (FileUploads, error)
	}); ok {
		if f, err := full.fullFileUploads(r.Context()); err == nil {
			cur.ConnectionString = f.ConnectionString // the stored one, not the redacted answer
		}
	}
	ifMatch := r.Header.Get("If-Match")
	if patch.Etag != nil && ifMatch == "" {
		ifMatch = *patch.Etag
	}
	if ifMatch == "" {
		ifMatch = cur.Etag // the state read above, so a concurrent change is not lost silently
	}
	for _, p := range []struct {
		from *string
		to   *string
	}{{patch.ConnectionString, &cur.ConnectionString}, {patch.Container, &cur.Container}, {patch.Account, &cur.Account}, {patch.SasTTL, &cur.SasTTL}} {
		if p.from != nil {
			*p.to = *p.from
		}
	}
	out, err := fb.PutFileUploads(r.Context(), cur, ifMatch)
	h.respond(w, r, http.StatusOK, out, err)
}

func (h *handler) deleteFileUploads(w http.ResponseWriter, r *http.Request) {
	if fb, ok := h.fileUploads(w, r); ok {
		if err := fb.DeleteFileUploads(r.Context()); err != nil {
			h.failErr(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

var isoDuration = regexp.MustCompile(`^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$`)

// parseSasTTL parses an ISO 8601 duration of hours, minutes and seconds.
func parseSasTTL(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	m := isoDuration.FindStringSubmatch(v)
	if m == nil || v == "PT" {
		return 0, invalidf("sasTtl %q is not an ISO 8601 duration such as PT1H", v)
	}
	var d time.Duration
	for i, unit := range []time.Duration{time.Hour, time.Minute, time.Second} {
		if m[i+1] != "" {
			n, err := strconv.Atoi(m[i+1])
			if err != nil {
				return 0, invalidf("sasTtl %q", v)
			}
			d += time.Duration(n) * unit
		}
	}
	return d, nil
}

func formatSasTTL(d time.Duration) string {
	s := "PT"
	if h := d / time.Hour; h > 0 {
		s += strconv.Itoa(int(h)) + "H"
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		s += strconv.Itoa(int(m)) + "M"
		d -= m * time.Minute
	}
	if sec := d / time.Second; sec > 0 || s == "PT" {
		s += strconv.Itoa(int(sec)) + "S"
	}
	return s
}

// redactKey hides the AccountKey of a connection string.
func redactKey(cs string) string {
	parts := strings.Split(cs, ";")
	for i, p := range parts {
		if k, _, ok := strings.Cut(p, "="); ok && strings.EqualFold(strings.TrimSpace(k), "AccountKey") {
			parts[i] = k + "=<redacted>"
		}
	}
	return strings.Join(parts, ";")
}

func accountOf(cs string) string {
	for _, p := range strings.Split(cs, ";") {
		if k, v, ok := strings.Cut(p, "="); ok && strings.EqualFold(strings.TrimSpace(k), "AccountName") {
			return v
		}
	}
	return ""
}

var _ FileUploadBackend = coreBackend{}

func toFileUploads(c core.FileUploadConfig, redact bool) FileUploads {
	f := FileUploads{ConnectionString: c.ConnectionString, Container: c.Container, Account: accountOf(c.ConnectionString),
		SasTTL: formatSasTTL(c.SASTTL), State: "succeeded", Etag: c.ETag}
	if redact {
		f.ConnectionString = redactKey(f.ConnectionString)
	}
	return f
}

func (b coreBackend) GetFileUploads(context.Context) (FileUploads, error) {
	c := b.c.FileUploadSettings()
	if !c.Set {
		return FileUploads{}, fmt.Errorf("%w: file uploads are not configured", ErrNotFound)
	}
	return toFileUploads(c, true), nil
}

func (b coreBackend) fullFileUploads(context.Context) (FileUploads, error) {
	return toFileUploads(b.c.FileUploadSettings(), false), nil
}

func (b coreBackend) PutFileUploads(ctx context.Context, f FileUploads, ifMatch string) (FileUploads, error) {
	ttl, err := parseSasTTL(f.SasTTL)
	if err != nil {
		return FileUploads{}, err
	}
	if strings.Contains(f.ConnectionString, "<redacted>") {
		return FileUploads{}, invalidf("connectionString holds a redacted key; send the full connection string")
	}
	if f.ConnectionString != "" && (accountOf(f.ConnectionString) == "" || !strings.Contains(strings.ToLower(f.ConnectionString), "accountkey=")) {
		return FileUploads{}, invalidf("connectionString needs AccountName and AccountKey")
	}
	if err := core.ValidContainerName(f.Container); err != nil {
		return FileUploads{}, invalidf("%v", err)
	}
	c, err := b.c.SetFileUploadSettings(ctx, core.FileUploadConfig{ConnectionString: f.ConnectionString, Container: f.Container, SASTTL: ttl}, ifMatch)
	if errors.Is(err, core.ErrPreconditionFailed) {
		return FileUploads{}, fmt.Errorf("%w: the fileUploads etag changed", ErrPreconditionFailed)
	}
	if err != nil {
		return FileUploads{}, err
	}
	return toFileUploads(c, true), nil
}

func (b coreBackend) DeleteFileUploads(ctx context.Context) error {
	if !b.c.FileUploadSettings().Set {
		return fmt.Errorf("%w: file uploads are not configured", ErrNotFound)
	}
	return b.c.ResetFileUploadSettings(ctx)
}
