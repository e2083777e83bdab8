package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/sas"
	"github.com/iotc-go/iotc/emulator/internal/twin"
)

// LegacyStateFile is the JSON state file that data directories held before
// the state moved into a database: Load imports it into an empty store once
// and renames it with the suffix ".imported".
const LegacyStateFile = "state.json"

// dataFormat is the version of the legacy state file layout; another value
// is refused.
const dataFormat = 1

// snapshot is the legacy state file, and the form in which Load hands the
// stored groups and devices to restore.
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
	Type         string `json:"type,omitempty"` // "" (older state): iot
	// Set through the DPS service API (stored records only).
	DPS  *DPSSettings `json:"dps,omitempty"`
	ETag string       `json:"etag,omitempty"`
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
	// Set through the REST API (stored records only).
	Template      string   `json:"template,omitempty"`
	Simulated     bool     `json:"simulated,omitempty"`
	Organizations []string `json:"organizations,omitempty"`
	// Set through the IoT Hub service API (stored records only).
	Version      int64          `json:"version,omitempty"`
	Tags         map[string]any `json:"tags,omitempty"`
	TagsVersion  int64          `json:"tagsVersion,omitempty"`
	StatusReason string         `json:"statusReason,omitempty"`
	Thumbprints  []string       `json:"thumbprints,omitempty"`
	IotEdge      bool           `json:"iotEdge,omitempty"`
	DeviceScope  string         `json:"deviceScope,omitempty"`
	ParentScopes []string       `json:"parentScopes,omitempty"`
}

type c2dState struct {
	ID         string            `json:"messageId"`
	Topic      string            `json:"topic,omitempty"` // legacy file only
	Properties map[string]string `json:"properties,omitempty"`
	Body       []byte            `json:"body"`
	Deliveries int               `json:"deliveries,omitempty"`
	Ack        string            `json:"ack,omitempty"`
	Enqueued   time.Time         `json:"enqueued,omitzero"`
	Expiry     time.Time         `json:"expiry,omitzero"`
	// CorrelationID and UserID are the service's, when it set them.
	CorrelationID string `json:"correlationId,omitempty"`
	UserID        string `json:"userId,omitempty"`
}

// loadLegacy decodes a legacy state file; it returns nil, nil when there
// is none.
func loadLegacy(path string) (*snapshot, error) {
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

// restore applies a loaded snapshot to a new model (before it serves).
func (c *Core) restore(s *snapshot, path string) error {
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
				PrimaryKey: gs.PrimaryKey, SecondaryKey: gs.SecondaryKey, CACertPEM: []byte(gs.CACertPEM), Type: gs.Type, DPS: gs.DPS, ETag: gs.ETag})
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
			version: ds.Version, tags: ds.Tags, tagsVersion: ds.TagsVersion, statusReason: ds.StatusReason,
			thumbprints: ds.Thumbprints, edge: ds.IotEdge, deviceScope: ds.DeviceScope, parentScopes: ds.ParentScopes,
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
		if d.desired, err = twin.Restore(ds.Desired, true, twin.MaxTwinSectionLen); err != nil {
			return bad("device %s desired properties: %v", ds.ID, err)
		}
		if d.reported, err = twin.Restore(ds.Reported, false, twin.MaxTwinSectionLen); err != nil {
			return bad("device %s reported properties: %v", ds.ID, err)
		}
		if len(ds.C2D) > MaxC2DQueue {
			return bad("device %s: %d cloud-to-device messages, at most %d", ds.ID, len(ds.C2D), MaxC2DQueue)
		}
		for _, cs := range ds.C2D {
			if cs.ID == "" || len(cs.Body) > MaxC2DBody || cs.Deliveries < 0 {
				return bad("device %s: bad cloud-to-device message %q", ds.ID, cs.ID)
			}
			d.c2dSeq++
			m := &c2dMsg{id: cs.ID, seq: d.c2dSeq, props: map[string]string{}, body: cs.Body, deliveries: cs.Deliveries, ack: cs.Ack, enqueued: cs.Enqueued, expiry: cs.Expiry, cid: cs.CorrelationID, uid: cs.UserID}
			for k, v := range cs.Properties {
				m.props[k] = v
			}
			d.c2d = append(d.c2d, m)
		}
		if ds.Template != "" || ds.Simulated || len(ds.Organizations) > 0 {
			st := c.ext.settingsOf(d.id)
			st.template, st.simulated, st.organizations = ds.Template, ds.Simulated, ds.Organizations
		}
		devices[d.id] = d
	}
	c.devices = devices
	return nil
}
