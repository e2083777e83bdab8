package restapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/iotc-go/iotc/emulator/internal/export"
)

// DataExportBackend keeps the data export definitions (the emulator's
// *export.Manager); Options.DataExport without it: the dataExport routes
// answer 501.
type DataExportBackend interface {
	// Destinations lists every destination (secrets masked, status set).
	Destinations() []export.Destination
	// Destination returns one, or ErrNotFound.
	Destination(id string) (export.Destination, error)
	// StoredDestination returns one with its secrets, or ErrNotFound.
	StoredDestination(id string) (export.Destination, error)
	// PutDestination creates or replaces one; ErrValidation when invalid.
	PutDestination(d export.Destination) (export.Destination, error)
	// DeleteDestination removes one; ErrNotFound, ErrConflict while used.
	DeleteDestination(id string) error
	// ExportsOf lists the exports of a destination, or ErrNotFound.
	ExportsOf(id string) ([]export.Export, error)
	// Exports lists every export with its status.
	Exports() []export.Export
	// Export returns one, or ErrNotFound.
	Export(id string) (export.Export, error)
	// PutExport creates or replaces one; ErrValidation when invalid (an
	// unknown destination included).
	PutExport(e export.Export) (export.Export, error)
	// DeleteExport removes one, or ErrNotFound.
	DeleteExport(id string) error
	// DestinationsOf lists the destinations of an export, or ErrNotFound.
	DestinationsOf(id string) ([]export.Destination, error)
}

// dataExportPrefix is where the data export routes live.
const dataExportPrefix = "/api/dataExport"

// apiVersionsFor returns the api-versions served on path: the data
// export routes are defined by the preview api-versions only.
func apiVersionsFor(path string) []string {
	if path == dataExportPrefix || strings.HasPrefix(path, dataExportPrefix+"/") {
		return export.APIVersions
	}
	return []string{APIVersion}
}

func (h *handler) dataExportRoutes() []route {
	return []route{
		{dataExportPrefix + "/destinations", map[string]http.HandlerFunc{"GET": h.listDestinations}},
		{dataExportPrefix + "/destinations/{id}", map[string]http.HandlerFunc{"GET": h.getDestination, "PUT": h.putDestination,
			"PATCH": h.patchDestination, "DELETE": h.deleteDestination}},
		{dataExportPrefix + "/destinations/{id}/exports", map[string]http.HandlerFunc{"GET": h.destinationExports}},
		{dataExportPrefix + "/exports", map[string]http.HandlerFunc{"GET": h.listExports}},
		{dataExportPrefix + "/exports/{id}", map[string]http.HandlerFunc{"GET": h.getExport, "PUT": h.putExport,
			"PATCH": h.patchExport, "DELETE": h.deleteExport}},
		{dataExportPrefix + "/exports/{id}/destinations", map[string]http.HandlerFunc{"GET": h.exportDestinations}},
	}
}

func (h *handler) dataExport(w http.ResponseWriter, r *http.Request) (DataExportBackend, bool) {
	if h.export == nil {
		h.fail(w, r, http.StatusNotImplemented, "NotImplemented", "this emulator runs no data export")
		return nil, false
	}
	return h.export, true
}

// destinationEtag is the entity tag of a destination's definition (its
// status excluded: delivering a message does not change it).
func destinationEtag(d export.Destination) string {
	d.Status = export.Status{}
	return etagOf(d)
}

func exportEtag(e export.Export) string {
	e.Status = export.Status{}
	return etagOf(e)
}

// replyEtag answers v with its etag in the ETag header.
func (h *handler) replyEtag(w http.ResponseWriter, r *http.Request, v any, etag string, err error) {
	if err == nil {
		w.Header().Set("ETag", etag)
	}
	h.respond(w, r, http.StatusOK, v, err)
}

// requireFields refuses a body that lacks a required member (422).
func requireFields(body []byte, names ...string) error {
	var m map[string]json.RawMessage
	if err := asValidation(decodeJSON(body, &m)); err != nil {
		return err
	}
	for _, n := range names {
		if v, ok := m[n]; !ok || string(v) == "null" {
			return invalidf("%s is required", n)
		}
	}
	return nil
}

// decodeDefinition reads a PUT body: required members, the id from the
// path (a body id must match it).
func decodeDefinition(w http.ResponseWriter, r *http.Request, v any, bodyID func() string, required ...string) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	if err := requireFields(body, required...); err != nil {
		return err
	}
	if err := asValidation(decodeJSON(body, v)); err != nil {
		return err
	}
	if id := bodyID(); id != "" && id != r.PathValue("id") {
		return invalidf("body id %q differs from the id %q in the path", id, r.PathValue("id"))
	}
	return nil
}

func (h *handler) listDestinations(w http.ResponseWriter, r *http.Request) {
	if b, ok := h.dataExport(w, r); ok {
		page(h, w, r, b.Destinations(), nil)
	}
}

func (h *handler) getDestination(w http.ResponseWriter, r *http.Request) {
	if b, ok := h.dataExport(w, r); ok {
		d, err := b.Destination(r.PathValue("id"))
		h.replyEtag(w, r, d, destinationEtag(d), err)
	}
}

