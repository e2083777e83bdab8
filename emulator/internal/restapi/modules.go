package restapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// ModuleBackend is the optional part of a Backend that reaches the
// modules of IoT Edge devices (their module twins, direct methods and
// telemetry); without it the /devices/{id}/modules routes answer 501
// NotImplemented. Errors wrap the sentinels of Backend: ErrNotFound for an
// unknown device or module.
type ModuleBackend interface {
	// ListModules returns the module ids of a device.
	ListModules(ctx context.Context, device string) ([]string, error)
	// ModuleTwin returns the desired and reported sections of a module
	// twin (copies).
	ModuleTwin(ctx context.Context, device, module string) (Twin, error)
	// PatchModuleDesired merges patch into the module twin's desired
	// section (components marked "__t":"c") and pushes it to the module.
	PatchModuleDesired(ctx context.Context, device, module string, patch map[string]any) error
	// InvokeModuleCommand runs a direct method on the module (component
	// may be empty), as InvokeCommand does for a device.
	InvokeModuleCommand(ctx context.Context, device, module, component, name string, req CommandRequest) (CommandResult, error)
	// ModuleCommandHistory returns the kept invocations of a module
	// command, oldest first.
	ModuleCommandHistory(ctx context.Context, device, module, component, name string) ([]CommandInvocation, error)
	// LatestModuleTelemetry returns the newest value of one telemetry
	// field the module sent, or ErrNotFound.
	LatestModuleTelemetry(ctx context.Context, device, module, component, name string) (TelemetryValue, error)
}

var errNoModules = errors.New("restapi: not implemented: this emulator's backend reaches no IoT Edge modules")

// moduleEntry is one module of GET /devices/{id}/modules.
type moduleEntry struct {
	Name string `json:"name"`
}

func (h *handler) moduleRoutes() []route {
	const m = "/api/devices/{id}/modules/{m}"
	return []route{
		{"/api/devices/{id}/modules", map[string]http.HandlerFunc{"GET": h.listModules}},
		{m + "/components", map[string]http.HandlerFunc{"GET": h.listModuleComponents}},
		{m + "/properties", map[string]http.HandlerFunc{"GET": h.getModuleProperties, "PUT": h.putModuleProperties, "PATCH": h.patchModuleProperties}},
		{m + "/components/{c}/properties", map[string]http.HandlerFunc{"GET": h.getModuleProperties, "PUT": h.putModuleProperties, "PATCH": h.patchModuleProperties}},
		{m + "/commands/{name}", map[string]http.HandlerFunc{"GET": h.getModuleCommandHistory, "POST": h.postModuleCommand}},
		{m + "/components/{c}/commands/{name}", map[string]http.HandlerFunc{"GET": h.getModuleCommandHistory, "POST": h.postModuleCommand}},
		{m + "/telemetry/{name}", map[string]http.HandlerFunc{"GET": h.getModuleTelemetry}},
		{m + "/components/{c}/telemetry/{name}", map[string]http.HandlerFunc{"GET": h.getModuleTelemetry}},
	}
}

func (h *handler) modules() (ModuleBackend, error) {
	mb, ok := h.b.(ModuleBackend)
	if !ok {
		return nil, errNoModules
	}
	return mb, nil
}

func (h *handler) listModules(w http.ResponseWriter, r *http.Request) {
	mb, err := h.modules()
	var ids []string
	if err == nil {
		ids, err = mb.ListModules(r.Context(), r.PathValue("id"))
	}
	slices.Sort(ids)
	out := make([]moduleEntry, 0, len(ids))
	for _, id := range ids {
		out = append(out, moduleEntry{Name: id})
	}
	h.respond(w, r, http.StatusOK, listOf(out), err)
}

// listModuleComponents lists the components the module twin shows (the
// emulator keeps no module templates).
func (h *handler) listModuleComponents(w http.ResponseWriter, r *http.Request) {
	mb, err := h.modules()
	var t Twin
	if err == nil {
		t, err = mb.ModuleTwin(r.Context(), r.PathValue("id"), r.PathValue("m"))
	}
	var names []string
	for _, sec := range []map[string]any{t.Desired, t.Reported} {
		for k, v := range sec {
			if core.IsComponent(v) && !slices.Contains(names, k) {
				names = append(names, k)
			}
		}
	}
	slices.Sort(names)
	out := make([]componentEntry, 0, len(names))
	for _, n := range names {
		out = append(out, componentEntry{Type: "Component", Name: n, DisplayName: n})
	}
	h.respond(w, r, http.StatusOK, listOf(out), err)
}

