package core

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// This file holds IoT Hub's configurations (automatic device management):
// stored documents with an etag, and the devices each was applied to.
// Target conditions and metric queries are IoT Hub's query language,
// which the service front-end evaluates; it tells the core where a
// configuration's content was applied (MarkConfigurationApplied).

// MaxConfigurations is how many configurations a hub holds (IoT Hub: 100).
const MaxConfigurations = 100

// Configuration is one stored configuration.
type Configuration struct {
	// ID names it (letters, digits and - . _ :, at most 128).
	ID string `json:"id"`
	// Doc is the document as the service sent it (labels, content,
	// targetCondition, priority, metrics.queries); the front-end owns its
	// shape.
	Doc map[string]any `json:"doc"`
	// Version grows with each change (the etag).
	Version int64 `json:"version"`
	// Created and Updated are the creation and last change times.
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Applied lists the devices its content was applied to, sorted.
	Applied []string `json:"applied,omitempty"`
}

// ETag is the configuration's etag (quoted).
func (c Configuration) ETag() string { return ETagOf(c.Version) }

const metaConfigPrefix = "config/"

func (c *Core) configChangeLocked(cfg *Configuration) Change {
	return Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: metaConfigPrefix + cfg.ID, Doc: mustJSON(cfg)}}
}

func (c *Core) restoreConfiguration(doc []byte) error {
	var cfg Configuration
	if err := json.Unmarshal(doc, &cfg); err != nil {
		return err
	}
	if c.configs == nil {
		c.configs = map[string]*Configuration{}
	}
	c.configs[cfg.ID] = &cfg
	return nil
}

func cloneConfig(cfg *Configuration) Configuration {
	out := *cfg
	out.Doc = deepCopyMap(cfg.Doc)
	out.Applied = slices.Clone(cfg.Applied)
	return out
}

// PutConfiguration creates (create true: ErrConflict when it exists) or
// replaces a configuration (ErrNotFound when missing, ErrPreconditionFailed
// for an ifMatch that is neither "", "*" nor its etag). A replace keeps the
// list of devices it was applied to. It returns ErrInvalid for a bad id,
// ErrQueueFull beyond MaxConfigurations, or the store's error.
func (c *Core) PutConfiguration(id string, create bool, ifMatch string, doc map[string]any) (Configuration, error) {
	if err := ValidID(id); err != nil {
		return Configuration{}, fmt.Errorf("configuration: %w", err)
	}
	doc = deepCopyMap(doc)
	c.mu.Lock()
	if c.configs == nil {
		c.configs = map[string]*Configuration{}
	}
	cur, exists := c.configs[id]
	var err error
	switch {
	case create && exists:
		err = fmt.Errorf("%w: configuration %q", ErrConflict, id)
	case !create && !exists:
		err = fmt.Errorf("%w: configuration %q", ErrNotFound, id)
	case exists && !etagMatches(ifMatch, cur.ETag()):
		err = fmt.Errorf("%w: configuration %q", ErrPreconditionFailed, id)
	case !exists && len(c.configs) >= MaxConfigurations:
		err = fmt.Errorf("%w: the hub has %d configurations", ErrQueueFull, MaxConfigurations)
	}
	if err != nil {
		c.mu.Unlock()
		return Configuration{}, err
	}
	now := c.now()
	next := &Configuration{ID: id, Doc: doc, Version: 1, Created: now, Updated: now}
	if exists {
		next.Version, next.Created, next.Applied = cur.Version+1, cur.Created, cur.Applied
	}
	c.configs[id] = next
	out := cloneConfig(next)
	staged := c.stageLocked(c.configChangeLocked(next))
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return Configuration{}, err
	}
	return out, nil
}

// Configuration returns one configuration, or ErrNotFound.
func (c *Core) Configuration(id string) (Configuration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg, ok := c.configs[id]
	if !ok {
		return Configuration{}, fmt.Errorf("%w: configuration %q", ErrNotFound, id)
	}
	return cloneConfig(cfg), nil
}

// Configurations lists the configurations by id.
func (c *Core) Configurations() []Configuration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Configuration, 0, len(c.configs))
	for _, cfg := range c.configs {
		out = append(out, cloneConfig(cfg))
	}
	slices.SortFunc(out, func(a, b Configuration) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// DeleteConfiguration removes a configuration (the desired properties it
// set stay, as in IoT Hub). It returns ErrNotFound or ErrPreconditionFailed.
func (c *Core) DeleteConfiguration(id, ifMatch string) error {
	c.mu.Lock()
	cur, ok := c.configs[id]
	switch {
	case !ok:
		c.mu.Unlock()
		return fmt.Errorf("%w: configuration %q", ErrNotFound, id)
	case !etagMatches(ifMatch, cur.ETag()):
		c.mu.Unlock()
		return fmt.Errorf("%w: configuration %q", ErrPreconditionFailed, id)
	}
	delete(c.configs, id)
	staged := c.stageLocked(Change{Op: OpDelete, Record: Record{Kind: KindMeta, Key: metaConfigPrefix + id}})
	c.mu.Unlock()
	return awaitNow(staged)
}

// MarkConfigurationApplied records that the configuration's content was
// applied to the devices. It returns ErrNotFound or the store's error.
func (c *Core) MarkConfigurationApplied(id string, deviceIDs []string) error {
	c.mu.Lock()
	cur, ok := c.configs[id]
	if !ok {
		c.mu.Unlock()
		return fmt.Errorf("%w: configuration %q", ErrNotFound, id)
	}
	applied := slices.Clone(cur.Applied)
	for _, d := range deviceIDs {
		if !slices.Contains(applied, d) {
			applied = append(applied, d)
		}
	}
	slices.Sort(applied)
	cur.Applied = applied
	staged := c.stageLocked(c.configChangeLocked(cur))
	c.mu.Unlock()
	return awaitNow(staged)
}
