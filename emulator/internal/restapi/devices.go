package restapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Command timeout limits in seconds, those of the IoT Central 2022-07-31
// DeviceCommand definition; a request outside them is answered 422.
const (
	// DefaultResponseTimeout applies when the body has no responseTimeout.
	DefaultResponseTimeout = 30
	// MinResponseTimeout is the smallest responseTimeout accepted.
	MinResponseTimeout = 5
	// MaxResponseTimeout is the largest responseTimeout accepted.
	MaxResponseTimeout = 30
	// MaxConnectionTimeout is the largest connectionTimeout accepted; the
	// default is 0 (the device must already be connected).
	MaxConnectionTimeout = 30
)

// maxNameBytes bounds property, component and command names (IoT Hub twin
// keys are at most 1 KiB).
const maxNameBytes = 1024

func (h *handler) getCredentials(w http.ResponseWriter, r *http.Request) {
	c, err := h.b.DeviceCredentials(r.Context(), r.PathValue("id"))
	h.respond(w, r, http.StatusOK, c, err)
}

func (h *handler) getTelemetry(w http.ResponseWriter, r *http.Request) {
	c := r.PathValue("c")
	if err := checkComponent(c); err != nil {
		h.failErr(w, r, err)
		return
	}
	v, err := h.b.LatestTelemetry(r.Context(), r.PathValue("id"), c, r.PathValue("name"))
	h.respond(w, r, http.StatusOK, v, err)
}

// getTelemetryHistory answers GET /api/emulator/devices/{id}/telemetry[?since=RFC
// 3339 time][&component=name][&limit=n].
func (h *handler) getTelemetryHistory(w http.ResponseWriter, r *http.Request) {
	q, err := parseTelemetryQuery(r.URL.Query())
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	ms, err := h.b.TelemetryHistory(r.Context(), r.PathValue("id"), q)
	h.respond(w, r, http.StatusOK, listOf(ms), err)
}

func parseTelemetryQuery(v url.Values) (TelemetryQuery, error) {
	var q TelemetryQuery
	for k, vs := range v {
		switch k {
		case "since", "component", "limit", "api-version":
			if len(vs) > 1 {
				return q, badRequestf("query parameter %s given %d times", k, len(vs))
			}
		default:
			return q, badRequestf("unknown query parameter %q (since, component, limit)", k)
		}
	}
	if s := v.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return q, badRequestf("since %q is not an RFC 3339 time", s)
		}
		// Timestamps are shown with milliseconds, so "after since" is
		// judged at that precision: a message whose shown time equals since
		// is not after it, whatever its sub-millisecond part.
		q.Since = t.Truncate(time.Millisecond).Add(time.Millisecond - time.Nanosecond)
	}
	if v.Has("component") {
		q.Component, q.ByComponent = v.Get("component"), true
		if err := checkComponent(q.Component); err != nil {
			return q, err
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxTelemetryLimit {
			return q, badRequestf("limit %q is not a number from 1 to %d", s, MaxTelemetryLimit)
		}
		q.Limit = n
	}
	return q, nil
}

// checkComponent checks a component name from a path; empty means the root.
func checkComponent(c string) error {
	if c == "" {
		return nil
	}
	return checkName("component", c, "*")
}

// checkName refuses names IoT Hub refuses as twin keys: empty, over 1 KiB,
// starting with '$', holding '.', ' ', control characters or any of extra.
func checkName(what, s, extra string) error {
	if err := checkNameSyntax(what, s, extra); err != nil {
		if what == "property" { // a body member: a validation error
			return fmt.Errorf("%w: %w", ErrValidation, err)
		}
		return err
	}
	return nil
}

func checkNameSyntax(what, s, extra string) error {
	switch {
	case s == "":
		return badRequestf("%s name is empty", what)
	case len(s) > maxNameBytes:
		return badRequestf("%s name is longer than %d bytes", what, maxNameBytes)
	case s[0] == '$':
		return badRequestf("%s name %q starts with '$'", what, s)
	case strings.ContainsAny(s, ". "+extra):
		return badRequestf("%s name %q contains one of %q", what, s, ". "+extra)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return badRequestf("%s name %q contains a control character", what, s)
	}
	return nil
}

