package emulator

import (
	"context"
	"crypto/sha1" // #nosec G505 -- thumbprints are SHA-1 by definition
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/dashboard"
	"github.com/iotc-go/iotc/emulator/internal/pki"
	"github.com/iotc-go/iotc/emulator/internal/restapi"
)

// startREST serves the operator API over HTTPS with the server certificate.
func (e *Emulator) startREST() error {
	ln, err := net.Listen("tcp", e.cfg.restAddr)
	if err != nil {
		return fmt.Errorf("emulator: REST listener: %w", err)
	}
	cfg := e.serverTLS()
	cfg.ClientAuth = tls.NoClientCert
	dash, err := dashboard.New(dashBackend{e}, e.cfg.apiToken, e.core.Done(), e.log.With("component", "dashboard"))
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("emulator: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", restapi.New(restBackend{e}, restapi.Options{
		Token: e.cfg.apiToken, AllowBearer: e.cfg.restBearer, PageSize: e.cfg.restPageSize,
		Logger: e.log.With("component", "rest"),
	}))
	mux.Handle("/", dash) // the web dashboard; see dashboard.go
	e.restSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
	}
	e.restURL = "https://" + ln.Addr().String()
	tln := tls.NewListener(ln, cfg)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := e.restSrv.Serve(tln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("REST server stopped", "error", err)
		}
	}()
	return nil
}

// restBackend adapts *Emulator to restapi.Backend.
type restBackend struct{ e *Emulator }

var _ restapi.Backend = restBackend{}

// restErr maps the emulator's sentinels onto the REST API's.
func restErr(err error) error {
	var target error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		target = restapi.ErrNotFound
	case errors.Is(err, ErrDeviceOffline):
		target = restapi.ErrDeviceOffline
	case errors.Is(err, ErrTimeout):
		target = restapi.ErrTimeout
	case errors.Is(err, ErrQueueFull):
		target = restapi.ErrQueueFull
	case errors.Is(err, ErrTooLarge):
		target = restapi.ErrTooLarge
	case errors.Is(err, ErrInvalid):
		target = restapi.ErrValidation
	case errors.Is(err, ErrConflict):
		target = restapi.ErrConflict
	default:
		return err
	}
	return restError{target: target, err: err}
}

// restError matches both the REST sentinel and the model's error; its
// text is the model's detail once, without internal package prefixes
// ("not found: device \"x\"", not "restapi: not found: emulator: not
// found: device \"x\"").
type restError struct{ target, err error }

func (e restError) Error() string   { return strings.TrimPrefix(e.err.Error(), "emulator: ") }
func (e restError) Unwrap() []error { return []error{e.target, e.err} }

func toRESTDevice(d DeviceDetails) restapi.Device {
	return restapi.Device{
		ID: d.ID, DisplayName: d.DisplayName, Template: d.Template, Enabled: d.Enabled,
		Provisioned: d.Provisioned, Simulated: d.Simulated, Organizations: d.Organizations,
		Connected: d.Connected, IndividualKeys: d.IndividualKeys,
	}
}

func (b restBackend) ListDevices(ctx context.Context) ([]restapi.Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ds := b.e.Devices()
	out := make([]restapi.Device, 0, len(ds))
	for _, d := range ds {
		if dd, err := b.e.core.DeviceDetails(d.ID); err == nil {
			out = append(out, toRESTDevice(dd))
		}
	}
	return out, nil
}

func (b restBackend) GetDevice(ctx context.Context, id string) (restapi.Device, error) {
	if err := ctx.Err(); err != nil {
		return restapi.Device{}, err
	}
	d, err := b.e.core.DeviceDetails(id)
	return toRESTDevice(d), restErr(err)
}

func (b restBackend) DeviceCredentials(ctx context.Context, id string) (restapi.DeviceCredentials, error) {
	if err := ctx.Err(); err != nil {
		return restapi.DeviceCredentials{}, err
	}
	d, err := b.e.Device(id)
	if err != nil {
		return restapi.DeviceCredentials{}, restErr(err)
	}
	return restapi.DeviceCredentials{
		IDScope:      b.e.IDScope(),
		SymmetricKey: restapi.SymmetricKey{PrimaryKey: d.PrimaryKey, SecondaryKey: d.SecondaryKey},
		X509:         d.Attestation == AttestationX509,
	}, nil
}

func (b restBackend) DeviceTwin(ctx context.Context, id string) (restapi.Twin, error) {
	if err := ctx.Err(); err != nil {
		return restapi.Twin{}, err
	}
	desired, reported, err := b.e.Twin(id)
	return restapi.Twin{Desired: desired, Reported: reported}, restErr(err)
}

