package export

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// ErrNotFound reports an unknown destination or export (the core's).
var ErrNotFound = core.ErrNotFound

// ErrConflict reports a destination still named by an export (the core's).
var ErrConflict = core.ErrConflict

// destinationView is d as the API shows it: secrets masked, status set;
// m.mu held.
func (m *Manager) destinationView(st *destState) Destination {
	d := st.cfg.Masked()
	d.Status = m.destStatusLocked(st)
	return d
}

func (m *Manager) destStatusLocked(st *destState) Status {
	s := Status{Status: "waiting", LastExportTime: formatTime(st.last)}
	switch {
	case len(st.errs()) > 0:
		s.Status = "error"
		s.Errors = st.errs()
	case !st.last.IsZero():
		s.Status = "healthy"
	}
	return s
}

// exportView is e as the API shows it, with its status; m.mu held.
func (m *Manager) exportView(e *exportState) Export {
	out := e.cfg
	out.Destinations = slices.Clone(e.cfg.Destinations)
	out.Enrichments = maps.Clone(e.cfg.Enrichments)
	s := Status{LastExportTime: formatTime(e.last)}
	for _, r := range e.cfg.Destinations {
		if d := m.dests[r.ID]; d != nil {
			for _, de := range d.errs() {
				s.Errors = append(s.Errors, DataExportError{Code: de.Code, Message: "destination " + r.ID + ": " + de.Message})
			}
		}
	}
	switch {
	case !e.cfg.Enabled:
		s.Status = "notStarted"
		s.Errors = nil
	case len(s.Errors) > 0:
		s.Status = "error"
	case !e.last.IsZero():
		s.Status = "healthy"
	default:
		s.Status = "starting"
	}
	out.Status = s
	return out
}

// Destinations returns every destination, sorted by id, as the API shows
// them (secrets masked, with their status).
func (m *Manager) Destinations() []Destination {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Destination, 0, len(m.dests))
	for _, id := range slices.Sorted(maps.Keys(m.dests)) {
		out = append(out, m.destinationView(m.dests[id]))
	}
	return out
}

// Destination returns one destination as the API shows it, or ErrNotFound.
func (m *Manager) Destination(id string) (Destination, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.dests[id]
	if !ok {
		return Destination{}, fmt.Errorf("%w: destination %q", ErrNotFound, id)
	}
	return m.destinationView(st), nil
}

// StoredDestination returns one destination with its secrets (for a
// merge patch), or ErrNotFound.
func (m *Manager) StoredDestination(id string) (Destination, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.dests[id]
	if !ok {
		return Destination{}, fmt.Errorf("%w: destination %q", ErrNotFound, id)
	}
	return st.cfg, nil
}

// PutDestination creates or replaces destination d (status fields are
// ignored; a secret sent back masked keeps the stored one), stores it and
// returns it as the API shows it. Queued messages stay queued and go to
// the new configuration. Errors: ErrInvalid, the store's error.
func (m *Manager) PutDestination(d Destination) (Destination, error) {
	d.Status = Status{}
	m.mu.Lock()
	if old, ok := m.dests[d.ID]; ok {
		d = keepSecrets(d, old.cfg)
	}
	m.mu.Unlock()
	if err := CheckDestination(d); err != nil {
		return Destination{}, err
	}
	doc, err := json.Marshal(d)
	if err != nil {
		return Destination{}, fmt.Errorf("export: destination %q: %w", d.ID, err)
	}
	if err := m.c.PutAppDoc(destinationsCollection, d.ID, doc); err != nil {
		return Destination{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if st, ok := m.dests[d.ID]; ok {
		st.cfg = d
		st.gen++
		st.sendErr = nil
		select {
		case st.wake <- struct{}{}:
		default:
		}
	} else {
		m.startDest(d)
	}
	return m.destinationView(m.dests[d.ID]), nil
}

// DeleteDestination removes a destination and drops its queue. Errors:
// ErrNotFound, ErrConflict while an export names it, the store's error.
func (m *Manager) DeleteDestination(id string) error {
	m.mu.Lock()
	st, ok := m.dests[id]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("%w: destination %q", ErrNotFound, id)
	}
	for _, eid := range slices.Sorted(maps.Keys(m.exports)) {
		if slices.ContainsFunc(m.exports[eid].cfg.Destinations, func(r DestinationRef) bool { return r.ID == id }) {
			m.mu.Unlock()
			return fmt.Errorf("%w: destination %q is used by export %q; remove it from the export first", ErrConflict, id, eid)
		}
	}
	m.mu.Unlock()
	if err := m.c.DeleteAppDoc(destinationsCollection, id); err != nil {
		return err
	}
	m.mu.Lock()
	if m.dests[id] == st {
		delete(m.dests, id)
		close(st.stop)
	}
	m.mu.Unlock()
	return nil
}

// Exports returns every export, sorted by id, with its status.
func (m *Manager) Exports() []Export {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Export, 0, len(m.exports))
	for _, id := range slices.Sorted(maps.Keys(m.exports)) {
		out = append(out, m.exportView(m.exports[id]))
	}
	return out
}

