package core

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
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

// This file holds the use cases of IoT Hub's service side: shared access
// policies, the device registry with etags and the device twin with tags.

// Rights are the permissions of a shared access policy.
type Rights uint8

// The rights of IoT Hub's shared access policies.
const (
	// RightRegistryRead reads the identity registry.
	RightRegistryRead Rights = 1 << iota
	// RightRegistryWrite writes the identity registry.
	RightRegistryWrite
	// RightServiceConnect uses the service endpoints: twins, methods,
	// cloud-to-device messages, queries.
	RightServiceConnect
	// RightDeviceConnect uses the device endpoints on behalf of any device.
	RightDeviceConnect
)

// String lists the rights as IoT Hub's portal does ("RegistryRead, ServiceConnect").
func (r Rights) String() string {
	var out []string
	for _, n := range []struct {
		r    Rights
		name string
	}{{RightRegistryRead, "RegistryRead"}, {RightRegistryWrite, "RegistryWrite"}, {RightServiceConnect, "ServiceConnect"}, {RightDeviceConnect, "DeviceConnect"}} {
		if r&n.r != 0 {
			out = append(out, n.name)
		}
	}
	return strings.Join(out, ", ")
}

// SharedAccessPolicy is one of IoT Hub's shared access policies: a name
// (the SAS token's skn), its rights and two keys.
type SharedAccessPolicy struct {
	// Name is the policy name (skn).
	Name string `json:"name"`
	// Rights are what tokens signed with its keys may do.
	Rights Rights `json:"rights"`
	// PrimaryKey and SecondaryKey are base64 keys (64 random bytes).
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// metaPolicies is the KindMeta key of the stored policies.
const metaPolicies = "policies"

// newPolicies returns IoT Hub's four built-in policies with fresh keys.
func newPolicies() []SharedAccessPolicy {
	mk := func(name string, r Rights) SharedAccessPolicy {
		return SharedAccessPolicy{Name: name, Rights: r, PrimaryKey: RandomKey(), SecondaryKey: RandomKey()}
	}
	return []SharedAccessPolicy{
		mk("iothubowner", RightRegistryRead|RightRegistryWrite|RightServiceConnect|RightDeviceConnect),
		mk("service", RightServiceConnect),
		mk("registryRead", RightRegistryRead),
		mk("registryReadWrite", RightRegistryRead|RightRegistryWrite),
	}
}

// policiesChangeLocked is the put of the policies; c.mu held.
func (c *Core) policiesChangeLocked() Change {
	return Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: metaPolicies, Doc: mustJSON(c.policies)}}
}

// restorePolicies replaces the policies with stored ones (Load).
func (c *Core) restorePolicies(doc []byte) error {
	var ps []SharedAccessPolicy
	if err := json.Unmarshal(doc, &ps); err != nil {
		return err
	}
	if len(ps) == 0 {
		return errors.New("no policy")
	}
	for _, p := range ps {
		if p.Name == "" || sas.ValidKey(p.PrimaryKey) != nil || sas.ValidKey(p.SecondaryKey) != nil {
			return fmt.Errorf("policy %q has no name or a bad key", p.Name)
		}
	}
	c.policies = ps
	return nil
}

// Policies returns the shared access policies (with their keys).
func (c *Core) Policies() []SharedAccessPolicy {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.policies)
}

