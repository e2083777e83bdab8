package restapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxBodyBytes is the largest request body accepted (1 MiB); a larger one is
// answered 413 RequestEntityTooLarge.
const MaxBodyBytes = 1 << 20

// commandGrace is added to a command's own timeouts to bound the backend
// call, so a backend that ignores its timeouts cannot hold a request forever.
const commandGrace = 5 * time.Second

// APIVersion is the only api-version the handler serves; a request
// without it, or with another, is answered 400.
const APIVersion = "2022-07-31"

// DefaultPageSize is how many items a list answer holds before it ends
// with a nextLink (IoT Central's default page size for these lists is not
// documented in the 2022-07-31 spec; 100 matches its public samples).
const DefaultPageSize = 100

// Options configure the handler.
type Options struct {
	// Token is the API token; every request must carry it as the whole
	// Authorization header value (as IoT Central API tokens are sent). An
	// empty token refuses every request.
	Token string
	// AllowBearer also accepts "Bearer <token>". Default false: IoT
	// Central takes Bearer only for Microsoft Entra tokens, so a client
	// sending an API token after Bearer is refused 401, as it would be by a
	// real application.
	AllowBearer bool
	// PageSize is the number of items per list page; 0 means
	// DefaultPageSize. Lists longer than it end with a nextLink.
	PageSize int
	// Logger receives request logs; nil discards. The token, the
	// Authorization header and keys are never logged.
	Logger *slog.Logger
	// Stats, when set, serves the emulator's extension GET
	// /api/emulator/stats: its value as JSON (connections, refusals, limit
	// hits). Nil: the route is not served.
	Stats func() any
	// Clock runs jobs and scheduled jobs; nil is the system clock.
	Clock Clock
	// DataExport, when set, serves IoT Central's data export routes
	// (/api/dataExport/..., api-version 2022-10-31-preview or
	// 2022-06-30-preview). Nil: they answer 501.
	DataExport DataExportBackend
}

type handler struct {
	b           Backend
	digest      [sha256.Size]byte // SHA-256 of the token, so compares run in constant time whatever the length
	empty       bool
	allowBearer bool
	pageSize    int
	log         *slog.Logger
	mux         *http.ServeMux
	condMu      sync.Mutex // held by conditional writes (If-Match, body etag); see guard
	clock       Clock
	jobs        *jobRunner // runs jobs (jobrunner.go)
	sched       *scheduler // starts scheduled jobs (scheduledjobs.go)
	entityMu    sync.Mutex // held by every write that checks references to other entities (organizations, roles, devices); taken before condMu, the scheduler's and the job runner's locks
	export      DataExportBackend
}

type route struct {
	path    string
	methods map[string]http.HandlerFunc
}

