package restapi

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
)

// The fake's application documents (DocBackend) and device groups kept
// as documents, as the core backend keeps them.

func (f *fakeBackend) PutDoc(_ context.Context, collection, id string, doc []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	x := f.x()
	if x.docs == nil {
		x.docs = map[string]map[string][]byte{}
	}
	if x.docs[collection] == nil {
		x.docs[collection] = map[string][]byte{}
	}
	x.docs[collection][id] = slices.Clone(doc)
	return nil
}

func (f *fakeBackend) Doc(_ context.Context, collection, id string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	d, ok := f.x().docs[collection][id]
	if !ok {
		return nil, notFound(collection, id)
	}
	return slices.Clone(d), nil
}

func (f *fakeBackend) Docs(_ context.Context, collection string) ([][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	m := f.x().docs[collection]
	var out [][]byte
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, slices.Clone(m[id]))
	}
	return out, nil
}

func (f *fakeBackend) DeleteDoc(_ context.Context, collection, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.x().docs[collection][id]; !ok {
		return notFound(collection, id)
	}
	delete(f.x().docs[collection], id)
	return nil
}

func (f *fakeBackend) ListDeviceGroups(ctx context.Context) ([]DeviceGroup, error) {
	return listDocs[DeviceGroup](ctx, f, "deviceGroups")
}

func (f *fakeBackend) GetDeviceGroup(ctx context.Context, id string) (DeviceGroup, error) {
	return getDoc[DeviceGroup](ctx, f, "deviceGroups", id)
}

func (f *fakeBackend) PutDeviceGroup(ctx context.Context, g DeviceGroup) (DeviceGroup, error) {
	g.Etag = ""
	b, _ := json.Marshal(g)
	return g, f.PutDoc(ctx, "deviceGroups", g.ID, b)
}

func (f *fakeBackend) DeleteDeviceGroup(ctx context.Context, id string) error {
	return f.DeleteDoc(ctx, "deviceGroups", id)
}
