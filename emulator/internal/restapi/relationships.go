package restapi

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
)

// DeviceRelationship relates a source (parent) device to a target
// (child) device, as the source's device template defines (a DTDL
// Relationship whose target, when set, is the target device's model).
type DeviceRelationship struct {
	// ID names the relationship among those of its source device.
	ID string `json:"id"`
	// Source is the source device id: the device of the path.
	Source string `json:"source"`
	// Target is the target device id.
	Target string `json:"target"`
}

// relationshipsDoc is the stored relationships of one source device.
type relationshipsDoc struct {
	Relationships map[string]DeviceRelationship `json:"relationships"`
}

func (h *handler) relationshipRoutes() []route {
	return []route{
		{"/api/devices/{id}/relationships", map[string]http.HandlerFunc{"GET": h.listRelationships}},
		{"/api/devices/{id}/relationships/{rel}", map[string]http.HandlerFunc{"GET": h.getRelationship,
			"PUT": h.putRelationship, "PATCH": h.patchRelationship, "DELETE": h.deleteRelationship}},
	}
}

func (h *handler) relationshipsOf(ctx context.Context, db DocBackend, device string) (relationshipsDoc, error) {
	doc, err := getDoc[relationshipsDoc](ctx, db, relationshipsCollection, device)
	if errors.Is(err, ErrNotFound) {
		err = nil
	}
	if doc.Relationships == nil {
		doc.Relationships = map[string]DeviceRelationship{}
	}
	return doc, err
}

// listRelationships lists the relationships the device is the source or
// the target of, by source then id.
func (h *handler) listRelationships(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	db, err := h.docs()
	if err == nil {
		_, err = h.b.GetDevice(r.Context(), id)
	}
	var all []relationshipsDoc
	if err == nil {
		all, err = listDocs[relationshipsDoc](r.Context(), db, relationshipsCollection)
	}
	out := []DeviceRelationship{}
	for _, d := range all {
		for _, rel := range d.Relationships {
			if rel.Source == id || rel.Target == id {
				out = append(out, rel)
			}
		}
	}
	slices.SortFunc(out, func(a, b DeviceRelationship) int {
		return strings.Compare(a.Source+"\x00"+a.ID, b.Source+"\x00"+b.ID)
	})
	page(h, w, r, out, err)
}

func (h *handler) getRelationship(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	var doc relationshipsDoc
	if err == nil {
		doc, err = h.relationshipsOf(r.Context(), db, r.PathValue("id"))
	}
	rel, ok := doc.Relationships[r.PathValue("rel")]
	if err == nil && !ok {
		err = errorf(ErrNotFound, "device %q has no relationship %q", r.PathValue("id"), r.PathValue("rel"))
	}
	h.respond(w, r, http.StatusOK, rel, err)
}

func (h *handler) putRelationship(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	var rel DeviceRelationship
	if err == nil {
		err = asValidation(decodeJSON(body, &rel))
	}
	h.writeRelationship(w, r, rel, false, err)
}

func (h *handler) patchRelationship(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	var rel DeviceRelationship
	if err == nil {
		err = asValidation(decodeJSON(body, &rel))
	}
	h.writeRelationship(w, r, rel, true, err)
}

// writeRelationship validates and stores a relationship: the source is
// the path's device; the target exists and differs from it; the source's
// template defines a relationship whose target (when set) is the target
// device's model or template. PATCH changes an existing one (its target
// when given).
func (h *handler) writeRelationship(w http.ResponseWriter, r *http.Request, rel DeviceRelationship, patch bool, err error) {
	id, relID := r.PathValue("id"), r.PathValue("rel")
	ctx := r.Context()
	var db DocBackend
	if err == nil {
		db, err = h.docs()
	}
	if err == nil && (rel.ID != "" && rel.ID != relID) {
		err = invalidf("body id %q differs from the relationship id %q in the path", rel.ID, relID)
	}
	if err == nil && rel.Source != "" && rel.Source != id {
		err = invalidf("source %q differs from the device %q in the path", rel.Source, id)
	}
	if err == nil && !idPattern(relID, 255, "-_.") {
		err = invalidf("relationship id %q must be 1 to 255 letters, digits, '-', '_' or '.'", relID)
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	h.entityMu.Lock()
	defer h.entityMu.Unlock()
	doc, err := h.relationshipsOf(ctx, db, id)
	if err == nil && patch {
		cur, ok := doc.Relationships[relID]
		if !ok {
			err = errorf(ErrNotFound, "device %q has no relationship %q", id, relID)
		} else if rel.Target == "" {
			rel.Target = cur.Target
		}
	}
	rel.ID, rel.Source = relID, id
	if err == nil {
		err = h.checkRelationship(ctx, rel)
	}
	if err == nil {
		doc.Relationships[relID] = rel
		err = putDoc(ctx, db, relationshipsCollection, id, doc)
	}
	h.respond(w, r, http.StatusOK, rel, err)
}

func (h *handler) checkRelationship(ctx context.Context, rel DeviceRelationship) error {
	src, err := h.b.GetDevice(ctx, rel.Source)
	if err != nil {
		return err
	}
	if rel.Target == "" || rel.Target == rel.Source {
		return invalidf("target must be another device's id")
	}
	dst, err := h.b.GetDevice(ctx, rel.Target)
	if errors.Is(err, ErrNotFound) {
		return invalidf("target device %q does not exist", rel.Target)
	} else if err != nil {
		return err
	}
	if src.Template == "" {
		return invalidf("device %q has no device template, so no relationship definitions", rel.Source)
	}
	tpl, err := h.b.GetTemplate(ctx, src.Template)
	if err != nil {
		return err
	}
	// What the target's model answers to: its template id and model id.
	names := []string{dst.Template}
	if dst.Template != "" {
		if dt, err := h.b.GetTemplate(ctx, dst.Template); err == nil {
			if cm, _ := dt["capabilityModel"].(map[string]any); cm != nil {
				if mid, _ := cm["@id"].(string); mid != "" {
					names = append(names, mid)
				}
			}
		}
	}
	defined, matched := false, false
	eachContent(tpl["capabilityModel"], 0, func(e map[string]any) bool {
		if !hasJSONType(e["@type"], "Relationship") {
			return true
		}
		defined = true
		t, _ := e["target"].(string)
		if t == "" || dst.Template != "" && slices.Contains(names, t) {
			matched = true
			return false
		}
		return true
	})
	switch {
	case !defined:
		return invalidf("device template %q defines no relationship", src.Template)
	case !matched:
		return invalidf("device template %q defines no relationship to a device of template %q", src.Template, dst.Template)
	}
	return nil
}

func (h *handler) deleteRelationship(w http.ResponseWriter, r *http.Request) {
	id, relID := r.PathValue("id"), r.PathValue("rel")
	db, err := h.docs()
	if err == nil {
		h.entityMu.Lock()
		defer h.entityMu.Unlock()
		var doc relationshipsDoc
		doc, err = h.relationshipsOf(r.Context(), db, id)
		if _, ok := doc.Relationships[relID]; err == nil && !ok {
			err = errorf(ErrNotFound, "device %q has no relationship %q", id, relID)
		}
		if err == nil {
			delete(doc.Relationships, relID)
			err = putDoc(r.Context(), db, relationshipsCollection, id, doc)
		}
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
