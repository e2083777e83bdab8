package hubapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Module identities: PUT/GET/DELETE /devices/{id}/modules/{mid}, GET
// /devices/{id}/modules, GET/PUT/PATCH /twins/{id}/modules/{mid} and POST
// /twins/{id}/modules/{mid}/methods, as IoT Hub serves them.

func (h *Handler) routeModules() {
	read, write := core.RightRegistryRead, core.RightRegistryWrite
	svc := core.RightServiceConnect
	h.route("GET /devices/{id}/modules", h.listModules, read)
	h.route("GET /devices/{id}/modules/{$}", h.listModules, read)
	h.route("GET /devices/{id}/modules/{mid}", h.getModule, read)
	h.route("PUT /devices/{id}/modules/{mid}", h.putModule, write)
	h.route("DELETE /devices/{id}/modules/{mid}", h.deleteModule, write)
	h.route("GET /twins/{id}/modules/{mid}", h.getModuleTwin, svc, read)
	h.route("PUT /twins/{id}/modules/{mid}", h.putModuleTwin, svc, write)
	h.route("PATCH /twins/{id}/modules/{mid}", h.patchModuleTwin, svc, write)
	h.route("POST /twins/{id}/modules/{mid}/methods", h.invokeModuleMethod, svc)
}

// moduleJSON is a module as IoT Hub's registry returns it.
func moduleJSON(m core.HubModule) map[string]any {
	auth := map[string]any{
		"type":           m.HubAuthType(),
		"symmetricKey":   map[string]any{"primaryKey": m.PrimaryKey, "secondaryKey": m.SecondaryKey},
		"x509Thumbprint": map[string]any{"primaryThumbprint": nil, "secondaryThumbprint": nil},
	}
	if len(m.Thumbprints) > 0 {
		auth["symmetricKey"] = map[string]any{"primaryKey": nil, "secondaryKey": nil}
		tp := []any{nil, nil}
		for i, t := range m.Thumbprints {
			tp[i] = t
		}
		auth["x509Thumbprint"] = map[string]any{"primaryThumbprint": tp[0], "secondaryThumbprint": tp[1]}
	}
	var managedBy any
	if m.ManagedBy != "" {
		managedBy = m.ManagedBy
	}
	return map[string]any{
		"moduleId":                   m.ModuleID,
		"deviceId":                   m.DeviceID,
		"managedBy":                  managedBy,
		"generationId":               m.GenerationID,
		"etag":                       unquote(m.ETag),
		"connectionState":            connState(m.Connected),
		"connectionStateUpdatedTime": zeroTime,
		"lastActivityTime":           timeOrZero(m.LastActivity),
		"cloudToDeviceMessageCount":  0,
		"authentication":             auth,
	}
}

// moduleBody is a module PUT body (the fields the emulator uses).
type moduleBody struct {
	DeviceID  string `json:"deviceId"`
	ModuleID  string `json:"moduleId"`
	ManagedBy string `json:"managedBy"`
	// Authentication is read as a device's is.
	deviceBody
}

