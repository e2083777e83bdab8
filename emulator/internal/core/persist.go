package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/sas"
	"github.com/iotc-go/iotc/emulator/internal/twin"
	"github.com/iotc-go/iotc/emulator/internal/wire"
)

// DataDirFile is the name of the state file inside Options.DataDir.
const DataDirFile = "state.json"

// DataDirSaveInterval is how often a running emulator with a DataDir checks
// for changes and rewrites its state file; Close always writes it.
const DataDirSaveInterval = time.Second

// dataFormat is the version of the state file layout; another value is refused.
const dataFormat = 1

// snapshot is the state file.
type snapshot struct {
	Format  int           `json:"format"`
	IDScope string        `json:"idScope"`
	Groups  []groupState  `json:"enrollmentGroups"`
	Devices []deviceState `json:"devices"`
}

type groupState struct {
	ID           string `json:"id"`
	DisplayName  string `json:"displayName,omitempty"`
	Enabled      bool   `json:"enabled"`
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
	CACertPEM    string `json:"caCertPem,omitempty"`
}

type deviceState struct {
	ID             string     `json:"id"`
	DisplayName    string     `json:"displayName,omitempty"`
	ModelID        string     `json:"modelId,omitempty"`
	Enabled        bool       `json:"enabled"`
	Provisioned    bool       `json:"provisioned"`
	GroupID        string     `json:"groupId,omitempty"`
	Attestation    string     `json:"attestation"`
	IndividualKeys [2]string  `json:"individualKeys"`
	GroupKeys      [2]string  `json:"groupKeys"`
	Created        time.Time  `json:"created"`
	LastActivity   time.Time  `json:"lastActivity"`
	Desired        twin.State `json:"desired"`
	Reported       twin.State `json:"reported"`
	C2D            []c2dState `json:"cloudToDevice,omitempty"`
}

type c2dState struct {
	ID         string            `json:"messageId"`
	Topic      string            `json:"topic"`
	Properties map[string]string `json:"properties,omitempty"`
	Body       []byte            `json:"body"`
	Deliveries int               `json:"deliveries,omitempty"`
}

// dataFilePath is the state file of dir.
func dataFilePath(dir string) string { return filepath.Join(dir, DataDirFile) }

// loadDataDir creates dir (mode 0700) when missing and decodes its state file; it
// returns nil, nil when there is none yet.
func loadDataDir(dir string) (*snapshot, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("emulator: data directory: %w", err)
	}
	path := dataFilePath(dir)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrDataFile, path, err)
	}
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %s (fix or remove it): %w", ErrDataFile, path, err)
	}
	if s.Format != dataFormat {
		return nil, fmt.Errorf("%w: %s: format %d, want %d", ErrDataFile, path, s.Format, dataFormat)
	}
	if s.IDScope == "" {
		return nil, fmt.Errorf("%w: %s: no idScope", ErrDataFile, path)
	}
	return &s, nil
}

// Load creates the data directory when missing and applies its state file
// when there is one (the ID scope and groups unless explicit, and every
// device), then writes the state at once and starts saving it every
// DataDirSaveInterval until Close. Call it once, before any front-end
// serves; it does nothing without Config.DataDir. Errors wrap ErrDataFile
// for a state file that cannot be read or decoded.
func (c *Core) Load() error {
	if c.cfg.DataDir == "" {
		return nil
	}
	snap, err := loadDataDir(c.cfg.DataDir)
	if err != nil {
		return err
	}
	if snap != nil {
		if err := c.restore(snap); err != nil {
			return err
		}
	}
	c.saveMu.Lock()
	c.persist = true
	c.saveMu.Unlock()
	if err := c.Save(); err != nil {
		return err
	}
	c.wg.Add(1)
	go c.runSaver()
	return nil
}

