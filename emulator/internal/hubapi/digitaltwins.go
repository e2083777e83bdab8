package hubapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// The IoT Plug and Play service API (digital twins) over the device twin:
// reported properties at the root and in components (objects marked
// "__t":"c", the PnP convention), desired values in $metadata, a JSON
// Patch that becomes a desired-properties patch, and commands that are
// direct methods ("component*name" for a component).

// isComponent reports whether v is a PnP component object.
func isComponent(v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	return m, ok && m["__t"] == "c"
}

// digitalTwinJSON shapes a twin as GET /digitaltwins/{id} returns it.
func digitalTwinJSON(t core.HubTwin) map[string]any {
	meta := map[string]any{"$model": t.ModelID}
	out := map[string]any{"$dtId": t.DeviceID, "$metadata": meta}
	repMeta, _ := t.Reported["$metadata"].(map[string]any)
	updated := func(m map[string]any, k string) any {
		if pm, ok := m[k].(map[string]any); ok {
			return pm["$lastUpdated"]
		}
		return nil
	}
	component := func(name string) (map[string]any, map[string]any) {
		c, ok := out[name].(map[string]any)
		if !ok {
			c = map[string]any{"$metadata": map[string]any{}}
			out[name] = c
		}
		return c, c["$metadata"].(map[string]any)
	}
	for k, v := range t.Reported {
		if strings.HasPrefix(k, "$") {
			continue
		}
		if cm, ok := isComponent(v); ok {
			c, cmeta := component(k)
			subMeta, _ := repMeta[k].(map[string]any)
			for p, pv := range cm {
				if p == "__t" {
					continue
				}
				c[p] = pv
				cmeta[p] = map[string]any{"lastUpdateTime": updated(subMeta, p)}
			}
			continue
		}
		out[k] = v
		meta[k] = map[string]any{"lastUpdateTime": updated(repMeta, k)}
	}
	version := t.Desired["$version"]
	desire := func(m map[string]any, k string, v any) {
		pm, _ := m[k].(map[string]any)
		if pm == nil {
			pm = map[string]any{}
			m[k] = pm
		}
		pm["desiredValue"], pm["desiredVersion"] = v, version
	}
	for k, v := range t.Desired {
		if strings.HasPrefix(k, "$") {
			continue
		}
		if cm, ok := isComponent(v); ok {
			_, cmeta := component(k)
			for p, pv := range cm {
				if p != "__t" {
					desire(cmeta, p, pv)
				}
			}
			continue
		}
		desire(meta, k, v)
	}
	return out
}

func (h *Handler) getDigitalTwin(w http.ResponseWriter, r *http.Request) error {
	t, err := h.core.HubTwin(r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", t.ETag)
	writeJSON(w, http.StatusOK, digitalTwinJSON(t))
	return nil
}

// patchOp is one JSON Patch (RFC 6902) operation.
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"`
}

// MaxPatchOps bounds the operations of one digital twin PATCH.
const MaxPatchOps = 100

// patchDigitalTwin turns a JSON Patch of add, replace and remove operations
// into a desired-properties patch: "/prop" a root property, "/comp/prop" a
// property of component comp (when the twin has that component), deeper
// paths the fields of an object property. Answered 202 as IoT Hub does.
func (h *Handler) patchDigitalTwin(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var ops []patchOp
	if err := readJSON(r, &ops); err != nil {
		return err
	}
	if len(ops) == 0 || len(ops) > MaxPatchOps {
		return fmt.Errorf("%w: a digital twin patch holds 1 to %d operations", errBadRequest, MaxPatchOps)
	}
	tw, err := h.core.HubTwin(id)
	if err != nil {
		return err
	}
	patch := map[string]any{}
	for _, op := range ops {
		segs := strings.Split(strings.TrimPrefix(op.Path, "/"), "/")
		if !strings.HasPrefix(op.Path, "/") || len(segs) == 0 || segs[0] == "" {
			return fmt.Errorf("%w: patch path %q", errBadRequest, op.Path)
		}
		for i, s := range segs { // JSON Pointer escapes
			segs[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
		}
		var v any
		switch op.Op {
		case "add", "replace":
			if len(op.Value) == 0 {
				return fmt.Errorf("%w: %s %s has no value", errBadRequest, op.Op, op.Path)
			}
			if err := json.Unmarshal(op.Value, &v); err != nil {
				return fmt.Errorf("%w: %s %s: %v", errBadRequest, op.Op, op.Path, err)
			}
		case "remove":
		default:
			return fmt.Errorf("%w: patch operation %q (add, replace and remove are supported)", errBadRequest, op.Op)
		}
		cur := patch
		if len(segs) > 1 {
			_, rc := isComponent(tw.Reported[segs[0]])
			_, dc := isComponent(tw.Desired[segs[0]])
			if rc || dc {
				c, _ := cur[segs[0]].(map[string]any)
				if c == nil {
					c = map[string]any{"__t": "c"}
					cur[segs[0]] = c
				}
				cur, segs = c, segs[1:]
			}
		}
		for _, s := range segs[:len(segs)-1] {
			next, _ := cur[s].(map[string]any)
			if next == nil {
				next = map[string]any{}
				cur[s] = next
			}
			cur = next
		}
		cur[segs[len(segs)-1]] = v
	}
	t, err := h.core.UpdateHubTwin(r.Context(), id, r.Header.Get("If-Match"), nil, patch, false)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", t.ETag)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// digitalTwinCommand invokes a root or component command: the body is the
// payload, the answer the device's payload with its status in
// x-ms-command-statuscode.
func (h *Handler) digitalTwinCommand(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	timeout, connect := DefaultMethodTimeout, 0
	if s := q.Get("responseTimeoutInSeconds"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < MinMethodTimeout || n > MaxMethodTimeout {
			return fmt.Errorf("%w: responseTimeoutInSeconds %q is not in %d..%d", errBadRequest, s, MinMethodTimeout, MaxMethodTimeout)
		}
		timeout = n
	}
	if s := q.Get("connectTimeoutInSeconds"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > MaxMethodTimeout {
			return fmt.Errorf("%w: connectTimeoutInSeconds %q is not in 0..%d", errBadRequest, s, MaxMethodTimeout)
		}
		connect = n
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if len(body) > MaxMethodPayload {
		return fmt.Errorf("%w: payload over %d bytes", core.ErrTooLarge, MaxMethodPayload)
	}
	var payload any = json.RawMessage("null")
	if len(strings.TrimSpace(string(body))) > 0 {
		if !json.Valid(body) {
			return fmt.Errorf("%w: the command payload is not JSON", errBadRequest)
		}
		payload = json.RawMessage(body)
	}
	res, err := h.core.InvokeCommand(r.Context(), r.PathValue("id"), r.PathValue("component"), r.PathValue("name"), payload,
		time.Duration(connect)*time.Second, time.Duration(timeout)*time.Second)
	if err != nil {
		return err
	}
	w.Header().Set("x-ms-command-statuscode", strconv.Itoa(res.Status))
	w.Header().Set("x-ms-request-id", res.RequestID)
	out := res.Payload
	if out == nil {
		out = json.RawMessage("null")
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
