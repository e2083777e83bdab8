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

// The organization roles of IoT Central, by the ids IoT Central gives
// them. They are assigned with an organization (a user's or an API
// token's role in one organization).
const (
	// RoleOrgAdministrator (Org Administrator) administers an organization.
	RoleOrgAdministrator = "c495eb57-eb18-489e-9802-62c474e5645c"
	// RoleOrgOperator (Org Operator) operates the devices of an organization.
	RoleOrgOperator = "b4935647-30e4-4ed3-9074-dcac66c2f8ef"
	// RoleOrgViewer (Org Viewer) reads the devices of an organization.
	RoleOrgViewer = "84cc62c1-dabe-49d3-b16e-8ac3c9b6b0ce"
)

// orgRole reports whether role is an organization role.
func orgRole(role string) bool {
	return role == RoleOrgAdministrator || role == RoleOrgOperator || role == RoleOrgViewer
}

// Organization is an IoT Central organization; organizations form a tree
// through Parent.
type Organization struct {
	// ID is 1 to 48 lower-case letters, digits and '-', not starting or
	// ending with '-' (the spec's pattern).
	ID string `json:"id"`
	// DisplayName is free text.
	DisplayName string `json:"displayName,omitempty"`
	// Parent is the id of the parent organization; "" for a root.
	Parent string `json:"parent,omitempty"`
}

// User is an IoT Central user: an email user, an Azure AD service
// principal or an AD group, with its roles. The emulator stores users and
// checks their roles and organizations; it authenticates none of them
// (requests carry API tokens).
type User struct {
	// ID is 1 to 48 letters, digits, '-' or '_'.
	ID string `json:"id"`
	// Type is "email", "servicePrincipal" or "adGroup".
	Type string `json:"type"`
	// Email is required for an email user.
	Email string `json:"email,omitempty"`
	// TenantID is the Azure AD tenant; required for a service principal
	// or an AD group.
	TenantID string `json:"tenantId,omitempty"`
	// ObjectID is the Azure AD object; required for a service principal or
	// an AD group.
	ObjectID string `json:"objectId,omitempty"`
	// Roles are at least one role assignment.
	Roles []RoleAssignment `json:"roles"`
}

func (h *handler) organizationRoutes() []route {
	return []route{
		{"/api/organizations", map[string]http.HandlerFunc{"GET": h.listOrgs}},
		{"/api/organizations/{id}", map[string]http.HandlerFunc{"GET": h.getOrg, "PUT": h.putOrg, "PATCH": h.patchOrg, "DELETE": h.deleteOrg}},
		{"/api/users", map[string]http.HandlerFunc{"GET": h.listUsers}},
		{"/api/users/{id}", map[string]http.HandlerFunc{"GET": h.getUser, "PUT": h.putUser, "PATCH": h.patchUser, "DELETE": h.deleteUser}},
	}
}

func (h *handler) listOrgs(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	var os []Organization
	if err == nil {
		os, err = listDocs[Organization](r.Context(), db, orgsCollection)
	}
	page(h, w, r, os, err)
}

func (h *handler) getOrg(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	var o Organization
	if err == nil {
		o, err = getDoc[Organization](r.Context(), db, orgsCollection, r.PathValue("id"))
	}
	h.respond(w, r, http.StatusOK, o, err)
}

// checkOrgID applies the spec's pattern ^(?!-)[a-z0-9-]{1,48}[a-z0-9]$,
// read as 1 to 48 characters.
func checkOrgID(id string) error {
	if !idPattern(id, 48, "-") || strings.ToLower(id) != id || id[0] == '-' || id[len(id)-1] == '-' {
		return invalidf("organization id %q must be 1 to 48 lower-case letters, digits and '-', not starting or ending with '-'", id)
	}
	return nil
}

// checkOrg validates o (its id is the path's) against the stored
// organizations: the parent exists and is not o itself nor below it.
func (h *handler) checkOrg(ctx context.Context, db DocBackend, o Organization) error {
	if err := checkOrgID(o.ID); err != nil {
		return err
	}
	if o.Parent == "" {
		return nil
	}
	seen := map[string]bool{o.ID: true}
	for p := o.Parent; p != ""; {
		if seen[p] {
			return invalidf("parent %q would make a cycle of organizations", o.Parent)
		}
		seen[p] = true
		po, err := getDoc[Organization](ctx, db, orgsCollection, p)
		if errors.Is(err, ErrNotFound) {
			return invalidf("parent organization %q does not exist", p)
		}
		if err != nil {
			return err
		}
		p = po.Parent
	}
	return nil
}

func (h *handler) putOrg(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	var o Organization
	if err == nil {
		err = asValidation(decodeJSON(body, &o))
	}
	h.writeOrg(w, r, o, err)
}

