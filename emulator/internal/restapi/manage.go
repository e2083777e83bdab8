package restapi

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// maxDeviceIDLen is IoT Hub's limit on device ids.
const maxDeviceIDLen = 128

func (h *handler) deviceWithEtag(d Device) Device {
	d.Etag = ""
	d.Etag = etagOf(d)
	return d
}

func (h *handler) listDevices(w http.ResponseWriter, r *http.Request) {
	ds, err := h.b.ListDevices(r.Context())
	slices.SortFunc(ds, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	for i := range ds {
		ds[i] = h.deviceWithEtag(ds[i])
	}
	odataPage(h, w, r, &deviceOData, ds, deviceFields, err)
}

func (h *handler) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := h.b.GetDevice(r.Context(), r.PathValue("id"))
	h.respond(w, r, http.StatusOK, h.deviceWithEtag(d), err)
}

// deviceFields are the $filter fields of a device (see deviceOData).
func deviceFields(d Device) fieldGetter {
	return func(f string) any {
		switch f {
		case "id":
			return d.ID
		case "displayname":
			return d.DisplayName
		case "enabled":
			return d.Enabled
		case "provisioned":
			return d.Provisioned
		case "simulated":
			return d.Simulated
		case "template":
			if d.Template == "" {
				return nil
			}
			return d.Template
		case "scopes":
			return slices.Clone(d.Organizations)
		}
		return nil
	}
}

// templateFields are the $filter fields of a device template (see
// templateOData).
func templateFields(doc map[string]any) fieldGetter {
	return func(f string) any {
		var v any
		switch f {
		case "@id":
			v = doc["@id"]
		case "displayname":
			v = doc["displayName"]
			if m, ok := v.(map[string]any); ok { // a localized display name: its "en" text
				v = m["en"]
			}
		case "capabilitymodelid":
			cm, _ := doc["capabilityModel"].(map[string]any)
			v = cm["@id"]
		}
		if s, ok := v.(string); ok {
			return s
		}
		return nil
	}
}

// parseDeviceBody decodes a device PUT or PATCH body. For PUT (full) the
// absent fields take IoT Central's defaults: displayName = id, no template,
// enabled true, simulated false, no organizations.
// It also returns the body's etag ("" when none).
func parseDeviceBody(body []byte, id string, full bool) (DeviceSpec, string, error) {
	var wire struct {
		ID            *string   `json:"id"`
		Etag          *string   `json:"etag"`
		DisplayName   *string   `json:"displayName"`
		Template      *string   `json:"template"`
		Enabled       *bool     `json:"enabled"`
		Simulated     *bool     `json:"simulated"`
		Organizations *[]string `json:"organizations"`
		Provisioned   *bool     `json:"provisioned"`
	}
	if err := decodeJSON(body, &wire); err != nil {
		return DeviceSpec{}, "", asValidation(err)
	}
	if wire.ID != nil && *wire.ID != id {
		return DeviceSpec{}, "", invalidf("body id %q differs from the device id %q in the path", *wire.ID, id)
	}
	if wire.Organizations != nil && len(*wire.Organizations) > 1 {
		return DeviceSpec{}, "", invalidf("a device can be in at most one organization")
	}
	spec := DeviceSpec{DisplayName: wire.DisplayName, Template: wire.Template, Enabled: wire.Enabled,
		Simulated: wire.Simulated, Organizations: wire.Organizations}
	if full {
		def := func(p **string, v string) {
			if *p == nil {
				*p = &v
			}
		}
		def(&spec.DisplayName, id)
		def(&spec.Template, "")
		if spec.Enabled == nil {
			t := true
			spec.Enabled = &t
		}
		if spec.Simulated == nil {
			f := false
			spec.Simulated = &f
		}
		if spec.Organizations == nil {
			spec.Organizations = &[]string{}
		}
	}
	etag := ""
	if wire.Etag != nil {
		etag = *wire.Etag
	}
	return spec, etag, nil
}

// asValidation turns a type error of a well-formed JSON body into a 422:
// only a body that is not JSON at all stays 400.
func asValidation(err error) error {
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), "cannot unmarshal") {
		return invalidf("%s", strings.TrimPrefix(err.Error(), ErrBadRequest.Error()+": "))
	}
	return err
}