// AuthenticateService checks a service SAS token: it must name a policy
// (skn) whose rights include one of need, have the hub host (or a path
// under it) as its resource, be signed with one of the policy's keys and
// not be expired. It returns the policy and the token's expiry, or an
// error wrapping ErrUnauthorized (bad token) or ErrForbidden (valid token,
// missing right). Errors never hold the token.
func (c *Core) AuthenticateService(token string, need ...Rights) (ServiceAuth, error) {
	tok, err := sas.Parse(token)
	if err != nil {
		return ServiceAuth{}, fmt.Errorf("%w: %w", ErrUnauthorized, errMalformedSAS)
	}
	host := strings.ToLower(c.cfg.HubHost)
	res := strings.ToLower(strings.TrimSuffix(tok.Resource, "/"))
	if res != host && !strings.HasPrefix(res, host+"/") {
		return ServiceAuth{}, fmt.Errorf("%w: SAS audience %q is not the hub %q", ErrUnauthorized, tok.Resource, c.cfg.HubHost)
	}
	if tok.KeyName == "" {
		return ServiceAuth{}, fmt.Errorf("%w: SAS token names no policy (skn)", ErrUnauthorized)
	}
	c.mu.Lock()
	i := slices.IndexFunc(c.policies, func(p SharedAccessPolicy) bool { return p.Name == tok.KeyName })
	var p SharedAccessPolicy
	if i >= 0 {
		p = c.policies[i]
	}
	c.mu.Unlock()
	if i < 0 {
		return ServiceAuth{}, fmt.Errorf("%w: no shared access policy %q", ErrUnauthorized, tok.KeyName)
	}
	verr := sas.ErrBadSignature
	ok := false
	for _, k := range []string{p.PrimaryKey, p.SecondaryKey} {
		err := tok.Verify(k, time.Now())
		if err == nil {
			ok = true
			break
		}
		if errors.Is(err, sas.ErrExpired) {
			verr = err
		}
	}
	if !ok {
		return ServiceAuth{}, fmt.Errorf("%w: policy %q: %w", ErrUnauthorized, p.Name, verr)
	}
	for _, r := range need {
		if p.Rights&r != 0 {
			return ServiceAuth{Policy: p.Name, Expiry: tok.Expiry}, nil
		}
	}
	return ServiceAuth{}, fmt.Errorf("%w: policy %q has %s", ErrForbidden, p.Name, p.Rights)
}

// ServiceAuth is an accepted service token.
type ServiceAuth struct {
	// Policy is the shared access policy that signed it.
	Policy string
	// Expiry is the token's expiry.
	Expiry time.Time
}

// HubDevice is a device as IoT Hub's registry shows it.
type HubDevice struct {
	Device
	// ETag changes with every change of the identity (keys, status).
	ETag string
	// Generation is the registry generation the etag encodes.
	Generation int64
	// StatusReason is the reason given when the status was set.
	StatusReason string
	// Thumbprints are those of a selfSigned device (upper-case hex).
	Thumbprints []string
	// IotEdge, DeviceScope and ParentScopes are the device's IoT Edge
	// capability and scopes as PutHubDevice resolved them (see edge.go;
	// the emulator runs no IoT Edge runtime).
	IotEdge      bool
	DeviceScope  string
	ParentScopes []string
}

// HubDeviceSpec is what a registry PUT sets.
type HubDeviceSpec struct {
	// Enabled is the status; nil keeps it (true on create).
	Enabled *bool
	// StatusReason is stored and shown.
	StatusReason string
	// PrimaryKey and SecondaryKey are the symmetric keys; an empty key is
	// generated on create and kept on update.
	PrimaryKey, SecondaryKey string
	// Thumbprints, when not empty, make the device a selfSigned X.509
	// device: it connects with a client certificate whose SHA-1 or SHA-256
	// thumbprint (hex, any case, ':' allowed) is one of them (at most 2).
	Thumbprints []string
	// CertificateAuthority makes the device a certificateAuthority X.509
	// device: it connects with a chain ending in one of Config.TrustedCAs
	// whose leaf CN is its id.
	CertificateAuthority bool
	// IotEdge makes an IoT Edge device: its DeviceScope is generated
	// ("ms-azure-iot-edge://{id}-{generationId}", kept across updates; a
	// given one is ignored) and the $edgeAgent and $edgeHub modules are
	// created. ParentScopes (at most 1, IoT Hub's limit) must each be
	// another edge device's scope. A leaf device's DeviceScope (or, when
	// empty, its one ParentScopes entry) must be an edge device's scope,
	// and becomes its parent scope too. Violations: ErrInvalid.
	IotEdge      bool
	DeviceScope  string
	ParentScopes []string
}

// HubAuthType is how a registry device authenticates, as IoT Hub names it.
func (d HubDevice) HubAuthType() string {
	switch {
	case len(d.Thumbprints) > 0:
		return "selfSigned"
	case d.Attestation == AttestationX509:
		return "certificateAuthority"
	}
	return "sas"
}

// normThumbprint returns a thumbprint in upper-case hex without
// separators, or ErrInvalid when it is neither a SHA-1 (40 digits) nor a
// SHA-256 (64 digits) thumbprint.
func normThumbprint(s string) (string, error) {
	t := strings.ToUpper(strings.NewReplacer(":", "", " ", "").Replace(s))
	if _, err := hex.DecodeString(t); err != nil || (len(t) != 40 && len(t) != 64) {
		return "", fmt.Errorf("%w: thumbprint %q is not a SHA-1 or SHA-256 hex digest", ErrInvalid, s)
	}
	return t, nil
}