func (b restBackend) PatchDesired(ctx context.Context, id string, patch map[string]any) error {
	return restErr(b.e.UpdateProperties(ctx, id, "", patch))
}

func rawPayload(r json.RawMessage) any {
	if len(r) == 0 {
		return nil
	}
	return r
}

func (b restBackend) InvokeCommand(ctx context.Context, id, component, name string, req restapi.CommandRequest) (restapi.CommandResult, error) {
	res, err := b.e.core.InvokeCommand(ctx, id, component, name, rawPayload(req.Request),
		time.Duration(req.ConnectionTimeout)*time.Second, time.Duration(req.ResponseTimeout)*time.Second)
	if err != nil {
		return restapi.CommandResult{}, restErr(err)
	}
	return restapi.CommandResult{RequestID: res.RequestID, ResponseCode: res.Status, Response: res.Payload}, nil
}

func (b restBackend) QueueCommand(ctx context.Context, id, component, name string, request json.RawMessage) error {
	return restErr(b.e.QueueCommand(ctx, id, component, name, rawPayload(request)))
}

func (b restBackend) SendMessage(ctx context.Context, id string, msg restapi.CloudMessage) error {
	return restErr(b.e.SendCloudToDevice(ctx, id, msg.Data, msg.Properties))
}

func (b restBackend) LatestTelemetry(ctx context.Context, id, component, name string) (restapi.TelemetryValue, error) {
	if err := ctx.Err(); err != nil {
		return restapi.TelemetryValue{}, err
	}
	v, err := b.e.LatestTelemetry(id, component, name)
	return restapi.TelemetryValue{Timestamp: v.Timestamp, Value: v.Value}, restErr(err)
}

