package restapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
)

// fakeBackend is an in-memory Backend that records what the handler asked.
type fakeBackend struct {
	mu        sync.Mutex
	fail      error // returned by every method when set
	devices   map[string]Device
	creds     map[string]DeviceCredentials
	twins     map[string]Twin
	telemetry map[string]TelemetryValue // key: id/component/name
	groups    map[string]EnrollmentGroup
	history   []TelemetryMessage // returned by TelemetryHistory
	queries   []TelemetryQuery   // what TelemetryHistory was asked

	patches   []map[string]any
	invokes   []invokeCall
	queued    []invokeCall
	messages  []CloudMessage
	invokeRes CommandResult
	invokeErr error
	queueErr  error
	sendErr   error
	patchErr  error
	extra     *fakeExtra
}

type invokeCall struct {
	id, component, name string
	req                 CommandRequest
	request             json.RawMessage
	hasDeadline         bool
}

func newFake() *fakeBackend {
	return &fakeBackend{
		devices:   map[string]Device{},
		creds:     map[string]DeviceCredentials{},
		twins:     map[string]Twin{},
		telemetry: map[string]TelemetryValue{},
		groups:    map[string]EnrollmentGroup{},
	}
}

func notFound(what, id string) error { return fmt.Errorf("%s %q: %w", what, id, ErrNotFound) }

func (f *fakeBackend) known(id string) error {
	if f.fail != nil {
		return f.fail
	}
	if _, ok := f.devices[id]; !ok {
		return notFound("device", id)
	}
	return nil
}

func (f *fakeBackend) ListDevices(context.Context) ([]Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	var ds []Device
	for _, d := range f.devices {
		ds = append(ds, d)
	}
	return ds, nil
}

func (f *fakeBackend) GetDevice(_ context.Context, id string) (Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return Device{}, err
	}
	return f.devices[id], nil
}

func (f *fakeBackend) DeviceCredentials(_ context.Context, id string) (DeviceCredentials, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return DeviceCredentials{}, err
	}
	return f.creds[id], nil
}

func (f *fakeBackend) DeviceTwin(_ context.Context, id string) (Twin, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return Twin{}, err
	}
	return f.twins[id], nil
}

func (f *fakeBackend) PatchDesired(_ context.Context, id string, patch map[string]any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return err
	}
	if f.patchErr != nil {
		return f.patchErr
	}
	f.patches = append(f.patches, patch)
	t := f.twins[id]
	d := maps.Clone(t.Desired)
	if d == nil {
		d = map[string]any{}
	}
	for k, v := range patch {
		if sub, ok := v.(map[string]any); ok {
			cur := maps.Clone(asMap(d[k]))
			if cur == nil {
				cur = map[string]any{}
			}
			maps.Copy(cur, sub)
			d[k] = cur
			continue
		}
		if v == nil {
			delete(d, k)
			continue
		}
		d[k] = v
	}
	v, _ := d["$version"].(float64)
	d["$version"] = v + 1
	t.Desired = d
	f.twins[id] = t
	return nil
}

func (f *fakeBackend) InvokeCommand(ctx context.Context, id, component, name string, req CommandRequest) (CommandResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return CommandResult{}, err
	}
	_, hasDeadline := ctx.Deadline()
	f.invokes = append(f.invokes, invokeCall{id: id, component: component, name: name, req: req, hasDeadline: hasDeadline})
	if f.invokeErr != nil {
		return CommandResult{}, f.invokeErr
	}
	// As the emulator's core does: a finished invocation is recorded in
	// the history by the backend, under the id it returns.
	res := f.invokeRes
	res.RequestID = fmt.Sprintf("00000000-0000-4000-8000-%012d", len(f.invokes))
	resp := res.Response
	if len(bytes.TrimSpace(resp)) == 0 {
		resp = nil
	} else if !json.Valid(resp) {
		resp, _ = json.Marshal(string(resp))
	}
	k := id + "/" + component + "/" + name
	f.x().history[k] = append(f.x().history[k], CommandInvocation{ID: res.RequestID, Request: req.Request, Response: resp,
		ResponseCode: res.ResponseCode, ConnectionTimeout: req.ConnectionTimeout, ResponseTimeout: req.ResponseTimeout})
	return res, nil
}

func (f *fakeBackend) QueueCommand(_ context.Context, id, component, name string, request json.RawMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return err
	}
	if f.queueErr != nil {
		return f.queueErr
	}
	f.queued = append(f.queued, invokeCall{id: id, component: component, name: name, request: request})
	return nil
}

func (f *fakeBackend) SendMessage(_ context.Context, id string, msg CloudMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return err
	}
	if f.sendErr != nil {
		return f.sendErr
	}
	f.messages = append(f.messages, msg)
	return nil
}

func (f *fakeBackend) LatestTelemetry(_ context.Context, id, component, name string) (TelemetryValue, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return TelemetryValue{}, err
	}
	v, ok := f.telemetry[id+"/"+component+"/"+name]
	if !ok {
		return TelemetryValue{}, notFound("telemetry", name)
	}
	return v, nil
}

func (f *fakeBackend) ListEnrollmentGroups(context.Context) ([]EnrollmentGroup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	var gs []EnrollmentGroup
	for _, g := range f.groups {
		gs = append(gs, g)
	}
	return gs, nil
}

func (f *fakeBackend) GetEnrollmentGroup(_ context.Context, id string) (EnrollmentGroup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return EnrollmentGroup{}, f.fail
	}
	g, ok := f.groups[id]
	if !ok {
		return EnrollmentGroup{}, notFound("enrollment group", id)
	}
	return g, nil
}

func (f *fakeBackend) PutEnrollmentGroup(_ context.Context, g EnrollmentGroup) (EnrollmentGroup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return EnrollmentGroup{}, f.fail
	}
	f.groups[g.ID] = g
	return g, nil
}

func (f *fakeBackend) TelemetryHistory(_ context.Context, id string, q TelemetryQuery) ([]TelemetryMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return nil, err
	}
	f.queries = append(f.queries, q)
	return f.history, nil
}
