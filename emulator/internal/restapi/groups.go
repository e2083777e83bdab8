package restapi

import (
	"crypto/rand"
	"crypto/sha1" // #nosec G505 -- thumbprints are SHA-1 by definition, not a security check
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
)

// Enrollment group limits.
const (
	// maxGroupIDLen is IoT Central's limit on enrollment group ids
	// (2022-07-31: maxLength 255, pattern ^[a-zA-Z0-9-]*$).
	maxGroupIDLen = 255
	// generatedKeyBytes is the size of generated group keys (as IoT Central).
	generatedKeyBytes = 64
	// minKeyBytes and maxKeyBytes bound supplied keys (DPS accepts 16..64 bytes).
	minKeyBytes = 16
	maxKeyBytes = 64
)

func (h *handler) listGroups(w http.ResponseWriter, r *http.Request) {
	gs, err := h.b.ListEnrollmentGroups(r.Context())
	for i := range gs {
		gs[i] = h.groupView(r, gs[i])
	}
	page(h, w, r, gs, err)
}

func (h *handler) getGroup(w http.ResponseWriter, r *http.Request) {
	g, err := h.b.GetEnrollmentGroup(r.Context(), r.PathValue("id"))
	h.respond(w, r, http.StatusOK, h.groupView(r, g), err)
}

// groupView fills the thumbprints and the etag of a group to answer.
func (h *handler) groupView(_ *http.Request, g EnrollmentGroup) EnrollmentGroup {
	if g.ID == "" {
		return g
	}
	g = withThumbprints(g)
	g.Etag = ""
	g.Etag = etagOf(g)
	return g
}

// withThumbprints fills info.sha1Thumbprint of every signing certificate
// of an X.509 group the backend returned (it stores only the PEM).
func withThumbprints(g EnrollmentGroup) EnrollmentGroup {
	if g.Attestation.Type != AttestationX509 {
		return g
	}
	certs := &g.Attestation.X509.SigningCertificates
	for _, c := range []*X509Certificate{&certs.Primary, &certs.Secondary} {
		if c.Certificate == "" {
			continue
		}
		if t := thumbprint(c.Certificate); t != "" {
			c.Info.SHA1Thumbprint = t
		}
	}
	return g
}

// thumbprint is the upper-case hex SHA-1 of the first PEM CERTIFICATE
// block of s, "" when there is none.
func thumbprint(s string) string {
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return ""
		}
		if block.Type == "CERTIFICATE" {
			sum := sha1.Sum(block.Bytes) // #nosec G401 -- thumbprint, not a signature
			return strings.ToUpper(hex.EncodeToString(sum[:]))
		}
	}
}

func (h *handler) putGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	body, err := readBody(w, r)
	var g EnrollmentGroup
	var bodyEtag string
	if err == nil {
		var e struct {
			Etag string `json:"etag"`
		}
		_ = json.Unmarshal(body, &e) // a body that is not JSON fails below
		bodyEtag = e.Etag
		g, err = parseEnrollmentGroup(body, id)
	}
	if err == nil {
		err = h.guard(r, bodyEtag, func() error { return h.groupEtagCheck(r, id, bodyEtag) }, func() error {
			var perr error
			g, perr = h.b.PutEnrollmentGroup(r.Context(), g)
			return perr
		})
	}
	h.respond(w, r, http.StatusOK, h.groupView(r, g), err)
}

