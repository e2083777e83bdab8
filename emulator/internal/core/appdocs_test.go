package core

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAppDocsAndAPITokens(t *testing.T) {
	c := New(Config{IDScope: "0ne", HubHost: "hub"})
	t.Cleanup(c.Close)
	for _, tc := range []struct {
		coll, id, doc string
		want          error
	}{
		{"g", "a/b", `{}`, ErrInvalid},
		{"", "a", `{}`, ErrInvalid},
		{"g", "a", `[1]`, ErrInvalid},
		{"g", "a", `{"x":"` + strings.Repeat("y", MaxAppDocBytes) + `"}`, ErrTooLarge},
	} {
		if err := c.PutAppDoc(tc.coll, tc.id, []byte(tc.doc)); !errors.Is(err, tc.want) {
			t.Errorf("PutAppDoc(%q, %q): %v, want %v", tc.coll, tc.id, err, tc.want)
		}
	}
	if err := c.PutAppDoc("g", "b", []byte(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.PutAppDoc("g", "a", []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if docs := c.AppDocs("g"); len(docs) != 2 || !bytes.Equal(docs[0], []byte(`{"n":1}`)) {
		t.Fatalf("AppDocs = %q", docs)
	}
	if err := c.DeleteAppDoc("g", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AppDoc("g", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted doc: %v", err)
	}

	tok := APIToken{ID: "t1", Roles: []RoleAssignment{{Role: "r"}}, Expiry: time.Now().Add(time.Hour), Hash: HashAPIToken("secret")}
	if _, err := c.CreateAPIToken(APIToken{ID: "t0", Hash: HashAPIToken("x")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("token without a role: %v", err)
	}
	if _, err := c.CreateAPIToken(tok); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateAPIToken(tok); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create: %v", err)
	}
	if got, ok := c.APITokenByHash(HashAPIToken("secret")); !ok || got.ID != "t1" {
		t.Fatalf("by hash: %+v %v", got, ok)
	}
	if _, ok := c.APITokenByHash(HashAPIToken("other")); ok {
		t.Fatal("another text matched")
	}
	if err := c.DeleteAPIToken("t1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteAPIToken("t1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}
