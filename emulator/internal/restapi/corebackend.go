package restapi

import (
	"context"
	"crypto/sha1" // #nosec G505 -- thumbprints are SHA-1 by definition
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/pki"
)

// coreBackend is the Backend of the emulator: the core's use cases, with
// the core's errors (the REST sentinels are the core's, see types.go).
type coreBackend struct{ c *core.Core }

var (
	_ Backend      = coreBackend{}
	_ FaultBackend = coreBackend{}
)

// NewCore returns the REST API over the emulator's core.
func NewCore(c *core.Core, o Options) http.Handler { return New(coreBackend{c}, o) }

func toRESTDevice(d core.DeviceDetails) Device {
	return Device{
		ID: d.ID, DisplayName: d.DisplayName, Template: d.Template, Enabled: d.Enabled,
		Provisioned: d.Provisioned, Simulated: d.Simulated, Organizations: d.Organizations,
		Connected: d.Connected, IndividualKeys: d.IndividualKeys,
	}
}

// restDevice is the device as IoT Central shows it: its template is the
// id of the device template it uses (assigned, or matched by the model id
// the device announced, as IoT Central associates a connecting device),
// never the model id itself; a model id no template matches leaves the
// device unassigned (no template).
func (b coreBackend) restDevice(dd core.DeviceDetails) Device {
	d := toRESTDevice(dd)
	if d.Template == "" {
		return d
	}
	if m, ok := b.c.DeviceModel(dd.ID); ok {
		d.Template = m.ID
	} else if d.Template == dd.ModelID {
		d.Template = ""
	}
	return d
}

func (b coreBackend) ListDevices(ctx context.Context) ([]Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ds := b.c.Devices()
	out := make([]Device, 0, len(ds))
	for _, d := range ds {
		if dd, err := b.c.DeviceDetails(d.ID); err == nil {
			out = append(out, b.restDevice(dd))
		}
	}
	return out, nil
}

func (b coreBackend) GetDevice(ctx context.Context, id string) (Device, error) {
	if err := ctx.Err(); err != nil {
		return Device{}, err
	}
	d, err := b.c.DeviceDetails(id)
	if err != nil {
		return Device{}, err
	}
	return b.restDevice(d), nil
}

func (b coreBackend) DeviceCredentials(ctx context.Context, id string) (DeviceCredentials, error) {
	if err := ctx.Err(); err != nil {
		return DeviceCredentials{}, err
	}
	d, err := b.c.Device(id)
	if err != nil {
		return DeviceCredentials{}, err
	}
	return DeviceCredentials{
		IDScope:      b.c.IDScope(),
		SymmetricKey: SymmetricKey{PrimaryKey: d.PrimaryKey, SecondaryKey: d.SecondaryKey},
		X509:         d.Attestation == core.AttestationX509,
	}, nil
}

func (b coreBackend) DeviceTwin(ctx context.Context, id string) (Twin, error) {
	if err := ctx.Err(); err != nil {
		return Twin{}, err
	}
	desired, reported, err := b.c.Twin(id)
	return Twin{Desired: desired, Reported: reported}, err
}

func (b coreBackend) PatchDesired(ctx context.Context, id string, patch map[string]any) error {
	return b.c.UpdateProperties(ctx, id, "", patch)
}

func rawPayload(r json.RawMessage) any {
	if len(r) == 0 {
		return nil
	}
	return r
}

func (b coreBackend) InvokeCommand(ctx context.Context, id, component, name string, req CommandRequest) (CommandResult, error) {
	res, err := b.c.InvokeCommand(ctx, id, component, name, rawPayload(req.Request),
		time.Duration(req.ConnectionTimeout)*time.Second, time.Duration(req.ResponseTimeout)*time.Second)
	if err != nil {
		return CommandResult{}, err
	}
	return CommandResult{RequestID: res.RequestID, ResponseCode: res.Status, Response: res.Payload}, nil
}

func (b coreBackend) QueueCommand(ctx context.Context, id, component, name string, request json.RawMessage) error {
	return b.c.QueueCommand(ctx, id, component, name, rawPayload(request))
}

func (b coreBackend) SendMessage(ctx context.Context, id string, msg CloudMessage) error {
	return b.c.SendCloudToDevice(ctx, id, msg.Data, msg.Properties)
}

func (b coreBackend) LatestTelemetry(ctx context.Context, id, component, name string) (TelemetryValue, error) {
	if err := ctx.Err(); err != nil {
		return TelemetryValue{}, err
	}
	v, err := b.c.LatestTelemetry(id, component, name)
	return TelemetryValue{Timestamp: v.Timestamp, Value: v.Value}, err
}

