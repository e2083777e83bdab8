package restapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The built-in application roles of IoT Central, by the ids IoT Central
// gives them (the spec's examples use RoleAdministrator).
const (
	// RoleAdministrator (App Administrator) may do everything.
	RoleAdministrator = "ca310b8d-2f4a-44e0-a36e-957c202cd8d4"
	// RoleBuilder (App Builder) may do everything but manage API tokens.
	RoleBuilder = "344138e9-8de4-4497-8c54-5237e96d6aaf"
	// RoleOperator (App Operator) manages devices (properties, commands,
	// attestation) but may not change device templates or enrollment
	// groups, nor manage API tokens.
	RoleOperator = "ae2c9854-393b-4f97-8c42-479d70ce626e"
)

// roles are the roles the emulator serves, by id, with their display
// names as IoT Central shows them.
var roles = []Role{
	{ID: RoleAdministrator, DisplayName: "Administrator"},
	{ID: RoleBuilder, DisplayName: "Builder"},
	{ID: RoleOperator, DisplayName: "Operator"},
	{ID: RoleOrgAdministrator, DisplayName: "Org Administrator"},
	{ID: RoleOrgOperator, DisplayName: "Org Operator"},
	{ID: RoleOrgViewer, DisplayName: "Org Viewer"},
}

// orgScoped is what tokenRole returns for a valid token that holds only
// organization roles: the emulator does not scope requests to an
// organization, so permit refuses its requests (403) rather than let it
// see the whole application.
const orgScoped = "org-scoped"

// rank orders roles by rights: a token with several roles acts with the
// strongest.
func rank(role string) int {
	switch role {
	case RoleAdministrator:
		return 3
	case RoleBuilder:
		return 2
	case RoleOperator:
		return 1
	}
	return 0
}

// DefaultTokenLifetime is the expiry of an API token created without one
// (IoT Central's default is one year).
const DefaultTokenLifetime = 365 * 24 * time.Hour

// Role is an application role (GET /api/roles).
type Role struct {
	// ID is the role id.
	ID string `json:"id"`
	// DisplayName is its name.
	DisplayName string `json:"displayName"`
}

// RoleAssignment is one role of an API token or a user: an application
// role without an organization, or an organization role with one.
type RoleAssignment struct {
	// Role is a role id (RoleAdministrator, RoleBuilder, RoleOperator,
	// RoleOrgAdministrator, RoleOrgOperator, RoleOrgViewer).
	Role string `json:"role"`
	// Organization scopes the role; "" is the whole application. It must
	// name an existing organization.
	Organization string `json:"organization,omitempty"`
}

// APIToken is an API token as IoT Central shows it. Token, the text to
// send as the Authorization header, is shown only in the answer to its
// creation.
type APIToken struct {
	// ID names the token.
	ID string `json:"id"`
	// Roles are the token's roles.
	Roles []RoleAssignment `json:"roles"`
	// Expiry is when the token stops being accepted.
	Expiry time.Time `json:"expiry"`
	// Token is the secret text, on creation only.
	Token string `json:"token,omitempty"`
}

// MarshalJSON writes the expiry with milliseconds, as IoT Central does.
func (t APIToken) MarshalJSON() ([]byte, error) {
	type plain APIToken
	return json.Marshal(struct {
		plain
		Expiry string `json:"expiry"`
	}{plain(t), msTime(t.Expiry)})
}

// TokenBackend is the optional part of a Backend that keeps API tokens;
// without it the API-token routes answer 501 and only Options.Token (an
// administrator) is accepted. Tokens are kept by the SHA-256 of their text
// only.
type TokenBackend interface {
	// ListAPITokens returns every token (without its text).
	ListAPITokens(ctx context.Context) ([]APIToken, error)
	// GetAPIToken returns one token, or ErrNotFound.
	GetAPIToken(ctx context.Context, id string) (APIToken, error)
	// CreateAPIToken stores a token whose text hashes to hash. ErrConflict
	// when the id exists.
	CreateAPIToken(ctx context.Context, t APIToken, hash [sha256.Size]byte) (APIToken, error)
	// DeleteAPIToken removes a token, or ErrNotFound.
	DeleteAPIToken(ctx context.Context, id string) error
	// APITokenByHash returns the token whose text hashes to hash, or
	// ErrNotFound.
	APITokenByHash(ctx context.Context, hash [sha256.Size]byte) (APIToken, error)
}

// ErrForbidden reports a request the API token's role does not allow;
// answered 403 Forbidden. Only the HTTP layer makes it.
var ErrForbidden = errors.New("restapi: forbidden")

// tokenRole authenticates the Authorization header: Options.Token is an
// administrator; another header is looked up among the API tokens. It
// returns the strongest role of the token, "" when it is refused.
func (h *handler) tokenRole(r *http.Request) string {
	header := r.Header.Get("Authorization")
	if h.authorized(header) {
		return RoleAdministrator
	}
	tb, ok := h.b.(TokenBackend)
	if !ok || header == "" {
		return ""
	}
	t, err := tb.APITokenByHash(r.Context(), sha256.Sum256([]byte(header)))
	if err != nil || !time.Now().Before(t.Expiry) {
		return ""
	}
	best := ""
	for _, ra := range t.Roles {
		if ra.Organization == "" && rank(ra.Role) > rank(best) {
			best = ra.Role
		}
	}
	if best == "" && len(t.Roles) > 0 {
		return orgScoped
	}
	return best
}

