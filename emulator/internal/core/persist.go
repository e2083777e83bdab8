package core

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// The model keeps its working state in memory and, with Config.Store,
// commits every change through the store before the use case returns:
// each use case stages its changes while it holds c.mu (so the store sees
// them in the model's order) and waits for them after unlocking, before
// the front-end acknowledges. Only the time of a device's last activity
// is not committed on its own: it is saved with the device's next change.

// groupDoc is a stored enrollment group.
type groupDoc struct {
	groupState
	// Order keeps the groups in creation order across a restart.
	Order int64 `json:"order"`
}

// telemetryDoc is a stored telemetry message. A JSON body is kept as JSON
// (readable with json_extract), any other body in BodyBase64.
type telemetryDoc struct {
	ModuleID        string            `json:"moduleId,omitempty"`
	Component       string            `json:"component,omitempty"`
	MessageID       string            `json:"messageId,omitempty"`
	CorrelationID   string            `json:"correlationId,omitempty"`
	ContentType     string            `json:"contentType,omitempty"`
	ContentEncoding string            `json:"contentEncoding,omitempty"`
	AuthMethod      string            `json:"authMethod,omitempty"`
	Body            json.RawMessage   `json:"body,omitempty"`
	BodyBase64      []byte            `json:"bodyBase64,omitempty"`
	Properties      map[string]string `json:"properties,omitempty"`
	System          map[string]string `json:"system,omitempty"`
	Received        time.Time         `json:"received"`
}

// authCodes shorten the auth method in stored telemetry (every message
// carries it); authMethods expand them. Another auth method is stored as
// it is (authCode, authMethodOf).
var (
	authCodes   = map[string]string{AuthMethodSAS: "sas", AuthMethodX509: "x509", AuthMethodPolicy: "policy"}
	authMethods = map[string]string{"sas": AuthMethodSAS, "x509": AuthMethodX509, "policy": AuthMethodPolicy}
)

func authCode(method string) string {
	if c, ok := authCodes[method]; ok {
		return c
	}
	return method
}

func authMethodOf(code string) string {
	if m, ok := authMethods[code]; ok {
		return m
	}
	return code
}

// certDoc is a proven enrollment group certificate.
type certDoc struct {
	Group      string `json:"group"`
	Thumbprint string `json:"thumbprint"`
}

// stageLocked hands one atomic unit of changes to the store; c.mu held. It
// returns nil without a store.
func (c *Core) stageLocked(changes ...Change) <-chan error {
	if c.store == nil || len(changes) == 0 {
		return nil
	}
	return c.store.Apply(changes)
}

