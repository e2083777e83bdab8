package core

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/pki"
	"github.com/iotc-go/iotc/emulator/internal/sas"
)

// errMalformedSAS hides the details of a token that does not parse: they
// could echo parts of the secret.
var errMalformedSAS = errors.New("password is not a well-formed SAS token")

// HubAuth is an accepted hub authentication.
type HubAuth struct {
	// Expiry is the SAS token's expiry; zero for X.509.
	Expiry time.Time
	// X509 is set for certificate authentication.
	X509 bool
}

// DPSAuth is an accepted DPS authentication: what Register needs.
type DPSAuth struct {
	// RegistrationID is the authenticated registration id.
	RegistrationID string
	// GroupID is the matched enrollment group, "" for an individual enrollment.
	GroupID string
	// X509 is set for certificate authentication.
	X509 bool
	// Enrollment is set when an individual enrollment of the DPS service
	// (PutEnrollment) matched.
	Enrollment bool
}

// AuthenticateHub checks a device's hub credentials: a SAS token (when
// token is not "") for the hub host and the device, signed with one of its
// keys and not expired, or else a certificate chain whose leaf CN is the
// device id, under its enabled X.509 group. Errors wrap ErrNotFound (unknown
// device) or ErrUnauthorized and never hold the token.
func (c *Core) AuthenticateHub(id, token string, certs []*x509.Certificate) (HubAuth, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.devices[id]
	if !ok {
		return HubAuth{}, fmt.Errorf("%w: device %q not found", ErrNotFound, id)
	}
	if !d.enabled {
		return HubAuth{}, fmt.Errorf("%w: device %q is disabled", ErrUnauthorized, id)
	}
	now := time.Now()
	if token != "" {
		tok, err := sas.Parse(token)
		if err != nil {
			return HubAuth{}, fmt.Errorf("%w: %w", ErrUnauthorized, errMalformedSAS)
		}
		want := sas.HubResource(c.cfg.HubHost, id)
		if !tok.Names(want) {
			return HubAuth{}, fmt.Errorf("%w: SAS audience %q is not %q", ErrUnauthorized, tok.Resource, want)
		}
		verr := sas.ErrBadSignature
		for _, k := range d.keys() {
			err := tok.Verify(k, now)
			if err == nil {
				if ferr := c.checkHubAuthFault(id, k, tok.Expiry); ferr != nil {
					return HubAuth{}, ferr
				}
				return HubAuth{Expiry: tok.Expiry}, nil
			}
			if errors.Is(err, sas.ErrExpired) {
				verr = err
			}
		}
		return HubAuth{}, fmt.Errorf("%w: device %q: %w", ErrUnauthorized, id, verr)
	}
	if len(certs) == 0 {
		return HubAuth{}, fmt.Errorf("%w: no SAS token and no client certificate", ErrUnauthorized)
	}
	if !d.x509 {
		return HubAuth{}, fmt.Errorf("%w: device %q does not use X.509", ErrUnauthorized, id)
	}
	if len(d.thumbprints) > 0 {
		if err := matchThumbprint(certs[0], d.thumbprints, now); err != nil {
			return HubAuth{}, fmt.Errorf("%w: device %q: %w", ErrUnauthorized, id, err)
		}
		if err := c.checkHubAuthFault(id, "", time.Time{}); err != nil {
			return HubAuth{}, err
		}
		return HubAuth{X509: true}, nil
	}
	if certs[0].Subject.CommonName != id {
		return HubAuth{}, fmt.Errorf("%w: certificate CN %q is not the device id %q", ErrUnauthorized, certs[0].Subject.CommonName, id)
	}
	if d.groupID == "" {
		// A certificateAuthority device of the registry: the hub's own CAs.
		if err := verifyRoots(c.cfg.TrustedCAs, certs, now); err != nil {
			return HubAuth{}, fmt.Errorf("%w: device %q: certificate chain: %w", ErrUnauthorized, id, err)
		}
		if err := c.checkHubAuthFault(id, "", time.Time{}); err != nil {
			return HubAuth{}, err
		}
		return HubAuth{X509: true}, nil
	}
	g, ok := c.group(d.groupID)
	if !ok || !g.IsX509() || !g.Enabled {
		return HubAuth{}, fmt.Errorf("%w: device %q: enrollment group %q is missing or disabled", ErrUnauthorized, id, d.groupID)
	}
	if err := verifyChain(g, certs, now); err != nil {
		return HubAuth{}, fmt.Errorf("%w: certificate chain: %w", ErrUnauthorized, err)
	}
	if err := c.checkHubAuthFault(id, "", time.Time{}); err != nil {
		return HubAuth{}, err
	}
	return HubAuth{X509: true}, nil
}