func checkDeviceID(id string) error {
	if id == "" || len(id) > maxDeviceIDLen {
		return invalidf("device id must be 1 to %d characters", maxDeviceIDLen)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-.%_*?!(),:=@$'", c)) {
			return invalidf("device id %q may hold only letters, digits and -.%%_*?!(),:=@$'", id)
		}
	}
	return nil
}

func (h *handler) putDevice(w http.ResponseWriter, r *http.Request) { h.writeDevice(w, r, true) }

func (h *handler) patchDevice(w http.ResponseWriter, r *http.Request) { h.writeDevice(w, r, false) }

func (h *handler) writeDevice(w http.ResponseWriter, r *http.Request, full bool) {
	id := r.PathValue("id")
	err := checkDeviceID(id)
	var body []byte
	if err == nil {
		body, err = readBody(w, r)
	}
	var spec DeviceSpec
	var bodyEtag string
	if err == nil {
		spec, bodyEtag, err = parseDeviceBody(body, id, full)
	}
	if err == nil && !full {
		_, err = h.b.GetDevice(r.Context(), id) // PATCH updates an existing device only
	}
	if err == nil && spec.Template != nil && *spec.Template != "" {
		err = h.checkTemplateRef(r, *spec.Template)
	}
	if err == nil && spec.Organizations != nil && len(*spec.Organizations) > 0 {
		h.entityMu.Lock() // an organization checked is not deleted before the write
		defer h.entityMu.Unlock()
		err = h.checkOrganizations(r.Context(), *spec.Organizations)
	}
	var d Device
	if err == nil {
		err = h.guard(r, bodyEtag, func() error { return h.deviceEtagCheck(r, id, bodyEtag) }, func() error {
			var perr error
			d, perr = h.b.PutDevice(r.Context(), id, spec)
			return perr
		})
	}
	h.respond(w, r, http.StatusOK, h.deviceWithEtag(d), err)
}

// deviceEtagCheck checks the preconditions of a write to device id.
func (h *handler) deviceEtagCheck(r *http.Request, id, bodyEtag string) error {
	cur, err := h.b.GetDevice(r.Context(), id)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return checkEtag(r, h.deviceWithEtag(cur).Etag, exists, bodyEtag)
}

// checkTemplateRef refuses (422) a device naming a template that does
// not exist, as IoT Central does.
func (h *handler) checkTemplateRef(r *http.Request, id string) error {
	_, err := h.b.GetTemplate(r.Context(), id)
	if errors.Is(err, ErrNotFound) {
		return invalidf("device template %q does not exist; create it first (PUT /api/deviceTemplates/{id})", id)
	}
	return err
}

func (h *handler) deleteDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := h.guard(r, "", func() error { return h.deviceEtagCheck(r, id, "") }, func() error {
		return h.b.DeleteDevice(r.Context(), id)
	})
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// attestationWire is the individual attestation of a device.
type attestationWire struct {
	Type         string        `json:"type"`
	SymmetricKey *SymmetricKey `json:"symmetricKey,omitempty"`
	X509         *struct {
		ClientCertificates map[string]X509Certificate `json:"clientCertificates"`
	} `json:"x509,omitempty"`
}

func (h *handler) getAttestation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := h.b.GetDevice(r.Context(), id)
	var c DeviceCredentials
	if err == nil {
		c, err = h.b.DeviceCredentials(r.Context(), id)
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	switch {
	case c.X509:
		h.fail(w, r, http.StatusNotFound, "NotFound", "device "+id+" has no individual attestation: it authenticates with a certificate chained to an X.509 enrollment group")
	case !d.IndividualKeys:
		h.fail(w, r, http.StatusNotFound, "NotFound", "device "+id+" has no individual attestation: it authenticates through its enrollment group")
	default:
		k := c.SymmetricKey
		h.reply(w, r, http.StatusOK, attestationWire{Type: AttestationSymmetricKey, SymmetricKey: &k})
	}
}

func (h *handler) putAttestation(w http.ResponseWriter, r *http.Request) {
	h.writeAttestation(w, r, false)
}

// patchAttestation is a merge patch: "type" may be left out (the current
// one, else symmetricKey, applies) and a key left out keeps its value.
func (h *handler) patchAttestation(w http.ResponseWriter, r *http.Request) {
	h.writeAttestation(w, r, true)
}

