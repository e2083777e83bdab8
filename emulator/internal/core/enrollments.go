package core

import (
	"crypto/sha1" // #nosec G505 -- a certificate thumbprint, not a signature
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/pki"
	"github.com/iotc-go/iotc/emulator/internal/sas"
	"github.com/iotc-go/iotc/emulator/internal/twin"
)

// This file holds the Device Provisioning Service's own state, as its
// service API (api-version 2021-10-01) shows it: individual enrollments,
// the DPS settings of enrollment groups (initial twin, reprovision and
// allocation policies), registration states, and the provisioningserviceowner
// shared access policy. Enrollment groups stay the one EnrollmentGroup list
// of the model, which IoT Central's REST API shows too.

// DPSPolicyName is the name of the DPS service's shared access policy
// (the skn of its SAS tokens).
const DPSPolicyName = "provisioningserviceowner"

// Allocation policies (DPSSettings.AllocationPolicy).
const (
	AllocationHashed     = "hashed"
	AllocationStatic     = "static"
	AllocationGeoLatency = "geoLatency"
	AllocationCustom     = "custom"
)

// Registration substatus values (RegistrationState.Substatus).
const (
	SubstatusInitial       = "initialAssignment"
	SubstatusReprovisioned = "reprovisionedToInitialAssignment"
)

// DPS error codes of the failed registrations this file adds.
const (
	dpsErrNoHub = 400208 // the enrollment names no hub the emulator serves
)

// InitialTwin is the twin an enrollment gives a device when DPS first
// assigns it: the tags replace the twin's tags, the desired properties
// replace its desired properties.
type InitialTwin struct {
	// Tags are the twin tags; nil leaves them.
	Tags map[string]any
	// Desired are the desired properties; nil leaves them.
	Desired map[string]any
}

// ReprovisionPolicy is what DPS does when a device registers again. The
// emulator serves one hub, so a device is never moved; the policy is
// stored and shown.
type ReprovisionPolicy struct {
	// UpdateHubAssignment and MigrateDeviceData default to true.
	UpdateHubAssignment, MigrateDeviceData bool
}

