package restapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// DocBackend is the optional part of a Backend that keeps application
// entities the REST layer defines itself (jobs, scheduled jobs, users,
// organizations, relationships, cloud property values) as JSON documents
// by collection and id. Without it those routes answer 501 NotImplemented.
type DocBackend interface {
	// PutDoc creates or replaces document id of collection (a JSON
	// object). Errors: ErrValidation (a bad name), ErrTooLarge, the
	// store's error.
	PutDoc(ctx context.Context, collection, id string, doc []byte) error
	// Doc returns document id of collection, or ErrNotFound.
	Doc(ctx context.Context, collection, id string) ([]byte, error)
	// Docs returns every document of collection, sorted by id.
	Docs(ctx context.Context, collection string) ([][]byte, error)
	// DeleteDoc removes document id of collection, or ErrNotFound.
	DeleteDoc(ctx context.Context, collection, id string) error
}

var _ DocBackend = coreBackend{}

// PutDoc implements DocBackend over the core's application documents.
func (b coreBackend) PutDoc(ctx context.Context, collection, id string, doc []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.c.PutAppDoc(collection, id, doc)
}

// Doc implements DocBackend.
func (b coreBackend) Doc(ctx context.Context, collection, id string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return b.c.AppDoc(collection, id)
}

// Docs implements DocBackend.
func (b coreBackend) Docs(ctx context.Context, collection string) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return b.c.AppDocs(collection), nil
}

// DeleteDoc implements DocBackend.
func (b coreBackend) DeleteDoc(ctx context.Context, collection, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.c.DeleteAppDoc(collection, id)
}

// Done is closed when the core stops: the job runner and the scheduler
// stop with it.
func (b coreBackend) Done() <-chan struct{} { return b.c.Done() }

// doner is what a Backend implements to tell the handler's background
// work (jobs, schedules) when to stop; a Backend without it never stops
// them.
type doner interface{ Done() <-chan struct{} }

// The collections of the documents the REST layer keeps.
const (
	jobsCollection          = "jobs"
	scheduledJobsCollection = "scheduledJobs"
	usersCollection         = "users"
	orgsCollection          = "organizations"
	relationshipsCollection = "relationships"
	cloudPropsCollection    = "cloudProperties"
)

// errNoDocs answers the routes of entities kept as documents when the
// Backend keeps none.
var errNoDocs = errors.New("restapi: not implemented: this backend keeps no application documents")

func (h *handler) docs() (DocBackend, error) {
	db, ok := h.b.(DocBackend)
	if !ok {
		return nil, errNoDocs
	}
	return db, nil
}

// getDoc reads document id of collection into a T.
func getDoc[T any](ctx context.Context, db DocBackend, collection, id string) (T, error) {
	var v T
	b, err := db.Doc(ctx, collection, id)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("stored %s %q: %w", collection, id, err)
	}
	return v, nil
}

// listDocs reads every document of collection, sorted by id.
func listDocs[T any](ctx context.Context, db DocBackend, collection string) ([]T, error) {
	bs, err := db.Docs(ctx, collection)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(bs))
	for _, b := range bs {
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("stored %s: %w", collection, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// putDoc stores v as document id of collection.
func putDoc(ctx context.Context, db DocBackend, collection, id string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s %q: %w", collection, id, err)
	}
	return db.PutDoc(ctx, collection, id, b)
}

// Clock tells the time and wakes waiters; the job runner and the
// scheduled-job scheduler read it (Options.Clock; nil is the system
// clock). Tests inject one they advance by hand.
type Clock interface {
	// Now is the current time.
	Now() time.Time
	// At returns a channel that receives once the clock reads t or later.
	At(t time.Time) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                  { return time.Now() }
func (systemClock) At(t time.Time) <-chan time.Time { return time.After(time.Until(t)) }

// idPattern reports whether id is 1..max of letters, digits and the
// characters of extra.
func idPattern(id string, max int, extra string) bool {
	if id == "" || len(id) > max {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || containsRune(extra, c)) {
			return false
		}
	}
	return true
}

func containsRune(s string, c rune) bool {
	for _, x := range s {
		if x == c {
			return true
		}
	}
	return false
}