func (b coreBackend) TelemetryHistory(ctx context.Context, id string, q TelemetryQuery) ([]TelemetryMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ms, err := b.c.TelemetryHistory(id, core.HistoryFilter{Since: q.Since, Component: q.Component, ByComponent: q.ByComponent, Limit: q.Limit})
	if err != nil {
		return nil, err
	}
	out := make([]TelemetryMessage, len(ms))
	for i, m := range ms {
		tm := TelemetryMessage{
			Timestamp: m.Received, Component: m.Component,
			MessageID: m.MessageID, CorrelationID: m.CorrelationID,
			ContentType: m.ContentType, ContentEncoding: m.ContentEncoding,
			Properties: m.Properties, SystemProperties: m.SystemProperties(),
		}
		if len(m.Body) > 0 && json.Valid(m.Body) {
			tm.Data = m.Body
		} else {
			tm.DataBase64 = m.Body
		}
		out[i] = tm
	}
	return out, nil
}

func toRESTGroup(g core.EnrollmentGroup) EnrollmentGroup {
	out := EnrollmentGroup{ID: g.ID, DisplayName: g.DisplayName, Type: g.Type, Enabled: g.Enabled}
	if out.Type == "" {
		out.Type = core.GroupTypeIoT
	}
	if !g.IsX509() {
		out.Attestation = Attestation{
			Type:         AttestationSymmetricKey,
			SymmetricKey: SymmetricKey{PrimaryKey: g.PrimaryKey, SecondaryKey: g.SecondaryKey},
		}
		return out
	}
	out.Attestation.Type = AttestationX509
	certs, err := pki.ParseCertificates(g.CACertPEM)
	if err != nil {
		return out
	}
	sc := &out.Attestation.X509.SigningCertificates
	sc.Primary.Certificate = string(pki.EncodeCertificate(certs[0]))
	if len(certs) > 1 {
		sc.Secondary.Certificate = string(pki.EncodeCertificate(certs[1]))
	}
	return out
}

// withVerified marks the group's certificates proven by verify.
func (b coreBackend) withVerified(g EnrollmentGroup) EnrollmentGroup {
	sc := &g.Attestation.X509.SigningCertificates
	for _, c := range []*X509Certificate{&sc.Primary, &sc.Secondary} {
		if c.Certificate != "" {
			c.Verified = b.c.CertificateVerified(g.ID, certThumbprint(c.Certificate))
		}
	}
	return g
}

func (b coreBackend) ListEnrollmentGroups(ctx context.Context) ([]EnrollmentGroup, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	gs := b.c.EnrollmentGroups()
	out := make([]EnrollmentGroup, len(gs))
	for i, g := range gs {
		out[i] = b.withVerified(toRESTGroup(g))
	}
	return out, nil
}

func (b coreBackend) GetEnrollmentGroup(ctx context.Context, id string) (EnrollmentGroup, error) {
	if err := ctx.Err(); err != nil {
		return EnrollmentGroup{}, err
	}
	gs := b.c.EnrollmentGroups()
	i := slices.IndexFunc(gs, func(g core.EnrollmentGroup) bool { return g.ID == id })
	if i < 0 {
		return EnrollmentGroup{}, fmt.Errorf("%w: enrollment group %q", ErrNotFound, id)
	}
	return b.withVerified(toRESTGroup(gs[i])), nil
}

func (b coreBackend) PutEnrollmentGroup(ctx context.Context, rg EnrollmentGroup) (EnrollmentGroup, error) {
	if err := ctx.Err(); err != nil {
		return EnrollmentGroup{}, err
	}
	g := core.EnrollmentGroup{ID: rg.ID, DisplayName: rg.DisplayName, Enabled: rg.Enabled, Type: rg.Type}
	switch rg.Attestation.Type {
	case AttestationX509:
		sc := rg.Attestation.X509.SigningCertificates
		g.CACertPEM = []byte(sc.Primary.Certificate)
		if sc.Secondary.Certificate != "" {
			g.CACertPEM = append(append(g.CACertPEM, '\n'), sc.Secondary.Certificate...)
		}
		if len(g.CACertPEM) == 0 {
			return EnrollmentGroup{}, fmt.Errorf("%w: X.509 group %q without a signing certificate", ErrBadRequest, rg.ID)
		}
	default:
		g.PrimaryKey, g.SecondaryKey = rg.Attestation.SymmetricKey.PrimaryKey, rg.Attestation.SymmetricKey.SecondaryKey
	}
	stored, err := b.c.PutEnrollmentGroup(g)
	if err != nil {
		return EnrollmentGroup{}, err
	}
	return b.withVerified(toRESTGroup(stored)), nil
}