// await waits until a staged unit is durable. A nil channel (no store) is
// durable at once. It returns ctx.Err() when ctx ends first (the change
// may still be committed) and an error wrapping ErrStore when the commit
// failed.
func await(ctx context.Context, ch <-chan error) error {
	if ch == nil {
		return nil
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// awaitNow is await without a deadline: the store answers every unit,
// at the latest when it is closed.
func awaitNow(ch <-chan error) error { return await(context.Background(), ch) }

// durable reports whether changes are committed to a store.
func (c *Core) durable() bool { return c.store != nil }

// mustJSON encodes a document of the model. Every document is made of
// strings, numbers, maps and slices that were JSON already (twin patches
// are checked by encoding them first), so encoding cannot fail; if it ever
// did, the empty document makes the store refuse the change with ErrStore
// and the request fails, instead of the emulator panicking.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// deviceChangeLocked is the put of d's document; c.mu held.
func (c *Core) deviceChangeLocked(d *device) Change {
	ds := deviceState{
		ID: d.id, DisplayName: d.displayName, ModelID: d.modelID, Enabled: d.enabled, Provisioned: d.provisioned,
		GroupID: d.groupID, Attestation: AttestationSymmetricKey, IndividualKeys: d.indivKeys, GroupKeys: d.groupKeys,
		Created: d.created, LastActivity: d.lastActivity, Desired: d.desired.State(), Reported: d.reported.State(),
		Version: d.version, Tags: d.tags, TagsVersion: d.tagsVersion, StatusReason: d.statusReason,
		Thumbprints: d.thumbprints, IotEdge: d.edge, DeviceScope: d.deviceScope, ParentScopes: d.parentScopes,
	}
	if d.x509 {
		ds.Attestation = AttestationX509
	}
	if s := c.ext.settings[d.id]; s != nil {
		ds.Template, ds.Simulated, ds.Organizations = s.template, s.simulated, s.organizations
	}
	return Change{Op: OpPut, Record: Record{Kind: KindDevice, Key: d.id, Doc: mustJSON(ds)}}
}

// stageDeviceLocked stages the put of d's document; c.mu held.
func (c *Core) stageDeviceLocked(d *device) <-chan error {
	if !c.durable() {
		return nil
	}
	return c.stageLocked(append([]Change{c.deviceChangeLocked(d)}, c.takeSunkLocked()...)...)
}

func c2dChange(deviceID string, m *c2dMsg) Change {
	return Change{Op: OpPut, Record: Record{Kind: KindC2D, Device: deviceID, Key: m.id, Seq: m.seq,
		Doc: mustJSON(c2dState{ID: m.id, Properties: m.props, Body: m.body, Deliveries: m.deliveries, Ack: m.ack, Enqueued: m.enqueued, Expiry: m.expiry, CorrelationID: m.cid, UserID: m.uid})}}
}

func groupChange(g EnrollmentGroup, order int64) Change {
	gs := groupState{ID: g.ID, DisplayName: g.DisplayName, Enabled: g.Enabled,
		PrimaryKey: g.PrimaryKey, SecondaryKey: g.SecondaryKey, CACertPEM: string(g.CACertPEM), Type: g.Type, DPS: g.DPS, ETag: g.ETag}
	return Change{Op: OpPut, Record: Record{Kind: KindGroup, Key: g.ID, Doc: mustJSON(groupDoc{groupState: gs, Order: order})}}
}

func telemetryChange(seq int64, t Telemetry) Change {
	return Change{Op: OpPut, Record: Record{Kind: KindTelemetry, Device: t.DeviceID, Seq: seq, Doc: appendTelemetryDoc(nil, t)}}
}

// appendTelemetryDoc appends t as a telemetryDoc in JSON, as json.Marshal
// would write it (maps unsorted): written once per acknowledged message, it
// is encoded by hand (about three times cheaper than by reflection).
func appendTelemetryDoc(b []byte, t Telemetry) []byte {
	b = append(b, '{')
	n := 0
	field := func(name string) {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':')
	}
	str := func(name, v string) {
		if v != "" {
			field(name)
			b = appendJSONString(b, v)
		}
	}
	str("moduleId", t.ModuleID)
	str("component", t.Component)
	str("messageId", t.MessageID)
	str("correlationId", t.CorrelationID)
	str("contentType", t.ContentType)
	str("contentEncoding", t.ContentEncoding)
	str("authMethod", authCode(t.AuthMethod))
	switch {
	case json.Valid(t.Body):
		field("body")
		b = append(b, t.Body...)
	case len(t.Body) > 0:
		field("bodyBase64")
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, t.Body)
		b = append(b, '"')
	}
	for _, m := range []struct {
		name string
		m    map[string]string
	}{{"properties", t.Properties}, {"system", t.System}} {
		if len(m.m) == 0 {
			continue
		}
		field(m.name)
		b = append(b, '{')
		i := 0
		for k, v := range m.m {
			if i > 0 {
				b = append(b, ',')
			}
			i++
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, v)
		}
		b = append(b, '}')
	}
	field("received")
	b = append(b, '"')
	b = t.Received.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	return append(b, '}')
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it (without its HTML escaping): quotes, backslashes and control
// characters escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029
// escaped.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Load fills the model from Config.Store: first, when the store is empty
// and Config.LegacyStateFile names an existing file, that file is imported
// into the store and renamed with ".imported". Call it once, before any
// front-end serves; without a store it does nothing. Errors wrap ErrStore
// (the store failed) or ErrDataFile (a stored record or the legacy file is
// not valid).
func (c *Core) Load(ctx context.Context) error {
	if c.store == nil {
		return nil
	}
	recs, err := c.store.Load(ctx)
	if err != nil {
		return err
	}
	if len(recs) == 0 && c.cfg.LegacyStateFile != "" {
		return c.importLegacy(ctx)
	}
	if err := c.restoreRecords(recs); err != nil {
		return err
	}
	// The ID scope and groups in use are the store's from now on (explicit
	// options win over stored ones, and replace them).
	c.mu.Lock()
	changes := append(c.metaAndGroupsLocked(), c.pendingLoad...)
	c.pendingLoad = nil
	for _, r := range recs {
		if r.Kind == KindGroup {
			if _, ok := c.group(r.Key); !ok {
				changes = append(changes, Change{Op: OpDelete, Record: Record{Kind: KindGroup, Key: r.Key}})
			}
		}
	}
	ch := c.stageLocked(changes...)
	c.mu.Unlock()
	if err := awaitNow(ch); err != nil {
		return err
	}
	c.resumeJobs()
	return nil
}

