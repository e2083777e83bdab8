package restapi

import (
	"net/http"
	"testing"
)

// Organizations: a tree without cycles whose parents exist; every
// entity naming an organization needs it to exist (422); an organization
// in use cannot be deleted (409).
func TestOrganizations(t *testing.T) {
	t.Parallel()
	e, _, _, _ := newJobEnv(t, 1)
	e.call("PUT", "/api/organizations/seattle", `{"displayName":"Seattle","parent":"usa"}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PUT", "/api/organizations/usa", `{"displayName":"USA"}`).want(t, http.StatusOK)
	r := e.call("PUT", "/api/organizations/seattle", `{"displayName":"Seattle","parent":"usa"}`)
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"id":"seattle","displayName":"Seattle","parent":"usa"}`)
	e.call("PUT", "/api/organizations/downtown", `{"parent":"seattle"}`).want(t, http.StatusOK)
	// No cycles: usa under downtown (under seattle under usa), nor itself.
	e.call("PATCH", "/api/organizations/usa", `{"parent":"downtown"}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	e.call("PATCH", "/api/organizations/usa", `{"parent":"usa"}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	r = e.call("PATCH", "/api/organizations/downtown", `{"displayName":"Downtown"}`)
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"id":"downtown","displayName":"Downtown","parent":"seattle"}`)
	for _, id := range []string{"Upper", "-lead", "trail-", "has_underscore", "a23456789012345678901234567890123456789012345678x"} {
		if r := e.call("PUT", "/api/organizations/"+id, `{}`); r.status != http.StatusUnprocessableEntity {
			t.Errorf("organization id %q: %d", id, r.status)
		}
	}
	// Every reference is checked.
	unknown := []struct{ method, path, body string }{
		{"PUT", "/api/devices/d9", `{"organizations":["paris"]}`},
		{"PATCH", "/api/devices/d1", `{"organizations":["paris"]}`},
		{"PUT", "/api/deviceGroups/g", `{"displayName":"g","filter":"SELECT * FROM devices","organizations":["paris"]}`},
		{"PUT", "/api/users/u", `{"type":"email","email":"a@b.c","roles":[{"role":"` + RoleOrgOperator + `","organization":"paris"}]}`},
		{"PUT", "/api/jobs/j", `{"group":"all","organizations":["paris"],"data":[{"type":"command","target":"` + jobTemplateID + `","path":"reboot"}]}`},
	}
	for _, u := range unknown {
		if r := e.call(u.method, u.path, u.body); r.status != http.StatusUnprocessableEntity {
			t.Errorf("%s %s naming an unknown organization: %d %s", u.method, u.path, r.status, r.raw)
		}
	}
	e.call("PATCH", "/api/devices/d1", `{"organizations":["downtown"]}`).want(t, http.StatusOK)
	e.call("DELETE", "/api/organizations/downtown", "").wantError(t, http.StatusConflict, "Conflict") // the device
	e.call("DELETE", "/api/organizations/seattle", "").wantError(t, http.StatusConflict, "Conflict")  // the child
	e.call("PATCH", "/api/devices/d1", `{"organizations":[]}`).want(t, http.StatusOK)
	e.call("PUT", "/api/users/u", `{"type":"email","email":"a@b.c","roles":[{"role":"`+RoleOrgOperator+`","organization":"downtown"}]}`).want(t, http.StatusOK)
	e.call("DELETE", "/api/organizations/downtown", "").wantError(t, http.StatusConflict, "Conflict") // the user
	e.call("DELETE", "/api/users/u", "").wantNoContent(t)
	e.call("PUT", "/api/deviceGroups/g", `{"displayName":"g","filter":"SELECT * FROM devices","organizations":["downtown"]}`).want(t, http.StatusOK)
	e.call("DELETE", "/api/organizations/downtown", "").wantError(t, http.StatusConflict, "Conflict") // the group
	e.call("DELETE", "/api/deviceGroups/g", "").wantNoContent(t)
	e.call("DELETE", "/api/organizations/downtown", "").wantNoContent(t)
	e.call("DELETE", "/api/organizations/downtown", "").wantError(t, http.StatusNotFound, "NotFound")
	if r := e.call("GET", "/api/organizations", ""); len(r.body["value"].([]any)) != 2 {
		t.Fatalf("organizations %s", r.raw)
	}
}

// Users: email, service principal and AD group users with application
// roles, or organization roles in an existing organization.
func TestUsers(t *testing.T) {
	t.Parallel()
	e, _, _, _ := newJobEnv(t, 0)
	e.call("PUT", "/api/organizations/seattle", `{}`).want(t, http.StatusOK)
	for _, body := range []string{
		`{"type":"email","email":"user5@contoso.com","roles":[{"role":"` + RoleOperator + `"}]}`,
		`{"type":"servicePrincipal","tenantId":"t","objectId":"o","roles":[{"role":"` + RoleAdministrator + `"},{"role":"` + RoleOrgAdministrator + `","organization":"seattle"}]}`,
		`{"type":"adGroup","tenantId":"t","objectId":"o","roles":[{"role":"` + RoleOrgViewer + `","organization":"seattle"}]}`,
	} {
		e.call("PUT", "/api/users/u1", body).want(t, http.StatusOK)
	}
	r := e.call("PATCH", "/api/users/u1", `{"roles":[{"role":"`+RoleBuilder+`"}]}`)
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"id":"u1","type":"adGroup","tenantId":"t","objectId":"o","roles":[{"role":"`+RoleBuilder+`"}]}`)
	for name, body := range map[string]string{
		"no roles":           `{"type":"email","email":"a@b.c","roles":[]}`,
		"unknown role":       `{"type":"email","email":"a@b.c","roles":[{"role":"c7be2c6b-797e-4551-bb24-33709f6b2e20"}]}`,
		"app role in org":    `{"type":"email","email":"a@b.c","roles":[{"role":"` + RoleOperator + `","organization":"seattle"}]}`,
		"org role sans org":  `{"type":"email","email":"a@b.c","roles":[{"role":"` + RoleOrgViewer + `"}]}`,
		"no email":           `{"type":"email","roles":[{"role":"` + RoleOperator + `"}]}`,
		"sp without ids":     `{"type":"servicePrincipal","roles":[{"role":"` + RoleOperator + `"}]}`,
		"unknown type":       `{"type":"robot","roles":[{"role":"` + RoleOperator + `"}]}`,
		"email with objects": `{"type":"email","email":"a@b.c","objectId":"o","roles":[{"role":"` + RoleOperator + `"}]}`,
	} {
		if r := e.call("PUT", "/api/users/u2", body); r.status != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d %s", name, r.status, r.raw)
		}
	}
	e.call("PUT", "/api/users/bad%20id", `{"type":"email","email":"a@b.c","roles":[{"role":"`+RoleOperator+`"}]}`).wantError(t, http.StatusUnprocessableEntity, "UnprocessableEntity")
	if r := e.call("GET", "/api/users", ""); len(r.body["value"].([]any)) != 1 {
		t.Fatalf("users %s", r.raw)
	}
	e.call("DELETE", "/api/users/u1", "").wantNoContent(t)
	e.call("GET", "/api/users/u1", "").wantError(t, http.StatusNotFound, "NotFound")
	r = e.call("GET", "/api/roles", "")
	if len(r.body["value"].([]any)) != 6 {
		t.Fatalf("roles %s", r.raw)
	}
}