// restore applies a loaded snapshot to a new model (before it serves).
func (c *Core) restore(s *snapshot) error {
	path := dataFilePath(c.cfg.DataDir)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrDataFile, path, fmt.Sprintf(format, args...))
	}
	if !c.cfg.ExplicitScope {
		c.cfg.IDScope = s.IDScope
	}
	if !c.cfg.ExplicitGroups {
		var groups []EnrollmentGroup
		seen := map[string]bool{}
		for _, gs := range s.Groups {
			g, err := NormalizeGroup(EnrollmentGroup{ID: gs.ID, DisplayName: gs.DisplayName, Enabled: gs.Enabled,
				PrimaryKey: gs.PrimaryKey, SecondaryKey: gs.SecondaryKey, CACertPEM: []byte(gs.CACertPEM)})
			if err != nil {
				return bad("%v", err)
			}
			if !g.IsX509() && (gs.PrimaryKey == "" || gs.SecondaryKey == "") {
				return bad("enrollment group %s has no keys", gs.ID)
			}
			if seen[g.ID] {
				return bad("enrollment group %s listed twice", g.ID)
			}
			seen[g.ID] = true
			groups = append(groups, g)
		}
		c.groups = groups
	}
	devices := make(map[string]*device, len(s.Devices))
	for _, ds := range s.Devices {
		if err := ValidID(ds.ID); err != nil {
			return bad("device: %v", err)
		}
		if _, dup := devices[ds.ID]; dup {
			return bad("device %s listed twice", ds.ID)
		}
		d := &device{
			id: ds.ID, displayName: ds.DisplayName, modelID: ds.ModelID, enabled: ds.Enabled, provisioned: ds.Provisioned,
			groupID: ds.GroupID, indivKeys: ds.IndividualKeys, groupKeys: ds.GroupKeys,
			created: ds.Created, lastActivity: ds.LastActivity, telemetry: map[string]map[string]TelemetryValue{},
		}
		if d.displayName == "" {
			d.displayName = d.id
		}
		switch ds.Attestation {
		case AttestationSymmetricKey:
		case AttestationX509:
			d.x509 = true
		default:
			return bad("device %s: attestation %q", ds.ID, ds.Attestation)
		}
		for _, k := range append(ds.IndividualKeys[:], ds.GroupKeys[:]...) {
			if k == "" {
				continue
			}
			if err := sas.ValidKey(k); err != nil {
				return bad("device %s: a key is not base64", ds.ID)
			}
		}
		var err error
		if d.desired, err = twin.Restore(ds.Desired, true, wire.MaxTwinSectionLen); err != nil {
			return bad("device %s desired properties: %v", ds.ID, err)
		}
		if d.reported, err = twin.Restore(ds.Reported, false, wire.MaxTwinSectionLen); err != nil {
			return bad("device %s reported properties: %v", ds.ID, err)
		}
		if len(ds.C2D) > MaxC2DQueue {
			return bad("device %s: %d cloud-to-device messages, at most %d", ds.ID, len(ds.C2D), MaxC2DQueue)
		}
		prefix := wire.C2DFilterPrefix(ds.ID)
		for _, cs := range ds.C2D {
			if cs.ID == "" || !strings.HasPrefix(cs.Topic, prefix) || len(cs.Body) > MaxC2DBody || cs.Deliveries < 0 {
				return bad("device %s: bad cloud-to-device message %q", ds.ID, cs.ID)
			}
			m := &c2dMsg{id: cs.ID, props: map[string]string{}, body: cs.Body, deliveries: cs.Deliveries}
			for k, v := range cs.Properties {
				m.props[k] = v
			}
			d.c2d = append(d.c2d, m)
		}
		devices[d.id] = d
	}
	c.devices = devices
	return nil
}

// snapshotLocked encodes the state file; c.mu held.
func (c *Core) snapshotLocked() ([]byte, error) {
	s := snapshot{Format: dataFormat, IDScope: c.cfg.IDScope, Groups: []groupState{}, Devices: []deviceState{}}
	for _, g := range c.groups {
		s.Groups = append(s.Groups, groupState{ID: g.ID, DisplayName: g.DisplayName, Enabled: g.Enabled,
			PrimaryKey: g.PrimaryKey, SecondaryKey: g.SecondaryKey, CACertPEM: string(g.CACertPEM)})
	}
	for _, d := range c.devices {
		ds := deviceState{
			ID: d.id, DisplayName: d.displayName, ModelID: d.modelID, Enabled: d.enabled, Provisioned: d.provisioned,
			GroupID: d.groupID, Attestation: AttestationSymmetricKey, IndividualKeys: d.indivKeys, GroupKeys: d.groupKeys,
			Created: d.created, LastActivity: d.lastActivity, Desired: d.desired.State(), Reported: d.reported.State(),
		}
		if d.x509 {
			ds.Attestation = AttestationX509
		}
		for _, m := range d.c2d {
			ds.C2D = append(ds.C2D, c2dState{ID: m.id, Topic: wire.C2DTopic(d.id, m.id, m.props), Properties: m.props, Body: m.body, Deliveries: m.deliveries})
		}
		s.Devices = append(s.Devices, ds)
	}
	// Sorted devices keep the file stable, so an unchanged state is not rewritten.
	slices.SortFunc(s.Devices, func(a, b deviceState) int { return strings.Compare(a.ID, b.ID) })
	return json.MarshalIndent(s, "", "  ")
}

// Save writes the state file when it differs from the last one written.
// It does nothing without a DataDir or before Load.
func (c *Core) Save() error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	if !c.persist {
		return nil
	}
	c.mu.Lock()
	b, err := c.snapshotLocked()
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("emulator: encode state: %w", err)
	}
	if bytes.Equal(b, c.lastSaved) {
		return nil
	}
	if err := writeFileAtomic(dataFilePath(c.cfg.DataDir), b); err != nil {
		return err
	}
	c.lastSaved = b
	return nil
}

// runSaver saves the state every DataDirSaveInterval until Close.
func (c *Core) runSaver() {
	defer c.wg.Done()
	t := time.NewTicker(DataDirSaveInterval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			if err := c.Save(); err != nil {
				c.log.Warn("state not saved to the data directory", "error", err)
			}
		}
	}
}

// writeFileAtomic replaces path with b: a temporary file in the same
// directory (mode 0600), synced, renamed over path, then the directory synced.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("emulator: save state: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("emulator: save state: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(b); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("emulator: save state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("emulator: save state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