// DPSSettings are the settings an enrollment (individual or group) has in
// the DPS service API beyond its attestation.
type DPSSettings struct {
	// InitialTwin, when set, is applied at a device's first assignment
	// (and again after its registration state was deleted).
	InitialTwin *InitialTwin `json:"initialTwin,omitempty"`
	// Reprovision is the reprovision policy (stored and shown).
	Reprovision ReprovisionPolicy `json:"reprovision"`
	// AllocationPolicy is AllocationHashed (also what "" means),
	// AllocationStatic or AllocationGeoLatency; AllocationCustom is refused
	// (ErrInvalid): the emulator calls no allocation webhook.
	AllocationPolicy string `json:"allocationPolicy,omitempty"`
	// IotHubs and IotHubHostName name the hubs the enrollment may be
	// assigned to; when set, one of them must be the emulator's hub host
	// (else registrations fail with errorCode 400208).
	IotHubs        []string `json:"iotHubs,omitempty"`
	IotHubHostName string   `json:"iotHubHostName,omitempty"`
	// IotEdge is capabilities.iotEdge (for a group, Type GroupTypeIoTEdge).
	IotEdge bool `json:"iotEdge,omitempty"`
	// Created and Updated are set by the model.
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Enrollment is an individual enrollment: one registration id with its
// own symmetric keys or X.509 client certificates.
type Enrollment struct {
	// RegistrationID identifies the enrollment (ValidID).
	RegistrationID string `json:"registrationId"`
	// DeviceID is the hub device id DPS creates; "" means RegistrationID.
	DeviceID string `json:"deviceId,omitempty"`
	// Enabled is provisioningStatus "enabled".
	Enabled bool `json:"enabled"`
	// PrimaryKey and SecondaryKey are base64 symmetric keys (generated
	// when both are empty for a symmetric-key enrollment).
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
	// ClientCertPEM holds the primary and secondary client certificates
	// of an X.509 enrollment (a device presents one of them, or a chain
	// whose leaf is one of them); the leaf CN must be RegistrationID.
	ClientCertPEM [2]string `json:"clientCertPem,omitzero"`
	// DPS are the enrollment's DPS settings.
	DPS DPSSettings `json:"dps"`
	// ETag changes with every change of the enrollment.
	ETag string `json:"etag"`
}

// IsX509 reports whether the enrollment authenticates with certificates.
func (e Enrollment) IsX509() bool { return e.ClientCertPEM[0] != "" || e.ClientCertPEM[1] != "" }

// Device returns the hub device id DPS assigns.
func (e Enrollment) Device() string {
	if e.DeviceID != "" {
		return e.DeviceID
	}
	return e.RegistrationID
}

// thumbprints are the upper-case hex SHA-1 and SHA-256 thumbprints of the
// enrollment's client certificates.
func (e Enrollment) thumbprints() []string {
	var out []string
	for _, p := range e.ClientCertPEM {
		if p == "" {
			continue
		}
		certs, err := pki.ParseCertificates([]byte(p))
		if err != nil || len(certs) == 0 {
			continue
		}
		s1 := sha1.Sum(certs[0].Raw) // #nosec G401 -- a thumbprint
		s256 := sha256.Sum256(certs[0].Raw)
		out = append(out, strings.ToUpper(hex.EncodeToString(s1[:])), strings.ToUpper(hex.EncodeToString(s256[:])))
	}
	return out
}

// RegistrationState is DPS's record of a registration id's last
// registration.
type RegistrationState struct {
	RegistrationID string `json:"registrationId"`
	// DeviceID and AssignedHub are the assignment ("" unless assigned).
	DeviceID    string `json:"deviceId,omitempty"`
	AssignedHub string `json:"assignedHub,omitempty"`
	// Status is "assigned", "failed" or "disabled"; Substatus
	// SubstatusInitial or SubstatusReprovisioned when assigned.
	Status    string `json:"status"`
	Substatus string `json:"substatus,omitempty"`
	// ErrorCode and ErrorMessage explain a failed or disabled registration.
	ErrorCode    int    `json:"errorCode,omitempty"`
	ErrorMessage string `json:"errorMessage,omitempty"`
	// GroupID is the enrollment group, "" for an individual enrollment.
	GroupID string `json:"groupId,omitempty"`
	// Created is the first assignment, Updated the last registration.
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// ETag changes with every registration.
	ETag string `json:"etag"`
}

// dpsState is the DPS service's state; guarded by Core.mu.
type dpsState struct {
	policy      SharedAccessPolicy
	enrollments map[string]*Enrollment
	regs        map[string]*RegistrationState
}

// KindMeta keys of the DPS service's records.
const (
	metaDPSPrefix       = "dps/"
	metaDPSPolicy       = "dps/policy"
	metaDPSEnrollPrefix = "dps/enrollment/"
	metaDPSRegPrefix    = "dps/registration/"
)

// dpsLocked returns the DPS state, made on first use; c.mu held.
func (c *Core) dpsLocked() *dpsState {
	if c.dpsSvc == nil {
		c.dpsSvc = &dpsState{
			policy:      SharedAccessPolicy{Name: DPSPolicyName, Rights: RightRegistryRead | RightRegistryWrite | RightServiceConnect, PrimaryKey: RandomKey(), SecondaryKey: RandomKey()},
			enrollments: map[string]*Enrollment{},
			regs:        map[string]*RegistrationState{},
		}
	}
	return c.dpsSvc
}

func (c *Core) dpsPolicyChangeLocked() Change {
	return Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: metaDPSPolicy, Doc: mustJSON(c.dpsLocked().policy)}}
}

func enrollmentChange(e *Enrollment) Change {
	return Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: metaDPSEnrollPrefix + e.RegistrationID, Doc: mustJSON(e)}}
}

func regStateChange(r *RegistrationState) Change {
	return Change{Op: OpPut, Record: Record{Kind: KindMeta, Key: metaDPSRegPrefix + r.RegistrationID, Doc: mustJSON(r)}}
}

// restoreDPS reads one stored DPS record (Load).
func (c *Core) restoreDPS(key string, doc []byte) error {
	s := c.dpsLocked()
	switch {
	case key == metaDPSPolicy:
		var p SharedAccessPolicy
		if err := json.Unmarshal(doc, &p); err != nil {
			return err
		}
		if p.Name != DPSPolicyName || validKey(p.PrimaryKey) != nil || validKey(p.SecondaryKey) != nil {
			return errors.New("not a DPS service policy")
		}
		s.policy = p
	case strings.HasPrefix(key, metaDPSEnrollPrefix):
		var e Enrollment
		if err := json.Unmarshal(doc, &e); err != nil {
			return err
		}
		if err := ValidID(e.RegistrationID); err != nil {
			return err
		}
		s.enrollments[e.RegistrationID] = &e
	case strings.HasPrefix(key, metaDPSRegPrefix):
		var r RegistrationState
		if err := json.Unmarshal(doc, &r); err != nil {
			return err
		}
		s.regs[r.RegistrationID] = &r
	}
	return nil
}