// matchThumbprint accepts a leaf certificate whose SHA-1 or SHA-256
// thumbprint is one of tps and that is valid now.
func matchThumbprint(leaf *x509.Certificate, tps []string, now time.Time) error {
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return errors.New("client certificate is expired or not yet valid")
	}
	s1 := sha1.Sum(leaf.Raw)
	s256 := sha256.Sum256(leaf.Raw)
	for _, tp := range tps {
		if tp == strings.ToUpper(hex.EncodeToString(s1[:])) || tp == strings.ToUpper(hex.EncodeToString(s256[:])) {
			return nil
		}
	}
	return errors.New("client certificate thumbprint is not the device's")
}

// ETagOf is the etag of a generation: base64 of its decimal form, quoted
// as IoT Hub's registry shows it.
func ETagOf(gen int64) string {
	return `"` + base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(gen, 10))) + `"`
}

// etagMatches reports whether an If-Match value allows a change of
// something whose current etag is cur: "" and "*" always do; quotes and a
// W/ prefix are ignored.
func etagMatches(ifMatch, cur string) bool {
	norm := func(s string) string {
		s = strings.TrimSpace(s)
		s = strings.TrimPrefix(s, "W/")
		return strings.Trim(s, `"`)
	}
	m := norm(ifMatch)
	return m == "" || m == "*" || m == norm(cur)
}

func (c *Core) hubDeviceLocked(d *device) HubDevice {
	return HubDevice{Device: d.public(), ETag: ETagOf(d.version), Generation: d.version, StatusReason: d.statusReason,
		Thumbprints: slices.Clone(d.thumbprints), IotEdge: d.edge, DeviceScope: d.deviceScope, ParentScopes: slices.Clone(d.parentScopes)}
}

// HubDevice returns the registry view of a device, or ErrNotFound.
func (c *Core) HubDevice(id string) (HubDevice, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.lookup(id)
	if err != nil {
		return HubDevice{}, err
	}
	return c.hubDeviceLocked(d), nil
}