func (h *handler) writeAttestation(w http.ResponseWriter, r *http.Request, merge bool) {
	id := r.PathValue("id")
	body, err := readBody(w, r)
	var a attestationWire
	if err == nil {
		err = asValidation(decodeJSON(body, &a))
	}
	var cur SymmetricKey
	if err == nil && merge {
		var d Device
		if d, err = h.b.GetDevice(r.Context(), id); err == nil && d.IndividualKeys {
			var c DeviceCredentials
			if c, err = h.b.DeviceCredentials(r.Context(), id); err == nil && !c.X509 {
				cur = c.SymmetricKey
			}
		}
		if err == nil && a.Type == "" {
			a.Type = AttestationSymmetricKey
		}
	}
	if err == nil {
		switch a.Type {
		case AttestationSymmetricKey:
		case AttestationX509, "tpm":
			err = invalidf("attestation type %q is not supported by the emulator for a single device; use symmetricKey, or an X.509 enrollment group", a.Type)
		case "":
			err = invalidf("attestation.type is required")
		default:
			err = invalidf("attestation type %q is unknown (symmetricKey, x509 or tpm)", a.Type)
		}
	}
	var k SymmetricKey
	if a.SymmetricKey != nil {
		k = *a.SymmetricKey
	}
	if merge {
		if k.PrimaryKey == "" {
			k.PrimaryKey = cur.PrimaryKey
		}
		if k.SecondaryKey == "" {
			k.SecondaryKey = cur.SecondaryKey
		}
	}
	if err == nil {
		for _, key := range []string{k.PrimaryKey, k.SecondaryKey} {
			if key != "" {
				if _, kerr := checkOrGenerateKey(key); kerr != nil {
					err = kerr
				}
			}
		}
	}
	if err == nil {
		k, err = h.b.SetDeviceKeys(r.Context(), id, k)
	}
	h.respond(w, r, http.StatusOK, attestationWire{Type: AttestationSymmetricKey, SymmetricKey: &k}, err)
}

func (h *handler) deleteAttestation(w http.ResponseWriter, r *http.Request) {
	if err := h.b.RemoveDeviceKeys(r.Context(), r.PathValue("id")); err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// componentEntry is one element of the components list.
type componentEntry struct {
	Type        string `json:"@type"`
	Name        string `json:"name"`
	DisplayName any    `json:"displayName"`
	Description any    `json:"description,omitempty"`
}

func (h *handler) listComponents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	names, err := h.b.DeviceComponents(r.Context(), id)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	slices.Sort(names)
	defs := h.templateComponents(r, id)
	out := make([]componentEntry, len(names))
	for i, n := range names {
		out[i] = componentEntry{Type: "Component", Name: n, DisplayName: n}
		if d, ok := defs[n]; ok {
			if d["displayName"] != nil {
				out[i].DisplayName = d["displayName"]
			}
			out[i].Description = d["description"]
		}
	}
	h.reply(w, r, http.StatusOK, listOf(out))
}

// templateComponents returns the Component entries of the device's
// template by name (nil when it has no template or the template cannot
// be read: the list then shows names only).
func (h *handler) templateComponents(r *http.Request, id string) map[string]map[string]any {
	d, err := h.b.GetDevice(r.Context(), id)
	if err != nil || d.Template == "" {
		return nil
	}
	doc, err := h.b.GetTemplate(r.Context(), d.Template)
	if err != nil {
		return nil
	}
	cm, _ := doc["capabilityModel"].(map[string]any)
	contents, _ := cm["contents"].([]any)
	out := map[string]map[string]any{}
	for _, c := range contents {
		e, _ := c.(map[string]any)
		name, _ := e["name"].(string)
		if name != "" && hasJSONType(e["@type"], "Component") {
			out[name] = e
		}
	}
	return out
}

// hasJSONType reports whether a DTDL @type (a string or an array of
// strings) holds t.
func hasJSONType(v any, t string) bool {
	switch x := v.(type) {
	case string:
		return x == t
	case []any:
		return slices.Contains(x, any(t))
	}
	return false
}

func (h *handler) getCommandHistory(w http.ResponseWriter, r *http.Request) {
	c, name := r.PathValue("c"), r.PathValue("name")
	err := checkComponent(c)
	if err == nil {
		err = checkName("command", name, "*")
	}
	var invs []CommandInvocation
	if err == nil {
		invs, err = h.b.CommandHistory(r.Context(), r.PathValue("id"), c, name)
	}
	page(h, w, r, invs, err)
}

// Device templates.