const relTemplate = `{"@type":["ModelDefinition","DeviceModel"],"capabilityModel":{"@id":"dtmi:contoso:gateway;1","@type":"Interface","contents":[
  {"@type":"Relationship","name":"children","target":"dtmi:contoso:jobModel;1"}]}}`

// Relationships: stored per source device and validated against the
// source's template's Relationship definitions and the target's model.
func TestRelationships(t *testing.T) {
	t.Parallel()
	e, jf, _, _ := newJobEnv(t, 2) // d1, d2 use the job template (model dtmi:contoso:jobModel;1)
	e.call("PUT", "/api/deviceTemplates/dtmi:contoso:gatewayTemplate", relTemplate).want(t, http.StatusOK)
	jf.mu.Lock()
	jf.devices["gw"] = Device{ID: "gw", Template: "dtmi:contoso:gatewayTemplate", Enabled: true}
	jf.devices["gw2"] = Device{ID: "gw2", Template: "dtmi:contoso:gatewayTemplate", Enabled: true}
	jf.mu.Unlock()
	// devices_relationships_create.json's body, with the emulator's devices.
	r := e.call("PUT", "/api/devices/gw/relationships/relationship1", `{"source":"gw","target":"d1"}`)
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"id":"relationship1","source":"gw","target":"d1"}`)
	e.call("PUT", "/api/devices/gw/relationships/r2", `{"target":"d2"}`).want(t, http.StatusOK)
	for name, c := range map[string]struct{ path, body string }{
		"target missing":       {"/api/devices/gw/relationships/x", `{"target":"nope"}`},
		"no target":            {"/api/devices/gw/relationships/x", `{}`},
		"to itself":            {"/api/devices/gw/relationships/x", `{"target":"gw"}`},
		"source mismatch":      {"/api/devices/gw/relationships/x", `{"source":"d1","target":"d2"}`},
		"target of wrong kind": {"/api/devices/gw/relationships/x", `{"target":"gw2"}`},
		"no definition":        {"/api/devices/d1/relationships/x", `{"target":"d2"}`},
		"no template":          {"/api/devices/other/relationships/x", `{"target":"d2"}`},
	} {
		if r := e.call("PUT", c.path, c.body); r.status != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d %s", name, r.status, r.raw)
		}
	}
	e.call("PUT", "/api/devices/nope/relationships/x", `{"target":"d2"}`).wantError(t, http.StatusNotFound, "NotFound")
	r = e.call("PATCH", "/api/devices/gw/relationships/r2", `{"target":"d1"}`)
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"id":"r2","source":"gw","target":"d1"}`)
	e.call("PATCH", "/api/devices/gw/relationships/r9", `{"target":"d1"}`).wantError(t, http.StatusNotFound, "NotFound")
	r = e.call("GET", "/api/devices/d1/relationships", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body["value"], `[{"id":"r2","source":"gw","target":"d1"},{"id":"relationship1","source":"gw","target":"d1"}]`)
	e.call("GET", "/api/devices/gw/relationships/relationship1", "").want(t, http.StatusOK)
	e.call("DELETE", "/api/devices/gw/relationships/relationship1", "").wantNoContent(t)
	e.call("GET", "/api/devices/gw/relationships/relationship1", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("DELETE", "/api/devices/gw/relationships/relationship1", "").wantError(t, http.StatusNotFound, "NotFound")
}