func (h *handler) getProperties(w http.ResponseWriter, r *http.Request) {
	c := r.PathValue("c")
	if err := checkComponent(c); err != nil {
		h.failErr(w, r, err)
		return
	}
	t, err := h.b.DeviceTwin(r.Context(), r.PathValue("id"))
	view := propertiesView(t, c)
	if err == nil {
		h.addCloudProperties(r.Context(), r.PathValue("id"), c, view)
	}
	h.respond(w, r, http.StatusOK, view, err)
}

func (h *handler) patchProperties(w http.ResponseWriter, r *http.Request) {
	h.writeProperties(w, r, false)
}

func (h *handler) putProperties(w http.ResponseWriter, r *http.Request) {
	h.writeProperties(w, r, true)
}

// writeProperties serves PATCH (merge) and PUT (replace) of the root or a
// component's writable properties. With a device template, root members
// naming a component patch that component, and names are checked against
// the template; without one, a member is a component when it is marked
// "__t":"c" or the device's twin already shows that component. The answer
// is 202 with "$metadata" holding each written property's desiredValue,
// nested under the component name for components, as IoT Central answers.
func (h *handler) writeProperties(w http.ResponseWriter, r *http.Request, replace bool) {
	id, c := r.PathValue("id"), r.PathValue("c")
	body, err := readBody(w, r)
	var patch map[string]any
	if err == nil {
		patch, err = parsePropertiesPatch(body, c, replace)
	}
	var model *TemplateModel
	if err == nil {
		model, err = h.b.DeviceModel(r.Context(), id)
	}
	var t Twin
	if err == nil {
		t, err = h.b.DeviceTwin(r.Context(), id)
	}
	var desired map[string]any
	if err == nil {
		desired, err = routeProperties(patch, c, model, t)
	}
	if err == nil && replace {
		scope := t.Desired
		if c != "" {
			scope = asMap(t.Desired[c])
		}
		target := desired
		if c != "" {
			target = asMap(desired[c])
		}
		for k, v := range scope {
			if strings.HasPrefix(k, "$") || k == core.ComponentMarker {
				continue
			}
			if _, kept := target[k]; kept {
				continue
			}
			if c == "" && (core.IsComponent(v) || core.IsComponent(t.Reported[k]) || model.hasComponent(k)) {
				continue // PUT on the root replaces root properties; components have their own PUT
			}
			target[k] = nil
		}
	}
	if err == nil && len(desired) > 0 && (c == "" || len(asMap(desired[c])) > 1) {
		err = h.b.PatchDesired(r.Context(), id, desired)
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

// writeAnswer is {"$metadata": {name: {"desiredValue": v}}} for the
// properties written (deletions omitted), components nested by name.
func writeAnswer(desired map[string]any) map[string]any {
	out := map[string]any{}
	meta := map[string]any{}
	for k, v := range desired {
		switch {
		case k == core.ComponentMarker || v == nil:
		case core.IsComponent(v):
			out[k] = writeAnswer(v.(map[string]any))
		default:
			meta[k] = map[string]any{"desiredValue": clone(v)}
		}
	}
	if len(meta) > 0 {
		out["$metadata"] = meta
	}
	return out
}

// routeProperties turns a properties body into the desired patch: for a
// component path, the body under that component; for the root, members
// that are components (per the template, the "__t" marker or the twin)
// become component patches. With a template, an unknown component or
// property is 404 and a read-only property 422.
func routeProperties(patch map[string]any, component string, model *TemplateModel, t Twin) (map[string]any, error) {
	checkProp := func(itf TemplateInterface, comp, name string) error {
		if itf.Open {
			return nil
		}
		w, ok := itf.Properties[name]
		where := "the device template"
		if comp != "" {
			where = "component " + comp + " of the device template"
		}
		switch {
		case !ok:
			return fmt.Errorf("%w: property %q is not in %s", ErrNotFound, name, where)
		case !w:
			return invalidf("property %q of %s is read-only; only writable properties can be set", name, where)
		}
		return nil
	}
	markComponent := func(inner map[string]any) map[string]any {
		out := maps.Clone(inner)
		out[core.ComponentMarker] = core.ComponentMarkerValue
		return out
	}
	if component != "" {
		if model != nil {
			itf, ok := model.Components[component]
			if !ok {
				return nil, fmt.Errorf("%w: component %q is not in the device template", ErrNotFound, component)
			}
			for k := range patch {
				if err := checkProp(itf, component, k); err != nil {
					return nil, err
				}
			}
		}
		return map[string]any{component: markComponent(patch)}, nil
	}
	out := make(map[string]any, len(patch))
	for k, v := range patch {
		inner, isObj := v.(map[string]any)
		var isComp bool
		switch {
		case model != nil:
			_, isComp = model.Components[k]
			isComp = isComp && isObj
		default:
			isComp = core.IsComponent(v) || isObj && (core.IsComponent(t.Reported[k]) || core.IsComponent(t.Desired[k]))
		}
		if !isComp {
			if model != nil {
				if err := checkProp(model.Root, "", k); err != nil {
					return nil, err
				}
			}
			out[k] = v
			continue
		}
		for ik := range inner {
			if ik == core.ComponentMarker {
				continue
			}
			if err := checkName("property", ik, ""); err != nil {
				return nil, err
			}
			if model != nil {
				if err := checkProp(model.Components[k], k, ik); err != nil {
					return nil, err
				}
			}
		}
		out[k] = markComponent(inner)
	}
	return out, nil
}

// checkCommand checks a command name against the device's template: 404
// for a component or command the template lacks.
func (h *handler) checkCommand(r *http.Request, id, component, name string) error {
	model, err := h.b.DeviceModel(r.Context(), id)
	if err != nil || model == nil {
		return err
	}
	itf := model.Root
	if component != "" {
		var ok bool
		if itf, ok = model.Components[component]; !ok {
			return fmt.Errorf("%w: component %q is not in the device template", ErrNotFound, component)
		}
	}
	if !itf.Open && !itf.Commands[name] {
		return fmt.Errorf("%w: command %q is not in the device template", ErrNotFound, name)
	}
	return nil
}

// parsePropertiesPatch decodes a PATCH body: a non-empty JSON object of
// writable properties. At the root (component ""), a value that is an
// object marked "__t":"c" patches that component. Names are checked as IoT
// Hub checks twin keys. Errors wrap ErrBadRequest.
func parsePropertiesPatch(body []byte, component string, allowEmpty bool) (map[string]any, error) {
	if err := checkComponent(component); err != nil {
		return nil, err
	}
	var patch map[string]any
	if err := decodeJSON(body, &patch); err != nil {
		return nil, asValidation(err)
	}
	if patch == nil && allowEmpty {
		return nil, invalidf("the body must be a JSON object of properties")
	}
	if len(patch) == 0 && !allowEmpty {
		return nil, invalidf("the body must be a non-empty JSON object of properties")
	}
	for k, v := range patch {
		if err := checkName("property", k, ""); err != nil {
			return nil, err
		}
		if component != "" || !core.IsComponent(v) {
			continue
		}
		for ik := range v.(map[string]any) {
			if ik == core.ComponentMarker {
				continue
			}
			if err := checkName("property", ik, ""); err != nil {
				return nil, err
			}
		}
	}
	return patch, nil
}

// clone deep-copies JSON maps and slices, so that a view never shares (and
// overlay never changes) the backend's twin.
func clone(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = clone(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = clone(e)
		}
		return s
	}
	return v
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// propertiesView builds the IoT Central view of a twin: the root with
// components nested, or one component's properties.
func propertiesView(t Twin, component string) map[string]any {
	version := t.Desired["$version"]
	md := asMap(t.Reported["$metadata"])
	if component == "" {
		return sectionView(t.Desired, t.Reported, md, version, true)
	}
	return sectionView(asMap(t.Desired[component]), asMap(t.Reported[component]), asMap(md[component]), version, false)
}

func sectionView(desired, reported, reportedMD map[string]any, desiredVersion any, root bool) map[string]any {
	view := map[string]any{}
	meta := map[string]any{}
	keys := slices.Collect(maps.Keys(desired))
	keys = slices.AppendSeq(keys, maps.Keys(reported))
	for _, k := range keys {
		if _, done := view[k]; done || strings.HasPrefix(k, "$") || k == core.ComponentMarker {
			continue
		}
		d, hasD := desired[k]
		rv, hasR := reported[k]
		if root && (core.IsComponent(d) || core.IsComponent(rv)) {
			view[k] = sectionView(asMap(d), asMap(rv), asMap(reportedMD[k]), desiredVersion, false)
			continue
		}
		m := map[string]any{}
		if hasR {
			view[k] = clone(rv)
			if ack := asMap(rv); ack != nil && ack["ac"] != nil {
				if val, ok := ack["value"]; ok {
					view[k] = clone(val)
					for wire, name := range map[string]string{"ac": "ackCode", "av": "ackVersion", "ad": "ackDescription"} {
						if x, ok := ack[wire]; ok {
							m[name] = clone(x)
						}
					}
				}
			}
		} else {
			view[k] = clone(d)
		}
		if hasD {
			m["desiredValue"] = clone(d)
			if desiredVersion != nil {
				m["desiredVersion"] = clone(desiredVersion)
			}
		}
		if lu := asMap(reportedMD[k])["$lastUpdated"]; lu != nil {
			m["lastUpdateTime"] = clone(lu)
		}
		if len(m) > 0 {
			meta[k] = m
		}
	}
	if len(meta) > 0 {
		view["$metadata"] = meta
	}
	return view
}

// parseCommandRequest decodes a command POST body (required: "{}" at
// least, as the spec marks the body required), applies the defaults and
// checks the timeout ranges. Errors wrap ErrBadRequest (not JSON) or
// ErrValidation.
func parseCommandRequest(body []byte) (CommandRequest, error) {
	req := CommandRequest{ResponseTimeout: DefaultResponseTimeout}
	if len(bytes.TrimSpace(body)) == 0 {
		return req, invalidf("the command body is required: a JSON object such as {\"request\": ...}")
	}
	var wire struct {
		Request           json.RawMessage `json:"request"`
		ConnectionTimeout *int            `json:"connectionTimeout"`
		ResponseTimeout   *int            `json:"responseTimeout"`
	}
	if err := decodeJSON(body, &wire); err != nil {
		return req, asValidation(err)
	}
	if wire.ResponseTimeout != nil {
		req.ResponseTimeout = *wire.ResponseTimeout
	}
	if wire.ConnectionTimeout != nil {
		req.ConnectionTimeout = *wire.ConnectionTimeout
	}
	if req.ResponseTimeout < MinResponseTimeout || req.ResponseTimeout > MaxResponseTimeout {
		return req, invalidf("responseTimeout must be between %d and %d seconds, got %d",
			MinResponseTimeout, MaxResponseTimeout, req.ResponseTimeout)
	}
	if req.ConnectionTimeout < 0 || req.ConnectionTimeout > MaxConnectionTimeout {
		return req, invalidf("connectionTimeout must be between 0 and %d seconds, got %d",
			MaxConnectionTimeout, req.ConnectionTimeout)
	}
	if len(wire.Request) > 0 && !bytes.Equal(wire.Request, []byte("null")) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, wire.Request); err != nil {
			return req, invalidf("malformed request payload: %v", err)
		}
		req.Request = buf.Bytes()
	}
	return req, nil
}