func templateWithEtag(doc map[string]any) map[string]any {
	delete(doc, "etag")
	doc["etag"] = etagOf(doc)
	return doc
}

func (h *handler) listTemplates(w http.ResponseWriter, r *http.Request) {
	ts, err := h.b.ListTemplates(r.Context())
	slices.SortFunc(ts, func(a, b map[string]any) int {
		as, _ := a["@id"].(string)
		bs, _ := b["@id"].(string)
		return strings.Compare(as, bs)
	})
	for i := range ts {
		ts[i] = templateWithEtag(ts[i])
	}
	odataPage(h, w, r, &templateOData, ts, templateFields, err)
}

func (h *handler) getTemplate(w http.ResponseWriter, r *http.Request) {
	t, err := h.b.GetTemplate(r.Context(), r.PathValue("id"))
	if err == nil {
		t = templateWithEtag(t)
	}
	h.respond(w, r, http.StatusOK, t, err)
}

// templateIDPattern is a DTMI whose version is optional: IoT Central's
// own template ids ("dtmi:modelDefinition:spzeut3n:n2lteu39u6") have none.
var templateIDPattern = regexp.MustCompile(`^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*(?:;[1-9][0-9]{0,8})?$`)

// maxTemplateIDLen bounds a device template id (the core's limit).
const maxTemplateIDLen = 1024

// checkTemplate checks the id and the required members of a device
// template body, as IoT Central validates them (422 otherwise): the id is
// a DTMI (version optional), @type a non-empty array, capabilityModel a
// non-empty object whose @id, when present, is a versioned DTMI.
func checkTemplate(doc map[string]any, id string) error {
	if len(id) > maxTemplateIDLen || !templateIDPattern.MatchString(id) {
		return invalidf("device template id %q is not a DTMI such as dtmi:contoso:thermostat;1", id)
	}
	if v, ok := doc["@id"]; ok && v != id {
		return invalidf("body @id %v differs from the template id %q in the path", v, id)
	}
	types, ok := doc["@type"].([]any)
	if !ok || len(types) == 0 {
		return invalidf("@type is required: a non-empty array such as [\"ModelDefinition\",\"DeviceModel\"]")
	}
	cm, ok := doc["capabilityModel"].(map[string]any)
	if !ok || len(cm) == 0 {
		return invalidf("capabilityModel is required: a non-empty DTDL interface object")
	}
	if v, ok := cm["@id"]; ok {
		if s, _ := v.(string); !core.ValidDTMI(s) {
			return invalidf("capabilityModel @id %v is not a DTMI such as dtmi:contoso:Thermostat;1", v)
		}
	}
	return nil
}

func (h *handler) putTemplate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	body, err := readBody(w, r)
	var doc map[string]any
	if err == nil {
		err = asValidation(decodeJSON(body, &doc))
	}
	if err == nil {
		err = checkTemplate(doc, id)
	}
	bodyEtag, _ := doc["etag"].(string)
	if err == nil {
		delete(doc, "etag")
		err = h.guard(r, bodyEtag, func() error { return h.templateEtagCheck(r, id, bodyEtag) }, func() error {
			var perr error
			doc, perr = h.b.PutTemplate(r.Context(), id, doc)
			return perr
		})
	}
	if err == nil {
		doc = templateWithEtag(doc)
	}
	h.respond(w, r, http.StatusOK, doc, err)
}

// templateEtagCheck checks the preconditions of a write to template id.
func (h *handler) templateEtagCheck(r *http.Request, id, bodyEtag string) error {
	cur, err := h.b.GetTemplate(r.Context(), id)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	etag := ""
	if exists {
		etag, _ = templateWithEtag(cur)["etag"].(string)
	}
	return checkEtag(r, etag, exists, bodyEtag)
}

// mergePatch applies an RFC 7386 JSON merge patch to target.
func mergePatch(target, patch map[string]any) map[string]any {
	if target == nil {
		target = map[string]any{}
	}
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(target, k)
		case map[string]any:
			tv, _ := target[k].(map[string]any)
			target[k] = mergePatch(tv, pv)
		default:
			target[k] = v
		}
	}
	return target
}