// DPSPolicy returns the DPS service's shared access policy
// (provisioningserviceowner, every right) with its keys. They are made at
// the first start and kept with the state when there is a store.
func (c *Core) DPSPolicy() SharedAccessPolicy {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dpsLocked().policy
}

// AuthenticateDPSService checks a DPS service SAS token: the resource is
// the provisioning host (the hub host) or a path under it, skn is
// provisioningserviceowner, signed with one of its keys and not expired.
// Errors wrap ErrUnauthorized and never hold the token.
func (c *Core) AuthenticateDPSService(token string) (ServiceAuth, error) {
	tok, err := sas.Parse(token)
	if err != nil {
		return ServiceAuth{}, fmt.Errorf("%w: %w", ErrUnauthorized, errMalformedSAS)
	}
	host := strings.ToLower(c.cfg.HubHost)
	res := strings.ToLower(strings.TrimSuffix(tok.Resource, "/"))
	if res != host && !strings.HasPrefix(res, host+"/") {
		return ServiceAuth{}, fmt.Errorf("%w: SAS audience %q is not the provisioning service %q", ErrUnauthorized, tok.Resource, c.cfg.HubHost)
	}
	if tok.KeyName != DPSPolicyName {
		return ServiceAuth{}, fmt.Errorf("%w: no DPS shared access policy %q", ErrUnauthorized, tok.KeyName)
	}
	p := c.DPSPolicy()
	verr := sas.ErrBadSignature
	for _, k := range []string{p.PrimaryKey, p.SecondaryKey} {
		err := tok.Verify(k, time.Now())
		if err == nil {
			return ServiceAuth{Policy: p.Name, Expiry: tok.Expiry}, nil
		}
		if errors.Is(err, sas.ErrExpired) {
			verr = err
		}
	}
	return ServiceAuth{}, fmt.Errorf("%w: policy %q: %w", ErrUnauthorized, p.Name, verr)
}

// normalizeSettings validates s and fills its defaults; created is the
// creation time to keep (zero for a new enrollment).
func normalizeSettings(s DPSSettings, what string, created, now time.Time) (DPSSettings, error) {
	switch s.AllocationPolicy {
	case "":
		s.AllocationPolicy = AllocationHashed
	case AllocationHashed, AllocationStatic, AllocationGeoLatency:
	case AllocationCustom:
		return s, fmt.Errorf("%w: %s: custom allocation (a webhook) is not served by the emulator", ErrInvalid, what)
	default:
		return s, fmt.Errorf("%w: %s: allocationPolicy %q is not hashed, static, geoLatency or custom", ErrInvalid, what, s.AllocationPolicy)
	}
	if s.AllocationPolicy == AllocationStatic && s.IotHubHostName == "" && len(s.IotHubs) != 1 {
		return s, fmt.Errorf("%w: %s: static allocation needs iotHubHostName or exactly one of iotHubs", ErrInvalid, what)
	}
	if t := s.InitialTwin; t != nil {
		it := &InitialTwin{}
		var err error
		if t.Tags != nil {
			if it.Tags, err = twin.NormalizePatch(deepCopyMap(t.Tags)); err != nil {
				return s, fmt.Errorf("%w: %s: initialTwin tags: %v", ErrInvalid, what, err)
			}
		}
		if t.Desired != nil {
			d := deepCopyMap(t.Desired)
			delete(d, "$version")
			delete(d, "$metadata")
			if it.Desired, err = twin.NormalizePatch(d); err != nil {
				return s, fmt.Errorf("%w: %s: initialTwin desired properties: %v", ErrInvalid, what, err)
			}
		}
		for name, m := range map[string]map[string]any{"tags": it.Tags, "desired properties": it.Desired} {
			if b, _ := json.Marshal(m); len(b) > MaxTwinSection {
				return s, fmt.Errorf("%w: %s: initialTwin %s over %d bytes", ErrTooLarge, what, name, MaxTwinSection)
			}
		}
		s.InitialTwin = it
	}
	s.IotHubs = slices.Clone(s.IotHubs)
	if created.IsZero() {
		created = now
	}
	s.Created, s.Updated = created, now
	return s, nil
}