// certThumbprint is the upper-case hex SHA-1 of the first certificate of a PEM text.
func certThumbprint(pemText string) string {
	certs, err := pki.ParseCertificates([]byte(pemText))
	if err != nil || len(certs) == 0 {
		return ""
	}
	sum := sha1.Sum(certs[0].Raw) // #nosec G401 -- a thumbprint, not a signature
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

func (b coreBackend) DeleteEnrollmentGroup(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.c.DeleteEnrollmentGroup(id)
}

func (b coreBackend) IssueVerificationCode(ctx context.Context, group, entry string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	code, err := b.c.IssueVerificationCode(group, entry)
	return code, err
}

func (b coreBackend) ConsumeVerificationCode(ctx context.Context, group, entry, code, thumbprint string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.c.ConsumeVerificationCode(group, entry, code, thumbprint)
}

func (b coreBackend) PutDevice(ctx context.Context, id string, s DeviceSpec) (Device, error) {
	if err := ctx.Err(); err != nil {
		return Device{}, err
	}
	d, _, err := b.c.PutDevice(id, core.DeviceSpec{DisplayName: s.DisplayName, Template: s.Template, Enabled: s.Enabled,
		Simulated: s.Simulated, Organizations: s.Organizations})
	if err != nil {
		return Device{}, err
	}
	return b.restDevice(d), nil
}

func (b coreBackend) DeleteDevice(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.c.DeleteDevice(id)
}

func (b coreBackend) SetDeviceKeys(ctx context.Context, id string, k SymmetricKey) (SymmetricKey, error) {
	if err := ctx.Err(); err != nil {
		return SymmetricKey{}, err
	}
	p, s, err := b.c.SetDeviceKeys(id, k.PrimaryKey, k.SecondaryKey)
	return SymmetricKey{PrimaryKey: p, SecondaryKey: s}, err
}

func (b coreBackend) RemoveDeviceKeys(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.c.RemoveDeviceKeys(id)
}

func (b coreBackend) DeviceComponents(ctx context.Context, id string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	names, err := b.c.DeviceComponents(id)
	return names, err
}

func toRESTInterface(c *core.Capabilities) TemplateInterface {
	if c == nil {
		return TemplateInterface{Open: true}
	}
	return TemplateInterface{Properties: c.Properties, Commands: c.Commands, Open: c.Open}
}

func (b coreBackend) DeviceModel(ctx context.Context, id string) (*TemplateModel, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := b.c.Device(id); err != nil {
		return nil, err
	}
	m, ok := b.c.DeviceModel(id)
	if !ok {
		return nil, nil
	}
	out := &TemplateModel{Root: toRESTInterface(m.Root), Components: map[string]TemplateInterface{}}
	for name, c := range m.Components {
		out.Components[name] = toRESTInterface(c)
	}
	return out, nil
}

func (b coreBackend) CommandHistory(ctx context.Context, id, component, name string) ([]CommandInvocation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rs, err := b.c.CommandHistory(id, component, name)
	if err != nil {
		return nil, err
	}
	out := make([]CommandInvocation, len(rs))
	for i, r := range rs {
		out[i] = CommandInvocation{ID: r.ID, Request: r.Request, Response: r.Response, ResponseCode: r.ResponseCode,
			ConnectionTimeout: r.ConnectionTimeout, ResponseTimeout: r.ResponseTimeout}
	}
	return out, nil
}

func (b coreBackend) ListTemplates(ctx context.Context) ([]map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return b.c.Templates(), nil
}

func (b coreBackend) GetTemplate(ctx context.Context, id string) (map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := b.c.Template(id)
	return t, err
}

func (b coreBackend) PutTemplate(ctx context.Context, id string, doc map[string]any) (map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := b.c.PutTemplate(id, doc)
	return t, err
}

func (b coreBackend) DeleteTemplate(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.c.DeleteTemplate(id)
}

var _ FaultBackend = coreBackend{}

// InjectFault implements FaultBackend.
func (b coreBackend) InjectFault(ctx context.Context, id string, f FaultRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	all := id == AllDevices
	kind := core.FaultKind(f.Type)
	d := time.Duration(f.DurationInSecs * float64(time.Second))
	switch {
	case all && kind == core.FaultRefuseConnections:
		if d == 0 {
			d = core.DefaultFaultDuration
		}
		return b.c.RefuseConnections("", d)
	case all && kind == core.FaultThrottling:
		if d == 0 {
			d = core.DefaultFaultDuration
		}
		return b.c.Throttle("", d)
	case all:
		return fmt.Errorf("%w: fault %q applies to one device, not %q", ErrBadRequest, f.Type, AllDevices)
	}
	return b.c.InjectFault(id, core.Fault{
		Kind: kind, Graceful: f.CloseReason == "byebye",
		Delay: time.Duration(f.DelayInSecs * float64(time.Second)), Duration: d,
	})
}

// ClearFaults implements FaultBackend.
func (b coreBackend) ClearFaults(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if id == AllDevices {
		b.c.ClearFaults("")
		return nil
	}
	if _, err := b.c.Device(id); err != nil {
		return err
	}
	b.c.ClearFaults(id)
	return nil
}

var _ TokenBackend = coreBackend{}

func toRESTToken(t core.APIToken) APIToken {
	out := APIToken{ID: t.ID, Expiry: t.Expiry, Roles: make([]RoleAssignment, len(t.Roles))}
	for i, r := range t.Roles {
		out.Roles[i] = RoleAssignment{Role: r.Role, Organization: r.Organization}
	}
	return out
}

// ListAPITokens implements TokenBackend.
func (b coreBackend) ListAPITokens(ctx context.Context) ([]APIToken, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ts := b.c.APITokens()
	out := make([]APIToken, len(ts))
	for i, t := range ts {
		out[i] = toRESTToken(t)
	}
	return out, nil
}

// GetAPIToken implements TokenBackend.
func (b coreBackend) GetAPIToken(ctx context.Context, id string) (APIToken, error) {
	if err := ctx.Err(); err != nil {
		return APIToken{}, err
	}
	t, err := b.c.APIToken(id)
	if err != nil {
		return APIToken{}, err
	}
	return toRESTToken(t), nil
}

// CreateAPIToken implements TokenBackend.
func (b coreBackend) CreateAPIToken(ctx context.Context, t APIToken, hash [sha256.Size]byte) (APIToken, error) {
	if err := ctx.Err(); err != nil {
		return APIToken{}, err
	}
	ct := core.APIToken{ID: t.ID, Expiry: t.Expiry, Hash: hash, Roles: make([]core.RoleAssignment, len(t.Roles))}
	for i, r := range t.Roles {
		ct.Roles[i] = core.RoleAssignment{Role: r.Role, Organization: r.Organization}
	}
	stored, err := b.c.CreateAPIToken(ct)
	if err != nil {
		return APIToken{}, err
	}
	return toRESTToken(stored), nil
}

// DeleteAPIToken implements TokenBackend.
func (b coreBackend) DeleteAPIToken(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.c.DeleteAPIToken(id)
}

// APITokenByHash implements TokenBackend.
func (b coreBackend) APITokenByHash(ctx context.Context, hash [sha256.Size]byte) (APIToken, error) {
	if err := ctx.Err(); err != nil {
		return APIToken{}, err
	}
	t, ok := b.c.APITokenByHash(hash)
	if !ok {
		return APIToken{}, fmt.Errorf("%w: API token", ErrNotFound)
	}
	return toRESTToken(t), nil
}

var _ DeviceGroupBackend = coreBackend{}

// deviceGroupsCollection names the core's collection of device groups.
const deviceGroupsCollection = "deviceGroups"

// ListDeviceGroups implements DeviceGroupBackend.
func (b coreBackend) ListDeviceGroups(ctx context.Context) ([]DeviceGroup, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	docs := b.c.AppDocs(deviceGroupsCollection)
	out := make([]DeviceGroup, 0, len(docs))
	for _, d := range docs {
		var g DeviceGroup
		if err := json.Unmarshal(d, &g); err != nil {
			return nil, fmt.Errorf("stored device group: %w", err)
		}
		out = append(out, g)
	}
	return out, nil
}

// GetDeviceGroup implements DeviceGroupBackend.
func (b coreBackend) GetDeviceGroup(ctx context.Context, id string) (DeviceGroup, error) {
	if err := ctx.Err(); err != nil {
		return DeviceGroup{}, err
	}
	d, err := b.c.AppDoc(deviceGroupsCollection, id)
	if err != nil {
		return DeviceGroup{}, err
	}
	var g DeviceGroup
	if err := json.Unmarshal(d, &g); err != nil {
		return DeviceGroup{}, fmt.Errorf("stored device group %q: %w", id, err)
	}
	return g, nil
}

// PutDeviceGroup implements DeviceGroupBackend.
func (b coreBackend) PutDeviceGroup(ctx context.Context, g DeviceGroup) (DeviceGroup, error) {
	if err := ctx.Err(); err != nil {
		return DeviceGroup{}, err
	}
	g.Etag = ""
	doc, err := json.Marshal(g)
	if err != nil {
		return DeviceGroup{}, fmt.Errorf("device group %q: %w", g.ID, err)
	}
	if err := b.c.PutAppDoc(deviceGroupsCollection, g.ID, doc); err != nil {
		return DeviceGroup{}, err
	}
	return g, nil
}

// DeleteDeviceGroup implements DeviceGroupBackend.
func (b coreBackend) DeleteDeviceGroup(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.c.DeleteAppDoc(deviceGroupsCollection, id)
}
