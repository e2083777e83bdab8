package restapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// DeviceGroup is an IoT Central device group: a named query over the
// devices. Filter is IoT Central's device query, "SELECT * FROM devices
// [WHERE condition]" (see parseDeviceQuery).
type DeviceGroup struct {
	// ID is the group id, 1..255 letters, digits, '-', '_' or '.'.
	ID string `json:"id"`
	// DisplayName is required.
	DisplayName string `json:"displayName"`
	// Filter is the device query; required.
	Filter string `json:"filter"`
	// Description is free text.
	Description string `json:"description,omitempty"`
	// Organizations holds at most one existing organization id.
	Organizations []string `json:"organizations,omitempty"`
	// Etag changes whenever the group changes (set by the handler).
	Etag string `json:"etag,omitempty"`
}

// DeviceGroupBackend is the optional part of a Backend that keeps device
// groups; without it the device group routes answer 501.
type DeviceGroupBackend interface {
	// ListDeviceGroups returns every group, in any order.
	ListDeviceGroups(ctx context.Context) ([]DeviceGroup, error)
	// GetDeviceGroup returns one group, or ErrNotFound.
	GetDeviceGroup(ctx context.Context, id string) (DeviceGroup, error)
	// PutDeviceGroup creates or replaces a group (validated by the
	// handler) and returns it as stored.
	PutDeviceGroup(ctx context.Context, g DeviceGroup) (DeviceGroup, error)
	// DeleteDeviceGroup removes a group, or ErrNotFound.
	DeleteDeviceGroup(ctx context.Context, id string) error
}

// deviceGroupOData is what GET /deviceGroups takes: $filter on id and
// displayName with contains, $orderby displayName, $top.
var deviceGroupOData = odataSchema{
	fields:    map[string]odataKind{"id": odataString, "displayname": odataString},
	names:     []string{"id", "displayName"},
	functions: []string{"contains"},
	orderBy:   []string{"displayName"},
}

// deviceQuerySchema is what a device group's query may test: the device
// fields IoT Central names with a '$' ($id, $displayName, $template,
// $provisioned, $simulated, $enabled, $organizations).
var deviceQuerySchema = odataSchema{
	fields: map[string]odataKind{"id": odataString, "displayname": odataString, "template": odataString,
		"provisioned": odataBool, "simulated": odataBool, "enabled": odataBool, "scopes": odataString},
	names: []string{"$id", "$displayName", "$template", "$provisioned", "$simulated", "$enabled", "$organizations"},
}

// parseDeviceQuery reads a device group's query, "SELECT * FROM devices"
// optionally followed by "WHERE" and a condition over the '$' fields with
// = != <> < <= > >=, AND, OR, NOT, parentheses, strings in double or
// single quotes, numbers and true/false. It returns nil for no condition.
// Errors wrap ErrValidation (a body value IoT Central refuses: 422).
func parseDeviceQuery(q string) (filterNode, error) {
	if len(q) > maxFilterBytes {
		return nil, invalidf("filter is longer than %d bytes", maxFilterBytes)
	}
	toks, err := lexDeviceQuery(q)
	if err != nil {
		return nil, invalidf("filter: %v", err)
	}
	head := []string{"select", "*", "from", "devices"}
	for i, want := range head {
		if i >= len(toks) || strings.ToLower(toks[i].text) != want {
			return nil, invalidf("filter must start with SELECT * FROM devices")
		}
	}
	toks = toks[len(head):]
	if len(toks) == 0 {
		return nil, nil
	}
	if strings.ToLower(toks[0].text) != "where" || toks[0].kind != tokIdent {
		return nil, invalidf("filter: expected WHERE after SELECT * FROM devices, found %q", toks[0].text)
	}
	p := &filterParser{s: &deviceQuerySchema, src: q, toks: toks[1:]}
	n, err := p.parseOr(0)
	if err == nil && p.pos < len(p.toks) {
		err = fmt.Errorf("unexpected %q at offset %d", p.toks[p.pos].text, p.toks[p.pos].at)
	}
	if err == nil && n.kind() != odataBool {
		err = fmt.Errorf("the WHERE clause is not a condition")
	}
	if err != nil {
		return nil, invalidf("filter: %v", err)
	}
	return n, nil
}