func (h *handler) patchTemplate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	patch, bodyEtag, err := readMergePatch(w, r)
	var doc map[string]any
	if err == nil {
		// Read, merge and write under the lock when conditional, so the
		// etag checked is the one of the document merged into.
		err = h.guard(r, bodyEtag, func() error { return h.templateEtagCheck(r, id, bodyEtag) }, func() error {
			cur, gerr := h.b.GetTemplate(r.Context(), id)
			if gerr != nil {
				return gerr
			}
			cur = mergePatch(cur, patch)
			if cerr := checkTemplate(cur, id); cerr != nil {
				return cerr
			}
			doc, gerr = h.b.PutTemplate(r.Context(), id, cur)
			return gerr
		})
	}
	if err == nil {
		doc = templateWithEtag(doc)
	}
	h.respond(w, r, http.StatusOK, doc, err)
}

func (h *handler) deleteTemplate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := h.guard(r, "", func() error { return h.templateEtagCheck(r, id, "") }, func() error {
		// A device uses the template also through the model id it
		// announced (not only by assignment): IoT Central refuses both.
		ds, lerr := h.b.ListDevices(r.Context())
		if lerr != nil {
			return lerr
		}
		for _, d := range ds {
			if d.Template == id {
				return fmt.Errorf("%w: device template %q is used by device %q", ErrConflict, id, d.ID)
			}
		}
		return h.b.DeleteTemplate(r.Context(), id)
	})
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Enrollment group PATCH, DELETE and certificates.

func (h *handler) patchGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	patch, bodyEtag, err := readMergePatch(w, r)
	var g EnrollmentGroup
	if err == nil {
		err = h.guard(r, bodyEtag, func() error { return h.groupEtagCheck(r, id, bodyEtag) }, func() error {
			cur, gerr := h.b.GetEnrollmentGroup(r.Context(), id)
			if gerr != nil {
				return gerr
			}
			var m map[string]any
			b, _ := json.Marshal(cur)
			_ = json.Unmarshal(b, &m)
			merged, _ := json.Marshal(mergePatch(m, patch))
			if g, gerr = parseEnrollmentGroup(merged, id); gerr != nil {
				return gerr
			}
			g, gerr = h.b.PutEnrollmentGroup(r.Context(), g)
			return gerr
		})
	}
	h.respond(w, r, http.StatusOK, h.groupView(r, g), err)
}

// groupEtagCheck checks the preconditions of a write to group id.
func (h *handler) groupEtagCheck(r *http.Request, id, bodyEtag string) error {
	cur, err := h.b.GetEnrollmentGroup(r.Context(), id)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return checkEtag(r, h.groupView(r, cur).Etag, exists, bodyEtag)
}

func (h *handler) deleteGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := h.guard(r, "", func() error { return h.groupEtagCheck(r, id, "") }, func() error {
		return h.b.DeleteEnrollmentGroup(r.Context(), id)
	})
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) certificateRoutes() []route {
	return []route{
		{"/api/enrollmentGroups/{id}/certificates/{entry}", map[string]http.HandlerFunc{"GET": h.getGroupCert, "PUT": h.putGroupCert, "DELETE": h.deleteGroupCert}},
		{"/api/enrollmentGroups/{id}/certificates/{entry}/generateVerificationCode", map[string]http.HandlerFunc{"POST": h.generateVerificationCode}},
		{"/api/enrollmentGroups/{id}/certificates/{entry}/verify", map[string]http.HandlerFunc{"POST": h.verifyGroupCert}},
	}
}

// groupEntry returns the group and a pointer to its certificate entry.
func (h *handler) groupEntry(r *http.Request) (EnrollmentGroup, string, error) {
	entry := r.PathValue("entry")
	if entry != "primary" && entry != "secondary" {
		return EnrollmentGroup{}, "", badRequestf("certificate entry %q is not primary or secondary", entry)
	}
	g, err := h.b.GetEnrollmentGroup(r.Context(), r.PathValue("id"))
	if err != nil {
		return g, entry, err
	}
	if g.Attestation.Type != AttestationX509 {
		return g, entry, invalidf("enrollment group %q uses %s attestation, not x509", g.ID, g.Attestation.Type)
	}
	return g, entry, nil
}

func entryOf(g *EnrollmentGroup, entry string) *X509Certificate {
	if entry == "primary" {
		return &g.Attestation.X509.SigningCertificates.Primary
	}
	return &g.Attestation.X509.SigningCertificates.Secondary
}