// HubDevices lists the registry, sorted by id.
func (c *Core) HubDevices() []HubDevice {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]HubDevice, 0, len(c.devices))
	for _, d := range c.devices {
		out = append(out, c.hubDeviceLocked(d))
	}
	slices.SortFunc(out, func(a, b HubDevice) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// PutHubDevice creates (create true) or updates a device of the registry.
// A create fails with ErrConflict when the device exists; an update with
// ErrNotFound when it does not, or ErrPreconditionFailed when ifMatch is
// neither "", "*" nor the current etag. Disabling a connected device drops
// its connection. It returns ErrInvalid for a bad id or key.
func (c *Core) PutHubDevice(id string, create bool, ifMatch string, spec HubDeviceSpec) (HubDevice, error) {
	if err := ValidID(id); err != nil {
		return HubDevice{}, fmt.Errorf("device: %w", err)
	}
	tps, err := hubCredentials(spec.PrimaryKey, spec.SecondaryKey, spec.Thumbprints)
	if err != nil {
		return HubDevice{}, err
	}
	if len(spec.ParentScopes) > 1 {
		return HubDevice{}, fmt.Errorf("%w: a device has at most 1 parent scope", ErrInvalid)
	}
	if (len(tps) > 0 || spec.CertificateAuthority) && (spec.PrimaryKey != "" || spec.SecondaryKey != "") ||
		len(tps) > 0 && spec.CertificateAuthority {
		return HubDevice{}, fmt.Errorf("%w: a device has keys, thumbprints or a CA, one of them", ErrInvalid)
	}
	c.mu.Lock()
	d, exists := c.devices[id]
	switch {
	case create && exists:
		c.mu.Unlock()
		return HubDevice{}, fmt.Errorf("%w: device %q", ErrConflict, id)
	case !create && !exists:
		c.mu.Unlock()
		return HubDevice{}, errNoDevice(id)
	case exists && !etagMatches(ifMatch, ETagOf(d.version)):
		c.mu.Unlock()
		return HubDevice{}, fmt.Errorf("%w: device %q", ErrPreconditionFailed, id)
	}
	scope, parents, err := c.scopesLocked(id, d, spec)
	if err != nil {
		c.mu.Unlock()
		return HubDevice{}, err
	}
	wasEnabled := create || d.enabled
	if create {
		d = newDevice(id, c.now())
		d.indivKeys = [2]string{RandomKey(), RandomKey()}
		c.devices[id] = d
		c.observeLocked(FeedEvent{Kind: FeedRegistered, DeviceID: id})
		c.sinkNotificationLocked(d, DeviceNotification{Op: OpCreateDeviceIdentity})
	} else {
		d.version++
	}
	switch {
	case len(tps) > 0:
		// A selfSigned device: its certificate, not keys nor a group.
		d.thumbprints, d.x509, d.indivKeys, d.groupKeys, d.groupID = tps, true, [2]string{}, [2]string{}, ""
	case spec.CertificateAuthority:
		// A certificateAuthority device: the hub's trusted CAs, no group.
		d.thumbprints, d.x509, d.indivKeys, d.groupKeys, d.groupID = nil, true, [2]string{}, [2]string{}, ""
	case d.x509 && d.groupID == "":
		d.thumbprints, d.x509 = nil, false // a registry X.509 device back to keys
		d.indivKeys = [2]string{RandomKey(), RandomKey()}
	}
	if spec.PrimaryKey != "" {
		d.indivKeys[0] = spec.PrimaryKey
		d.x509 = false
	}
	if spec.SecondaryKey != "" {
		d.indivKeys[1] = spec.SecondaryKey
	}
	if d.indivKeys[0] == "" && (spec.PrimaryKey != "" || spec.SecondaryKey != "") {
		d.indivKeys[0] = RandomKey()
	}
	if d.indivKeys[1] == "" && d.indivKeys[0] != "" {
		d.indivKeys[1] = RandomKey()
	}
	var drops []Link
	if spec.Enabled != nil {
		d.enabled = *spec.Enabled
		if !d.enabled {
			drops = append(drops, d.link)
			for _, m := range d.modules { // its modules cannot stay connected either
				drops = append(drops, m.link)
			}
		}
	}
	if d.enabled != wasEnabled {
		k := FeedDisabled
		if d.enabled {
			k = FeedEnabled
		}
		c.observeLocked(FeedEvent{Kind: k, DeviceID: id})
	}
	d.statusReason = spec.StatusReason
	d.edge, d.deviceScope, d.parentScopes = spec.IotEdge, scope, parents
	added := c.edgeLocked(d)
	out := c.hubDeviceLocked(d)
	staged := c.stageDeviceAndModulesLocked(d, added)
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return HubDevice{}, err
	}
	if create {
		c.log.Info("device created", "device_id", id, "via", "service API")
	}
	for _, l := range drops {
		if l != nil {
			c.log.Info("device disabled, dropping a connection", "device_id", id)
			l.Drop(errBlockedByOperator)
		}
	}
	return out, nil
}