// parseEnrollmentGroup decodes and validates a PUT body for group id:
// displayName, type and attestation are required (as the 2022-07-31 spec
// has them), enabled defaults to true, missing symmetric keys are
// generated. Errors wrap ErrBadRequest (not JSON) or ErrValidation.
func parseEnrollmentGroup(body []byte, id string) (EnrollmentGroup, error) {
	if err := checkGroupID(id); err != nil {
		return EnrollmentGroup{}, err
	}
	g := EnrollmentGroup{Enabled: true}
	if err := decodeJSON(body, &g); err != nil {
		return EnrollmentGroup{}, asValidation(err)
	}
	var present map[string]json.RawMessage
	_ = json.Unmarshal(body, &present)
	for _, f := range []string{"displayName", "type", "attestation"} {
		if _, ok := present[f]; !ok {
			return EnrollmentGroup{}, invalidf("%s is required", f)
		}
	}
	g.Etag = ""
	switch g.ID {
	case "":
		g.ID = id
	case id:
	default:
		return EnrollmentGroup{}, invalidf("body id %q differs from the id %q in the path", g.ID, id)
	}
	if g.DisplayName == "" {
		g.DisplayName = id
	}
	switch g.Type {
	case "":
		g.Type = "iot"
	case "iot", "iotEdge":
	default:
		return EnrollmentGroup{}, invalidf("type must be \"iot\" or \"iotEdge\", got %q", g.Type)
	}
	a := &g.Attestation
	switch a.Type {
	case AttestationSymmetricKey:
		if a.X509 != (X509Attestation{}) {
			return EnrollmentGroup{}, invalidf("a symmetricKey attestation cannot carry x509 certificates")
		}
		for _, k := range []*string{&a.SymmetricKey.PrimaryKey, &a.SymmetricKey.SecondaryKey} {
			var err error
			if *k, err = checkOrGenerateKey(*k); err != nil {
				return EnrollmentGroup{}, err
			}
		}
	case AttestationX509:
		if a.SymmetricKey != (SymmetricKey{}) {
			return EnrollmentGroup{}, invalidf("an x509 attestation cannot carry symmetric keys")
		}
		certs := &a.X509.SigningCertificates
		if certs.Primary.Certificate == "" {
			return EnrollmentGroup{}, invalidf("attestation.x509.signingCertificates.primary.certificate (PEM) is required")
		}
		for _, c := range []*X509Certificate{&certs.Primary, &certs.Secondary} {
			if *c == (X509Certificate{}) {
				continue
			}
			c.Certificate = normalizeCertificate(c.Certificate)
			thumb, err := checkCACertificate(c.Certificate)
			if err != nil {
				return EnrollmentGroup{}, err
			}
			c.Info.SHA1Thumbprint = thumb
		}
	case "":
		return EnrollmentGroup{}, invalidf("attestation.type is required: %q or %q", AttestationSymmetricKey, AttestationX509)
	default:
		return EnrollmentGroup{}, invalidf("attestation.type %q is not supported; use %q or %q",
			a.Type, AttestationSymmetricKey, AttestationX509)
	}
	return g, nil
}

func checkGroupID(id string) error {
	if id == "" || len(id) > maxGroupIDLen {
		return invalidf("enrollment group id must be 1 to %d characters", maxGroupIDLen)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return invalidf("enrollment group id %q may hold only letters, digits and '-'", id)
		}
	}
	return nil
}

// checkOrGenerateKey returns key when it is base64 of 16..64 bytes, a new
// random 64-byte key when it is empty, and an ErrBadRequest otherwise. The
// error never quotes the key.
func checkOrGenerateKey(key string) (string, error) {
	if key == "" {
		b := make([]byte, generatedKeyBytes)
		_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
		return base64.StdEncoding.EncodeToString(b), nil
	}
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return "", invalidf("symmetric key is not valid base64")
	}
	n := len(raw)
	if n < minKeyBytes || n > maxKeyBytes {
		return "", invalidf("symmetric key must decode to %d..%d bytes, got %d", minKeyBytes, maxKeyBytes, n)
	}
	return key, nil
}

// checkCACertificate parses the first PEM CERTIFICATE block of s, requires
// a CA certificate (basicConstraints CA:TRUE) and returns its SHA-1
// thumbprint in upper-case hex. Errors wrap ErrBadRequest.
func checkCACertificate(s string) (string, error) {
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return "", invalidf("certificate holds no PEM CERTIFICATE block")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return "", invalidf("certificate does not parse: %v", err)
		}
		if !cert.IsCA {
			return "", invalidf("certificate %q is not a CA certificate (basicConstraints CA:TRUE is required to sign devices)", cert.Subject.CommonName)
		}
		sum := sha1.Sum(block.Bytes) // #nosec G401 -- thumbprint, not a signature
		return strings.ToUpper(hex.EncodeToString(sum[:])), nil
	}
}

// normalizeCertificate returns a certificate sent in any of the encodings
// IoT Central accepts as PEM text: PEM itself, base64 of a PEM file (what
// the Azure CLI sends) or base64 of DER. Anything else is returned as is,
// for the PEM check to refuse.
func normalizeCertificate(s string) string {
	t := strings.TrimSpace(s)
	if t == "" || strings.Contains(t, "-----BEGIN") {
		return s
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(t), ""))
	if err != nil {
		return s
	}
	if strings.Contains(string(raw), "-----BEGIN") {
		return string(raw)
	}
	if _, err := x509.ParseCertificate(raw); err == nil {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: raw}))
	}
	return s
}