// Export returns one export with its status, or ErrNotFound.
func (m *Manager) Export(id string) (Export, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.exports[id]
	if !ok {
		return Export{}, fmt.Errorf("%w: export %q", ErrNotFound, id)
	}
	return m.exportView(e), nil
}

// PutExport creates or replaces export e (status fields ignored), stores
// it and returns it with its status. It exports what happens from then
// on. Errors: ErrInvalid (CheckExport: a bad field, an unknown
// destination, a filter outside the served subset), the store's error.
func (m *Manager) PutExport(e Export) (Export, error) {
	e.Status = Status{}
	m.mu.Lock()
	err := CheckExport(e, func(id string) bool { _, ok := m.dests[id]; return ok })
	m.mu.Unlock()
	if err != nil {
		return Export{}, err
	}
	f, err := ParseFilter(e.Filter, e.Source)
	if e.Filter == "" {
		f, err = nil, nil
	}
	if err != nil {
		return Export{}, err
	}
	doc, err := json.Marshal(e)
	if err != nil {
		return Export{}, fmt.Errorf("export: export %q: %w", e.ID, err)
	}
	if err := m.c.PutAppDoc(exportsCollection, e.ID, doc); err != nil {
		return Export{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.exports[e.ID]
	if st == nil {
		st = &exportState{}
		m.exports[e.ID] = st
	}
	if e.Enabled && !st.cfg.Enabled {
		st.since = m.seq // from now on: not what was observed before
	}
	st.cfg, st.filter = e, f
	return m.exportView(st), nil
}

// DeleteExport removes an export; its messages not yet delivered are
// dropped. Errors: ErrNotFound, the store's error.
func (m *Manager) DeleteExport(id string) error {
	m.mu.Lock()
	_, ok := m.exports[id]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: export %q", ErrNotFound, id)
	}
	if err := m.c.DeleteAppDoc(exportsCollection, id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.exports, id)
	for _, d := range m.dests {
		d.queue = slices.DeleteFunc(d.queue, func(q queued) bool { return q.export == id })
	}
	return nil
}

// ExportsOf returns the exports that send to destination id, or
// ErrNotFound for an unknown destination.
func (m *Manager) ExportsOf(id string) ([]Export, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.dests[id]; !ok {
		return nil, fmt.Errorf("%w: destination %q", ErrNotFound, id)
	}
	var out []Export
	for _, eid := range slices.Sorted(maps.Keys(m.exports)) {
		e := m.exports[eid]
		if slices.ContainsFunc(e.cfg.Destinations, func(r DestinationRef) bool { return r.ID == id }) {
			out = append(out, m.exportView(e))
		}
	}
	return out, nil
}

// DestinationsOf returns the destinations of export id (as the API shows
// them), or ErrNotFound for an unknown export.
func (m *Manager) DestinationsOf(id string) ([]Destination, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.exports[id]
	if !ok {
		return nil, fmt.Errorf("%w: export %q", ErrNotFound, id)
	}
	var out []Destination
	for _, r := range e.cfg.Destinations {
		if st := m.dests[r.ID]; st != nil {
			out = append(out, m.destinationView(st))
		}
	}
	return out, nil
}
