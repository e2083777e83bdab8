package core

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/sas"
	"github.com/iotc-go/iotc/emulator/internal/twin"
)

// This file holds IoT Hub's module identities: a module belongs to a
// device and has its own credentials (symmetric keys or X.509
// thumbprints), registry etag, module twin and direct methods. It has no
// cloud-to-device queue (IoT Hub has none for modules) and no status of
// its own: a module of a disabled device cannot connect. A module's hub
// connection is keyed "{deviceId}/{moduleId}" (its MQTT client id) in
// Connect, AuthenticateHub and the Session; telemetry it sends goes to its
// device's history with Telemetry.ModuleID set.
//
// A module is kept as a device value whose moduleID is set, in its
// device's modules map, so the twin, link and method code paths serve
// both; it is stored as a KindMeta record "module/{deviceId}/{moduleId}"
// and deleted with its device.

// ErrModuleNotFound reports an unknown module (IoT Hub: 404
// ModuleNotFound); errors that wrap it also wrap ErrNotFound.
var ErrModuleNotFound = errors.New("emulator: module not found")

// ErrModuleExists reports the create of a module that exists (IoT Hub:
// 409 ModuleAlreadyExistsOnDevice); errors that wrap it also wrap
// ErrConflict.
var ErrModuleExists = errors.New("emulator: module already exists on the device")

// metaModulePrefix starts the KindMeta key of a stored module.
const metaModulePrefix = "module/"

// The modules IoT Hub creates with every IoT Edge device.
const (
	ModuleEdgeAgent = "$edgeAgent"
	ModuleEdgeHub   = "$edgeHub"
)

// ModuleKey is the connection key of a module: "{deviceId}/{moduleId}",
// the MQTT client id a module connects with.
func ModuleKey(deviceID, moduleID string) string { return deviceID + "/" + moduleID }

// SplitKey splits a connection key into its device and module ids; the
// module id is "" for a device key.
func SplitKey(key string) (deviceID, moduleID string) {
	deviceID, moduleID, _ = strings.Cut(key, "/")
	return deviceID, moduleID
}

func errNoModule(deviceID, moduleID string) error {
	return fmt.Errorf("%w: %w: module %q on device %q", ErrNotFound, ErrModuleNotFound, moduleID, deviceID)
}

// entityLocked returns the device of a device key or the module of a
// module key ("{deviceId}/{moduleId}"); c.mu held. Errors wrap ErrNotFound
// (and ErrModuleNotFound for a missing module of an existing device).
func (c *Core) entityLocked(key string) (*device, error) {
	dev, mod, isMod := strings.Cut(key, "/")
	d, ok := c.devices[dev]
	if !ok {
		return nil, errNoDevice(dev)
	}
	if !isMod {
		return d, nil
	}
	m, ok := d.modules[mod]
	if !ok {
		return nil, errNoModule(dev, mod)
	}
	return m, nil
}

// entityOK is entityLocked without the error; c.mu held.
func (c *Core) entityOK(key string) (*device, bool) {
	d, err := c.entityLocked(key)
	return d, err == nil
}

// enabledLocked reports whether d (a device or a module) may connect: a
// module follows its device's status; c.mu held.
func (c *Core) enabledLocked(d *device) bool {
	if d.moduleID != "" {
		p := c.devices[d.id]
		return p != nil && p.enabled
	}
	return d.enabled
}

// HubModule is a module identity as IoT Hub's registry shows it.
type HubModule struct {
	// DeviceID and ModuleID name the module.
	DeviceID, ModuleID string
	// ManagedBy is stored and shown ("" when not set).
	ManagedBy string
	// ETag changes with every change of the identity; Generation is the
	// number it encodes.
	ETag       string
	Generation int64
	// GenerationID tells a module from an earlier one of the same id.
	GenerationID string
	// PrimaryKey and SecondaryKey are the symmetric keys; empty for X.509.
	PrimaryKey, SecondaryKey string
	// Thumbprints are those of a selfSigned module (upper-case hex).
	Thumbprints []string
	// Connected reports a live hub connection of the module.
	Connected bool
	// Created is when it was created; LastActivity its last connect,
	// message or request.
	Created, LastActivity time.Time
}

// HubAuthType is "selfSigned" for a module with thumbprints, else "sas".
func (m HubModule) HubAuthType() string {
	if len(m.Thumbprints) > 0 {
		return "selfSigned"
	}
	return "sas"
}