func (h *handler) patchOrg(w http.ResponseWriter, r *http.Request) {
	patch, _, err := readMergePatch(w, r)
	var o Organization
	if err == nil {
		o, err = mergeDoc[Organization](r.Context(), h, orgsCollection, r.PathValue("id"), patch)
	}
	h.writeOrg(w, r, o, err)
}

func (h *handler) writeOrg(w http.ResponseWriter, r *http.Request, o Organization, err error) {
	id := r.PathValue("id")
	if err == nil && o.ID != "" && o.ID != id {
		err = invalidf("body id %q differs from the id %q in the path", o.ID, id)
	}
	o.ID = id
	var db DocBackend
	if err == nil {
		db, err = h.docs()
	}
	if err == nil {
		h.entityMu.Lock()
		defer h.entityMu.Unlock()
		err = h.checkOrg(r.Context(), db, o)
	}
	if err == nil {
		err = putDoc(r.Context(), db, orgsCollection, id, o)
	}
	h.respond(w, r, http.StatusOK, o, err)
}

// deleteOrg removes an organization no entity uses (409 otherwise: a
// child organization, a device, a device group, a user, an API token, a
// job or a scheduled job naming it).
func (h *handler) deleteOrg(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	db, err := h.docs()
	if err == nil {
		h.entityMu.Lock()
		defer h.entityMu.Unlock()
		_, err = db.Doc(r.Context(), orgsCollection, id)
	}
	if err == nil {
		err = h.orgInUse(r.Context(), db, id)
	}
	if err == nil {
		err = db.DeleteDoc(r.Context(), orgsCollection, id)
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) orgInUse(ctx context.Context, db DocBackend, id string) error {
	used := func(what, who string) error {
		return errorf(ErrConflict, "organization %q is used by %s %q; change or remove it first", id, what, who)
	}
	orgs, err := listDocs[Organization](ctx, db, orgsCollection)
	if err != nil {
		return err
	}
	for _, o := range orgs {
		if o.Parent == id {
			return used("the organization", o.ID)
		}
	}
	ds, err := h.b.ListDevices(ctx)
	if err != nil {
		return err
	}
	slices.SortFunc(ds, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	for _, d := range ds {
		if slices.Contains(d.Organizations, id) {
			return used("the device", d.ID)
		}
	}
	if gb, ok := h.b.(DeviceGroupBackend); ok {
		gs, err := gb.ListDeviceGroups(ctx)
		if err != nil {
			return err
		}
		for _, g := range gs {
			if slices.Contains(g.Organizations, id) {
				return used("the device group", g.ID)
			}
		}
	}
	users, err := listDocs[User](ctx, db, usersCollection)
	if err != nil {
		return err
	}
	for _, u := range users {
		if slices.ContainsFunc(u.Roles, func(ra RoleAssignment) bool { return ra.Organization == id }) {
			return used("the user", u.ID)
		}
	}
	if tb, ok := h.b.(TokenBackend); ok {
		ts, err := tb.ListAPITokens(ctx)
		if err != nil {
			return err
		}
		for _, t := range ts {
			if slices.ContainsFunc(t.Roles, func(ra RoleAssignment) bool { return ra.Organization == id }) {
				return used("the API token", t.ID)
			}
		}
	}
	jobs, err := listDocs[jobRecord](ctx, db, jobsCollection)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if slices.Contains(j.Job.Organizations, id) {
			return used("the job", j.Job.ID)
		}
	}
	sjs, err := listDocs[scheduledRecord](ctx, db, scheduledJobsCollection)
	if err != nil {
		return err
	}
	for _, s := range sjs {
		if slices.Contains(s.Job.Organizations, id) {
			return used("the scheduled job", s.Job.ID)
		}
	}
	return nil
}

// checkOrganizations refuses (422) organization ids that do not exist.
// A backend without documents has no organizations: any id is unknown.
func (h *handler) checkOrganizations(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if len(ids) > 1 {
		return invalidf("only one organization is supported, got %d", len(ids))
	}
	db, ok := h.b.(DocBackend)
	for _, id := range ids {
		if !ok {
			return invalidf("organization %q does not exist", id)
		}
		_, err := db.Doc(ctx, orgsCollection, id)
		if errors.Is(err, ErrNotFound) {
			return invalidf("organization %q does not exist; create it first (PUT /api/organizations/{id})", id)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkRoles validates role assignments (users, API tokens): at least
// one; each an existing role; an application role without an
// organization, an organization role with an existing organization.
func (h *handler) checkRoles(ctx context.Context, rs []RoleAssignment) error {
	if len(rs) == 0 {
		return invalidf("roles is required: at least one {\"role\": id}")
	}
	for _, ra := range rs {
		switch {
		case rank(ra.Role) > 0 && ra.Organization != "":
			return invalidf("role %q is an application role; an organization role (Org Administrator %s, Org Operator %s, Org Viewer %s) is assigned with an organization",
				ra.Role, RoleOrgAdministrator, RoleOrgOperator, RoleOrgViewer)
		case orgRole(ra.Role) && ra.Organization == "":
			return invalidf("role %q is an organization role; it needs an organization", ra.Role)
		case rank(ra.Role) == 0 && !orgRole(ra.Role):
			return invalidf("role %q does not exist (GET /api/roles lists the roles)", ra.Role)
		}
		if err := h.checkOrganizations(ctx, nonEmpty(ra.Organization)); err != nil {
			return err
		}
	}
	return nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// mergeDoc reads document id of collection and merges patch into it
// (RFC 7396), decoding the result as a T.
func mergeDoc[T any](ctx context.Context, h *handler, collection, id string, patch map[string]any) (T, error) {
	var v T
	db, err := h.docs()
	if err != nil {
		return v, err
	}
	cur, err := db.Doc(ctx, collection, id)
	if err != nil {
		return v, err
	}
	var m map[string]any
	if err := json.Unmarshal(cur, &m); err != nil {
		return v, fmt.Errorf("stored %s %q: %w", collection, id, err)
	}
	return decodeMerged[T](m, patch)
}

// decodeMerged merges patch into m (RFC 7396) and decodes the result as
// a T; a result that is no valid T is a validation error.
func decodeMerged[T any](m, patch map[string]any) (T, error) {
	var v T
	merged, err := json.Marshal(mergePatch(m, patch))
	if err != nil {
		return v, err
	}
	err = asValidation(decodeJSON(merged, &v))
	return v, err
}

func (h *handler) listUsers(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	var us []User
	if err == nil {
		us, err = listDocs[User](r.Context(), db, usersCollection)
	}
	page(h, w, r, us, err)
}

func (h *handler) getUser(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	var u User
	if err == nil {
		u, err = getDoc[User](r.Context(), db, usersCollection, r.PathValue("id"))
	}
	h.respond(w, r, http.StatusOK, u, err)
}

func (h *handler) putUser(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	var u User
	if err == nil {
		err = asValidation(decodeJSON(body, &u))
	}
	h.writeUser(w, r, u, err)
}

func (h *handler) patchUser(w http.ResponseWriter, r *http.Request) {
	patch, _, err := readMergePatch(w, r)
	var u User
	if err == nil {
		u, err = mergeDoc[User](r.Context(), h, usersCollection, r.PathValue("id"), patch)
	}
	h.writeUser(w, r, u, err)
}

// checkUser validates a user: its id, type, the fields its type requires
// and its roles.
func (h *handler) checkUser(ctx context.Context, u User) error {
	if !idPattern(u.ID, 48, "-_") {
		return invalidf("user id %q must be 1 to 48 letters, digits, '-' or '_'", u.ID)
	}
	switch u.Type {
	case "email":
		if !strings.Contains(u.Email, "@") {
			return invalidf("an email user needs an email address, got %q", u.Email)
		}
		if u.TenantID != "" || u.ObjectID != "" {
			return invalidf("an email user has no tenantId or objectId")
		}
	case "servicePrincipal", "adGroup":
		if u.TenantID == "" || u.ObjectID == "" {
			return invalidf("a %s user needs tenantId and objectId", u.Type)
		}
		if u.Email != "" {
			return invalidf("a %s user has no email", u.Type)
		}
	default:
		return invalidf("user type %q is not one of email, servicePrincipal, adGroup", u.Type)
	}
	return h.checkRoles(ctx, u.Roles)
}

func (h *handler) writeUser(w http.ResponseWriter, r *http.Request, u User, err error) {
	id := r.PathValue("id")
	if err == nil && u.ID != "" && u.ID != id {
		err = invalidf("body id %q differs from the id %q in the path", u.ID, id)
	}
	u.ID = id
	var db DocBackend
	if err == nil {
		db, err = h.docs()
	}
	if err == nil {
		h.entityMu.Lock()
		defer h.entityMu.Unlock()
		err = h.checkUser(r.Context(), u)
	}
	if err == nil {
		err = putDoc(r.Context(), db, usersCollection, id, u)
	}
	h.respond(w, r, http.StatusOK, u, err)
}

func (h *handler) deleteUser(w http.ResponseWriter, r *http.Request) {
	db, err := h.docs()
	if err == nil {
		err = db.DeleteDoc(r.Context(), usersCollection, r.PathValue("id"))
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
