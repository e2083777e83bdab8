// Package dpsapi is the emulator's Device Provisioning Service over HTTPS,
// served on the provisioning host (the hub host: the WebSocket listener,
// port 443 by default, routes the paths Handles accepts here):
//
//   - the DPS service API (api-version 2021-10-01, what the official
//     azure-iot-provisioning-service package sends): individual enrollments
//     PUT/GET/DELETE /enrollments/{id}, bulk POST /enrollments,
//     POST /enrollments/query, POST /enrollments/{id}/attestationmechanism;
//     enrollment groups the same under /enrollmentGroups; registration
//     states GET/DELETE /registrations/{id} and
//     POST /registrations/{groupId}/query. Requests carry a DPS service SAS
//     token ("SharedAccessSignature sr={host}&sig=...&se=...&skn=provisioningserviceowner");
//   - device registration (api-version 2019-03-31 or 2021-06-01):
//     PUT /{idScope}/registrations/{id}/register, GET
//     /{idScope}/registrations/{id}/operations/{operationId} and the
//     registration status lookup POST (or GET) /{idScope}/registrations/{id},
//     authenticated by a DPS SAS token in the Authorization header or a TLS
//     client certificate, decided by the core as over MQTT and AMQP.
//
// Errors have DPS's shape: {"errorCode":404201,"trackingId":"...",
// "message":"...","timestampUtc":"..."}.
//
// The package calls the core only; it imports no other front-end.
package dpsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// MaxBody is the largest request body read (a bulk operation of many
// enrollments with certificates).
const MaxBody = 4 << 20

// MaxBulk is the most enrollments one bulk operation may carry (DPS: 10).
const MaxBulk = 10

// DefaultPageSize is the page size of a query without x-ms-max-item-count;
// MaxPageSize caps it.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Error codes of the DPS error body. DPS documents the HTTP statuses; the
// numeric codes follow its status*1000+n pattern.
const (
	codeBadRequest   = 400004
	codeUnauthorized = 401002
	codeNotFound     = 404201
	codeConflict     = 409201
	codePrecondition = 412201
	codeTooLarge     = 413001
	codeUnavailable  = 503000
	codeInternal     = 500000
)

// hubRoots are the first path segments of the hub's own APIs: a path
// starting with one is never DPS's.
var hubRoots = map[string]bool{"devices": true, "twins": true, "configurations": true, "jobs": true,
	"digitaltwins": true, "statistics": true, "messages": true, "$iothub": true, "api": true}

// Handles reports whether path is one of the DPS paths this package serves
// (the service API's collections, or a device registration path
// /{idScope}/registrations/...).
func Handles(path string) bool {
	seg := strings.Split(strings.Trim(path, "/"), "/")
	switch strings.ToLower(seg[0]) {
	case "enrollments", "enrollmentgroups", "registrations":
		return true
	}
	return len(seg) >= 3 && seg[1] == "registrations" && !hubRoots[strings.ToLower(seg[0])]
}

// Handler serves the DPS HTTPS APIs. Create it with New.
type Handler struct {
	core *core.Core
	log  *slog.Logger
}

// New returns the handler over c; log receives one line per refused
// request (never a header or a token); nil discards.
func New(c *core.Core, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{core: c, log: log}
}

// errMethod reports a path served with another method.
var errMethod = errors.New("method not allowed")

// errBadRequest reports a request body or parameter the API refuses.
var errBadRequest = errors.New("bad request")

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	seg := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if r.URL.Query().Get("api-version") == "" {
		h.fail(w, r, http.StatusBadRequest, codeBadRequest, "the api-version query parameter is missing")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	var err error
	switch strings.ToLower(seg[0]) {
	case "enrollments", "enrollmentgroups", "registrations":
		if _, aerr := h.core.AuthenticateDPSService(r.Header.Get("Authorization")); aerr != nil {
			h.writeError(w, r, aerr)
			return
		}
		err = h.service(w, r, strings.ToLower(seg[0]), seg[1:])
	default:
		err = h.device(w, r, seg)
	}
	if err != nil {
		h.writeError(w, r, err)
	}
}

