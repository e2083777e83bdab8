// Package hubapi is the emulator's IoT Hub service REST API, served on the
// hub host (the WebSocket listener, port 443 by default, routes every path
// other than /$iothub/websocket here), so that the official service SDKs
// (azure-iothub's Registry and Client) work against the emulator unchanged:
//
//   - registry: PUT/GET/DELETE /devices/{id} (If-Match etags), GET /devices,
//     bulk create/update/delete POST /devices,
//     GET /statistics/devices, GET /statistics/service;
//   - twins: GET/PUT/PATCH /twins/{id} (If-Match etags, tags, desired
//     properties; reported properties are read-only);
//   - direct methods: POST /twins/{id}/methods;
//   - modules (modules.go): PUT/GET/DELETE /devices/{id}/modules/{mid},
//     GET /devices/{id}/modules, GET/PUT/PATCH /twins/{id}/modules/{mid},
//     POST /twins/{id}/modules/{mid}/methods;
//   - cloud-to-device purge: DELETE /devices/{id}/commands;
//   - configurations: PUT/GET/DELETE /configurations/{id}, GET
//     /configurations, POST /configurations/testQueries,
//     POST /devices/{id}/applyConfigurationContent;
//   - IoT Plug and Play: GET/PATCH /digitaltwins/{id}, root and component
//     commands POST /digitaltwins/{id}[/components/{c}]/commands/{name};
//   - jobs v2: PUT/GET /jobs/v2/{id}, POST /jobs/v2/{id}/cancel,
//     GET /jobs/v2/query (scheduled methods and twin updates);
//   - queries: POST /devices/query over devices or devices.modules (see
//     query.go for the subset).
//
// Requests carry a service SAS token ("SharedAccessSignature sr={hub
// host}&sig=...&se=...&skn={policy}") checked by the core against its
// shared access policies, and api-version 2020-09-30 or 2021-04-12.
// Errors have IoT Hub's shape: {"Message":"ErrorCode:{code};{text}",
// "ExceptionMessage":"..."} and the iothub-errorcode header.
//
// The package calls the core only; it imports no other front-end.
package hubapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// APIVersions are the api-version values accepted.
var APIVersions = []string{"2020-09-30", "2021-04-12"}

// MaxBody is the largest request body read (IoT Hub's largest service
// request, a method payload, is 128 KiB; twins are 32 KiB per section).
const MaxBody = 256 << 10

// Handler serves the IoT Hub service API. Create it with New.
type Handler struct {
	core *core.Core
	log  *slog.Logger
	mux  *http.ServeMux
}

