package core

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// appDocKeyPrefix is the KindMeta key prefix of application entities the
// core keeps as opaque JSON ("app/<collection>/<id>"): stored like the
// other settings, with no new kind of record (no store schema change).
const appDocKeyPrefix = "app/"

// MaxAppDocBytes bounds one application document (256 KiB).
const MaxAppDocBytes = 256 << 10

// PutAppDoc stores (creates or replaces) the JSON document of entity id
// of a collection of application entities the core does not interpret
// (the REST API's device groups). Errors: ErrInvalid (an empty collection
// or id, one holding '/', over 255 bytes, a document that is not a JSON
// object), ErrTooLarge (over MaxAppDocBytes), the store's error.
func (c *Core) PutAppDoc(collection, id string, doc []byte) error {
	if err := checkAppDocName(collection, id); err != nil {
		return err
	}
	if len(doc) > MaxAppDocBytes {
		return fmt.Errorf("%w: %s %q is %d bytes, over %d", ErrTooLarge, collection, id, len(doc), MaxAppDocBytes)
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(doc, &probe); err != nil {
		return fmt.Errorf("%w: %s %q: not a JSON object", ErrInvalid, collection, id)
	}
	doc = slices.Clone(doc)
	c.mu.Lock()
	if c.ext.appDocs == nil {
		c.ext.appDocs = map[string]map[string][]byte{}
	}
	if c.ext.appDocs[collection] == nil {
		c.ext.appDocs[collection] = map[string][]byte{}
	}
	c.ext.appDocs[collection][id] = doc
	staged := c.stageLocked(Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: appDocKeyPrefix + collection + "/" + id, Doc: doc}})
	c.mu.Unlock()
	return awaitNow(staged)
}

// AppDoc returns a copy of the document of entity id, or ErrNotFound.
func (c *Core) AppDoc(collection, id string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.ext.appDocs[collection][id]
	if !ok {
		return nil, fmt.Errorf("%w: %s %q", ErrNotFound, collection, id)
	}
	return slices.Clone(d), nil
}

// AppDocs returns copies of every document of a collection, sorted by id.
func (c *Core) AppDocs(collection string) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.ext.appDocs[collection]
	out := make([][]byte, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, slices.Clone(m[id]))
	}
	return out
}

// DeleteAppDoc removes entity id of a collection. Errors: ErrNotFound,
// the store's error.
func (c *Core) DeleteAppDoc(collection, id string) error {
	c.mu.Lock()
	if _, ok := c.ext.appDocs[collection][id]; !ok {
		c.mu.Unlock()
		return fmt.Errorf("%w: %s %q", ErrNotFound, collection, id)
	}
	delete(c.ext.appDocs[collection], id)
	staged := c.stageLocked(Change{Op: OpDelete, Record: Record{Kind: KindMeta, Key: appDocKeyPrefix + collection + "/" + id}})
	c.mu.Unlock()
	return awaitNow(staged)
}

func checkAppDocName(collection, id string) error {
	for _, s := range []string{collection, id} {
		if s == "" || len(s) > 255 || strings.Contains(s, "/") {
			return fmt.Errorf("%w: application entity %q/%q: names are 1 to 255 bytes without '/'", ErrInvalid, collection, id)
		}
	}
	return nil
}

// loadAppDoc restores a stored application document (key without the
// prefix: "<collection>/<id>"); the core not yet shared.
func (c *Core) loadAppDoc(key string, doc []byte) error {
	collection, id, ok := strings.Cut(key, "/")
	if !ok || checkAppDocName(collection, id) != nil {
		return fmt.Errorf("bad application entity key %q", key)
	}
	if c.ext.appDocs == nil {
		c.ext.appDocs = map[string]map[string][]byte{}
	}
	if c.ext.appDocs[collection] == nil {
		c.ext.appDocs[collection] = map[string][]byte{}
	}
	c.ext.appDocs[collection][id] = slices.Clone(doc)
	return nil
}
