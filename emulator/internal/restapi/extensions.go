package restapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// emulatorPrefix is where every emulator extension (a route IoT Central
// does not have) is served, so that code using only IoT Central's routes
// is portable by construction.
const emulatorPrefix = "/api/emulator"

// moved answers an extension's old path, for one release, with 308
// Permanent Redirect to its new path under emulatorPrefix (target is a
// route pattern whose {wildcards} are filled from the request) and an
// error body saying so; the query is kept. Clients that follow redirects
// keep working meanwhile; the Deprecation header marks the answer.
func (h *handler) moved(target string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.movedTo(w, r, fillPattern(target, r), r.URL.Query())
	}
}

func (h *handler) movedTo(w http.ResponseWriter, r *http.Request, path string, q url.Values) {
	loc := path // escaped by fillPattern
	if len(q) > 0 {
		loc += "?" + q.Encode()
	}
	w.Header().Set("Location", loc)
	w.Header().Set("Deprecation", "true")
	h.fail(w, r, http.StatusPermanentRedirect, "MovedPermanently",
		r.Method+" "+r.URL.Path+" is an emulator extension and has moved to "+path+
			" (every extension is under "+emulatorPrefix+"/); this redirect is served for one release only")
}

// fillPattern replaces the {name} wildcards of a route pattern with the
// request's (escaped) path values.
func fillPattern(pattern string, r *http.Request) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(pattern, '{')
		j := strings.IndexByte(pattern, '}')
		if i < 0 || j < i {
			b.WriteString(pattern)
			return b.String()
		}
		b.WriteString(pattern[:i])
		b.WriteString(url.PathEscape(r.PathValue(pattern[i+1 : j])))
		pattern = pattern[j+1:]
	}
}

// connectionAnswer is the answer of GET /api/emulator/devices/{id}/connection.
type connectionAnswer struct {
	ID        string `json:"id"`
	Connected bool   `json:"connected"`
}

// getConnection answers whether the device holds a hub connection now
// (emulator extension: IoT Central's device has no such field).
func (h *handler) getConnection(w http.ResponseWriter, r *http.Request) {
	d, err := h.b.GetDevice(r.Context(), r.PathValue("id"))
	h.respond(w, r, http.StatusOK, connectionAnswer{ID: d.ID, Connected: d.Connected}, err)
}

// postQueuedCommand queues a command as a cloud-to-device message with
// the method-name property (emulator extension): what IoT Central does
// for a command its template marks "durable" (Queue if offline), for any
// command. 201 {"request", "queued": true}.
func (h *handler) postQueuedCommand(w http.ResponseWriter, r *http.Request) {
	id, c, name := r.PathValue("id"), r.PathValue("c"), r.PathValue("name")
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
	if err == nil {
		err = h.b.QueueCommand(r.Context(), id, c, name, req.Request)
	}
	h.respond(w, r, http.StatusCreated, queuedAnswer{Request: req.Request, Queued: true}, err)
}

// durableCommand reports whether the device's template marks the command
// "durable" (IoT Central's "Queue if offline"; so it exports the option
// in DTDL). False when the device has no template or it lacks the
// command.
func (h *handler) durableCommand(ctx context.Context, id, component, name string) bool {
	d, err := h.b.GetDevice(ctx, id)
	if err != nil || d.Template == "" {
		return false
	}
	doc, err := h.b.GetTemplate(ctx, d.Template)
	if err != nil {
		return false
	}
	e := templateEntry(doc, component, name, "Command")
	durable, _ := e["durable"].(bool)
	return durable
}

// templateEntry returns the contents entry of a template document named
// name whose @type includes kind, in the root interface (component "")
// or in the component's interface; nil when there is none.
func templateEntry(doc map[string]any, component, name, kind string) map[string]any {
	itf, _ := doc["capabilityModel"].(map[string]any)
	if component != "" {
		itf = nil
		eachContent(doc["capabilityModel"], 0, func(e map[string]any) bool {
			if e["name"] == component && hasJSONType(e["@type"], "Component") {
				itf, _ = e["schema"].(map[string]any)
				return false
			}
			return true
		})
	}
	var found map[string]any
	eachContent(itf, 0, func(e map[string]any) bool {
		if e["name"] == name && hasJSONType(e["@type"], kind) {
			found = e
			return false
		}
		return true
	})
	return found
}

// eachContent calls f with every contents entry of a DTDL interface and
// of the interfaces it extends (at most 8 deep), until f returns false.
func eachContent(v any, depth int, f func(map[string]any) bool) bool {
	itf, _ := v.(map[string]any)
	if itf == nil || depth > 8 {
		return true
	}
	contents, _ := itf["contents"].([]any)
	for _, c := range contents {
		if e, ok := c.(map[string]any); ok && !f(e) {
			return false
		}
	}
	ext := itf["extends"]
	if m, ok := ext.(map[string]any); ok {
		ext = []any{m}
	}
	list, _ := ext.([]any)
	for _, e := range list {
		if !eachContent(e, depth+1, f) {
			return false
		}
	}
	return true
}

// durableAnswer is the 201 answer to a command the template marks
// durable: the command as sent, without a response (IoT Central's
// offline commands return none).
type durableAnswer struct {
	ID                string          `json:"id"`
	Request           json.RawMessage `json:"request,omitempty"`
	ConnectionTimeout int             `json:"connectionTimeout"`
	ResponseTimeout   int             `json:"responseTimeout"`
}