// New returns the REST API handler over b, configured by o.
func New(b Backend, o Options) http.Handler {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	h := &handler{b: b, digest: sha256.Sum256([]byte(o.Token)), empty: o.Token == "", allowBearer: o.AllowBearer,
		pageSize: o.PageSize, log: logger, mux: http.NewServeMux(), export: o.DataExport}
	h.clock = o.Clock
	if h.clock == nil {
		h.clock = systemClock{}
	}
	h.jobs = newJobRunner(h)
	h.sched = newScheduler(h)
	routes := []route{
		{"/api/devices", map[string]http.HandlerFunc{"GET": h.listDevices}},
		{"/api/devices/{id}", map[string]http.HandlerFunc{"GET": h.getDevice, "PUT": h.putDevice, "PATCH": h.patchDevice, "DELETE": h.deleteDevice}},
		{"/api/devices/{id}/attestation", map[string]http.HandlerFunc{"GET": h.getAttestation, "PUT": h.putAttestation, "PATCH": h.patchAttestation, "DELETE": h.deleteAttestation}},
		{"/api/devices/{id}/components", map[string]http.HandlerFunc{"GET": h.listComponents}},
		{"/api/devices/{id}/credentials", map[string]http.HandlerFunc{"GET": h.getCredentials}},
		{"/api/devices/{id}/properties", map[string]http.HandlerFunc{"GET": h.getProperties, "PATCH": h.patchProperties, "PUT": h.putProperties}},
		{"/api/devices/{id}/components/{c}/properties", map[string]http.HandlerFunc{"GET": h.getProperties, "PATCH": h.patchProperties, "PUT": h.putProperties}},
		{"/api/devices/{id}/commands/{name}", map[string]http.HandlerFunc{"GET": h.getCommandHistory, "POST": h.postCommand}},
		{"/api/devices/{id}/components/{c}/commands/{name}", map[string]http.HandlerFunc{"GET": h.getCommandHistory, "POST": h.postCommand}},
		// Moved to /api/emulator/...: a 308 pointer for one release.
		{"/api/devices/{id}/messages", map[string]http.HandlerFunc{"POST": h.moved(emulatorPrefix + "/devices/{id}/messages")}},
		{"/api/devices/{id}/telemetry", map[string]http.HandlerFunc{"GET": h.moved(emulatorPrefix + "/devices/{id}/telemetry")}},
		{"/api/devices/{id}/telemetry/{name}", map[string]http.HandlerFunc{"GET": h.getTelemetry}},
		{"/api/devices/{id}/components/{c}/telemetry/{name}", map[string]http.HandlerFunc{"GET": h.getTelemetry}},
		{"/api/deviceTemplates", map[string]http.HandlerFunc{"GET": h.listTemplates}},
		{"/api/deviceTemplates/{id}", map[string]http.HandlerFunc{"GET": h.getTemplate, "PUT": h.putTemplate, "PATCH": h.patchTemplate, "DELETE": h.deleteTemplate}},
		{"/api/enrollmentGroups", map[string]http.HandlerFunc{"GET": h.listGroups}},
		{"/api/enrollmentGroups/{id}", map[string]http.HandlerFunc{"GET": h.getGroup, "PUT": h.putGroup, "PATCH": h.patchGroup, "DELETE": h.deleteGroup}},
		{"/api/devices/{id}/faults", map[string]http.HandlerFunc{"POST": h.moved(emulatorPrefix + "/devices/{id}/faults"),
			"DELETE": h.moved(emulatorPrefix + "/devices/{id}/faults")}},
		// Emulator extensions, all under /api/emulator (see doc.go).
		{emulatorPrefix + "/devices/{id}/connection", map[string]http.HandlerFunc{"GET": h.getConnection}},
		{emulatorPrefix + "/devices/{id}/messages", map[string]http.HandlerFunc{"POST": h.postMessage}},
		{emulatorPrefix + "/devices/{id}/telemetry", map[string]http.HandlerFunc{"GET": h.getTelemetryHistory}},
		{emulatorPrefix + "/devices/{id}/faults", map[string]http.HandlerFunc{"POST": h.postFault, "DELETE": h.deleteFaults}},
		{emulatorPrefix + "/devices/{id}/commands/{name}/queue", map[string]http.HandlerFunc{"POST": h.postQueuedCommand}},
		{emulatorPrefix + "/devices/{id}/components/{c}/commands/{name}/queue", map[string]http.HandlerFunc{"POST": h.postQueuedCommand}},
	}
	routes = append(routes, h.certificateRoutes()...)
	routes = append(routes, h.tokenRoutes()...)
	routes = append(routes, h.deviceGroupRoutes()...)
	routes = append(routes, h.applicationRoutes()...)
	routes = append(routes, h.dataExportRoutes()...)
	routes = append(routes, h.fileUploadRoutes()...)
	if o.Stats != nil {
		routes = append(routes, route{emulatorPrefix + "/stats", map[string]http.HandlerFunc{"GET": func(w http.ResponseWriter, r *http.Request) {
			h.reply(w, r, http.StatusOK, o.Stats())
		}}})
	}
	for _, rt := range routes {
		allowed := make([]string, 0, len(rt.methods))
		for m, f := range rt.methods {
			h.mux.HandleFunc(m+" "+rt.path, f)
			allowed = append(allowed, m)
			if m == http.MethodGet {
				allowed = append(allowed, http.MethodHead)
			}
		}
		slices.Sort(allowed)
		allow := strings.Join(allowed, ", ")
		// A method-less pattern is less specific than the method ones, so it
		// only catches the methods the path does not serve.
		h.mux.HandleFunc(rt.path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			h.fail(w, r, http.StatusMethodNotAllowed, "MethodNotAllowed",
				fmt.Sprintf("method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow))
		})
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, "NotFound", "no such route: "+r.URL.Path+
			" (the emulator serves the IoT Central 2022-07-31 operations listed in docs/emulator.md, plus its extensions,"+
			" which IoT Central lacks, all under "+emulatorPrefix+"/: devices/{id}/connection, devices/{id}/messages,"+
			" devices/{id}/telemetry, devices/{id}/faults, devices/{id}/[components/{c}/]commands/{name}/queue and stats)")
	})
	// Continue the jobs a restart interrupted and the schedules.
	h.jobs.recover()
	h.sched.kickIfAny()
	return h
}

type requestIDKey struct{}