func (h *handler) getModuleProperties(w http.ResponseWriter, r *http.Request) {
	c := r.PathValue("c")
	mb, err := h.modules()
	if err == nil {
		err = checkComponent(c)
	}
	var t Twin
	if err == nil {
		t, err = mb.ModuleTwin(r.Context(), r.PathValue("id"), r.PathValue("m"))
	}
	h.respond(w, r, http.StatusOK, propertiesView(t, c), err)
}

func (h *handler) putModuleProperties(w http.ResponseWriter, r *http.Request) {
	h.writeModuleProperties(w, r, true)
}

func (h *handler) patchModuleProperties(w http.ResponseWriter, r *http.Request) {
	h.writeModuleProperties(w, r, false)
}

// writeModuleProperties is writeProperties for a module twin: no
// template checks (the emulator keeps no module templates); PUT deletes
// the writable properties of the scope the body lacks.
func (h *handler) writeModuleProperties(w http.ResponseWriter, r *http.Request, replace bool) {
	id, m, c := r.PathValue("id"), r.PathValue("m"), r.PathValue("c")
	mb, err := h.modules()
	var body []byte
	if err == nil {
		body, err = readBody(w, r)
	}
	var patch map[string]any
	if err == nil {
		patch, err = parsePropertiesPatch(body, c, replace)
	}
	var t Twin
	if err == nil {
		t, err = mb.ModuleTwin(r.Context(), id, m)
	}
	var desired map[string]any
	if err == nil {
		desired, err = routeProperties(patch, c, nil, t)
	}
	if err == nil && replace {
		scope, target := t.Desired, desired
		if c != "" {
			scope, target = asMap(t.Desired[c]), asMap(desired[c])
		}
		for k, v := range scope {
			if strings.HasPrefix(k, "$") || k == core.ComponentMarker || c == "" && core.IsComponent(v) {
				continue
			}
			if _, kept := target[k]; !kept {
				target[k] = nil
			}
		}
	}
	if err == nil && len(desired) > 0 && (c == "" || len(asMap(desired[c])) > 1) {
		err = mb.PatchModuleDesired(r.Context(), id, m, desired)
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	if c != "" {
		desired = asMap(desired[c])
	}
	h.reply(w, r, http.StatusAccepted, writeAnswer(desired))
}

func (h *handler) postModuleCommand(w http.ResponseWriter, r *http.Request) {
	id, m, c, name := r.PathValue("id"), r.PathValue("m"), r.PathValue("c"), r.PathValue("name")
	mb, err := h.modules()
	if err == nil {
		err = checkName("command", name, "*")
	}
	if err == nil {
		err = checkComponent(c)
	}
	var body []byte
	if err == nil {
		body, err = readBody(w, r)
	}
	var req CommandRequest
	if err == nil {
		req, err = parseCommandRequest(body)
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(req.ConnectionTimeout+req.ResponseTimeout)*time.Second+commandGrace)
	defer cancel()
	res, err := mb.InvokeModuleCommand(ctx, id, m, c, name, req)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	resp := res.Response
	if len(bytes.TrimSpace(resp)) == 0 {
		resp = nil
	} else if !json.Valid(resp) {
		resp, _ = json.Marshal(string(resp))
	}
	h.reply(w, r, http.StatusCreated, CommandInvocation{ID: res.RequestID, Request: req.Request, Response: resp,
		ResponseCode: res.ResponseCode, ConnectionTimeout: req.ConnectionTimeout, ResponseTimeout: req.ResponseTimeout})
}

func (h *handler) getModuleCommandHistory(w http.ResponseWriter, r *http.Request) {
	c, name := r.PathValue("c"), r.PathValue("name")
	mb, err := h.modules()
	if err == nil {
		err = checkComponent(c)
	}
	if err == nil {
		err = checkName("command", name, "*")
	}
	var invs []CommandInvocation
	if err == nil {
		invs, err = mb.ModuleCommandHistory(r.Context(), r.PathValue("id"), r.PathValue("m"), c, name)
	}
	page(h, w, r, invs, err)
}

func (h *handler) getModuleTelemetry(w http.ResponseWriter, r *http.Request) {
	c := r.PathValue("c")
	mb, err := h.modules()
	if err == nil {
		err = checkComponent(c)
	}
	var v TelemetryValue
	if err == nil {
		v, err = mb.LatestModuleTelemetry(r.Context(), r.PathValue("id"), r.PathValue("m"), c, r.PathValue("name"))
	}
	h.respond(w, r, http.StatusOK, v, err)
}