func (b restBackend) TelemetryHistory(ctx context.Context, id string, q restapi.TelemetryQuery) ([]restapi.TelemetryMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ms, err := b.e.TelemetryHistory(id, TelemetryFilter{Since: q.Since, Component: q.Component, ByComponent: q.ByComponent, Limit: q.Limit})
	if err != nil {
		return nil, restErr(err)
	}
	out := make([]restapi.TelemetryMessage, len(ms))
	for i, m := range ms {
		tm := restapi.TelemetryMessage{
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

func toRESTGroup(g EnrollmentGroup) restapi.EnrollmentGroup {
	out := restapi.EnrollmentGroup{ID: g.ID, DisplayName: g.DisplayName, Type: "iot", Enabled: g.Enabled}
	if !g.IsX509() {
		out.Attestation = restapi.Attestation{
			Type:         restapi.AttestationSymmetricKey,
			SymmetricKey: restapi.SymmetricKey{PrimaryKey: g.PrimaryKey, SecondaryKey: g.SecondaryKey},
		}
		return out
	}
	out.Attestation.Type = restapi.AttestationX509
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
func (b restBackend) withVerified(g restapi.EnrollmentGroup) restapi.EnrollmentGroup {
	sc := &g.Attestation.X509.SigningCertificates
	for _, c := range []*restapi.X509Certificate{&sc.Primary, &sc.Secondary} {
		if c.Certificate != "" {
			c.Verified = b.e.core.CertificateVerified(g.ID, certThumbprint(c.Certificate))
		}
	}
	return g
}

func (b restBackend) ListEnrollmentGroups(ctx context.Context) ([]restapi.EnrollmentGroup, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	gs := b.e.EnrollmentGroups()
	out := make([]restapi.EnrollmentGroup, len(gs))
	for i, g := range gs {
		out[i] = b.withVerified(toRESTGroup(g))
	}
	return out, nil
}

func (b restBackend) GetEnrollmentGroup(ctx context.Context, id string) (restapi.EnrollmentGroup, error) {
	if err := ctx.Err(); err != nil {
		return restapi.EnrollmentGroup{}, err
	}
	gs := b.e.EnrollmentGroups()
	i := slices.IndexFunc(gs, func(g EnrollmentGroup) bool { return g.ID == id })
	if i < 0 {
		return restapi.EnrollmentGroup{}, restError{target: restapi.ErrNotFound, err: fmt.Errorf("not found: enrollment group %q", id)}
	}
	return b.withVerified(toRESTGroup(gs[i])), nil
}

func (b restBackend) PutEnrollmentGroup(ctx context.Context, rg restapi.EnrollmentGroup) (restapi.EnrollmentGroup, error) {
	if err := ctx.Err(); err != nil {
		return restapi.EnrollmentGroup{}, err
	}
	g := EnrollmentGroup{ID: rg.ID, DisplayName: rg.DisplayName, Enabled: rg.Enabled}
	switch rg.Attestation.Type {
	case restapi.AttestationX509:
		sc := rg.Attestation.X509.SigningCertificates
		g.CACertPEM = []byte(sc.Primary.Certificate)
		if sc.Secondary.Certificate != "" {
			g.CACertPEM = append(append(g.CACertPEM, '\n'), sc.Secondary.Certificate...)
		}
		if len(g.CACertPEM) == 0 {
			return restapi.EnrollmentGroup{}, restError{target: restapi.ErrBadRequest, err: fmt.Errorf("X.509 group %q without a signing certificate", rg.ID)}
		}
	default:
		g.PrimaryKey, g.SecondaryKey = rg.Attestation.SymmetricKey.PrimaryKey, rg.Attestation.SymmetricKey.SecondaryKey
	}
	stored, err := b.e.PutEnrollmentGroup(g)
	if err != nil {
		return restapi.EnrollmentGroup{}, restErr(err)
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

func (b restBackend) DeleteEnrollmentGroup(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return restErr(b.e.DeleteEnrollmentGroup(id))
}

func (b restBackend) IssueVerificationCode(ctx context.Context, group, entry string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	code, err := b.e.core.IssueVerificationCode(group, entry)
	return code, restErr(err)
}

func (b restBackend) ConsumeVerificationCode(ctx context.Context, group, entry, code, thumbprint string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return restErr(b.e.core.ConsumeVerificationCode(group, entry, code, thumbprint))
}

func (b restBackend) PutDevice(ctx context.Context, id string, s restapi.DeviceSpec) (restapi.Device, error) {
	if err := ctx.Err(); err != nil {
		return restapi.Device{}, err
	}
	d, err := b.e.PutDevice(id, DeviceSpec{DisplayName: s.DisplayName, Template: s.Template, Enabled: s.Enabled,
		Simulated: s.Simulated, Organizations: s.Organizations})
	return toRESTDevice(d), restErr(err)
}

func (b restBackend) DeleteDevice(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return restErr(b.e.DeleteDevice(id))
}

func (b restBackend) SetDeviceKeys(ctx context.Context, id string, k restapi.SymmetricKey) (restapi.SymmetricKey, error) {
	if err := ctx.Err(); err != nil {
		return restapi.SymmetricKey{}, err
	}
	p, s, err := b.e.core.SetDeviceKeys(id, k.PrimaryKey, k.SecondaryKey)
	return restapi.SymmetricKey{PrimaryKey: p, SecondaryKey: s}, restErr(err)
}

func (b restBackend) RemoveDeviceKeys(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return restErr(b.e.core.RemoveDeviceKeys(id))
}

func (b restBackend) DeviceComponents(ctx context.Context, id string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	names, err := b.e.core.DeviceComponents(id)
	return names, restErr(err)
}

func toRESTInterface(c *core.Capabilities) restapi.TemplateInterface {
	if c == nil {
		return restapi.TemplateInterface{Open: true}
	}
	return restapi.TemplateInterface{Properties: c.Properties, Commands: c.Commands, Open: c.Open}
}

func (b restBackend) DeviceModel(ctx context.Context, id string) (*restapi.TemplateModel, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := b.e.Device(id); err != nil {
		return nil, restErr(err)
	}
	m, ok := b.e.core.DeviceModel(id)
	if !ok {
		return nil, nil
	}
	out := &restapi.TemplateModel{Root: toRESTInterface(m.Root), Components: map[string]restapi.TemplateInterface{}}
	for name, c := range m.Components {
		out.Components[name] = toRESTInterface(c)
	}
	return out, nil
}

func (b restBackend) CommandHistory(ctx context.Context, id, component, name string) ([]restapi.CommandInvocation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rs, err := b.e.CommandHistory(id, component, name)
	if err != nil {
		return nil, restErr(err)
	}
	out := make([]restapi.CommandInvocation, len(rs))
	for i, r := range rs {
		out[i] = restapi.CommandInvocation{ID: r.ID, Request: r.Request, Response: r.Response, ResponseCode: r.ResponseCode,
			ConnectionTimeout: r.ConnectionTimeout, ResponseTimeout: r.ResponseTimeout}
	}
	return out, nil
}

func (b restBackend) ListTemplates(ctx context.Context) ([]map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return b.e.DeviceTemplates(), nil
}

func (b restBackend) GetTemplate(ctx context.Context, id string) (map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := b.e.DeviceTemplate(id)
	return t, restErr(err)
}

func (b restBackend) PutTemplate(ctx context.Context, id string, doc map[string]any) (map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := b.e.PutDeviceTemplate(id, doc)
	return t, restErr(err)
}

func (b restBackend) DeleteTemplate(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return restErr(b.e.DeleteDeviceTemplate(id))
}