// HubModuleSpec is what a module PUT sets.
type HubModuleSpec struct {
	// ManagedBy is stored and shown.
	ManagedBy string
	// PrimaryKey and SecondaryKey are the symmetric keys; an empty key is
	// generated on create and kept on update.
	PrimaryKey, SecondaryKey string
	// Thumbprints, when not empty, make the module a selfSigned X.509
	// module (at most 2; SHA-1 or SHA-256 hex, ':' allowed).
	Thumbprints []string
	// CertificateAuthority is refused with ErrInvalid: the emulator does
	// not authenticate modules with a CA chain.
	CertificateAuthority bool
}

// GenerationID is the generationId the registry shows for something
// created at t.
func GenerationID(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

func (c *Core) hubModuleLocked(m *device) HubModule {
	return HubModule{DeviceID: m.id, ModuleID: m.moduleID, ManagedBy: m.managedBy, ETag: ETagOf(m.version),
		Generation: m.version, GenerationID: GenerationID(m.created), PrimaryKey: m.indivKeys[0], SecondaryKey: m.indivKeys[1],
		Thumbprints: slices.Clone(m.thumbprints), Connected: m.link != nil, Created: m.created, LastActivity: m.lastActivity}
}

// newModule returns module moduleID of device deviceID with fresh keys.
func newModule(deviceID, moduleID string, now time.Time) *device {
	m := newDevice(deviceID, now)
	m.moduleID, m.displayName = moduleID, moduleID
	m.indivKeys = [2]string{RandomKey(), RandomKey()}
	return m
}

// PutHubModule creates (create true) or updates module moduleID of
// device deviceID. Errors: ErrInvalid (a bad id, key or thumbprint, keys
// with thumbprints, a CA module), ErrNotFound (no such device; on update
// no such module, wrapping ErrModuleNotFound), ErrConflict wrapping
// ErrModuleExists (create of an existing module), ErrPreconditionFailed
// (ifMatch neither "", "*" nor the module's etag), the store's error.
// Changing the credentials of a connected module drops its connection.
func (c *Core) PutHubModule(deviceID, moduleID string, create bool, ifMatch string, spec HubModuleSpec) (HubModule, error) {
	if err := ValidID(moduleID); err != nil {
		return HubModule{}, fmt.Errorf("module: %w", err)
	}
	if spec.CertificateAuthority {
		return HubModule{}, fmt.Errorf("%w: certificateAuthority modules are not supported by the emulator (use sas or selfSigned)", ErrInvalid)
	}
	tps, err := hubCredentials(spec.PrimaryKey, spec.SecondaryKey, spec.Thumbprints)
	if err != nil {
		return HubModule{}, err
	}
	if len(tps) > 0 && (spec.PrimaryKey != "" || spec.SecondaryKey != "") {
		return HubModule{}, fmt.Errorf("%w: a module has keys or thumbprints, one of them", ErrInvalid)
	}
	c.mu.Lock()
	d, ok := c.devices[deviceID]
	if !ok {
		c.mu.Unlock()
		return HubModule{}, errNoDevice(deviceID)
	}
	m, exists := d.modules[moduleID]
	switch {
	case create && exists:
		c.mu.Unlock()
		return HubModule{}, fmt.Errorf("%w: %w: module %q on device %q", ErrConflict, ErrModuleExists, moduleID, deviceID)
	case !create && !exists:
		c.mu.Unlock()
		return HubModule{}, errNoModule(deviceID, moduleID)
	case exists && !etagMatches(ifMatch, ETagOf(m.version)):
		c.mu.Unlock()
		return HubModule{}, fmt.Errorf("%w: module %q on device %q", ErrPreconditionFailed, moduleID, deviceID)
	}
	var oldKeys [2]string
	var oldTps []string
	if create {
		m = newModule(deviceID, moduleID, c.now())
		if d.modules == nil {
			d.modules = map[string]*device{}
		}
		d.modules[moduleID] = m
	} else {
		m.version++
		oldKeys, oldTps = m.indivKeys, slices.Clone(m.thumbprints)
	}
	if len(tps) > 0 {
		m.thumbprints, m.x509, m.indivKeys = tps, true, [2]string{}
	} else {
		if m.x509 {
			m.thumbprints, m.x509 = nil, false
			m.indivKeys = [2]string{RandomKey(), RandomKey()}
		}
		if spec.PrimaryKey != "" {
			m.indivKeys[0] = spec.PrimaryKey
		}
		if spec.SecondaryKey != "" {
			m.indivKeys[1] = spec.SecondaryKey
		}
	}
	m.managedBy = spec.ManagedBy
	var drop Link
	if !create && (m.indivKeys != oldKeys || !slices.Equal(oldTps, m.thumbprints)) {
		drop = m.link // credentials changed under a live connection: IoT Hub ends it
	}
	out := c.hubModuleLocked(m)
	staged := c.stageDeviceLocked(m)
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return HubModule{}, err
	}
	if create {
		c.log.Info("module created", "device_id", deviceID, "module_id", moduleID)
	}
	if drop != nil {
		c.log.Info("module credentials changed, dropping its connection", "device_id", deviceID, "module_id", moduleID)
		drop.Drop(errBlockedByOperator)
	}
	return out, nil
}

