package core

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// apiTokenKeyPrefix is the KindMeta key prefix under which API tokens are
// stored ("apitoken/<id>"): they are settings of the application, so no
// new kind of record (and no store schema change) is needed.
const apiTokenKeyPrefix = "apitoken/"

// RoleAssignment is one role of an API token: a role id, and the
// organization it applies to ("" for the whole application).
type RoleAssignment struct {
	// Role is the role id (the core does not interpret it).
	Role string `json:"role"`
	// Organization scopes the role; "" means the whole application.
	Organization string `json:"organization,omitempty"`
}

// APIToken is an IoT Central API token as the core keeps it. The token
// text itself is never kept, only its SHA-256 (Hash), so a data directory
// holds no usable secret; the REST API shows the text once, on creation.
type APIToken struct {
	// ID names the token (1..128 characters).
	ID string `json:"id"`
	// Roles are its roles; at least one.
	Roles []RoleAssignment `json:"roles"`
	// Expiry is when it stops being accepted.
	Expiry time.Time `json:"expiry"`
	// Hash is the SHA-256 of the whole Authorization header value.
	Hash [sha256.Size]byte `json:"hash"`
}

// HashAPIToken is the Hash of an API token's text (the whole
// Authorization header value).
func HashAPIToken(text string) [sha256.Size]byte { return sha256.Sum256([]byte(text)) }

// CreateAPIToken stores a new API token and returns it. Errors:
// ErrInvalid (an empty id or one over 128 bytes, no role), ErrConflict (the
// id exists: tokens are not replaced), the store's error.
func (c *Core) CreateAPIToken(t APIToken) (APIToken, error) {
	if t.ID == "" || len(t.ID) > 128 || strings.ContainsAny(t.ID, "/?#") {
		return APIToken{}, fmt.Errorf("%w: API token id %q", ErrInvalid, t.ID)
	}
	if len(t.Roles) == 0 {
		return APIToken{}, fmt.Errorf("%w: API token %q has no role", ErrInvalid, t.ID)
	}
	t.Roles = slices.Clone(t.Roles)
	t.Expiry = t.Expiry.UTC()
	c.mu.Lock()
	if _, ok := c.ext.apiTokens[t.ID]; ok {
		c.mu.Unlock()
		return APIToken{}, fmt.Errorf("%w: API token %q", ErrConflict, t.ID)
	}
	if c.ext.apiTokens == nil {
		c.ext.apiTokens = map[string]APIToken{}
	}
	c.ext.apiTokens[t.ID] = t
	staged := c.stageLocked(Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: apiTokenKeyPrefix + t.ID, Doc: mustJSON(t)}})
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return APIToken{}, err
	}
	c.log.Info("API token created", "token_id", t.ID)
	out := t
	out.Roles = slices.Clone(t.Roles)
	return out, nil
}

// APITokens returns every API token, sorted by id.
func (c *Core) APITokens() []APIToken {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]APIToken, 0, len(c.ext.apiTokens))
	for _, id := range slices.Sorted(maps.Keys(c.ext.apiTokens)) {
		t := c.ext.apiTokens[id]
		t.Roles = slices.Clone(t.Roles)
		out = append(out, t)
	}
	return out
}

// APIToken returns API token id, or ErrNotFound.
func (c *Core) APIToken(id string) (APIToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.ext.apiTokens[id]
	if !ok {
		return APIToken{}, fmt.Errorf("%w: API token %q", ErrNotFound, id)
	}
	t.Roles = slices.Clone(t.Roles)
	return t, nil
}

// APITokenByHash returns the API token whose text hashes to h; ok false
// when none does. Expiry is the caller's to check.
func (c *Core) APITokenByHash(h [sha256.Size]byte) (t APIToken, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.ext.apiTokens {
		if t.Hash == h {
			t.Roles = slices.Clone(t.Roles)
			return t, true
		}
	}
	return APIToken{}, false
}

// DeleteAPIToken removes API token id; it is refused from then on.
// Errors: ErrNotFound, the store's error.
func (c *Core) DeleteAPIToken(id string) error {
	c.mu.Lock()
	if _, ok := c.ext.apiTokens[id]; !ok {
		c.mu.Unlock()
		return fmt.Errorf("%w: API token %q", ErrNotFound, id)
	}
	delete(c.ext.apiTokens, id)
	staged := c.stageLocked(Change{Op: OpDelete, Record: Record{Kind: KindMeta, Key: apiTokenKeyPrefix + id}})
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return err
	}
	c.log.Info("API token deleted", "token_id", id)
	return nil
}

// loadAPIToken restores a stored API token (a KindMeta record under
// apiTokenKeyPrefix); c.mu held or the core not yet shared.
func (c *Core) loadAPIToken(doc []byte) error {
	var t APIToken
	if err := json.Unmarshal(doc, &t); err != nil {
		return err
	}
	if c.ext.apiTokens == nil {
		c.ext.apiTokens = map[string]APIToken{}
	}
	c.ext.apiTokens[t.ID] = t
	return nil
}