func (h *handler) getGroupCert(w http.ResponseWriter, r *http.Request) {
	g, entry, err := h.groupEntry(r)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	g = h.groupView(r, g)
	c := entryOf(&g, entry)
	if c.Certificate == "" {
		h.fail(w, r, http.StatusNotFound, "NotFound", "enrollment group "+g.ID+" has no "+entry+" certificate")
		return
	}
	h.reply(w, r, http.StatusOK, c)
}

func (h *handler) putGroupCert(w http.ResponseWriter, r *http.Request) {
	g, entry, err := h.groupEntry(r)
	var body []byte
	if err == nil {
		body, err = readBody(w, r)
	}
	var c X509Certificate
	if err == nil {
		err = asValidation(decodeJSON(body, &c))
	}
	c.Certificate = normalizeCertificate(c.Certificate)
	if err == nil && c.Certificate == "" {
		err = invalidf("certificate (PEM) is required")
	}
	if err == nil {
		_, err = checkCACertificate(c.Certificate)
	}
	if err == nil {
		*entryOf(&g, entry) = X509Certificate{Certificate: c.Certificate}
		g, err = h.b.PutEnrollmentGroup(r.Context(), g)
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	g = h.groupView(r, g)
	h.reply(w, r, http.StatusOK, entryOf(&g, entry))
}

func (h *handler) deleteGroupCert(w http.ResponseWriter, r *http.Request) {
	g, entry, err := h.groupEntry(r)
	if err == nil && entry == "primary" {
		err = invalidf("the primary certificate of an x509 group cannot be removed; replace it, or delete the group")
	}
	if err == nil {
		*entryOf(&g, entry) = X509Certificate{}
		_, err = h.b.PutEnrollmentGroup(r.Context(), g)
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) generateVerificationCode(w http.ResponseWriter, r *http.Request) {
	g, entry, err := h.groupEntry(r)
	if err == nil && entryOf(&g, entry).Certificate == "" {
		err = invalidf("enrollment group %q has no %s certificate to verify", g.ID, entry)
	}
	var code string
	if err == nil {
		code, err = h.b.IssueVerificationCode(r.Context(), g.ID, entry)
	}
	h.respond(w, r, http.StatusOK, map[string]string{"verificationCode": code}, err)
}

// verifyGroupCert checks proof of possession: the body's certificate has
// the verification code as its subject CN and is signed by the entry's CA.
func (h *handler) verifyGroupCert(w http.ResponseWriter, r *http.Request) {
	g, entry, err := h.groupEntry(r)
	var body []byte
	if err == nil {
		body, err = readBody(w, r)
	}
	var v struct {
		Certificate string `json:"certificate"`
	}
	if err == nil {
		err = asValidation(decodeJSON(body, &v))
	}
	var ca, leaf *x509.Certificate
	if err == nil {
		ca, err = parseFirstCert(entryOf(&g, entry).Certificate, "the group's "+entry+" certificate")
	}
	if err == nil {
		leaf, err = parseFirstCert(normalizeCertificate(v.Certificate), "the verification certificate")
	}
	if err == nil && leaf.CheckSignatureFrom(ca) != nil {
		err = invalidf("the verification certificate is not signed by the group's %s certificate", entry)
	}
	if err == nil && (leaf.NotAfter.Before(time.Now()) || leaf.NotBefore.After(time.Now())) {
		err = invalidf("the verification certificate is not valid now")
	}
	if err == nil {
		err = h.b.ConsumeVerificationCode(r.Context(), g.ID, entry, leaf.Subject.CommonName, thumbprint(entryOf(&g, entry).Certificate))
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK) // without a body, as the spec's enrollmentgroups_verifyx509.json
}

func parseFirstCert(s, what string) (*x509.Certificate, error) {
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, invalidf("%s holds no PEM CERTIFICATE block", what)
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, invalidf("%s does not parse: %v", what, err)
		}
		return c, nil
	}
}

// readMergePatch reads a JSON merge-patch body and takes its "etag" out:
// the patch, the etag it carried ("" when none) and an error wrapping
// ErrBadRequest or ErrValidation.
func readMergePatch(w http.ResponseWriter, r *http.Request) (map[string]any, string, error) {
	body, err := readBody(w, r)
	if err != nil {
		return nil, "", err
	}
	var patch map[string]any
	if err := asValidation(decodeJSON(body, &patch)); err != nil {
		return nil, "", err
	}
	etag, _ := patch["etag"].(string)
	delete(patch, "etag")
	return patch, etag, nil
}
