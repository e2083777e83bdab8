package dpsapi

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// The JSON of the DPS service API, 2021-10-01.

type symmetricKeyJSON struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

type certInfoJSON struct {
	SubjectName      string `json:"subjectName"`
	SHA1Thumbprint   string `json:"sha1Thumbprint"`
	SHA256Thumbprint string `json:"sha256Thumbprint"`
	IssuerName       string `json:"issuerName"`
	NotBeforeUtc     string `json:"notBeforeUtc"`
	NotAfterUtc      string `json:"notAfterUtc"`
	SerialNumber     string `json:"serialNumber"`
	Version          int    `json:"version"`
}

type certJSON struct {
	Certificate string        `json:"certificate,omitempty"`
	Info        *certInfoJSON `json:"info,omitempty"`
}

type certPairJSON struct {
	Primary   *certJSON `json:"primary,omitempty"`
	Secondary *certJSON `json:"secondary,omitempty"`
}

type x509JSON struct {
	ClientCertificates  *certPairJSON   `json:"clientCertificates,omitempty"`
	SigningCertificates *certPairJSON   `json:"signingCertificates,omitempty"`
	CAReferences        json.RawMessage `json:"caReferences,omitempty"`
}

type attestationJSON struct {
	Type         string            `json:"type"`
	SymmetricKey *symmetricKeyJSON `json:"symmetricKey,omitempty"`
	X509         *x509JSON         `json:"x509,omitempty"`
	TPM          json.RawMessage   `json:"tpm,omitempty"`
}

type initialTwinJSON struct {
	Tags       map[string]any `json:"tags,omitempty"`
	Properties *struct {
		Desired map[string]any `json:"desired,omitempty"`
	} `json:"properties,omitempty"`
}

type reprovisionJSON struct {
	UpdateHubAssignment *bool `json:"updateHubAssignment,omitempty"`
	MigrateDeviceData   *bool `json:"migrateDeviceData,omitempty"`
}

type capabilitiesJSON struct {
	IotEdge bool `json:"iotEdge"`
}

// settingsJSON are the fields individual enrollments and groups share.
type settingsJSON struct {
	Attestation                *attestationJSON  `json:"attestation"`
	Capabilities               *capabilitiesJSON `json:"capabilities,omitempty"`
	IotHubHostName             string            `json:"iotHubHostName,omitempty"`
	InitialTwin                *initialTwinJSON  `json:"initialTwin,omitempty"`
	ETag                       string            `json:"etag,omitempty"`
	ProvisioningStatus         string            `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *reprovisionJSON  `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUtc         string            `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUtc     string            `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           string            `json:"allocationPolicy,omitempty"`
	IotHubs                    []string          `json:"iotHubs,omitempty"`
	CustomAllocationDefinition json.RawMessage   `json:"customAllocationDefinition,omitempty"`
}

type enrollmentJSON struct {
	RegistrationID    string            `json:"registrationId"`
	DeviceID          string            `json:"deviceId,omitempty"`
	RegistrationState *registrationJSON `json:"registrationState,omitempty"`
	settingsJSON
}

type groupJSONT struct {
	EnrollmentGroupID string `json:"enrollmentGroupId"`
	settingsJSON
}