// metaAndGroupsLocked is the put of the ID scope and every group; c.mu held.
func (c *Core) metaAndGroupsLocked() []Change {
	out := []Change{{Op: OpPut, Record: Record{Kind: KindMeta, Key: "idScope", Doc: mustJSON(c.cfg.IDScope)}}, c.policiesChangeLocked(), c.dpsPolicyChangeLocked()}
	for i, g := range c.groups {
		out = append(out, groupChange(g, int64(i)))
	}
	return out
}

// importLegacy moves a legacy state file into the empty store.
func (c *Core) importLegacy(ctx context.Context) error {
	path := c.cfg.LegacyStateFile
	snap, err := loadLegacy(path)
	if err != nil {
		return err
	}
	if snap != nil {
		if err := c.restore(snap, path); err != nil {
			return err
		}
	}
	c.mu.Lock()
	changes := c.metaAndGroupsLocked()
	for _, d := range c.devices {
		changes = append(changes, c.deviceChangeLocked(d))
		for _, m := range d.c2d {
			changes = append(changes, c2dChange(d.id, m))
		}
	}
	ch := c.stageLocked(changes...)
	c.mu.Unlock()
	if err := await(ctx, ch); err != nil {
		return err
	}
	if snap != nil {
		if err := os.Rename(path, path+".imported"); err != nil {
			return fmt.Errorf("emulator: imported %s but cannot rename it: %w", path, err)
		}
		c.log.Info("legacy state file imported into the database", "file", path, "devices", len(snap.Devices))
	}
	return nil
}