// keyName names a connection key in errors: `device "d"` or `module "m"
// of device "d"`.
func keyName(key string) string {
	d, m := SplitKey(key)
	if m == "" {
		return fmt.Sprintf("device %q", d)
	}
	return fmt.Sprintf("module %q of device %q", m, d)
}

// HubModule returns a module of the registry. Errors wrap ErrNotFound
// (and ErrModuleNotFound when the device exists).
func (c *Core) HubModule(deviceID, moduleID string) (HubModule, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.moduleLocked(deviceID, moduleID)
	if err != nil {
		return HubModule{}, err
	}
	return c.hubModuleLocked(m), nil
}

// moduleLocked returns a module; c.mu held. An id with '/' names nothing.
func (c *Core) moduleLocked(deviceID, moduleID string) (*device, error) {
	if strings.Contains(deviceID, "/") {
		return nil, errNoDevice(deviceID)
	}
	if strings.Contains(moduleID, "/") {
		return nil, errNoModule(deviceID, moduleID)
	}
	return c.entityLocked(ModuleKey(deviceID, moduleID))
}

// HubModules lists the modules of a device, sorted by module id; ErrNotFound
// when the device does not exist.
func (c *Core) HubModules(deviceID string) ([]HubModule, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.lookup(deviceID)
	if err != nil {
		return nil, err
	}
	out := make([]HubModule, 0, len(d.modules))
	for _, m := range d.modules {
		out = append(out, c.hubModuleLocked(m))
	}
	slices.SortFunc(out, func(a, b HubModule) int { return strings.Compare(a.ModuleID, b.ModuleID) })
	return out, nil
}

// DeleteHubModule deletes a module, first checking ifMatch ("" and "*"
// match any etag), and drops its connection. Errors: ErrNotFound (wrapping
// ErrModuleNotFound for a missing module), ErrPreconditionFailed, the
// store's error.
func (c *Core) DeleteHubModule(deviceID, moduleID, ifMatch string) error {
	c.mu.Lock()
	m, err := c.moduleLocked(deviceID, moduleID)
	if err == nil && !etagMatches(ifMatch, ETagOf(m.version)) {
		err = fmt.Errorf("%w: module %q on device %q", ErrPreconditionFailed, moduleID, deviceID)
	}
	if err != nil {
		c.mu.Unlock()
		return err
	}
	delete(c.devices[deviceID].modules, moduleID)
	l := m.link
	staged := c.stageLocked(moduleDelete(deviceID, moduleID))
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return err
	}
	c.log.Info("module deleted", "device_id", deviceID, "module_id", moduleID)
	if l != nil {
		l.Drop(errBlockedByOperator)
	}
	return nil
}

// HubModuleTwin returns a module twin; errors as HubModule's.
func (c *Core) HubModuleTwin(deviceID, moduleID string) (HubTwin, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.moduleLocked(deviceID, moduleID)
	if err != nil {
		return HubTwin{}, err
	}
	return c.hubTwinLocked(m), nil
}

// HubModuleTwins returns every module twin, sorted by device then module
// id (what a query of devices.modules reads).
func (c *Core) HubModuleTwins() []HubTwin {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []HubTwin
	for _, d := range c.devices {
		for _, m := range d.modules {
			out = append(out, c.hubTwinLocked(m))
		}
	}
	slices.SortFunc(out, func(a, b HubTwin) int {
		return strings.Compare(ModuleKey(a.DeviceID, a.ModuleID), ModuleKey(b.DeviceID, b.ModuleID))
	})
	return out
}