func (h *Handler) listModules(w http.ResponseWriter, r *http.Request) error {
	ms, err := h.core.HubModules(r.PathValue("id"))
	if err != nil {
		return err
	}
	out := make([]any, 0, len(ms))
	for _, m := range ms {
		out = append(out, moduleJSON(m))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) getModule(w http.ResponseWriter, r *http.Request) error {
	m, err := h.core.HubModule(r.PathValue("id"), r.PathValue("mid"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", m.ETag)
	writeJSON(w, http.StatusOK, moduleJSON(m))
	return nil
}

// putModule creates the module when the request has no If-Match header
// (409 when it exists), else updates it (404 when it does not exist, 412
// for a stale etag), as IoT Hub does.
func (h *Handler) putModule(w http.ResponseWriter, r *http.Request) error {
	id, mid := r.PathValue("id"), r.PathValue("mid")
	var b moduleBody
	if err := readJSON(r, &b); err != nil {
		return err
	}
	if b.DeviceID != "" && b.DeviceID != id {
		return fmt.Errorf("%w: deviceId %q in the body is not %q of the path", errBadRequest, b.DeviceID, id)
	}
	if b.ModuleID != "" && b.ModuleID != mid {
		return fmt.Errorf("%w: moduleId %q in the body is not %q of the path", errBadRequest, b.ModuleID, mid)
	}
	ds, err := specOf(b.deviceBody)
	if err != nil {
		return err
	}
	spec := core.HubModuleSpec{ManagedBy: b.ManagedBy, PrimaryKey: ds.PrimaryKey, SecondaryKey: ds.SecondaryKey,
		Thumbprints: ds.Thumbprints, CertificateAuthority: ds.CertificateAuthority}
	ifMatch, update := r.Header["If-Match"]
	match := ""
	if update && len(ifMatch) > 0 {
		match = ifMatch[0]
	}
	m, err := h.core.PutHubModule(id, mid, !update, match, spec)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", m.ETag)
	writeJSON(w, http.StatusOK, moduleJSON(m))
	return nil
}

func (h *Handler) deleteModule(w http.ResponseWriter, r *http.Request) error {
	if err := h.core.DeleteHubModule(r.PathValue("id"), r.PathValue("mid"), r.Header.Get("If-Match")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) getModuleTwin(w http.ResponseWriter, r *http.Request) error {
	t, err := h.core.HubModuleTwin(r.PathValue("id"), r.PathValue("mid"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", t.ETag)
	writeJSON(w, http.StatusOK, twinJSON(t))
	return nil
}

func (h *Handler) putModuleTwin(w http.ResponseWriter, r *http.Request) error {
	return h.updateModuleTwin(w, r, true)
}

func (h *Handler) patchModuleTwin(w http.ResponseWriter, r *http.Request) error {
	return h.updateModuleTwin(w, r, false)
}

func (h *Handler) updateModuleTwin(w http.ResponseWriter, r *http.Request, replace bool) error {
	id, mid := r.PathValue("id"), r.PathValue("mid")
	var b struct {
		twinBody
		ModuleID string `json:"moduleId"`
	}
	if err := readJSON(r, &b); err != nil {
		return err
	}
	if b.DeviceID != "" && b.DeviceID != id {
		return fmt.Errorf("%w: deviceId %q in the body is not %q of the path", errBadRequest, b.DeviceID, id)
	}
	if b.ModuleID != "" && b.ModuleID != mid {
		return fmt.Errorf("%w: moduleId %q in the body is not %q of the path", errBadRequest, b.ModuleID, mid)
	}
	tags, desired := twinParts(b.twinBody, replace)
	t, err := h.core.UpdateHubModuleTwin(r.Context(), id, mid, r.Header.Get("If-Match"), tags, desired, replace)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", t.ETag)
	writeJSON(w, http.StatusOK, twinJSON(t))
	return nil
}

// twinParts returns the tags and desired properties of a twin body; a
// replace (PUT) makes missing parts empty.
func twinParts(b twinBody, replace bool) (tags, desired map[string]any) {
	if b.Properties != nil {
		desired = b.Properties.Desired
	}
	tags = b.Tags
	if replace {
		if tags == nil {
			tags = map[string]any{}
		}
		if desired == nil {
			desired = map[string]any{}
		}
	}
	return tags, desired
}

func (h *Handler) invokeModuleMethod(w http.ResponseWriter, r *http.Request) error {
	var b methodBody
	if err := readJSON(r, &b); err != nil {
		return err
	}
	connect, timeout, err := methodTimeouts(b)
	if err != nil {
		return err
	}
	res, err := h.core.InvokeModuleMethod(r.Context(), r.PathValue("id"), r.PathValue("mid"), b.MethodName, b.Payload, connect, timeout)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": res.Status, "payload": res.Payload})
	return nil
}

// methodTimeouts checks a direct method request and returns its connect
// and response timeouts.
func methodTimeouts(b methodBody) (connect, timeout time.Duration, err error) {
	if b.MethodName == "" {
		return 0, 0, fmt.Errorf("%w: methodName is required", errBadRequest)
	}
	if strings.ContainsAny(b.MethodName, "/+#") {
		return 0, 0, fmt.Errorf("%w: methodName %q", errBadRequest, b.MethodName)
	}
	if len(b.Payload) > MaxMethodPayload {
		return 0, 0, fmt.Errorf("%w: payload over %d bytes", core.ErrTooLarge, MaxMethodPayload)
	}
	if len(b.Payload) > 0 && !json.Valid(b.Payload) {
		return 0, 0, fmt.Errorf("%w: payload is not JSON", errBadRequest)
	}
	t := DefaultMethodTimeout
	if p := b.ResponseTimeoutInSeconds; p != nil && *p != 0 {
		if *p < MinMethodTimeout || *p > MaxMethodTimeout {
			return 0, 0, fmt.Errorf("%w: responseTimeoutInSeconds %d is not in %d..%d", errBadRequest, *p, MinMethodTimeout, MaxMethodTimeout)
		}
		t = *p
	}
	c := 0
	if p := b.ConnectTimeoutInSeconds; p != nil {
		if *p < 0 || *p > MaxMethodTimeout {
			return 0, 0, fmt.Errorf("%w: connectTimeoutInSeconds %d is not in 0..%d", errBadRequest, *p, MaxMethodTimeout)
		}
		c = *p
	}
	return time.Duration(c) * time.Second, time.Duration(t) * time.Second, nil
}