func (h *handler) destinationEtagCheck(r *http.Request, b DataExportBackend, id string) error {
	cur, err := b.Destination(id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return checkEtag(r, destinationEtag(cur), err == nil, "")
}

func (h *handler) putDestination(w http.ResponseWriter, r *http.Request) {
	b, ok := h.dataExport(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	var d export.Destination
	err := decodeDefinition(w, r, &d, func() string { return d.ID }, "displayName", "type")
	if err == nil {
		d.ID = id
		err = export.CheckID("destination", id)
	}
	if err == nil {
		err = h.guard(r, "", func() error { return h.destinationEtagCheck(r, b, id) }, func() error {
			var perr error
			d, perr = b.PutDestination(d)
			return perr
		})
	}
	h.replyEtag(w, r, d, destinationEtag(d), err)
}

func (h *handler) patchDestination(w http.ResponseWriter, r *http.Request) {
	b, ok := h.dataExport(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	patch, _, err := readMergePatch(w, r)
	var d export.Destination
	if err == nil {
		err = h.guard(r, "", func() error { return h.destinationEtagCheck(r, b, id) }, func() error {
			cur, gerr := b.StoredDestination(id)
			if gerr != nil {
				return gerr
			}
			if d, gerr = mergeReadOnlyKept(cur, patch); gerr != nil {
				return gerr
			}
			d.ID = id
			d, gerr = b.PutDestination(d)
			return gerr
		})
	}
	h.replyEtag(w, r, d, destinationEtag(d), err)
}

func (h *handler) deleteDestination(w http.ResponseWriter, r *http.Request) {
	b, ok := h.dataExport(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	err := h.guard(r, "", func() error { return h.destinationEtagCheck(r, b, id) }, func() error { return b.DeleteDestination(id) })
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) destinationExports(w http.ResponseWriter, r *http.Request) {
	if b, ok := h.dataExport(w, r); ok {
		es, err := b.ExportsOf(r.PathValue("id"))
		page(h, w, r, es, err)
	}
}

func (h *handler) listExports(w http.ResponseWriter, r *http.Request) {
	if b, ok := h.dataExport(w, r); ok {
		page(h, w, r, b.Exports(), nil)
	}
}

func (h *handler) getExport(w http.ResponseWriter, r *http.Request) {
	if b, ok := h.dataExport(w, r); ok {
		e, err := b.Export(r.PathValue("id"))
		h.replyEtag(w, r, e, exportEtag(e), err)
	}
}

func (h *handler) exportEtagCheck(r *http.Request, b DataExportBackend, id string) error {
	cur, err := b.Export(id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return checkEtag(r, exportEtag(cur), err == nil, "")
}

func (h *handler) putExport(w http.ResponseWriter, r *http.Request) {
	b, ok := h.dataExport(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	var e export.Export
	err := decodeDefinition(w, r, &e, func() string { return e.ID }, "displayName", "enabled", "source", "destinations")
	if err == nil {
		e.ID = id
		err = export.CheckID("export", id)
	}
	if err == nil {
		err = h.guard(r, "", func() error { return h.exportEtagCheck(r, b, id) }, func() error {
			var perr error
			e, perr = b.PutExport(e)
			return perr
		})
	}
	h.replyEtag(w, r, e, exportEtag(e), err)
}

func (h *handler) patchExport(w http.ResponseWriter, r *http.Request) {
	b, ok := h.dataExport(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	patch, _, err := readMergePatch(w, r)
	var e export.Export
	if err == nil {
		err = h.guard(r, "", func() error { return h.exportEtagCheck(r, b, id) }, func() error {
			cur, gerr := b.Export(id)
			if gerr != nil {
				return gerr
			}
			cur.Status = export.Status{}
			if e, gerr = mergeReadOnlyKept(cur, patch); gerr != nil {
				return gerr
			}
			e.ID = id
			e, gerr = b.PutExport(e)
			return gerr
		})
	}
	h.replyEtag(w, r, e, exportEtag(e), err)
}

func (h *handler) deleteExport(w http.ResponseWriter, r *http.Request) {
	b, ok := h.dataExport(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	err := h.guard(r, "", func() error { return h.exportEtagCheck(r, b, id) }, func() error { return b.DeleteExport(id) })
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) exportDestinations(w http.ResponseWriter, r *http.Request) {
	if b, ok := h.dataExport(w, r); ok {
		ds, err := b.DestinationsOf(r.PathValue("id"))
		page(h, w, r, ds, err)
	}
}

// servedVersion reports whether v is an api-version served on path.
func servedVersion(path, v string) bool { return slices.Contains(apiVersionsFor(path), v) }

// mergeReadOnlyKept applies a merge patch to cur (a destination or an
// export) and decodes the result; the read-only keys (id, status, errors,
// lastExportTime) in patch are ignored. A patch that makes an invalid
// definition is a validation error.
func mergeReadOnlyKept[T any](cur T, patch map[string]any) (T, error) {
	var m map[string]any
	raw, err := json.Marshal(cur)
	if err == nil {
		err = json.Unmarshal(raw, &m)
	}
	if err != nil {
		var zero T
		return zero, err
	}
	for _, k := range []string{"id", "status", "errors", "lastExportTime"} {
		delete(patch, k)
	}
	return decodeMerged[T](m, patch)
}