// AuthenticateDPS checks a registration's DPS credentials: the ID scope,
// then a SAS token signed with a key of its individual enrollment, the
// device's individual key or a key derived from a symmetric-key group, or
// else a client certificate of its X.509 individual enrollment or a
// certificate chain under an X.509 group. Errors wrap ErrNotFound (unknown scope), ErrInvalid (bad
// registration id) or ErrUnauthorized.
func (c *Core) AuthenticateDPS(idScope, regID, token string, certs []*x509.Certificate) (DPSAuth, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if idScope != c.cfg.IDScope {
		return DPSAuth{}, fmt.Errorf("%w: unknown ID scope %q", ErrNotFound, idScope)
	}
	if err := ValidID(regID); err != nil {
		return DPSAuth{}, err
	}
	a := DPSAuth{RegistrationID: regID}
	now := time.Now()
	if token != "" {
		tok, err := sas.Parse(token)
		if err != nil {
			return DPSAuth{}, fmt.Errorf("%w: %w", ErrUnauthorized, errMalformedSAS)
		}
		want := sas.DPSResource(c.cfg.IDScope, regID)
		if !tok.Names(want) {
			return DPSAuth{}, fmt.Errorf("%w: SAS audience %q is not %q", ErrUnauthorized, tok.Resource, want)
		}
		verr := sas.ErrBadSignature
		note := func(err error) {
			if errors.Is(err, sas.ErrExpired) {
				verr = err
			}
		}
		if e := c.dpsLocked().enrollments[regID]; e != nil && !e.IsX509() {
			for _, k := range []string{e.PrimaryKey, e.SecondaryKey} {
				err := tok.Verify(k, now)
				if err == nil {
					a.Enrollment = true
					return a, nil
				}
				note(err)
			}
		}
		if d, ok := c.devices[regID]; ok {
			for _, k := range d.indivKeys {
				if k == "" {
					continue
				}
				err := tok.Verify(k, now)
				if err == nil {
					return a, nil
				}
				note(err)
			}
		}
		for _, g := range c.groups {
			if g.IsX509() {
				continue
			}
			for _, gk := range []string{g.PrimaryKey, g.SecondaryKey} {
				dk, err := sas.DeriveKey(gk, regID)
				if err != nil {
					continue
				}
				err = tok.Verify(dk, now)
				if err == nil {
					a.GroupID = g.ID
					return a, nil
				}
				note(err)
			}
		}
		return DPSAuth{}, fmt.Errorf("%w: registration %q: %w", ErrUnauthorized, regID, verr)
	}
	if len(certs) == 0 {
		return DPSAuth{}, fmt.Errorf("%w: no SAS token and no client certificate", ErrUnauthorized)
	}
	if certs[0].Subject.CommonName != regID {
		return DPSAuth{}, fmt.Errorf("%w: certificate CN %q is not the registration id %q", ErrUnauthorized, certs[0].Subject.CommonName, regID)
	}
	if e := c.dpsLocked().enrollments[regID]; e != nil && e.IsX509() {
		// An individual enrollment wins over groups, as on DPS.
		if err := matchThumbprint(certs[0], e.thumbprints(), now); err != nil {
			return DPSAuth{}, fmt.Errorf("%w: registration %q: %w", ErrUnauthorized, regID, err)
		}
		a.X509, a.Enrollment = true, true
		return a, nil
	}
	var lastErr error = errors.New("no X.509 enrollment group")
	for _, g := range c.groups {
		if !g.IsX509() {
			continue
		}
		if lastErr = verifyChain(g, certs, now); lastErr == nil {
			a.GroupID, a.X509 = g.ID, true
			return a, nil
		}
	}
	return DPSAuth{}, fmt.Errorf("%w: certificate chain: %w", ErrUnauthorized, lastErr)
}

func verifyChain(g EnrollmentGroup, certs []*x509.Certificate, now time.Time) error {
	cas, err := pki.ParseCertificates(g.CACertPEM)
	if err != nil {
		return err
	}
	return verifyRoots(cas, certs, now)
}

// verifyRoots verifies the leaf certs[0], with certs[1:] as intermediates,
// up to one of cas.
func verifyRoots(cas, certs []*x509.Certificate, now time.Time) error {
	if len(cas) == 0 {
		return errors.New("the hub trusts no CA (--trusted-ca)")
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}