// lexDeviceQuery tokenizes IoT Central's query language into the OData
// parser's tokens: operators become eq, ne, ..., keywords lower case,
// "$field" the field name (organizations: scopes).
func lexDeviceQuery(s string) ([]token, error) {
	var out []token
	ops := []struct{ sym, op string }{{"!=", "ne"}, {"<>", "ne"}, {"<=", "le"}, {">=", "ge"}, {"=", "eq"}, {"<", "lt"}, {">", "gt"}}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			continue
		case c == '(' || c == ')' || c == '*':
			k := tokLParen
			if c == ')' {
				k = tokRParen
			} else if c == '*' {
				k = tokIdent
			}
			out = append(out, token{k, string(c), i})
			i++
			continue
		case c == '"' || c == '\'':
			j := i + 1
			var b strings.Builder
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string starting at offset %d", i)
			}
			out = append(out, token{tokString, b.String(), i})
			i = j + 1
			continue
		}
		matched := false
		for _, o := range ops {
			if strings.HasPrefix(s[i:], o.sym) {
				out = append(out, token{tokIdent, o.op, i})
				i += len(o.sym)
				matched = true
				break
			}
		}
		if matched {
			continue
		}
		j := i
		for j < len(s) && !strings.ContainsRune(" \t\n\r()*\"'!=<>", rune(s[j])) {
			j++
		}
		word := s[i:j]
		switch {
		case strings.HasPrefix(word, "$"):
			name := strings.ToLower(word[1:])
			if name == "organizations" {
				name = "scopes"
			}
			if _, ok := deviceQuerySchema.fields[name]; !ok {
				return nil, fmt.Errorf("field %q cannot be queried; the emulator queries %s", word, strings.Join(deviceQuerySchema.names, ", "))
			}
			out = append(out, token{tokIdent, name, i})
		case word != "" && (word[0] == '-' || word[0] >= '0' && word[0] <= '9'):
			out = append(out, token{tokNumber, word, i})
		case slices.Contains([]string{"and", "or", "not", "true", "false", "null", "select", "from", "where", "devices"}, strings.ToLower(word)):
			out = append(out, token{tokIdent, strings.ToLower(word), i})
		default:
			return nil, fmt.Errorf("unexpected %q at offset %d (device properties, telemetry and functions are not served: only the '$' fields)", word, i)
		}
		i = j
	}
	return out, nil
}

func (h *handler) deviceGroupRoutes() []route {
	return []route{
		{"/api/deviceGroups", map[string]http.HandlerFunc{"GET": h.listDeviceGroups}},
		{"/api/deviceGroups/{id}", map[string]http.HandlerFunc{"GET": h.getDeviceGroup, "PUT": h.putDeviceGroup, "PATCH": h.patchDeviceGroup, "DELETE": h.deleteDeviceGroup}},
		{"/api/deviceGroups/{id}/devices", map[string]http.HandlerFunc{"GET": h.deviceGroupDevices}},
	}
}

func (h *handler) groupsBackend(w http.ResponseWriter, r *http.Request) (DeviceGroupBackend, bool) {
	gb, ok := h.b.(DeviceGroupBackend)
	if !ok {
		h.fail(w, r, http.StatusNotImplemented, "NotImplemented", "this backend keeps no device groups")
	}
	return gb, ok
}

func deviceGroupWithEtag(g DeviceGroup) DeviceGroup {
	if g.ID == "" {
		return g
	}
	g.Etag = ""
	g.Etag = etagOf(g)
	return g
}

func deviceGroupFields(g DeviceGroup) fieldGetter {
	return func(f string) any {
		switch f {
		case "id":
			return g.ID
		case "displayname":
			return g.DisplayName
		}
		return nil
	}
}

func (h *handler) listDeviceGroups(w http.ResponseWriter, r *http.Request) {
	gb, ok := h.groupsBackend(w, r)
	if !ok {
		return
	}
	gs, err := gb.ListDeviceGroups(r.Context())
	slices.SortFunc(gs, func(a, b DeviceGroup) int { return strings.Compare(a.ID, b.ID) })
	for i := range gs {
		gs[i] = deviceGroupWithEtag(gs[i])
	}
	odataPage(h, w, r, &deviceGroupOData, gs, deviceGroupFields, err)
}

func (h *handler) getDeviceGroup(w http.ResponseWriter, r *http.Request) {
	if gb, ok := h.groupsBackend(w, r); ok {
		g, err := gb.GetDeviceGroup(r.Context(), r.PathValue("id"))
		h.respond(w, r, http.StatusOK, deviceGroupWithEtag(g), err)
	}
}