// hubAllowed reports whether settings let the emulator's hub be
// assigned: they name no hub, or name it.
func (s DPSSettings) hubAllowed(hub string) bool {
	if s.IotHubHostName == "" && len(s.IotHubs) == 0 {
		return true
	}
	return strings.EqualFold(s.IotHubHostName, hub) || slices.ContainsFunc(s.IotHubs, func(h string) bool { return strings.EqualFold(h, hub) })
}

func newETag() string { return `"` + RandomHex(8) + `"` }

// NormalizeEnrollment validates e and fills its defaults (keys of a
// symmetric-key enrollment). Errors wrap ErrInvalid.
func NormalizeEnrollment(e Enrollment) (Enrollment, error) {
	if err := ValidID(e.RegistrationID); err != nil {
		return e, fmt.Errorf("enrollment: %w", err)
	}
	if e.DeviceID != "" {
		if err := ValidID(e.DeviceID); err != nil {
			return e, fmt.Errorf("enrollment %s: deviceId: %w", e.RegistrationID, err)
		}
	}
	if e.IsX509() {
		if e.PrimaryKey != "" || e.SecondaryKey != "" {
			return e, fmt.Errorf("%w: enrollment %s: both symmetric keys and X.509 certificates", ErrInvalid, e.RegistrationID)
		}
		for _, p := range e.ClientCertPEM {
			if p == "" {
				continue
			}
			certs, err := pki.ParseCertificates([]byte(p))
			if err != nil || len(certs) == 0 {
				return e, fmt.Errorf("%w: enrollment %s: client certificate: not a PEM certificate", ErrInvalid, e.RegistrationID)
			}
		}
		return e, nil
	}
	if e.PrimaryKey == "" && e.SecondaryKey == "" {
		e.PrimaryKey, e.SecondaryKey = RandomKey(), RandomKey()
	}
	for _, k := range []string{e.PrimaryKey, e.SecondaryKey} {
		if err := validKey(k); err != nil {
			return e, fmt.Errorf("enrollment %s: %w", e.RegistrationID, err)
		}
	}
	return e, nil
}

// CertificateInfo describes an X.509 certificate as the DPS service API
// shows it.
type CertificateInfo struct {
	SubjectName, IssuerName, SHA1Thumbprint, SHA256Thumbprint, SerialNumber string
	NotBefore, NotAfter                                                     time.Time
	Version                                                                 int
}

// DescribeCertificate returns the info of the first certificate of a PEM
// text; ErrInvalid when there is none.
func DescribeCertificate(pemText string) (CertificateInfo, error) {
	certs, err := pki.ParseCertificates([]byte(pemText))
	if err != nil || len(certs) == 0 {
		return CertificateInfo{}, fmt.Errorf("%w: not a PEM certificate", ErrInvalid)
	}
	return describe(certs[0]), nil
}

func describe(c *x509.Certificate) CertificateInfo {
	s1 := sha1.Sum(c.Raw) // #nosec G401 -- a thumbprint
	s256 := sha256.Sum256(c.Raw)
	return CertificateInfo{
		SubjectName: c.Subject.String(), IssuerName: c.Issuer.String(),
		SHA1Thumbprint: strings.ToUpper(hex.EncodeToString(s1[:])), SHA256Thumbprint: strings.ToUpper(hex.EncodeToString(s256[:])),
		SerialNumber: strings.ToUpper(c.SerialNumber.Text(16)), NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), Version: c.Version,
	}
}

// PutEnrollment creates or replaces the individual enrollment e. A
// non-empty ifMatch must be the current etag ("*" matches any existing
// enrollment), else ErrPreconditionFailed; with ifMatch and no enrollment,
// ErrNotFound. It returns what was stored and whether it was created;
// ErrInvalid for a bad id, key, certificate or setting.
func (c *Core) PutEnrollment(e Enrollment, ifMatch string) (Enrollment, bool, error) {
	return c.putEnrollment(e, ifMatch, false)
}

// CreateEnrollment is PutEnrollment of a new enrollment: ErrConflict when
// one with its registration id exists.
func (c *Core) CreateEnrollment(e Enrollment) (Enrollment, error) {
	out, _, err := c.putEnrollment(e, "", true)
	return out, err
}