// permit checks that role may make request r: an operator may not change
// device templates, enrollment groups or data exports; only an
// administrator manages API tokens and users and changes organizations; a
// token with only organization roles is refused everything. Errors wrap
// ErrForbidden.
func permit(role string, r *http.Request) error {
	p := r.URL.Path
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	under := func(prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
	switch {
	case role == RoleAdministrator:
		return nil
	case role == orgScoped:
		return fmt.Errorf("%w: this token holds only organization roles; the emulator does not scope requests to an organization, use a token with an application role", ErrForbidden)
	case under("/api/apiTokens"):
		return fmt.Errorf("%w: only an App Administrator token manages API tokens", ErrForbidden)
	case under("/api/users"):
		return fmt.Errorf("%w: only an App Administrator token manages users", ErrForbidden)
	case write && under("/api/organizations"):
		return fmt.Errorf("%w: only an App Administrator token changes organizations", ErrForbidden)
	case role == RoleOperator && write && (under("/api/deviceTemplates") || under("/api/enrollmentGroups")):
		return fmt.Errorf("%w: an App Operator token cannot change device templates or enrollment groups", ErrForbidden)
	case role == RoleOperator && write && under(dataExportPrefix):
		return fmt.Errorf("%w: only App Administrator and App Builder tokens change data exports", ErrForbidden)
	}
	return nil
}

func (h *handler) tokenRoutes() []route {
	return []route{
		{"/api/apiTokens", map[string]http.HandlerFunc{"GET": h.listAPITokens}},
		{"/api/apiTokens/{id}", map[string]http.HandlerFunc{"GET": h.getAPIToken, "PUT": h.putAPIToken, "DELETE": h.deleteAPIToken}},
		{"/api/roles", map[string]http.HandlerFunc{"GET": func(w http.ResponseWriter, r *http.Request) { page(h, w, r, slices.Clone(roles), nil) }}},
		{"/api/roles/{id}", map[string]http.HandlerFunc{"GET": h.getRole}},
	}
}

func (h *handler) tokens(w http.ResponseWriter, r *http.Request) (TokenBackend, bool) {
	tb, ok := h.b.(TokenBackend)
	if !ok {
		h.fail(w, r, http.StatusNotImplemented, "NotImplemented", "this backend keeps no API tokens")
	}
	return tb, ok
}

func (h *handler) listAPITokens(w http.ResponseWriter, r *http.Request) {
	if tb, ok := h.tokens(w, r); ok {
		ts, err := tb.ListAPITokens(r.Context())
		page(h, w, r, ts, err)
	}
}

func (h *handler) getAPIToken(w http.ResponseWriter, r *http.Request) {
	if tb, ok := h.tokens(w, r); ok {
		t, err := tb.GetAPIToken(r.Context(), r.PathValue("id"))
		t.Token = ""
		h.respond(w, r, http.StatusOK, t, err)
	}
}

func (h *handler) deleteAPIToken(w http.ResponseWriter, r *http.Request) {
	tb, ok := h.tokens(w, r)
	if !ok {
		return
	}
	if err := tb.DeleteAPIToken(r.Context(), r.PathValue("id")); err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) getRole(w http.ResponseWriter, r *http.Request) {
	i := slices.IndexFunc(roles, func(x Role) bool { return x.ID == r.PathValue("id") })
	if i < 0 {
		h.fail(w, r, http.StatusNotFound, "NotFound", "no role "+r.PathValue("id"))
		return
	}
	h.reply(w, r, http.StatusOK, roles[i])
}

// putAPIToken creates a token: body {"roles":[{"role"}], "expiry"}; the
// answer carries the token text, once.
func (h *handler) putAPIToken(w http.ResponseWriter, r *http.Request) {
	tb, ok := h.tokens(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	body, err := readBody(w, r)
	var in struct {
		Roles  []RoleAssignment `json:"roles"`
		Expiry *time.Time       `json:"expiry"`
	}
	if err == nil {
		err = asValidation(decodeJSON(body, &in))
	}
	if err == nil {
		err = checkTokenID(id)
	}
	h.entityMu.Lock() // an organization checked is not deleted before the token is stored
	defer h.entityMu.Unlock()
	if err == nil {
		err = h.checkRoles(r.Context(), in.Roles)
	}
	t := APIToken{ID: id, Roles: in.Roles, Expiry: time.Now().Add(DefaultTokenLifetime).UTC().Truncate(time.Millisecond)}
	if err == nil && in.Expiry != nil {
		if !in.Expiry.After(time.Now()) {
			err = invalidf("expiry %s is not in the future", in.Expiry.UTC().Format(time.RFC3339))
		}
		t.Expiry = in.Expiry.UTC()
	}
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	var sig [32]byte
	_, _ = rand.Read(sig[:]) // crypto/rand.Read never fails (Go 1.24+)
	text := fmt.Sprintf("SharedAccessSignature sr=%s&sig=%s&skn=%s&se=%d", newRequestID(),
		base64.RawURLEncoding.EncodeToString(sig[:]), id, t.Expiry.UnixMilli())
	t, err = tb.CreateAPIToken(r.Context(), t, sha256.Sum256([]byte(text)))
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	t.Token = text
	h.reply(w, r, http.StatusOK, t)
}

// checkTokenID validates a token id: 1..128 of letters, digits, '-', '_'
// and '.'.
func checkTokenID(id string) error {
	if !idPattern(id, 128, "-_.") {
		return invalidf("API token id %q must be 1 to 128 letters, digits, '-', '_' or '.'", id)
	}
	return nil
}
