package core

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// MaxTemplateBytes bounds the JSON of one device template (IoT Central's
// own limit is not published; 512 KiB holds any realistic model).
const MaxTemplateBytes = 512 << 10

// storedTemplate is a device template as uploaded, with its parsed model.
type storedTemplate struct {
	doc   map[string]any
	model *Model
}

// Capabilities are the names an interface declares.
type Capabilities struct {
	// Properties maps property names to whether they are writable.
	Properties map[string]bool
	// Commands and Telemetry are the command and telemetry names.
	Commands, Telemetry map[string]bool
	// Open is set for an interface given by reference only (its contents
	// unknown): every name is accepted.
	Open bool
}

func newCaps() *Capabilities {
	return &Capabilities{Properties: map[string]bool{}, Commands: map[string]bool{}, Telemetry: map[string]bool{}}
}

// Model is the capability model of a device template, as the REST API
// needs it: the root interface (with what it extends) and the components.
type Model struct {
	// ID is the template id; ModelID the capability model's "@id".
	ID, ModelID string
	// Root holds the root interface's capabilities.
	Root *Capabilities
	// Components maps component names to their interface's capabilities.
	Components map[string]*Capabilities
}

// Interface returns the capabilities of component ("" for the root) and
// whether the model has that component.
func (m *Model) Interface(component string) (*Capabilities, bool) {
	if component == "" {
		return m.Root, true
	}
	c, ok := m.Components[component]
	return c, ok
}

func hasType(v any, t string) bool {
	switch x := v.(type) {
	case string:
		return x == t
	case []any:
		return slices.ContainsFunc(x, func(e any) bool { s, _ := e.(string); return s == t })
	}
	return false
}

// ParseModel reads a device template document: "capabilityModel" is a
// DTDL interface whose "contents" hold Telemetry, Property, Command and
// Component entries (a component's "schema" an inline interface or a DTMI
// string) and whose "extends" adds inline interfaces. Errors wrap
// ErrInvalid.
func ParseModel(id string, doc map[string]any) (*Model, error) {
	cm, ok := doc["capabilityModel"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: device template %q: capabilityModel must be an object", ErrInvalid, id)
	}
	types, ok := doc["@type"].([]any)
	if !ok || len(types) == 0 {
		return nil, fmt.Errorf("%w: device template %q: @type must be a non-empty array (for example [\"ModelDefinition\",\"DeviceModel\"])", ErrInvalid, id)
	}
	m := &Model{ID: id, Components: map[string]*Capabilities{}}
	m.ModelID, _ = cm["@id"].(string)
	root, err := parseInterface(cm, m, true, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: device template %q: %v", ErrInvalid, id, err)
	}
	m.Root = root
	return m, nil
}