// ServeHTTP checks the token, then routes.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := newRequestID()
	r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
	w.Header().Set("x-ms-request-id", id)
	role := h.tokenRole(r)
	if role == "" {
		h.log.Info("restapi: request refused: missing or wrong API token",
			"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "requestId", id)
		h.fail(w, r, http.StatusUnauthorized, "Unauthorized", "missing or invalid Authorization header")
		return
	}
	switch v, ok := r.URL.Query()["api-version"]; {
	case !ok || len(v) == 0 || v[0] == "":
		h.fail(w, r, http.StatusBadRequest, "MissingApiVersionParameter",
			"the api-version query parameter is required; this emulator serves api-version="+strings.Join(apiVersionsFor(r.URL.Path), " or ")+" here")
		return
	case len(v) > 1 || !servedVersion(r.URL.Path, v[0]):
		h.fail(w, r, http.StatusBadRequest, "InvalidApiVersionParameter",
			fmt.Sprintf("api-version %q is not supported here; this emulator serves api-version=%s on %s", strings.Join(v, ","),
				strings.Join(apiVersionsFor(r.URL.Path), " or "), r.URL.Path))
		return
	}
	if err := permit(role, r); err != nil {
		h.failErr(w, r, err)
		return
	}
	h.log.Debug("restapi: request", "method", r.Method, "path", r.URL.Path, "requestId", id)
	h.mux.ServeHTTP(w, r)
}