// service routes the DPS service API.
func (h *Handler) service(w http.ResponseWriter, r *http.Request, coll string, rest []string) error {
	m := r.Method
	switch {
	case len(rest) == 0 && coll == "enrollments" && m == http.MethodPost:
		return h.bulk(w, r)
	case len(rest) == 1 && rest[0] == "query" && coll != "registrations" && m == http.MethodPost:
		return h.query(w, r, coll, "")
	case len(rest) == 2 && rest[1] == "query" && coll == "registrations" && m == http.MethodPost:
		return h.query(w, r, coll, rest[0])
	case len(rest) == 2 && strings.EqualFold(rest[1], "attestationmechanism") && coll != "registrations" && m == http.MethodPost:
		return h.attestation(w, coll, rest[0])
	case len(rest) == 1 && rest[0] != "":
		id := rest[0]
		ifMatch := r.Header.Get("If-Match")
		switch {
		case coll == "enrollments" && m == http.MethodPut:
			return h.putEnrollment(w, r, id, ifMatch)
		case coll == "enrollments" && m == http.MethodGet:
			e, err := h.core.Enrollment(id)
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, h.enrollmentJSON(e))
			return nil
		case coll == "enrollments" && m == http.MethodDelete:
			if err := h.core.DeleteEnrollment(id, ifMatch); err != nil {
				return err
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		case coll == "enrollmentgroups" && m == http.MethodPut:
			return h.putGroup(w, r, id, ifMatch)
		case coll == "enrollmentgroups" && m == http.MethodGet:
			g, err := h.core.EnrollmentGroup(id)
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, groupJSON(g))
			return nil
		case coll == "enrollmentgroups" && m == http.MethodDelete:
			if err := h.core.DeleteDPSEnrollmentGroup(id, ifMatch); err != nil {
				return err
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		case coll == "registrations" && m == http.MethodGet:
			rs, err := h.core.RegistrationState(id)
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, regStateJSON(rs))
			return nil
		case coll == "registrations" && m == http.MethodDelete:
			if err := h.core.DeleteRegistrationState(id, ifMatch); err != nil {
				return err
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	return fmt.Errorf("%w: %s %s is not part of the DPS service API", errMethod, r.Method, r.URL.Path)
}

// errorOf maps the core's errors to an HTTP status and a DPS error code.
func errorOf(err error) (int, int) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, core.ErrPreconditionFailed):
		return http.StatusPreconditionFailed, codePrecondition
	case errors.Is(err, core.ErrNotFound), errors.Is(err, errMethod):
		return http.StatusNotFound, codeNotFound
	case errors.Is(err, core.ErrConflict):
		return http.StatusConflict, codeConflict
	case errors.Is(err, core.ErrUnauthorized), errors.Is(err, core.ErrForbidden):
		return http.StatusUnauthorized, codeUnauthorized
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, codeTooLarge
	case errors.Is(err, core.ErrInvalid), errors.Is(err, core.ErrTooLarge), errors.Is(err, errBadRequest):
		return http.StatusBadRequest, codeBadRequest
	case errors.Is(err, core.ErrClosed), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, codeUnavailable
	default:
		return http.StatusInternalServerError, codeInternal
	}
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := errorOf(err)
	h.fail(w, r, status, code, err.Error())
}

// errorBody is DPS's error shape.
type errorBody struct {
	ErrorCode    int    `json:"errorCode"`
	TrackingID   string `json:"trackingId"`
	Message      string `json:"message"`
	TimestampUtc string `json:"timestampUtc"`
}

// fail writes DPS's error body. The text comes from the core's errors,
// which never hold a token or key.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status, code int, text string) {
	h.log.Info("DPS request refused", "method", r.Method, "path", r.URL.Path, "status", status, "code", code, "error", text)
	writeJSON(w, status, errorBody{ErrorCode: code, TrackingID: core.NewUUID(), Message: text,
		TimestampUtc: time.Now().UTC().Format(timeFormat)})
}

// timeFormat is how DPS writes times.
const timeFormat = "2006-01-02T15:04:05.0000000Z"

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errorCode":500000,"message":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// readJSON decodes the request body into v; an empty body is an error.
func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return fmt.Errorf("%w: the request has no body", errBadRequest)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: body is not the expected JSON: %v", errBadRequest, err)
	}
	return nil
}

// pageSize reads x-ms-max-item-count.
func pageSize(r *http.Request) (int, error) {
	v := r.Header.Get("x-ms-max-item-count")
	if v == "" {
		return DefaultPageSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%w: x-ms-max-item-count %q is not a positive number", errBadRequest, v)
	}
	return min(n, MaxPageSize), nil
}