// DeleteHubDevice deletes a device as DeleteDevice does, first checking
// ifMatch ("" and "*" match any etag). It returns ErrNotFound or
// ErrPreconditionFailed.
func (c *Core) DeleteHubDevice(id, ifMatch string) error {
	c.mu.Lock()
	d, err := c.lookup(id)
	if err == nil && !etagMatches(ifMatch, ETagOf(d.version)) {
		err = fmt.Errorf("%w: device %q", ErrPreconditionFailed, id)
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	// A change between the check and the delete is a race IoT Hub has too.
	return c.DeleteDevice(id)
}

// HubTwin is a device twin as IoT Hub's service API shows it.
type HubTwin struct {
	// DeviceID is the device.
	DeviceID string
	// ModuleID is the module of a module twin, "" for a device twin.
	ModuleID string
	// IotEdge, DeviceScope and ParentScopes are the device's (empty for a
	// module twin).
	IotEdge      bool
	DeviceScope  string
	ParentScopes []string
	// ETag changes with every change of tags or properties.
	ETag string
	// DeviceETag is the registry etag of the device (HubDevice.ETag).
	DeviceETag string
	// Version grows with every change of tags or properties.
	Version int64
	// Enabled, Connected, LastActivity and X509 describe the device.
	Enabled, Connected bool
	LastActivity       time.Time
	X509               bool
	// ModelID is the device's IoT Plug and Play model, "" when none.
	ModelID string
	// AuthType is "sas", "selfSigned" or "certificateAuthority".
	AuthType string
	// Tags are the service-only tags.
	Tags map[string]any
	// Desired and Reported are the sections with $version and $metadata.
	Desired, Reported map[string]any
}

// twinVersion sums the versions of the parts of a twin; each only grows.
func twinVersion(d *device) int64 {
	return d.desired.Version() + d.reported.Version() + d.tagsVersion
}

// TwinETagOf is the etag of a twin version: base64 of its 8 big-endian
// bytes, quoted ("AAAAAAAAAAM=" as IoT Hub's look).
func TwinETagOf(v int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return `"` + base64.StdEncoding.EncodeToString(b[:]) + `"`
}

func (c *Core) hubTwinLocked(d *device) HubTwin {
	v := twinVersion(d)
	t := HubTwin{
		DeviceID: d.id, ModuleID: d.moduleID, IotEdge: d.edge, DeviceScope: d.deviceScope, ParentScopes: slices.Clone(d.parentScopes), ETag: TwinETagOf(v), DeviceETag: ETagOf(d.version), Version: v, Enabled: d.enabled, Connected: d.link != nil,
		LastActivity: d.lastActivity, X509: d.x509, ModelID: d.modelID,
		AuthType: HubDevice{Device: d.public(), Thumbprints: d.thumbprints}.HubAuthType(),
		Tags:     map[string]any{}, Desired: d.desired.Document(), Reported: d.reported.Document(),
	}
	if d.tags != nil {
		t.Tags = deepCopyMap(d.tags)
	}
	return t
}

// HubTwin returns a device's twin, or ErrNotFound.
func (c *Core) HubTwin(id string) (HubTwin, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.lookup(id)
	if err != nil {
		return HubTwin{}, err
	}
	return c.hubTwinLocked(d), nil
}

// HubTwins returns every twin, sorted by device id (what a query reads).
func (c *Core) HubTwins() []HubTwin {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]HubTwin, 0, len(c.devices))
	for _, d := range c.devices {
		out = append(out, c.hubTwinLocked(d))
	}
	slices.SortFunc(out, func(a, b HubTwin) int { return strings.Compare(a.DeviceID, b.DeviceID) })
	return out
}

// UpdateHubTwin changes a twin's tags and desired properties at once. With
// replace, tags and desired become exactly the given ones (nil leaves that
// part as it is); without, both are JSON merge patches (a null removes).
// Reported properties are read-only and not part of the call. It returns
// ErrNotFound, ErrPreconditionFailed when ifMatch is neither "", "*" nor
// the twin's etag, ErrInvalid for a bad key or value, ErrTooLarge, or the
// store's error. A desired change is pushed to a connected device.
func (c *Core) UpdateHubTwin(ctx context.Context, id, ifMatch string, tags, desired map[string]any, replace bool) (HubTwin, error) {
	if strings.Contains(id, "/") {
		return HubTwin{}, errNoDevice(id)
	}
	return c.updateHubTwin(ctx, id, ifMatch, tags, desired, replace)
}

// updateHubTwin is UpdateHubTwin of the twin of a device or module key.
func (c *Core) updateHubTwin(ctx context.Context, id, ifMatch string, tags, desired map[string]any, replace bool) (HubTwin, error) {
	if err := ctx.Err(); err != nil {
		return HubTwin{}, err
	}
	var err error
	if tags != nil {
		if tags, err = twin.NormalizePatch(tags); err != nil {
			return HubTwin{}, fmt.Errorf("%w: tags: %v", ErrInvalid, err)
		}
	}
	if desired != nil {
		delete(desired, "$version")
		delete(desired, "$metadata")
		if desired, err = twin.NormalizePatch(desired); err != nil {
			return HubTwin{}, fmt.Errorf("%w: desired properties: %v", ErrInvalid, err)
		}
	}
	c.mu.Lock()
	d, err := c.entityLocked(id)
	if err == nil && !etagMatches(ifMatch, TwinETagOf(twinVersion(d))) {
		err = fmt.Errorf("%w: twin of %s", ErrPreconditionFailed, keyName(id))
	}
	if err != nil {
		c.mu.Unlock()
		return HubTwin{}, err
	}
	var newTags map[string]any
	if tags != nil {
		if replace {
			newTags = dropNulls(tags)
		} else {
			newTags = mergePatch(deepCopyMap(d.tags), tags)
		}
		if b, _ := json.Marshal(newTags); len(b) > MaxTwinSection {
			c.mu.Unlock()
			return HubTwin{}, fmt.Errorf("%w: tags of device %q over %d bytes", ErrTooLarge, id, MaxTwinSection)
		}
	}
	var patch map[string]any
	if desired != nil {
		patch = desired
		if replace {
			patch = replacePatch(d.desired.Properties(), desired)
		}
	}
	var v int64
	if len(patch) > 0 {
		if v, err = d.desired.Apply(patch, c.now()); err != nil {
			c.mu.Unlock()
			if errors.Is(err, twin.ErrTooLarge) {
				return HubTwin{}, fmt.Errorf("%w: desired patch: %v", ErrTooLarge, err)
			}
			return HubTwin{}, fmt.Errorf("%w: desired patch: %v", ErrInvalid, err)
		}
		c.emit(Event{DeviceID: id, Kind: EventDesired, Version: v, Time: c.now()})
		c.observePatchLocked(FeedDesired, id, patch, v)
		c.twinChangedLocked(d, "desired", patch, v)
	}
	if tags != nil {
		d.tags = newTags
		d.tagsVersion++
	}
	out := c.hubTwinLocked(d)
	l := d.link
	staged := c.stageDeviceLocked(d)
	c.mu.Unlock()
	if err := await(ctx, staged); err != nil {
		return HubTwin{}, err
	}
	if len(patch) > 0 && l != nil {
		body, err := json.Marshal(twin.WithVersion(patch, v))
		if err != nil {
			return out, fmt.Errorf("emulator: encode desired patch: %w", err)
		}
		if err := l.PushDesired(body, v); err != nil {
			c.log.Warn("desired patch not delivered", "device_id", id, "error", err)
		}
	}
	return out, nil
}