func (h *handler) authorized(header string) bool {
	if h.empty || header == "" {
		return false
	}
	whole := sha256.Sum256([]byte(header))
	ok := subtle.ConstantTimeCompare(whole[:], h.digest[:])
	if h.allowBearer && len(header) > 7 && strings.EqualFold(header[:7], "bearer ") {
		bare := sha256.Sum256([]byte(strings.TrimSpace(header[7:])))
		ok |= subtle.ConstantTimeCompare(bare[:], h.digest[:])
	}
	return ok == 1
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

// apiError is the IoT Central error body.
type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"requestId"`
	Time      string `json:"time"`
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	w.Header().Set("x-ms-error-code", code)
	h.reply(w, r, status, apiError{Error: apiErrorBody{
		Code: code, Message: publicMessage(msg), RequestID: requestID(r), Time: time.Now().UTC().Format(http.TimeFormat),
	}})
}

// failErr answers a backend or validation error with its mapped status.
func (h *handler) failErr(w http.ResponseWriter, r *http.Request, err error) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		h.fail(w, r, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit))
	case errors.Is(err, ErrValidation):
		h.fail(w, r, http.StatusUnprocessableEntity, "UnprocessableEntity", err.Error())
	case errors.Is(err, ErrBadRequest):
		h.fail(w, r, http.StatusBadRequest, "BadRequest", err.Error())
	case errors.Is(err, errNoDocs), errors.Is(err, errNoModules):
		h.fail(w, r, http.StatusNotImplemented, "NotImplemented", err.Error())
	case errors.Is(err, ErrForbidden):
		h.fail(w, r, http.StatusForbidden, "Forbidden", err.Error())
	case errors.Is(err, ErrPreconditionFailed):
		h.fail(w, r, http.StatusPreconditionFailed, "PreconditionFailed", err.Error())
	case errors.Is(err, ErrConflict):
		h.fail(w, r, http.StatusConflict, "Conflict", err.Error())
	case errors.Is(err, ErrDeviceOffline):
		h.fail(w, r, http.StatusNotFound, "DeviceNotOnline", "could not connect to the device to send the command: "+err.Error())
	case errors.Is(err, ErrNotFound):
		h.fail(w, r, http.StatusNotFound, "NotFound", err.Error())
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		h.fail(w, r, http.StatusGatewayTimeout, "GatewayTimeout", "timed out waiting for the device: "+err.Error())
	case errors.Is(err, ErrQueueFull):
		h.fail(w, r, http.StatusForbidden, "DeviceMaximumQueueDepthExceeded", err.Error())
	case errors.Is(err, ErrTooLarge):
		h.fail(w, r, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", err.Error())
	default:
		h.log.Error("restapi: backend error", "method", r.Method, "path", r.URL.Path,
			"requestId", requestID(r), "err", err)
		h.fail(w, r, http.StatusInternalServerError, "InternalServerError",
			"the emulator failed to handle the request; see its log for request "+requestID(r))
	}
}

func (h *handler) reply(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.log.Error("restapi: cannot encode response", "path", r.URL.Path, "requestId", requestID(r), "err", err)
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"InternalServerError","message":"cannot encode the response","requestId":"` + requestID(r) + `"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(append(b, '\n'))
	}
}

// invalidf returns an error wrapping ErrValidation (a well-formed body or
// value the API refuses: 422).
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrValidation}, args...)...)
}

// errorf returns an error wrapping sentinel with a message.
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}

// badRequestf returns an error wrapping ErrBadRequest.
func badRequestf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...)
}

// readBody reads at most MaxBodyBytes of the request body. It returns an
// *http.MaxBytesError beyond the limit.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		return nil, badRequestf("cannot read request body: %v", err)
	}
	return b, nil
}

// decodeJSON decodes exactly one JSON value from b into v, refusing trailing
// data; errors wrap ErrBadRequest.
func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return badRequestf("request body is empty; a JSON value is required")
		}
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return invalidf("%s", typeMismatch(ute))
		}
		return badRequestf("malformed JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequestf("malformed JSON: trailing data after the JSON value")
	}
	return nil
}

// typeMismatch words a JSON value of the wrong type in JSON's terms, never
// Go's: `field "enabled" must be a JSON boolean, not a string`.
func typeMismatch(e *json.UnmarshalTypeError) string {
	want := "value of another type"
	if e.Type != nil {
		switch e.Type.Kind() {
		case reflect.Map, reflect.Struct:
			want = "object"
		case reflect.Slice, reflect.Array:
			want = "array"
		case reflect.String:
			want = "string"
		case reflect.Bool:
			want = "boolean"
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			want = "integer"
		case reflect.Float32, reflect.Float64:
			want = "number"
		}
	}
	got := e.Value
	if strings.HasPrefix(got, "number") {
		got = "number"
	}
	if e.Field == "" {
		return fmt.Sprintf("the body must be a JSON %s, not %s", want, article(got))
	}
	return fmt.Sprintf("field %q must be a JSON %s, not %s", e.Field, want, article(got))
}

func article(kind string) string {
	if kind == "" {
		return "this value"
	}
	if strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}

// list is the IoT Central collection shape.
type list[T any] struct {
	Value []T `json:"value"`
}

// listOf wraps v in the collection shape; nil becomes an empty array.
func listOf[T any](v []T) list[T] {
	if v == nil {
		v = []T{}
	}
	return list[T]{Value: v}
}

// respond answers err when it is not nil, else v with status.
func (h *handler) respond(w http.ResponseWriter, r *http.Request, status int, v any, err error) {
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	h.reply(w, r, status, v)
}

// internalPrefixes are the package prefixes of the emulator's errors and
// the sentinel texts they wrap; publicMessage removes them so API callers
// see the condition, not the emulator's package names.
var internalPrefixes = []string{
	"restapi: not found: ", "restapi: device not online: ", "restapi: timed out waiting for the device: ",
	"restapi: bad request: ", "restapi: invalid input: ", "restapi: conflict: ", "restapi: device queue is full: ",
	"restapi: payload too large: ", "restapi: precondition failed: ", "restapi: forbidden: ", "restapi: not implemented: ",
	"restapi: ", "emulator: ",
}

func publicMessage(msg string) string {
	for _, p := range internalPrefixes {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return msg
}

// page answers one page of a list, IoT Central's collection shape with a
// nextLink when more items follow. The page is chosen by the $skiptoken
// query parameter (an offset the previous nextLink carried).
func page[T any](h *handler, w http.ResponseWriter, r *http.Request, items []T, err error) {
	if err == nil {
		_, err = parseOData(r.URL.Query(), nil) // this list takes no OData options
	}
	pageOf(h, w, r, items, h.pageSize, err)
}

// odataPage answers one page of a list that supports the OData options of
// s: $filter and $orderby applied to items, $top as the page size.
func odataPage[T any](h *handler, w http.ResponseWriter, r *http.Request, s *odataSchema, items []T, get func(T) fieldGetter, err error) {
	var q odataQuery
	if err == nil {
		q, err = parseOData(r.URL.Query(), s)
	}
	size := h.pageSize
	if err == nil {
		items = applyOData(q, items, get)
		if q.top > 0 {
			size = q.top
		}
	}
	pageOf(h, w, r, items, size, err)
}

// pageOf answers the page of items chosen by $skiptoken, size items long.
func pageOf[T any](h *handler, w http.ResponseWriter, r *http.Request, items []T, size int, err error) {
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	start := 0
	if tok := r.URL.Query().Get("$skiptoken"); tok != "" {
		n, perr := strconv.Atoi(tok)
		if perr != nil || n < 0 {
			h.failErr(w, r, badRequestf("$skiptoken %q is not one this API issued", tok))
			return
		}
		start = min(n, len(items))
	}
	end := min(start+size, len(items))
	out := pagedList[T]{Value: items[start:end]}
	if out.Value == nil {
		out.Value = []T{}
	}
	if end < len(items) {
		scheme := "https"
		if r.TLS == nil {
			scheme = "http"
		}
		q := r.URL.Query()
		q.Set("$skiptoken", strconv.Itoa(end))
		out.NextLink = (&url.URL{Scheme: scheme, Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}).String()
	}
	h.reply(w, r, http.StatusOK, out)
}

// pagedList is the IoT Central collection shape.
type pagedList[T any] struct {
	Value    []T    `json:"value"`
	NextLink string `json:"nextLink,omitempty"`
}

// etagOf is a strong entity tag of v's JSON (any "etag" member excluded
// by the caller): it changes whenever the resource changes.
func etagOf(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
}