// registrationJSON is a DeviceRegistrationState.
type registrationJSON struct {
	RegistrationID         string `json:"registrationId"`
	CreatedDateTimeUtc     string `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string `json:"assignedHub,omitempty"`
	DeviceID               string `json:"deviceId,omitempty"`
	Status                 string `json:"status"`
	Substatus              string `json:"substatus,omitempty"`
	ErrorCode              int    `json:"errorCode,omitempty"`
	ErrorMessage           string `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUtc string `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string `json:"etag,omitempty"`
}

func regStateJSON(r core.RegistrationState) registrationJSON {
	out := registrationJSON{RegistrationID: r.RegistrationID, AssignedHub: r.AssignedHub, DeviceID: r.DeviceID,
		Status: r.Status, Substatus: r.Substatus, ErrorCode: r.ErrorCode, ErrorMessage: r.ErrorMessage,
		LastUpdatedDateTimeUtc: r.Updated.Format(timeFormat), ETag: r.ETag}
	if r.Status == "assigned" {
		out.CreatedDateTimeUtc = r.Created.Format(timeFormat)
	}
	return out
}

// toSettings reads the shared fields into the core's settings; what names
// the enrollment in errors.
func (s settingsJSON) toSettings(what string) (core.DPSSettings, bool, error) {
	var out core.DPSSettings
	enabled := true
	switch s.ProvisioningStatus {
	case "", "enabled":
	case "disabled":
		enabled = false
	default:
		return out, false, fmt.Errorf("%w: %s: provisioningStatus %q is neither enabled nor disabled", errBadRequest, what, s.ProvisioningStatus)
	}
	out.Reprovision = core.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}
	if p := s.ReprovisionPolicy; p != nil {
		if p.UpdateHubAssignment != nil {
			out.Reprovision.UpdateHubAssignment = *p.UpdateHubAssignment
		}
		if p.MigrateDeviceData != nil {
			out.Reprovision.MigrateDeviceData = *p.MigrateDeviceData
		}
	}
	out.AllocationPolicy = s.AllocationPolicy
	out.IotHubs = s.IotHubs
	out.IotHubHostName = s.IotHubHostName
	if s.Capabilities != nil {
		out.IotEdge = s.Capabilities.IotEdge
	}
	if t := s.InitialTwin; t != nil {
		it := &core.InitialTwin{Tags: t.Tags}
		if t.Properties != nil {
			it.Desired = t.Properties.Desired
		}
		out.InitialTwin = it
	}
	return out, enabled, nil
}

func fromSettings(s *core.DPSSettings, enabled bool, etag string) settingsJSON {
	out := settingsJSON{ETag: etag, ProvisioningStatus: "enabled"}
	if !enabled {
		out.ProvisioningStatus = "disabled"
	}
	if s == nil {
		s = &core.DPSSettings{Reprovision: core.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}, AllocationPolicy: core.AllocationHashed}
	}
	u, m := s.Reprovision.UpdateHubAssignment, s.Reprovision.MigrateDeviceData
	out.ReprovisionPolicy = &reprovisionJSON{UpdateHubAssignment: &u, MigrateDeviceData: &m}
	out.Capabilities = &capabilitiesJSON{IotEdge: s.IotEdge}
	out.AllocationPolicy = s.AllocationPolicy
	out.IotHubs = s.IotHubs
	out.IotHubHostName = s.IotHubHostName
	if !s.Created.IsZero() {
		out.CreatedDateTimeUtc = s.Created.Format(timeFormat)
		out.LastUpdatedDateTimeUtc = s.Updated.Format(timeFormat)
	}
	if t := s.InitialTwin; t != nil {
		it := &initialTwinJSON{Tags: t.Tags}
		if t.Desired != nil {
			it.Properties = &struct {
				Desired map[string]any `json:"desired,omitempty"`
			}{Desired: t.Desired}
		}
		out.InitialTwin = it
	}
	return out
}

// certPEM accepts a certificate as PEM text, base64 of PEM text or base64
// of DER (the forms the service SDKs send) and returns PEM text.
func certPEM(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		return s, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("%w: certificate is neither PEM nor base64", errBadRequest)
	}
	if t := strings.TrimSpace(string(b)); strings.HasPrefix(t, "-----BEGIN") {
		return t, nil
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b})), nil
}

// certPair reads the primary and secondary certificates.
func certPair(p *certPairJSON, what string) ([2]string, error) {
	var out [2]string
	if p == nil {
		return out, fmt.Errorf("%w: %s: no certificates", errBadRequest, what)
	}
	for i, c := range []*certJSON{p.Primary, p.Secondary} {
		if c == nil || c.Certificate == "" {
			continue
		}
		pemText, err := certPEM(c.Certificate)
		if err != nil {
			return out, fmt.Errorf("%s: %w", what, err)
		}
		if _, err := core.DescribeCertificate(pemText); err != nil {
			return out, fmt.Errorf("%s: %w", what, err)
		}
		out[i] = pemText
	}
	if out[0] == "" {
		return out, fmt.Errorf("%w: %s: no primary certificate", errBadRequest, what)
	}
	return out, nil
}

func certInfo(pemText string) *certJSON {
	ci, err := core.DescribeCertificate(pemText)
	if err != nil {
		return nil
	}
	return &certJSON{Info: &certInfoJSON{SubjectName: ci.SubjectName, SHA1Thumbprint: ci.SHA1Thumbprint, SHA256Thumbprint: ci.SHA256Thumbprint,
		IssuerName: ci.IssuerName, NotBeforeUtc: ci.NotBefore.Format(timeFormat), NotAfterUtc: ci.NotAfter.Format(timeFormat),
		SerialNumber: ci.SerialNumber, Version: ci.Version}}
}

func certPairInfo(pems [2]string) *certPairJSON {
	out := &certPairJSON{}
	if pems[0] != "" {
		out.Primary = certInfo(pems[0])
	}
	if pems[1] != "" {
		out.Secondary = certInfo(pems[1])
	}
	return out
}

// checkAttestation refuses what the emulator does not serve.
func checkAttestation(a *attestationJSON, what string) error {
	if a == nil {
		return fmt.Errorf("%w: %s: attestation is missing", errBadRequest, what)
	}
	switch a.Type {
	case "symmetricKey", "x509":
	case "tpm":
		return fmt.Errorf("%w: %s: TPM attestation is not served by the emulator", errBadRequest, what)
	default:
		return fmt.Errorf("%w: %s: attestation type %q is not symmetricKey, x509 or tpm", errBadRequest, what, a.Type)
	}
	if a.Type == "x509" {
		if a.X509 == nil {
			return fmt.Errorf("%w: %s: x509 attestation without x509", errBadRequest, what)
		}
		if len(a.X509.CAReferences) > 0 && string(a.X509.CAReferences) != "null" {
			return fmt.Errorf("%w: %s: X.509 CA references (certificates uploaded to DPS) are not served by the emulator; give the certificates themselves", errBadRequest, what)
		}
	}
	return nil
}

// toEnrollment converts a request body; id is the path's.
func toEnrollment(in enrollmentJSON, id string) (core.Enrollment, error) {
	what := "enrollment " + strconv.Quote(id)
	if in.RegistrationID != "" && in.RegistrationID != id {
		return core.Enrollment{}, fmt.Errorf("%w: %s: body registrationId %q differs from the path", errBadRequest, what, in.RegistrationID)
	}
	if err := checkAttestation(in.Attestation, what); err != nil {
		return core.Enrollment{}, err
	}
	if len(in.CustomAllocationDefinition) > 0 && string(in.CustomAllocationDefinition) != "null" {
		return core.Enrollment{}, fmt.Errorf("%w: %s: custom allocation (a webhook) is not served by the emulator", errBadRequest, what)
	}
	s, enabled, err := in.toSettings(what)
	if err != nil {
		return core.Enrollment{}, err
	}
	e := core.Enrollment{RegistrationID: id, DeviceID: in.DeviceID, Enabled: enabled, DPS: s}
	switch in.Attestation.Type {
	case "symmetricKey":
		if k := in.Attestation.SymmetricKey; k != nil {
			e.PrimaryKey, e.SecondaryKey = k.PrimaryKey, k.SecondaryKey
		}
		if (e.PrimaryKey == "") != (e.SecondaryKey == "") {
			return core.Enrollment{}, fmt.Errorf("%w: %s: give both symmetric keys or neither", errBadRequest, what)
		}
	case "x509":
		if in.Attestation.X509.SigningCertificates != nil {
			return core.Enrollment{}, fmt.Errorf("%w: %s: an individual enrollment takes clientCertificates, not signingCertificates", errBadRequest, what)
		}
		if e.ClientCertPEM, err = certPair(in.Attestation.X509.ClientCertificates, what); err != nil {
			return core.Enrollment{}, err
		}
	}
	return e, nil
}

func (h *Handler) enrollmentJSON(e core.Enrollment) enrollmentJSON {
	out := enrollmentJSON{RegistrationID: e.RegistrationID, DeviceID: e.DeviceID, settingsJSON: fromSettings(&e.DPS, e.Enabled, e.ETag)}
	out.Attestation = enrollmentAttestation(e)
	if rs, err := h.core.RegistrationState(e.RegistrationID); err == nil {
		r := regStateJSON(rs)
		out.RegistrationState = &r
	}
	return out
}

func enrollmentAttestation(e core.Enrollment) *attestationJSON {
	if e.IsX509() {
		return &attestationJSON{Type: "x509", X509: &x509JSON{ClientCertificates: certPairInfo(e.ClientCertPEM)}}
	}
	return &attestationJSON{Type: "symmetricKey", SymmetricKey: &symmetricKeyJSON{PrimaryKey: e.PrimaryKey, SecondaryKey: e.SecondaryKey}}
}

func groupAttestation(g core.EnrollmentGroup) *attestationJSON {
	if g.IsX509() {
		pems := splitPEM(string(g.CACertPEM))
		return &attestationJSON{Type: "x509", X509: &x509JSON{SigningCertificates: certPairInfo(pems)}}
	}
	return &attestationJSON{Type: "symmetricKey", SymmetricKey: &symmetricKeyJSON{PrimaryKey: g.PrimaryKey, SecondaryKey: g.SecondaryKey}}
}

// splitPEM returns the first two certificates of a PEM text, each as PEM.
func splitPEM(s string) [2]string {
	var out [2]string
	rest := []byte(s)
	for i := 0; i < 2; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		out[i] = string(pem.EncodeToMemory(b))
		i++
	}
	return out
}

func groupJSON(g core.EnrollmentGroup) groupJSONT {
	s := g.DPS
	if s == nil {
		s = &core.DPSSettings{Reprovision: core.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}, AllocationPolicy: core.AllocationHashed}
	}
	cp := *s
	cp.IotEdge = g.Type == core.GroupTypeIoTEdge
	out := groupJSONT{EnrollmentGroupID: g.ID, settingsJSON: fromSettings(&cp, g.Enabled, g.ETag)}
	out.Attestation = groupAttestation(g)
	return out
}

func (h *Handler) putEnrollment(w http.ResponseWriter, r *http.Request, id, ifMatch string) error {
	var in enrollmentJSON
	if err := readJSON(r, &in); err != nil {
		return err
	}
	e, err := toEnrollment(in, id)
	if err != nil {
		return err
	}
	if ifMatch == "" {
		ifMatch = in.ETag
	}
	stored, _, err := h.core.PutEnrollment(e, ifMatch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h.enrollmentJSON(stored))
	return nil
}

func (h *Handler) putGroup(w http.ResponseWriter, r *http.Request, id, ifMatch string) error {
	var in groupJSONT
	if err := readJSON(r, &in); err != nil {
		return err
	}
	what := "enrollment group " + strconv.Quote(id)
	if in.EnrollmentGroupID != "" && in.EnrollmentGroupID != id {
		return fmt.Errorf("%w: %s: body enrollmentGroupId %q differs from the path", errBadRequest, what, in.EnrollmentGroupID)
	}
	if err := checkAttestation(in.Attestation, what); err != nil {
		return err
	}
	if len(in.CustomAllocationDefinition) > 0 && string(in.CustomAllocationDefinition) != "null" {
		return fmt.Errorf("%w: %s: custom allocation (a webhook) is not served by the emulator", errBadRequest, what)
	}
	s, enabled, err := in.toSettings(what)
	if err != nil {
		return err
	}
	g := core.EnrollmentGroup{ID: id, Enabled: enabled, DPS: &s, Type: core.GroupTypeIoT}
	if s.IotEdge {
		g.Type = core.GroupTypeIoTEdge
	}
	switch in.Attestation.Type {
	case "symmetricKey":
		if k := in.Attestation.SymmetricKey; k != nil {
			g.PrimaryKey, g.SecondaryKey = k.PrimaryKey, k.SecondaryKey
		}
	case "x509":
		if in.Attestation.X509.ClientCertificates != nil {
			return fmt.Errorf("%w: %s: an enrollment group takes signingCertificates, not clientCertificates", errBadRequest, what)
		}
		pems, err := certPair(in.Attestation.X509.SigningCertificates, what)
		if err != nil {
			return err
		}
		g.CACertPEM = []byte(strings.TrimSpace(pems[0] + "\n" + pems[1]))
	}
	if ifMatch == "" {
		ifMatch = in.ETag
	}
	stored, _, err := h.core.PutDPSEnrollmentGroup(g, ifMatch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, groupJSON(stored))
	return nil
}

// attestation answers POST .../{id}/attestationmechanism.
func (h *Handler) attestation(w http.ResponseWriter, coll, id string) error {
	if coll == "enrollments" {
		e, err := h.core.Enrollment(id)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, enrollmentAttestation(e))
		return nil
	}
	g, err := h.core.EnrollmentGroup(id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, groupAttestation(g))
	return nil
}

// bulkJSON is a BulkEnrollmentOperation.
type bulkJSON struct {
	Mode        string           `json:"mode"`
	Enrollments []enrollmentJSON `json:"enrollments"`
}

type bulkErrorJSON struct {
	RegistrationID string `json:"registrationId"`
	ErrorCode      int    `json:"errorCode"`
	ErrorStatus    string `json:"errorStatus"`
}

type bulkResultJSON struct {
	IsSuccessful bool            `json:"isSuccessful"`
	Errors       []bulkErrorJSON `json:"errors"`
}

// bulk runs POST /enrollments: each enrollment is created, updated or
// deleted on its own; the answer lists those that failed.
func (h *Handler) bulk(w http.ResponseWriter, r *http.Request) error {
	var in bulkJSON
	if err := readJSON(r, &in); err != nil {
		return err
	}
	switch in.Mode {
	case "create", "update", "updateIfMatchETag", "delete":
	default:
		return fmt.Errorf("%w: bulk mode %q is not create, update, updateIfMatchETag or delete", errBadRequest, in.Mode)
	}
	if len(in.Enrollments) == 0 || len(in.Enrollments) > MaxBulk {
		return fmt.Errorf("%w: a bulk operation takes 1 to %d enrollments, not %d", errBadRequest, MaxBulk, len(in.Enrollments))
	}
	seen := map[string]bool{}
	for _, e := range in.Enrollments {
		if e.RegistrationID == "" {
			return fmt.Errorf("%w: a bulk enrollment has no registrationId", errBadRequest)
		}
		if seen[e.RegistrationID] {
			return fmt.Errorf("%w: registrationId %q is listed twice", errBadRequest, e.RegistrationID)
		}
		seen[e.RegistrationID] = true
	}
	out := bulkResultJSON{IsSuccessful: true, Errors: []bulkErrorJSON{}}
	for _, e := range in.Enrollments {
		id := e.RegistrationID
		var err error
		switch in.Mode {
		case "delete":
			err = h.core.DeleteEnrollment(id, e.ETag)
		default:
			var ce core.Enrollment
			if ce, err = toEnrollment(e, id); err != nil {
				break
			}
			switch in.Mode {
			case "create":
				_, err = h.core.CreateEnrollment(ce)
			case "updateIfMatchETag":
				_, _, err = h.core.PutEnrollment(ce, e.ETag)
			default:
				_, _, err = h.core.PutEnrollment(ce, "")
			}
		}
		if err != nil {
			status, code := errorOf(err)
			out.IsSuccessful = false
			out.Errors = append(out.Errors, bulkErrorJSON{RegistrationID: id, ErrorCode: code, ErrorStatus: http.StatusText(status) + ": " + err.Error()})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// query answers POST /enrollments/query, /enrollmentGroups/query and
// /registrations/{groupId}/query: every item (the query language is not
// evaluated beyond "*"), a page at a time.
func (h *Handler) query(w http.ResponseWriter, r *http.Request, coll, groupID string) error {
	var spec struct {
		Query string `json:"query"`
	}
	if coll != "registrations" || r.ContentLength != 0 {
		if err := readJSON(r, &spec); err != nil {
			return err
		}
		q := strings.ToLower(strings.Join(strings.Fields(spec.Query), " "))
		if q != "*" && !strings.HasPrefix(q, "select * from ") {
			return fmt.Errorf("%w: query %q: the emulator serves \"*\" and \"SELECT * FROM ...\" only", errBadRequest, spec.Query)
		}
	}
	n, err := pageSize(r)
	if err != nil {
		return err
	}
	type item struct {
		key string
		v   any
	}
	var items []item
	itemType := ""
	switch coll {
	case "enrollments":
		itemType = "Enrollment"
		for _, e := range h.core.Enrollments() {
			items = append(items, item{e.RegistrationID, h.enrollmentJSON(e)})
		}
	case "enrollmentgroups":
		itemType = "EnrollmentGroup"
		gs := h.core.EnrollmentGroups()
		slices.SortFunc(gs, func(a, b core.EnrollmentGroup) int { return strings.Compare(a.ID, b.ID) })
		for _, g := range gs {
			items = append(items, item{g.ID, groupJSON(g)})
		}
	default:
		itemType = "DeviceRegistration"
		if _, err := h.core.EnrollmentGroup(groupID); err != nil {
			return err
		}
		for _, rs := range h.core.RegistrationStates(groupID) {
			items = append(items, item{rs.RegistrationID, regStateJSON(rs)})
		}
	}
	start := 0
	if c := r.Header.Get("x-ms-continuation"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil {
			return fmt.Errorf("%w: x-ms-continuation is not a token this emulator gave", errBadRequest)
		}
		after := string(b)
		start = len(items)
		for i, it := range items {
			if it.key > after {
				start = i
				break
			}
		}
	}
	end := min(start+n, len(items))
	page := make([]any, 0, end-start)
	for _, it := range items[start:end] {
		page = append(page, it.v)
	}
	w.Header().Set("x-ms-item-type", itemType)
	if end < len(items) {
		w.Header().Set("x-ms-continuation", base64.RawURLEncoding.EncodeToString([]byte(items[end-1].key)))
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}