// HubStatistics are the registry and service statistics.
type HubStatistics struct {
	// Total, Enabled and Disabled count the registry's devices.
	Total, Enabled, Disabled int
	// Connected counts the devices with a live connection.
	Connected int
}

// HubStatistics counts the devices.
func (c *Core) HubStatistics() HubStatistics {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s HubStatistics
	for _, d := range c.devices {
		s.Total++
		if d.enabled {
			s.Enabled++
		} else {
			s.Disabled++
		}
		if d.link != nil {
			s.Connected++
		}
	}
	return s
}

func deepCopyMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return map[string]any{}
	}
	var out map[string]any
	if json.Unmarshal(b, &out) != nil {
		return map[string]any{}
	}
	return out
}

// mergePatch applies a JSON merge patch to dst (modified and returned).
func mergePatch(dst, patch map[string]any) map[string]any {
	if dst == nil {
		dst = map[string]any{}
	}
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			cur, _ := dst[k].(map[string]any)
			dst[k] = mergePatch(cur, pv)
		default:
			dst[k] = v
		}
	}
	return dst
}

// dropNulls removes null members, recursively.
func dropNulls(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch pv := v.(type) {
		case nil:
		case map[string]any:
			out[k] = dropNulls(pv)
		default:
			out[k] = v
		}
	}
	return out
}

// replacePatch is the merge patch that turns cur into want.
func replacePatch(cur, want map[string]any) map[string]any {
	p := map[string]any{}
	for k := range cur {
		if _, ok := want[k]; !ok {
			p[k] = nil
		}
	}
	for k, v := range want {
		wm, wok := v.(map[string]any)
		cm, cok := cur[k].(map[string]any)
		switch {
		case v == nil:
			if _, ok := cur[k]; ok {
				p[k] = nil
			}
		case wok && cok:
			if sub := replacePatch(cm, wm); len(sub) > 0 {
				p[k] = sub
			}
		case wok:
			p[k] = dropNulls(wm)
		default:
			p[k] = v
		}
	}
	return p
}

// hubCredentials checks the symmetric keys of a registry identity (each
// may be empty) and normalizes its X.509 thumbprints (empty ones skipped,
// at most 2). Errors wrap ErrInvalid.
func hubCredentials(primary, secondary string, thumbprints []string) ([]string, error) {
	for _, k := range []string{primary, secondary} {
		if k != "" {
			if err := validKey(k); err != nil {
				return nil, err
			}
		}
	}
	var tps []string
	for _, tp := range thumbprints {
		if tp == "" {
			continue
		}
		n, err := normThumbprint(tp)
		if err != nil {
			return nil, err
		}
		tps = append(tps, n)
	}
	if len(tps) > 2 {
		return nil, fmt.Errorf("%w: at most 2 thumbprints", ErrInvalid)
	}
	return tps, nil
}