// restoreRecords rebuilds the model from stored records.
func (c *Core) restoreRecords(recs []Record) error {
	bad := func(r Record, err error) error {
		return fmt.Errorf("%w: stored %s record %q/%q: %v", ErrDataFile, r.Kind, r.Device, r.Key, err)
	}
	snap := &snapshot{Format: dataFormat}
	var groups []groupDoc
	c2d := map[string][]c2dState{}
	c2dSeq := map[string][]int64{}
	type seqDoc struct {
		seq int64
		doc []byte
	}
	telemetry := map[string][]seqDoc{}
	commands := map[string][]seqDoc{}
	var templates, certs, tokens, appDocs []Record
	for _, r := range recs {
		var err error
		switch r.Kind {
		case KindMeta:
			switch {
			case r.Key == "idScope":
				err = json.Unmarshal(r.Doc, &snap.IDScope)
			case r.Key == metaPolicies:
				err = c.restorePolicies(r.Doc)
			case r.Key == metaFeedback:
				err = c.restoreFeedback(r.Doc)
			case r.Key == metaFileUploads:
				err = c.restoreFileUploads(r.Doc)
			case strings.HasPrefix(r.Key, metaJobPrefix):
				err = c.restoreJob(r.Doc)
			case strings.HasPrefix(r.Key, metaConfigPrefix):
				err = c.restoreConfiguration(r.Doc)
			case strings.HasPrefix(r.Key, apiTokenKeyPrefix):
				tokens = append(tokens, r)
			case strings.HasPrefix(r.Key, appDocKeyPrefix):
				appDocs = append(appDocs, r)
			case strings.HasPrefix(r.Key, metaDPSPrefix):
				err = c.restoreDPS(r.Key, r.Doc)
			}
		case KindGroup:
			var g groupDoc
			err = json.Unmarshal(r.Doc, &g)
			groups = append(groups, g)
		case KindDevice:
			var ds deviceState
			err = json.Unmarshal(r.Doc, &ds)
			snap.Devices = append(snap.Devices, ds)
		case KindC2D:
			var m c2dState
			err = json.Unmarshal(r.Doc, &m)
			c2d[r.Device] = append(c2d[r.Device], m)
			c2dSeq[r.Device] = append(c2dSeq[r.Device], r.Seq)
		case KindTelemetry:
			telemetry[r.Device] = append(telemetry[r.Device], seqDoc{r.Seq, r.Doc})
		case KindCommand:
			commands[r.Device] = append(commands[r.Device], seqDoc{r.Seq, r.Doc})
		case KindTemplate:
			templates = append(templates, r)
		case KindCert:
			certs = append(certs, r)
		case KindEvent:
			c.loadedEvents = append(c.loadedEvents, r)
		}
		if err != nil {
			return bad(r, err)
		}
	}
	slices.SortStableFunc(groups, func(a, b groupDoc) int { return cmp.Compare(a.Order, b.Order) })
	for _, g := range groups {
		snap.Groups = append(snap.Groups, g.groupState)
	}
	for i := range snap.Devices {
		snap.Devices[i].C2D = c2d[snap.Devices[i].ID]
	}
	if snap.IDScope == "" {
		snap.IDScope = c.cfg.IDScope
	}
	if err := c.restore(snap, "database"); err != nil {
		return err
	}
	for id, seqs := range c2dSeq {
		if d := c.devices[id]; d != nil {
			for i, m := range d.c2d {
				m.seq = seqs[i]
			}
			if len(seqs) > 0 {
				d.c2dSeq = seqs[len(seqs)-1]
			}
		}
	}
	for id, docs := range telemetry {
		d := c.devices[id]
		if d == nil {
			continue
		}
		for _, sd := range docs {
			var td telemetryDoc
			if err := json.Unmarshal(sd.doc, &td); err != nil {
				return bad(Record{Kind: KindTelemetry, Device: id}, err)
			}
			body := []byte(td.Body)
			if td.BodyBase64 != nil {
				body = td.BodyBase64
			}
			t := withMaps(Telemetry{DeviceID: id, ModuleID: td.ModuleID, Component: td.Component, MessageID: td.MessageID,
				CorrelationID: td.CorrelationID, ContentType: td.ContentType, ContentEncoding: td.ContentEncoding,
				AuthMethod: authMethodOf(td.AuthMethod), Body: body, Properties: td.Properties, System: td.System,
				Received: td.Received, Seq: sd.seq})
			c.telemetrySeq = max(c.telemetrySeq, sd.seq)
			c.latestLocked(d, t, jsonFields(t.Body))
			if n := c.cfg.TelemetryHistory; n > 0 {
				if len(d.history) >= n {
					drop := len(d.history) - n + 1
					for _, old := range d.history[:drop] {
						c.pendingLoad = append(c.pendingLoad, Change{Op: OpDelete, Record: Record{Kind: KindTelemetry, Device: id, Seq: old.Seq}})
					}
					d.history = slices.Delete(d.history, 0, drop)
				}
				d.history = append(d.history, t)
			} else {
				c.pendingLoad = append(c.pendingLoad, Change{Op: OpDelete, Record: Record{Kind: KindTelemetry, Device: id, Seq: sd.seq}})
			}
		}
	}
	for id, docs := range commands {
		if c.devices[id] == nil {
			continue
		}
		for _, sd := range docs {
			var rec CommandRecord
			if err := json.Unmarshal(sd.doc, &rec); err != nil {
				return bad(Record{Kind: KindCommand, Device: id}, err)
			}
			rec.seq = sd.seq
			if c.ext.commands == nil {
				c.ext.commands = map[string][]CommandRecord{}
			}
			c.ext.commands[id] = append(c.ext.commands[id], rec)
			c.ext.commandSeq = max(c.ext.commandSeq, sd.seq)
		}
	}
	for _, r := range templates {
		var doc map[string]any
		if err := json.Unmarshal(r.Doc, &doc); err != nil {
			return bad(r, err)
		}
		m, err := ParseModel(r.Key, doc)
		if err != nil {
			return bad(r, err)
		}
		if c.ext.templates == nil {
			c.ext.templates = map[string]*storedTemplate{}
		}
		c.ext.templates[r.Key] = &storedTemplate{doc: doc, model: m}
	}
	for _, r := range appDocs {
		if err := c.loadAppDoc(strings.TrimPrefix(r.Key, appDocKeyPrefix), r.Doc); err != nil {
			return bad(r, err)
		}
	}
	for _, r := range tokens {
		if err := c.loadAPIToken(r.Doc); err != nil {
			return bad(r, err)
		}
	}
	for _, r := range certs {
		var cd certDoc
		if err := json.Unmarshal(r.Doc, &cd); err != nil {
			return bad(r, err)
		}
		c.ext.markVerified(cd.Group, cd.Thumbprint)
	}
	return nil
}
