package restapi

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/iotc-go/iotc/domain"
)

// Command timeout limits in seconds, those of IoT Hub direct methods; a
// request outside them is answered 400 BadRequest.
const (
	// DefaultResponseTimeout applies when the body has no responseTimeout.
	DefaultResponseTimeout = 30
	// MinResponseTimeout is the smallest responseTimeout accepted.
	MinResponseTimeout = 5
	// MaxResponseTimeout is the largest responseTimeout accepted.
	MaxResponseTimeout = 300
	// MaxConnectionTimeout is the largest connectionTimeout accepted; the
	// default is 0 (the device must already be connected).
	MaxConnectionTimeout = 300
)

// maxNameBytes bounds property, component and command names (IoT Hub twin
// keys are at most 1 KiB).
const maxNameBytes = 1024

func (h *handler) listDevices(w http.ResponseWriter, r *http.Request) {
	ds, err := h.b.ListDevices(r.Context())
	h.respond(w, r, http.StatusOK, listOf(ds), err)
}

func (h *handler) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := h.b.GetDevice(r.Context(), r.PathValue("id"))
	h.respond(w, r, http.StatusOK, d, err)
}

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

// getTelemetryHistory answers GET /api/devices/{id}/telemetry[?since=RFC
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
		q.Since = t
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
	h.respond(w, r, http.StatusOK, propertiesView(t, c), err)
}

func (h *handler) patchProperties(w http.ResponseWriter, r *http.Request) {
	id, c := r.PathValue("id"), r.PathValue("c")
	body, err := readBody(w, r)
	var patch map[string]any
	if err == nil {
		patch, err = parsePropertiesPatch(body, c)
	}
	if err == nil {
		desired := patch
		if c != "" {
			inner := maps.Clone(patch)
			inner[domain.ComponentMarker] = domain.ComponentMarkerValue
			desired = map[string]any{c: inner}
		}
		err = h.b.PatchDesired(r.Context(), id, desired)
	}
	var t Twin
	if err == nil {
		t, err = h.b.DeviceTwin(r.Context(), id)
	}
	view := propertiesView(t, c)
	overlay(view, patch)
	h.respond(w, r, http.StatusAccepted, view, err)
}

// parsePropertiesPatch decodes a PATCH body: a non-empty JSON object of
// writable properties. At the root (component ""), a value that is an
// object marked "__t":"c" patches that component. Names are checked as IoT
// Hub checks twin keys. Errors wrap ErrBadRequest.
func parsePropertiesPatch(body []byte, component string) (map[string]any, error) {
	if err := checkComponent(component); err != nil {
		return nil, err
	}
	var patch map[string]any
	if err := decodeJSON(body, &patch); err != nil {
		return nil, err
	}
	if len(patch) == 0 {
		return nil, badRequestf("the body must be a non-empty JSON object of properties")
	}
	for k, v := range patch {
		if err := checkName("property", k, ""); err != nil {
			return nil, err
		}
		if component != "" || !domain.IsComponent(v) {
			continue
		}
		for ik := range v.(map[string]any) {
			if ik == domain.ComponentMarker {
				continue
			}
			if err := checkName("property", ik, ""); err != nil {
				return nil, err
			}
		}
	}
	return patch, nil
}

