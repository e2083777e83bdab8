package restapi

import (
	"context"
	"encoding/json"
	"fmt"
)

// The fake's device management, templates and history (the Backend
// methods added for IoT Central 2022-07-31 parity).

type fakeExtra struct {
	templates map[string]map[string]any
	models    map[string]*TemplateModel // by device id
	history   map[string][]CommandInvocation
	codes     map[string]string // group/entry -> code
	verified  map[string]string // group/entry -> thumbprint
	deleted   []string
	docs      map[string]map[string][]byte // application documents (fake3_test.go)
}

func (f *fakeBackend) x() *fakeExtra {
	if f.extra == nil {
		f.extra = &fakeExtra{templates: map[string]map[string]any{}, models: map[string]*TemplateModel{},
			history: map[string][]CommandInvocation{}, codes: map[string]string{}, verified: map[string]string{}}
	}
	return f.extra
}

func (f *fakeBackend) DeleteEnrollmentGroup(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.groups[id]; !ok {
		return notFound("enrollment group", id)
	}
	delete(f.groups, id)
	return nil
}

func (f *fakeBackend) IssueVerificationCode(_ context.Context, group, entry string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.groups[group]; !ok {
		return "", notFound("enrollment group", group)
	}
	code := fmt.Sprintf("CODE%d", len(f.x().codes)+1)
	f.x().codes[group+"/"+entry] = code
	return code, nil
}

func (f *fakeBackend) ConsumeVerificationCode(_ context.Context, group, entry, code, thumb string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.x().codes[group+"/"+entry] != code {
		return fmt.Errorf("%w: code %q not issued", ErrValidation, code)
	}
	delete(f.x().codes, group+"/"+entry)
	f.x().verified[group+"/"+entry] = thumb
	return nil
}

func (f *fakeBackend) PutDevice(_ context.Context, id string, s DeviceSpec) (Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return Device{}, f.fail
	}
	d, ok := f.devices[id]
	if !ok {
		d = Device{ID: id, DisplayName: id, Enabled: true, IndividualKeys: true}
	}
	if s.DisplayName != nil {
		d.DisplayName = *s.DisplayName
	}
	if s.Template != nil {
		d.Template = *s.Template
	}
	if s.Enabled != nil {
		d.Enabled = *s.Enabled
	}
	if s.Simulated != nil {
		d.Simulated = *s.Simulated
	}
	if s.Organizations != nil {
		d.Organizations = *s.Organizations
	}
	f.devices[id] = d
	return d, nil
}

func (f *fakeBackend) DeleteDevice(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return err
	}
	delete(f.devices, id)
	f.x().deleted = append(f.x().deleted, id)
	return nil
}

func (f *fakeBackend) SetDeviceKeys(_ context.Context, id string, k SymmetricKey) (SymmetricKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return SymmetricKey{}, err
	}
	if k.PrimaryKey == "" {
		k.PrimaryKey = "Z2VuZXJhdGVkLXByaW1hcnkta2V5LTMyLWJ5dGVzISE="
	}
	if k.SecondaryKey == "" {
		k.SecondaryKey = "Z2VuZXJhdGVkLXNlY29uZGFyeS1rZXktMzItYnl0ZXM="
	}
	d := f.devices[id]
	d.IndividualKeys = true
	f.devices[id] = d
	c := f.creds[id]
	c.SymmetricKey, c.X509 = k, false
	f.creds[id] = c
	return k, nil
}

func (f *fakeBackend) RemoveDeviceKeys(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return err
	}
	d := f.devices[id]
	d.IndividualKeys = false
	f.devices[id] = d
	return nil
}

func (f *fakeBackend) DeviceComponents(_ context.Context, id string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return nil, err
	}
	var out []string
	if m := f.x().models[id]; m != nil {
		for c := range m.Components {
			out = append(out, c)
		}
		return out, nil
	}
	for k, v := range f.twins[id].Reported {
		if m, ok := v.(map[string]any); ok && m["__t"] == "c" {
			out = append(out, k)
		}
	}
	return out, nil
}

func (f *fakeBackend) DeviceModel(_ context.Context, id string) (*TemplateModel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return nil, err
	}
	return f.x().models[id], nil
}

func (f *fakeBackend) CommandHistory(_ context.Context, id, component, name string) ([]CommandInvocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.known(id); err != nil {
		return nil, err
	}
	return append([]CommandInvocation(nil), f.x().history[id+"/"+component+"/"+name]...), nil
}

func (f *fakeBackend) ListTemplates(context.Context) ([]map[string]any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []map[string]any
	for _, t := range f.x().templates {
		out = append(out, cloneDoc(t))
	}
	return out, nil
}

func (f *fakeBackend) GetTemplate(_ context.Context, id string) (map[string]any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.x().templates[id]
	if !ok {
		return nil, notFound("device template", id)
	}
	return cloneDoc(t), nil
}

func (f *fakeBackend) PutTemplate(_ context.Context, id string, doc map[string]any) (map[string]any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	doc = cloneDoc(doc)
	doc["@id"] = id
	f.x().templates[id] = doc
	return cloneDoc(doc), nil
}

func (f *fakeBackend) DeleteTemplate(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.x().templates[id]; !ok {
		return notFound("device template", id)
	}
	delete(f.x().templates, id)
	return nil
}

func cloneDoc(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}
