package emulator

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"
)

const (
	roleAdmin    = "ca310b8d-2f4a-44e0-a36e-957c202cd8d4"
	roleBuilder  = "344138e9-8de4-4497-8c54-5237e96d6aaf"
	roleOperator = "ae2c9854-393b-4f97-8c42-479d70ce626e"
)

// newToken creates API token id with role through REST and returns its text.
func newToken(t *testing.T, e *Emulator, id, role string) string {
	t.Helper()
	ans := restJSON(t, e, "PUT", "/api/apiTokens/"+id, map[string]any{"roles": []any{map[string]any{"role": role}}}, http.StatusOK)
	tok, _ := ans["token"].(string)
	if tok == "" || ans["id"] != id || ans["expiry"] == nil {
		t.Fatalf("create token: %v", ans)
	}
	return tok
}

// API tokens with roles: created by an administrator, shown once, kept
// across a restart by hash only; an operator token cannot change a
// template or a group, only an administrator manages tokens; a deleted or
// expired token is refused.
func TestAPITokensAndRoles(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	e, err := startData(t, Options{DataDir: dataDir, RESTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	op := newToken(t, e, "op1", roleOperator)
	builder := newToken(t, e, "b1", roleBuilder)
	list := restJSON(t, e, "GET", "/api/apiTokens", nil, http.StatusOK)
	if v := list["value"].([]any); len(v) != 2 || v[0].(map[string]any)["token"] != nil {
		t.Fatalf("list shows %v (the token text must not be shown again)", list)
	}
	restJSON(t, e, "PUT", "/api/apiTokens/op1", map[string]any{"roles": []any{map[string]any{"role": roleOperator}}}, http.StatusConflict)
	for _, body := range []map[string]any{
		{"roles": []any{}},
		{"roles": []any{map[string]any{"role": "no-such-role"}}},
		{"roles": []any{map[string]any{"role": roleOperator, "organization": "seattle"}}},
		{"roles": []any{map[string]any{"role": roleOperator}}, "expiry": time.Now().Add(-time.Hour).Format(time.RFC3339)},
	} {
		restJSON(t, e, "PUT", "/api/apiTokens/bad", body, http.StatusUnprocessableEntity)
	}
	roles := restJSON(t, e, "GET", "/api/roles", nil, http.StatusOK)
	if v := roles["value"].([]any); len(v) != 6 { // 3 application and 3 organization roles
		t.Fatalf("roles %v", roles)
	}

	var doc map[string]any
	if err := json.Unmarshal([]byte(testTemplate), &doc); err != nil {
		t.Fatal(err)
	}
	tid := "/api/deviceTemplates/" + url.PathEscape("dtmi:contoso:tok;1")
	group := map[string]any{"displayName": "G", "type": "iot", "attestation": map[string]any{"type": "symmetricKey"}}
	status := func(tok, method, path string, body any) int {
		t.Helper()
		st, b := restDo(t, e, method, path, tok, body)
		if st == http.StatusForbidden && !json.Valid(b) {
			t.Fatalf("403 without a JSON error: %s", b)
		}
		return st
	}
	// The operator manages devices but not templates, groups or tokens.
	if st := status(op, "PUT", "/api/devices/d1", map[string]any{}); st != http.StatusOK {
		t.Fatalf("operator PUT device: %d", st)
	}
	if st := status(op, "GET", tid, nil); st != http.StatusNotFound {
		t.Fatalf("operator GET template: %d", st)
	}
	for _, c := range []struct {
		method, path string
		body         any
	}{{"PUT", tid, doc}, {"PUT", "/api/enrollmentGroups/g1", group}, {"GET", "/api/apiTokens", nil}, {"DELETE", "/api/apiTokens/b1", nil}} {
		if st := status(op, c.method, c.path, c.body); st != http.StatusForbidden {
			t.Fatalf("operator %s %s: %d, want 403", c.method, c.path, st)
		}
	}
	// The builder changes templates and groups, not tokens.
	if st := status(builder, "PUT", tid, doc); st != http.StatusOK {
		t.Fatalf("builder PUT template: %d", st)
	}
	if st := status(builder, "PUT", "/api/enrollmentGroups/g1", group); st != http.StatusOK {
		t.Fatalf("builder PUT group: %d", st)
	}
	if st := status(builder, "PUT", "/api/apiTokens/x", map[string]any{"roles": []any{map[string]any{"role": roleAdmin}}}); st != http.StatusForbidden {
		t.Fatalf("builder creating an admin token: %d", st)
	}
	if st := status(op+"x", "GET", "/api/devices", nil); st != http.StatusUnauthorized {
		t.Fatalf("a wrong token: %d", st)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// After a restart the tokens still work; deleted, one is refused.
	e2, err := startData(t, Options{DataDir: dataDir, RESTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if st, _ := restDo(t, e2, "GET", "/api/devices/d1", op, nil); st != http.StatusOK {
		t.Fatalf("operator token after restart: %d", st)
	}
	restJSON(t, e2, "DELETE", "/api/apiTokens/op1", nil, http.StatusNoContent)
	if st, _ := restDo(t, e2, "GET", "/api/devices/d1", op, nil); st != http.StatusUnauthorized {
		t.Fatalf("deleted token: %d", st)
	}
	// An expiring token is refused once expired.
	ans := restJSON(t, e2, "PUT", "/api/apiTokens/short", map[string]any{"roles": []any{map[string]any{"role": roleAdmin}},
		"expiry": time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)}, http.StatusOK)
	short := ans["token"].(string)
	deadline := time.Now().Add(wait)
	for {
		st, _ := restDo(t, e2, "GET", "/api/devices", short, nil)
		if st == http.StatusUnauthorized {
			break
		}
		if st != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("expiring token: %d", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