// overlay shows the just-patched desired values in view (not deletions: a
// property still reported stays as reported).
func overlay(view, patch map[string]any) {
	for k, v := range patch {
		if v == nil {
			continue
		}
		if !domain.IsComponent(v) {
			view[k] = clone(v)
			continue
		}
		sub, ok := view[k].(map[string]any)
		if !ok {
			sub = map[string]any{domain.ComponentMarker: domain.ComponentMarkerValue}
			view[k] = sub
		}
		overlay(sub, v.(map[string]any))
	}
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
		if _, done := view[k]; done || strings.HasPrefix(k, "$") || k == domain.ComponentMarker {
			continue
		}
		d, hasD := desired[k]
		rv, hasR := reported[k]
		if root && (domain.IsComponent(d) || domain.IsComponent(rv)) {
			sub := sectionView(asMap(d), asMap(rv), asMap(reportedMD[k]), desiredVersion, false)
			sub[domain.ComponentMarker] = domain.ComponentMarkerValue
			view[k] = sub
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

// parseCommandRequest decodes a command POST body (empty means all
// defaults), applies the defaults and checks the timeout ranges. Errors wrap
// ErrBadRequest.
func parseCommandRequest(body []byte) (CommandRequest, error) {
	req := CommandRequest{ResponseTimeout: DefaultResponseTimeout}
	if len(bytes.TrimSpace(body)) == 0 {
		return req, nil
	}
	var wire struct {
		Request           json.RawMessage `json:"request"`
		ConnectionTimeout *int            `json:"connectionTimeout"`
		ResponseTimeout   *int            `json:"responseTimeout"`
	}
	if err := decodeJSON(body, &wire); err != nil {
		return req, err
	}
	if wire.ResponseTimeout != nil {
		req.ResponseTimeout = *wire.ResponseTimeout
	}
	if wire.ConnectionTimeout != nil {
		req.ConnectionTimeout = *wire.ConnectionTimeout
	}
	if req.ResponseTimeout < MinResponseTimeout || req.ResponseTimeout > MaxResponseTimeout {
		return req, badRequestf("responseTimeout must be between %d and %d seconds, got %d",
			MinResponseTimeout, MaxResponseTimeout, req.ResponseTimeout)
	}
	if req.ConnectionTimeout < 0 || req.ConnectionTimeout > MaxConnectionTimeout {
		return req, badRequestf("connectionTimeout must be between 0 and %d seconds, got %d",
			MaxConnectionTimeout, req.ConnectionTimeout)
	}
	if len(wire.Request) > 0 && !bytes.Equal(wire.Request, []byte("null")) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, wire.Request); err != nil {
			return req, badRequestf("malformed request payload: %v", err)
		}
		req.Request = buf.Bytes()
	}
	return req, nil
}

// queuedAnswer is the 201 answer to a command queued with ?queue=true.
type queuedAnswer struct {
	Request json.RawMessage `json:"request,omitempty"`
	Queued  bool            `json:"queued"`
}

func (h *handler) postCommand(w http.ResponseWriter, r *http.Request) {
	id, c, name := r.PathValue("id"), r.PathValue("c"), r.PathValue("name")
	queue := false
	err := checkName("command", name, "*")
	if err == nil {
		err = checkComponent(c)
	}
	if q := r.URL.Query().Get("queue"); err == nil && q != "" {
		if queue, err = strconv.ParseBool(q); err != nil {
			err = badRequestf("query parameter queue=%q is not a boolean", q)
		}
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
	if queue {
		err := h.b.QueueCommand(r.Context(), id, c, name, req.Request)
		h.respond(w, r, http.StatusCreated, queuedAnswer{Request: req.Request, Queued: true}, err)
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
	h.reply(w, r, http.StatusCreated, CommandInvocation{
		Request: req.Request, Response: resp, ResponseCode: res.ResponseCode,
		ConnectionTimeout: req.ConnectionTimeout, ResponseTimeout: req.ResponseTimeout,
	})
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
			return CloudMessage{}, nil, badRequestf("malformed data: %v", err)
		}
		msg.Data = []byte(s)
	default:
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return CloudMessage{}, nil, badRequestf("malformed data: %v", err)
		}
		msg.Data = buf.Bytes()
		data = msg.Data
	}
	for k, raw := range wire.Properties {
		if k == "" || strings.IndexFunc(k, unicode.IsControl) >= 0 {
			return CloudMessage{}, nil, badRequestf("property name %q is empty or has a control character", k)
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return CloudMessage{}, nil, badRequestf("malformed property %q: %v", k, err)
		}
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case float64, bool:
			s = string(bytes.TrimSpace(raw))
		default:
			return CloudMessage{}, nil, badRequestf("property %q must be a string, number or boolean", k)
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