// UpdateHubModuleTwin is UpdateHubTwin for a module twin: tags and
// desired properties (merge patches, or replaced with replace), the
// desired change pushed to a connected module. Errors are UpdateHubTwin's,
// with ErrModuleNotFound for a missing module.
func (c *Core) UpdateHubModuleTwin(ctx context.Context, deviceID, moduleID, ifMatch string, tags, desired map[string]any, replace bool) (HubTwin, error) {
	if strings.Contains(deviceID, "/") {
		return HubTwin{}, errNoDevice(deviceID)
	}
	if strings.Contains(moduleID, "/") {
		return HubTwin{}, errNoModule(deviceID, moduleID)
	}
	return c.updateHubTwin(ctx, ModuleKey(deviceID, moduleID), ifMatch, tags, desired, replace)
}

// InvokeModuleMethod calls a direct method on a connected module with a
// JSON payload (nil: null), first waiting up to connectTimeout (when > 0)
// for it to be connected and subscribed to methods; timeout as
// InvokeCommand's. Errors: ErrNotFound (ErrModuleNotFound), ErrInvalid for
// a bad name or payload, ErrDeviceOffline, ErrTimeout, ctx.Err(), ErrClosed.
// Module methods are not part of the IoT Central command history.
func (c *Core) InvokeModuleMethod(ctx context.Context, deviceID, moduleID, method string, payload json.RawMessage, connectTimeout, timeout time.Duration) (CommandResult, error) {
	if _, err := MethodName("", method); err != nil {
		return CommandResult{}, err
	}
	if payload == nil {
		payload = json.RawMessage("null")
	}
	body, err := encodePayload(payload)
	if err != nil {
		return CommandResult{}, err
	}
	c.mu.Lock()
	_, err = c.moduleLocked(deviceID, moduleID)
	c.mu.Unlock()
	if err != nil {
		return CommandResult{}, err
	}
	return c.invokeMethod(ctx, ModuleKey(deviceID, moduleID), method, body, connectTimeout, timeout)
}

// authenticateModuleLocked checks a module's hub credentials: a SAS token
// for "{host}/devices/{d}/modules/{m}" signed with one of its keys, or a
// client certificate whose thumbprint is one of a selfSigned module's.
// The device must exist and be enabled; c.mu held.
func (c *Core) authenticateModuleLocked(deviceID, moduleID, token string, certs []*x509.Certificate) (HubAuth, error) {
	d, ok := c.devices[deviceID]
	if !ok {
		return HubAuth{}, fmt.Errorf("%w: device %q not found", ErrNotFound, deviceID)
	}
	m, ok := d.modules[moduleID]
	if !ok {
		return HubAuth{}, errNoModule(deviceID, moduleID)
	}
	if !d.enabled {
		return HubAuth{}, fmt.Errorf("%w: device %q is disabled", ErrUnauthorized, deviceID)
	}
	now := time.Now()
	if token != "" {
		tok, err := sas.Parse(token)
		if err != nil {
			return HubAuth{}, fmt.Errorf("%w: %w", ErrUnauthorized, errMalformedSAS)
		}
		want := sas.HubResource(c.cfg.HubHost, deviceID) + "/modules/" + moduleID
		if !tok.Names(want) {
			return HubAuth{}, fmt.Errorf("%w: SAS audience %q is not %q", ErrUnauthorized, tok.Resource, want)
		}
		verr := sas.ErrBadSignature
		for _, k := range m.indivKeys {
			if k == "" {
				continue
			}
			err := tok.Verify(k, now)
			if err == nil {
				return HubAuth{Expiry: tok.Expiry}, nil
			}
			if errors.Is(err, sas.ErrExpired) {
				verr = err
			}
		}
		return HubAuth{}, fmt.Errorf("%w: %s: %w", ErrUnauthorized, keyName(ModuleKey(deviceID, moduleID)), verr)
	}
	if len(certs) == 0 {
		return HubAuth{}, fmt.Errorf("%w: no SAS token and no client certificate", ErrUnauthorized)
	}
	if len(m.thumbprints) == 0 {
		return HubAuth{}, fmt.Errorf("%w: %s does not use X.509", ErrUnauthorized, keyName(ModuleKey(deviceID, moduleID)))
	}
	if err := matchThumbprint(certs[0], m.thumbprints, now); err != nil {
		return HubAuth{}, fmt.Errorf("%w: %s: %w", ErrUnauthorized, keyName(ModuleKey(deviceID, moduleID)), err)
	}
	return HubAuth{X509: true}, nil
}