func (c *Core) putEnrollment(e Enrollment, ifMatch string, create bool) (Enrollment, bool, error) {
	ne, err := NormalizeEnrollment(e)
	if err != nil {
		return Enrollment{}, false, err
	}
	c.mu.Lock()
	s := c.dpsLocked()
	old := s.enrollments[ne.RegistrationID]
	if create && old != nil {
		c.mu.Unlock()
		return Enrollment{}, false, fmt.Errorf("%w: enrollment %q", ErrConflict, ne.RegistrationID)
	}
	if err := checkIfMatch(ifMatch, old != nil, func() string { return old.ETag }, "enrollment "+ne.RegistrationID); err != nil {
		c.mu.Unlock()
		return Enrollment{}, false, err
	}
	var created time.Time
	if old != nil {
		created = old.DPS.Created
	}
	if ne.DPS, err = normalizeSettings(ne.DPS, "enrollment "+ne.RegistrationID, created, c.now()); err != nil {
		c.mu.Unlock()
		return Enrollment{}, false, err
	}
	ne.ETag = newETag()
	s.enrollments[ne.RegistrationID] = &ne
	ch := c.stageLocked(enrollmentChange(&ne))
	c.mu.Unlock()
	if err := awaitNow(ch); err != nil {
		return Enrollment{}, false, err
	}
	c.log.Info("individual enrollment stored", "registration_id", ne.RegistrationID, "enabled", ne.Enabled, "x509", ne.IsX509())
	return ne, old == nil, nil
}

// checkIfMatch applies an If-Match value to something that exists or not.
func checkIfMatch(ifMatch string, exists bool, cur func() string, what string) error {
	if ifMatch == "" {
		return nil
	}
	if !exists {
		return fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	if !etagMatches(ifMatch, cur()) {
		return fmt.Errorf("%w: %s", ErrPreconditionFailed, what)
	}
	return nil
}

// Enrollment returns the individual enrollment id, or ErrNotFound.
func (c *Core) Enrollment(id string) (Enrollment, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.dpsLocked().enrollments[id]
	if e == nil {
		return Enrollment{}, fmt.Errorf("%w: enrollment %q", ErrNotFound, id)
	}
	return *e, nil
}

// Enrollments lists the individual enrollments by registration id.
func (c *Core) Enrollments() []Enrollment {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Enrollment, 0, len(c.dpsLocked().enrollments))
	for _, e := range c.dpsSvc.enrollments {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b Enrollment) int { return strings.Compare(a.RegistrationID, b.RegistrationID) })
	return out
}

// DeleteEnrollment removes the individual enrollment id and its
// registration state (the hub device stays, as on DPS). It returns
// ErrNotFound and ErrPreconditionFailed (ifMatch not the current etag).
func (c *Core) DeleteEnrollment(id, ifMatch string) error {
	c.mu.Lock()
	s := c.dpsLocked()
	e := s.enrollments[id]
	if e == nil {
		c.mu.Unlock()
		return fmt.Errorf("%w: enrollment %q", ErrNotFound, id)
	}
	if err := checkIfMatch(ifMatch, true, func() string { return e.ETag }, "enrollment "+id); err != nil {
		c.mu.Unlock()
		return err
	}
	delete(s.enrollments, id)
	changes := []Change{{Op: OpDelete, Record: Record{Kind: KindMeta, Key: metaDPSEnrollPrefix + id}}}
	if r := s.regs[id]; r != nil && r.GroupID == "" {
		delete(s.regs, id)
		changes = append(changes, Change{Op: OpDelete, Record: Record{Kind: KindMeta, Key: metaDPSRegPrefix + id}})
	}
	ch := c.stageLocked(changes...)
	c.mu.Unlock()
	if err := awaitNow(ch); err != nil {
		return err
	}
	c.log.Info("individual enrollment deleted", "registration_id", id)
	return nil
}

// PutDPSEnrollmentGroup creates or replaces an enrollment group through
// the DPS service API: g.DPS must be set. ifMatch is checked as by
// PutEnrollment. A replaced group keeps its display name when g has none.
// It returns what was stored and whether it was created.
func (c *Core) PutDPSEnrollmentGroup(g EnrollmentGroup, ifMatch string) (EnrollmentGroup, bool, error) {
	if g.DPS == nil {
		g.DPS = &DPSSettings{}
	}
	c.mu.Lock()
	old, exists := c.group(g.ID)
	if err := checkIfMatch(ifMatch, exists, func() string { return old.ETag }, "enrollment group "+g.ID); err != nil {
		c.mu.Unlock()
		return EnrollmentGroup{}, false, err
	}
	if exists && g.DisplayName == "" {
		g.DisplayName = old.DisplayName
	}
	c.mu.Unlock()
	// PutEnrollmentGroup checks the etag again under its lock: a change
	// in between is refused, not lost.
	stored, err := c.putEnrollmentGroup(g, exists, old.ETag)
	return stored, !exists, err
}