// checkDeviceGroup validates a group body: id, displayName and a query
// that parses (organizations are checked by checkOrganizations). Errors
// wrap ErrValidation.
func checkDeviceGroup(g DeviceGroup, id string) error {
	if id == "" || len(id) > 255 || strings.IndexFunc(id, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.", c))
	}) >= 0 {
		return invalidf("device group id %q must be 1 to 255 letters, digits, '-', '_' or '.'", id)
	}
	if g.ID != id {
		return invalidf("body id %q differs from the id %q in the path", g.ID, id)
	}
	if g.DisplayName == "" {
		return invalidf("displayName is required")
	}
	if g.Filter == "" {
		return invalidf("filter is required: a query such as SELECT * FROM devices WHERE $provisioned = true")
	}
	_, err := parseDeviceQuery(g.Filter)
	return err
}

func (h *handler) putDeviceGroup(w http.ResponseWriter, r *http.Request) {
	gb, ok := h.groupsBackend(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	body, err := readBody(w, r)
	var g DeviceGroup
	if err == nil {
		err = asValidation(decodeJSON(body, &g))
	}
	bodyEtag := g.Etag
	if g.ID == "" {
		g.ID = id
	}
	g.Etag = ""
	if err == nil {
		err = checkDeviceGroup(g, id)
	}
	h.entityMu.Lock() // an organization checked is not deleted before the write
	defer h.entityMu.Unlock()
	if err == nil {
		err = h.checkOrganizations(r.Context(), g.Organizations)
	}
	if err == nil {
		err = h.guard(r, bodyEtag, func() error { return h.deviceGroupEtagCheck(r, gb, id, bodyEtag) }, func() error {
			var perr error
			g, perr = gb.PutDeviceGroup(r.Context(), g)
			return perr
		})
	}
	h.respond(w, r, http.StatusOK, deviceGroupWithEtag(g), err)
}

func (h *handler) patchDeviceGroup(w http.ResponseWriter, r *http.Request) {
	gb, ok := h.groupsBackend(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	patch, bodyEtag, err := readMergePatch(w, r)
	var g DeviceGroup
	h.entityMu.Lock() // before guard's lock, as every writer takes them
	defer h.entityMu.Unlock()
	if err == nil {
		err = h.guard(r, bodyEtag, func() error { return h.deviceGroupEtagCheck(r, gb, id, bodyEtag) }, func() error {
			cur, gerr := gb.GetDeviceGroup(r.Context(), id)
			if gerr != nil {
				return gerr
			}
			var m map[string]any
			b, _ := json.Marshal(cur)
			_ = json.Unmarshal(b, &m)
			merged, _ := json.Marshal(mergePatch(m, patch))
			g = DeviceGroup{}
			if gerr = asValidation(decodeJSON(merged, &g)); gerr != nil {
				return gerr
			}
			g.Etag = ""
			if gerr = checkDeviceGroup(g, id); gerr != nil {
				return gerr
			}
			if gerr = h.checkOrganizations(r.Context(), g.Organizations); gerr != nil {
				return gerr
			}
			g, gerr = gb.PutDeviceGroup(r.Context(), g)
			return gerr
		})
	}
	h.respond(w, r, http.StatusOK, deviceGroupWithEtag(g), err)
}

func (h *handler) deviceGroupEtagCheck(r *http.Request, gb DeviceGroupBackend, id, bodyEtag string) error {
	cur, err := gb.GetDeviceGroup(r.Context(), id)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return checkEtag(r, deviceGroupWithEtag(cur).Etag, exists, bodyEtag)
}

func (h *handler) deleteDeviceGroup(w http.ResponseWriter, r *http.Request) {
	gb, ok := h.groupsBackend(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	err := h.guard(r, "", func() error { return h.deviceGroupEtagCheck(r, gb, id, "") }, func() error {
		return gb.DeleteDeviceGroup(r.Context(), id)
	})
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deviceGroupDevices answers the devices the group's query selects now,
// sorted by id and paged.
func (h *handler) deviceGroupDevices(w http.ResponseWriter, r *http.Request) {
	gb, ok := h.groupsBackend(w, r)
	if !ok {
		return
	}
	g, err := gb.GetDeviceGroup(r.Context(), r.PathValue("id"))
	var q filterNode
	if err == nil {
		q, err = parseDeviceQuery(g.Filter)
	}
	var ds []Device
	if err == nil {
		ds, err = h.b.ListDevices(r.Context())
	}
	slices.SortFunc(ds, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	out := ds[:0:0]
	for _, d := range ds {
		if q == nil || q.eval(deviceFields(d)) == true {
			out = append(out, h.deviceWithEtag(d))
		}
	}
	page(h, w, r, out, err)
}