func parseInterface(itf map[string]any, m *Model, root bool, depth int) (*Capabilities, error) {
	if depth > 8 {
		return nil, fmt.Errorf("interfaces nested deeper than 8")
	}
	caps := newCaps()
	var add func(itf map[string]any, depth int) error
	add = func(itf map[string]any, depth int) error {
		if depth > 8 {
			return fmt.Errorf("extends nested deeper than 8")
		}
		contents, _ := itf["contents"].([]any)
		if v, ok := itf["contents"]; ok && contents == nil && v != nil {
			return fmt.Errorf("contents must be an array")
		}
		for _, e := range contents {
			entry, ok := e.(map[string]any)
			if !ok {
				return fmt.Errorf("a contents entry is not an object")
			}
			name, _ := entry["name"].(string)
			if name == "" {
				return fmt.Errorf("a contents entry has no name")
			}
			t := entry["@type"]
			switch {
			case hasType(t, "Component"):
				if !root {
					return fmt.Errorf("component %q inside a component", name)
				}
				sub := &Capabilities{Open: true}
				if schema, ok := entry["schema"].(map[string]any); ok {
					var err error
					if sub, err = parseInterface(schema, m, false, depth+1); err != nil {
						return fmt.Errorf("component %q: %w", name, err)
					}
				}
				m.Components[name] = sub
			case hasType(t, "Property"):
				w, _ := entry["writable"].(bool)
				caps.Properties[name] = w
			case hasType(t, "Command"):
				caps.Commands[name] = true
			case hasType(t, "Telemetry"):
				caps.Telemetry[name] = true
			}
		}
		ext := itf["extends"]
		if s, ok := ext.(map[string]any); ok {
			ext = []any{s}
		}
		list, _ := ext.([]any)
		for _, e := range list {
			if s, ok := e.(map[string]any); ok {
				if err := add(s, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := add(itf, depth); err != nil {
		return nil, err
	}
	return caps, nil
}

// PutTemplate stores (creates or replaces) device template id, whose
// document is as IoT Central stores it ("@id", "@type", "displayName",
// "description", "capabilityModel"). It returns the stored document.
// Errors wrap ErrInvalid.
func (c *Core) PutTemplate(id string, doc map[string]any) (map[string]any, error) {
	if id == "" || len(id) > 1024 || strings.ContainsAny(id, " /?#") {
		return nil, fmt.Errorf("%w: device template id %q", ErrInvalid, id)
	}
	doc = cloneJSON(doc).(map[string]any)
	doc["@id"] = id
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%w: device template %q: %v", ErrInvalid, id, err)
	}
	if len(b) > MaxTemplateBytes {
		return nil, fmt.Errorf("%w: device template %q is %d bytes, over %d", ErrTooLarge, id, len(b), MaxTemplateBytes)
	}
	m, err := ParseModel(id, doc)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.ext.templates == nil {
		c.ext.templates = map[string]*storedTemplate{}
	}
	kind := FeedTemplateCreated
	if _, ok := c.ext.templates[id]; ok {
		kind = FeedTemplateUpdated
	}
	c.ext.templates[id] = &storedTemplate{doc: doc, model: m}
	c.observeLocked(FeedEvent{Kind: kind, TemplateID: id})
	staged := c.stageLocked(Change{Op: OpPut, Record: Record{Kind: KindTemplate, Key: id, Doc: b}})
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return nil, err
	}
	c.log.Info("device template stored", "template_id", id)
	return cloneJSON(doc).(map[string]any), nil
}

// Template returns a copy of device template id, or ErrNotFound.
func (c *Core) Template(id string) (map[string]any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.ext.templates[id]
	if !ok {
		return nil, fmt.Errorf("%w: device template %q", ErrNotFound, id)
	}
	return cloneJSON(t.doc).(map[string]any), nil
}

// Templates returns copies of every device template, sorted by id.
func (c *Core) Templates() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := slices.Sorted(maps.Keys(c.ext.templates))
	out := make([]map[string]any, len(ids))
	for i, id := range ids {
		out[i] = cloneJSON(c.ext.templates[id].doc).(map[string]any)
	}
	return out
}

// DeleteTemplate removes device template id. It returns ErrNotFound, or
// ErrConflict while a device is assigned to it (as IoT Central refuses to
// delete a template in use).
func (c *Core) DeleteTemplate(id string) error {
	c.mu.Lock()
	if _, ok := c.ext.templates[id]; !ok {
		c.mu.Unlock()
		return fmt.Errorf("%w: device template %q", ErrNotFound, id)
	}
	for dev, s := range c.ext.settings {
		if s.template == id {
			c.mu.Unlock()
			return fmt.Errorf("%w: device template %q is assigned to device %q", ErrConflict, id, dev)
		}
	}
	delete(c.ext.templates, id)
	c.observeLocked(FeedEvent{Kind: FeedTemplateDeleted, TemplateID: id})
	staged := c.stageLocked(Change{Op: OpDelete, Record: Record{Kind: KindTemplate, Key: id}})
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return err
	}
	c.log.Info("device template deleted", "template_id", id)
	return nil
}

// DeviceModel returns the capability model of the device's template: the
// template assigned to it, else the one whose id or capability model id is
// the device's model id. ok is false when none matches (or the device is
// unknown).
func (c *Core) DeviceModel(id string) (m *Model, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, found := c.devices[id]
	if !found {
		return nil, false
	}
	want := c.detailsLocked(d).Template
	if want == "" {
		return nil, false
	}
	if t, ok := c.ext.templates[want]; ok {
		return t.model, true
	}
	for _, t := range c.ext.templates {
		if t.model.ModelID == want {
			return t.model, true
		}
	}
	return nil, false
}

func cloneJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = cloneJSON(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = cloneJSON(e)
		}
		return s
	}
	return v
}