// DeleteDPSEnrollmentGroup removes group id and its registration states
// (its devices stay). It returns ErrNotFound and ErrPreconditionFailed.
func (c *Core) DeleteDPSEnrollmentGroup(id, ifMatch string) error {
	c.mu.Lock()
	g, ok := c.group(id)
	if !ok {
		c.mu.Unlock()
		return fmt.Errorf("%w: enrollment group %q", ErrNotFound, id)
	}
	if err := checkIfMatch(ifMatch, true, func() string { return g.ETag }, "enrollment group "+id); err != nil {
		c.mu.Unlock()
		return err
	}
	s := c.dpsLocked()
	var changes []Change
	for rid, r := range s.regs {
		if r.GroupID == id {
			delete(s.regs, rid)
			changes = append(changes, Change{Op: OpDelete, Record: Record{Kind: KindMeta, Key: metaDPSRegPrefix + rid}})
		}
	}
	ch := c.stageLocked(changes...)
	c.mu.Unlock()
	if err := awaitNow(ch); err != nil {
		return err
	}
	return c.DeleteEnrollmentGroup(id)
}

// EnrollmentGroup returns group id, or ErrNotFound.
func (c *Core) EnrollmentGroup(id string) (EnrollmentGroup, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.group(id)
	if !ok {
		return EnrollmentGroup{}, fmt.Errorf("%w: enrollment group %q", ErrNotFound, id)
	}
	g.CACertPEM = slices.Clone(g.CACertPEM)
	return g, nil
}

// RegistrationState returns the registration state of id, or ErrNotFound.
func (c *Core) RegistrationState(id string) (RegistrationState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.dpsLocked().regs[id]
	if r == nil {
		return RegistrationState{}, fmt.Errorf("%w: registration %q", ErrNotFound, id)
	}
	return *r, nil
}

// RegistrationStates lists the registration states of enrollment group
// groupID by registration id ("" lists those of individual enrollments).
func (c *Core) RegistrationStates(groupID string) []RegistrationState {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []RegistrationState
	for _, r := range c.dpsLocked().regs {
		if r.GroupID == groupID {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b RegistrationState) int { return strings.Compare(a.RegistrationID, b.RegistrationID) })
	return out
}

// DeleteRegistrationState forgets the registration state of id: the next
// registration is a first assignment again (SubstatusInitial, the
// enrollment's initial twin applied). The hub device stays. It returns
// ErrNotFound and ErrPreconditionFailed.
func (c *Core) DeleteRegistrationState(id, ifMatch string) error {
	c.mu.Lock()
	s := c.dpsLocked()
	r := s.regs[id]
	if r == nil {
		c.mu.Unlock()
		return fmt.Errorf("%w: registration %q", ErrNotFound, id)
	}
	if err := checkIfMatch(ifMatch, true, func() string { return r.ETag }, "registration "+id); err != nil {
		c.mu.Unlock()
		return err
	}
	delete(s.regs, id)
	ch := c.stageLocked(Change{Op: OpDelete, Record: Record{Kind: KindMeta, Key: metaDPSRegPrefix + id}})
	c.mu.Unlock()
	if err := awaitNow(ch); err != nil {
		return err
	}
	c.log.Info("registration state deleted", "registration_id", id)
	return nil
}

// applyInitialTwinLocked gives d the initial twin t; c.mu held.
func (c *Core) applyInitialTwinLocked(d *device, t *InitialTwin, now time.Time) {
	if t == nil {
		return
	}
	if t.Tags != nil {
		d.tags = deepCopyMap(t.Tags)
		d.tagsVersion++
	}
	if t.Desired != nil {
		patch := replacePatch(d.desired.Properties(), deepCopyMap(t.Desired))
		if len(patch) > 0 {
			if v, err := d.desired.Apply(patch, now); err != nil {
				c.log.Warn("initial twin not applied", "device_id", d.id, "error", err)
			} else {
				c.emit(Event{DeviceID: d.id, Kind: EventDesired, Version: v, Time: now})
			}
		}
	}
}