// moduleState is a stored module (KindMeta "module/{device}/{module}").
type moduleState struct {
	DeviceID     string         `json:"deviceId"`
	ModuleID     string         `json:"moduleId"`
	ManagedBy    string         `json:"managedBy,omitempty"`
	Keys         [2]string      `json:"keys"`
	Thumbprints  []string       `json:"thumbprints,omitempty"`
	ModelID      string         `json:"modelId,omitempty"`
	Version      int64          `json:"version"`
	Created      time.Time      `json:"created"`
	LastActivity time.Time      `json:"lastActivity"`
	Desired      twin.State     `json:"desired"`
	Reported     twin.State     `json:"reported"`
	Tags         map[string]any `json:"tags,omitempty"`
	TagsVersion  int64          `json:"tagsVersion,omitempty"`
}

func moduleMetaKey(deviceID, moduleID string) string {
	return metaModulePrefix + ModuleKey(deviceID, moduleID)
}

// moduleChange is the put of module m's document.
func moduleChange(m *device) Change {
	ms := moduleState{DeviceID: m.id, ModuleID: m.moduleID, ManagedBy: m.managedBy, Keys: m.indivKeys,
		Thumbprints: m.thumbprints, ModelID: m.modelID, Version: m.version, Created: m.created, LastActivity: m.lastActivity,
		Desired: m.desired.State(), Reported: m.reported.State(), Tags: m.tags, TagsVersion: m.tagsVersion}
	return Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: moduleMetaKey(m.id, m.moduleID), Doc: mustJSON(ms)}}
}

func moduleDelete(deviceID, moduleID string) Change {
	return Change{Op: OpDelete, Record: Record{Kind: KindMeta, Key: moduleMetaKey(deviceID, moduleID)}}
}

// restoreModules adds stored modules to their restored devices (Load); a
// module whose device is gone is deleted from the store.
func (c *Core) restoreModules(recs []Record) error {
	for _, r := range recs {
		var ms moduleState
		if err := json.Unmarshal(r.Doc, &ms); err != nil {
			return fmt.Errorf("%w: stored module %q: %v", ErrDataFile, r.Key, err)
		}
		if ValidID(ms.DeviceID) != nil || ValidID(ms.ModuleID) != nil || r.Key != moduleMetaKey(ms.DeviceID, ms.ModuleID) {
			return fmt.Errorf("%w: stored module %q: bad ids", ErrDataFile, r.Key)
		}
		d := c.devices[ms.DeviceID]
		if d == nil {
			c.pendingLoad = append(c.pendingLoad, moduleDelete(ms.DeviceID, ms.ModuleID))
			continue
		}
		for _, k := range ms.Keys {
			if k != "" && sas.ValidKey(k) != nil {
				return fmt.Errorf("%w: stored module %q: a key is not base64", ErrDataFile, r.Key)
			}
		}
		m := &device{id: ms.DeviceID, moduleID: ms.ModuleID, displayName: ms.ModuleID, enabled: true, managedBy: ms.ManagedBy,
			indivKeys: ms.Keys, thumbprints: ms.Thumbprints, x509: len(ms.Thumbprints) > 0, modelID: ms.ModelID,
			version: ms.Version, created: ms.Created, lastActivity: ms.LastActivity, tags: ms.Tags, tagsVersion: ms.TagsVersion,
			telemetry: map[string]map[string]TelemetryValue{}}
		var err error
		if m.desired, err = twin.Restore(ms.Desired, true, twin.MaxTwinSectionLen); err != nil {
			return fmt.Errorf("%w: stored module %q desired properties: %v", ErrDataFile, r.Key, err)
		}
		if m.reported, err = twin.Restore(ms.Reported, false, twin.MaxTwinSectionLen); err != nil {
			return fmt.Errorf("%w: stored module %q reported properties: %v", ErrDataFile, r.Key, err)
		}
		if d.modules == nil {
			d.modules = map[string]*device{}
		}
		d.modules[ms.ModuleID] = m
	}
	return nil
}