// queuedAnswer is the 201 answer of the queue extension
// (postQueuedCommand).
type queuedAnswer struct {
	Request json.RawMessage `json:"request,omitempty"`
	Queued  bool            `json:"queued"`
}

func (h *handler) postCommand(w http.ResponseWriter, r *http.Request) {
	id, c, name := r.PathValue("id"), r.PathValue("c"), r.PathValue("name")
	if r.URL.Query().Has("queue") {
		// ?queue=true was an extension; it moved to its own route.
		q := r.URL.Query()
		q.Del("queue")
		target := emulatorPrefix + "/devices/{id}/commands/{name}/queue"
		if c != "" {
			target = emulatorPrefix + "/devices/{id}/components/{c}/commands/{name}/queue"
		}
		h.movedTo(w, r, fillPattern(target, r), q)
		return
	}
	err := checkName("command", name, "*")
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
	if err == nil {
		err = h.checkCommand(r, id, c, name)
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	if h.durableCommand(r.Context(), id, c, name) {
		// "Queue if offline": IoT Central sends the command as a
		// cloud-to-device message, online or not, and gets no response.
		err := h.b.QueueCommand(r.Context(), id, c, name, req.Request)
		h.respond(w, r, http.StatusCreated, durableAnswer{ID: newRequestID(), Request: req.Request,
			ConnectionTimeout: req.ConnectionTimeout, ResponseTimeout: req.ResponseTimeout}, err)
		return
	}
	limit := time.Duration(req.ConnectionTimeout+req.ResponseTimeout)*time.Second + commandGrace
	ctx, cancel := context.WithTimeout(r.Context(), limit)
	defer cancel()
	res, err := h.b.InvokeCommand(ctx, id, c, name, req)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	resp := res.Response
	if len(bytes.TrimSpace(resp)) == 0 {
		resp = nil
	} else if !json.Valid(resp) {
		// A device payload that is not JSON is shown as a JSON string.
		resp, _ = json.Marshal(string(resp))
	}
	// The backend recorded the invocation in the history under RequestID.
	inv := CommandInvocation{
		ID: res.RequestID, Request: req.Request, Response: resp, ResponseCode: res.ResponseCode,
		ConnectionTimeout: req.ConnectionTimeout, ResponseTimeout: req.ResponseTimeout,
	}
	h.reply(w, r, http.StatusCreated, inv)
}

// messageAnswer is the 202 answer to a cloud-to-device message POST.
type messageAnswer struct {
	Data       json.RawMessage   `json:"data,omitempty"`
	Properties map[string]string `json:"properties,omitempty"`
	Queued     bool              `json:"queued"`
}

// parseMessage decodes a message POST body {"data", "properties"}: a string
// data is sent as its bytes, other JSON as its compact encoding, null or
// absent as an empty body; property values must be strings, numbers or
// booleans. Errors wrap ErrBadRequest.
func parseMessage(body []byte) (CloudMessage, json.RawMessage, error) {
	var wire struct {
		Data       json.RawMessage            `json:"data"`
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := decodeJSON(body, &wire); err != nil {
		return CloudMessage{}, nil, err
	}
	var msg CloudMessage
	data := bytes.TrimSpace(wire.Data)
	switch {
	case len(data) == 0 || bytes.Equal(data, []byte("null")):
		data = nil
	case data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return CloudMessage{}, nil, invalidf("malformed data: %v", err)
		}
		msg.Data = []byte(s)
	default:
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return CloudMessage{}, nil, invalidf("malformed data: %v", err)
		}
		msg.Data = buf.Bytes()
		data = msg.Data
	}
	for k, raw := range wire.Properties {
		if k == "" || strings.IndexFunc(k, unicode.IsControl) >= 0 {
			return CloudMessage{}, nil, invalidf("property name %q is empty or has a control character", k)
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return CloudMessage{}, nil, invalidf("malformed property %q: %v", k, err)
		}
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case float64, bool:
			s = string(bytes.TrimSpace(raw))
		default:
			return CloudMessage{}, nil, invalidf("property %q must be a string, number or boolean", k)
		}
		if msg.Properties == nil {
			msg.Properties = map[string]string{}
		}
		msg.Properties[k] = s
	}
	return msg, data, nil
}

func (h *handler) postMessage(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	var msg CloudMessage
	var data json.RawMessage
	if err == nil {
		msg, data, err = parseMessage(body)
	}
	if err == nil {
		err = h.b.SendMessage(r.Context(), r.PathValue("id"), msg)
	}
	h.respond(w, r, http.StatusAccepted, messageAnswer{Data: data, Properties: msg.Properties, Queued: true}, err)
}

// hasComponent reports whether the model (nil: none) has component name.
func (m *TemplateModel) hasComponent(name string) bool {
	if m == nil {
		return false
	}
	_, ok := m.Components[name]
	return ok
}