// New returns the handler over c; log receives one line per refused
// request (never a header or a token); nil discards.
func New(c *core.Core, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{core: c, log: log, mux: http.NewServeMux()}
	read, write := core.RightRegistryRead, core.RightRegistryWrite
	svc := core.RightServiceConnect
	h.route("GET /devices", h.listDevices, read)
	h.route("GET /devices/{$}", h.listDevices, read)
	h.route("GET /devices/{id}", h.getDevice, read)
	h.route("PUT /devices/{id}", h.putDevice, write)
	h.route("POST /devices", h.bulkDevices, write)
	h.route("POST /devices/{$}", h.bulkDevices, write)
	h.route("DELETE /devices/{id}", h.deleteDevice, write)
	h.route("POST /devices/query", h.query, svc, read)
	h.route("GET /statistics/devices", h.deviceStats, read)
	h.route("GET /statistics/service", h.serviceStats, svc, read)
	h.route("GET /twins/{id}", h.getTwin, svc, read)
	h.route("PUT /twins/{id}", h.putTwin, svc, write)
	h.route("PATCH /twins/{id}", h.patchTwin, svc, write)
	h.route("POST /twins/{id}/methods", h.invokeMethod, svc)
	h.route("DELETE /devices/{id}/commands", h.purgeCommands, svc)
	h.route("PUT /configurations/{id}", h.putConfiguration, write)
	h.route("GET /configurations/{id}", h.getConfiguration, read)
	h.route("GET /configurations", h.listConfigurations, read)
	h.route("DELETE /configurations/{id}", h.deleteConfiguration, write)
	h.route("POST /configurations/testQueries", h.testConfigQueries, svc, read)
	h.route("POST /devices/{id}/applyConfigurationContent", h.applyConfigurationContent, svc, write)
	h.route("GET /digitaltwins/{id}", h.getDigitalTwin, svc, read)
	h.route("PATCH /digitaltwins/{id}", h.patchDigitalTwin, svc, write)
	h.route("POST /digitaltwins/{id}/commands/{name}", h.digitalTwinCommand, svc)
	h.route("POST /digitaltwins/{id}/components/{component}/commands/{name}", h.digitalTwinCommand, svc)
	h.route("PUT /jobs/v2/{id}", h.putJob, svc)
	h.route("GET /jobs/v2/{id}", h.getJob, svc, read)
	h.route("POST /jobs/v2/{id}/cancel", h.cancelJob, svc)
	h.route("GET /jobs/v2/query", h.queryJobs, svc, read)
	h.routeModules()
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := h.mux.Handler(r); pattern == "" {
		h.fail(w, r, http.StatusNotFound, "IotHubNotFound", 404001,
			fmt.Sprintf("%s %s is not part of the emulator's IoT Hub service API", r.Method, r.URL.Path))
		return
	}
	h.mux.ServeHTTP(w, r)
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// route registers fn behind the api-version and SAS checks; a token whose
// policy has one of rights is accepted.
func (h *Handler) route(pattern string, fn handlerFunc, rights ...core.Rights) {
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query().Get("api-version")
		ok := false
		for _, a := range APIVersions {
			ok = ok || v == a
		}
		if !ok {
			h.fail(w, r, http.StatusBadRequest, "InvalidProtocolVersion", 400001,
				fmt.Sprintf("api-version %q is not supported; use one of %s", v, strings.Join(APIVersions, ", ")))
			return
		}
		if _, err := h.core.AuthenticateService(r.Header.Get("Authorization"), rights...); err != nil {
			h.writeError(w, r, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		if err := fn(w, r); err != nil {
			h.writeError(w, r, err)
		}
	})
}

// errorOf maps the core's error vocabulary to IoT Hub's status, error
// code name and numeric code.
func errorOf(err error) (int, string, int) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, core.ErrPreconditionFailed):
		return http.StatusPreconditionFailed, "PreconditionFailed", 412002
	case errors.Is(err, core.ErrDeviceOffline):
		return http.StatusNotFound, "DeviceNotOnline", 404103
	case errors.Is(err, core.ErrModuleNotFound):
		return http.StatusNotFound, "ModuleNotFound", 404010
	case errors.Is(err, core.ErrModuleExists):
		return http.StatusConflict, "ModuleAlreadyExistsOnDevice", 409301
	case errors.Is(err, core.ErrNotFound):
		return http.StatusNotFound, "DeviceNotFound", 404001
	case errors.Is(err, core.ErrConflict):
		return http.StatusConflict, "DeviceAlreadyExists", 409001
	case errors.Is(err, core.ErrUnauthorized), errors.Is(err, core.ErrForbidden):
		return http.StatusUnauthorized, "IotHubUnauthorizedAccess", 401002
	case errors.Is(err, core.ErrTimeout):
		return http.StatusGatewayTimeout, "GatewayTimeoutException", 504101
	case errors.Is(err, core.ErrQueueFull):
		return http.StatusForbidden, "DeviceMaximumQueueDepthExceeded", 403004
	case errors.Is(err, core.ErrTooLarge), errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", 413001
	case errors.Is(err, core.ErrInvalid), errors.Is(err, errQuery), errors.Is(err, errBadRequest):
		return http.StatusBadRequest, "ArgumentInvalid", 400004
	case errors.Is(err, core.ErrClosed), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "ServiceUnavailable", 503001
	default:
		return http.StatusInternalServerError, "ServerError", 500001
	}
}

// errBadRequest reports a request body or parameter the API refuses.
var errBadRequest = errors.New("bad request")

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, num := errorOf(err)
	h.fail(w, r, status, code, num, err.Error())
}

// fail writes IoT Hub's error body. The text comes from the core's errors,
// which never hold a token or key.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, code string, num int, text string) {
	h.log.Info("service API request refused", "method", r.Method, "path", r.URL.Path, "status", status, "code", code, "error", text)
	w.Header().Set("iothub-errorcode", code)
	body := map[string]any{
		"Message": fmt.Sprintf("ErrorCode:%s;%s", code, text),
		"ExceptionMessage": fmt.Sprintf("Tracking ID:%s-G:0-TimeStamp:%s (errorCode %d)",
			core.RandomHex(16), time.Now().UTC().Format("01/02/2006 15:04:05"), num),
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"Message":"ErrorCode:ServerError;encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// readJSON decodes the request body into v; an empty body leaves v as it is.
func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: body is not the expected JSON: %v", errBadRequest, err)
	}
	return nil
}

// remarshal converts a decoded JSON value into v through JSON.
func remarshal(from, v any) error {
	b, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// deepCopy copies a JSON object so that callers may keep the original.
func deepCopy(m map[string]any) map[string]any {
	var out map[string]any
	if remarshal(m, &out) != nil {
		return map[string]any{}
	}
	return out
}
