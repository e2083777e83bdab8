package app

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// randFloat draws the random fraction of each backoff delay, uniform in
// [0, 1). A variable so that a test can pin it (and restore it) to see the
// delays grow; nothing else assigns it.
var randFloat = rand.Float64

// isNetworkError reports a host that could not be reached at all.
func isNetworkError(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// isRefused reports a hub refusal that stale cached credentials explain.
func isRefused(err error) bool {
	return errors.Is(err, domain.ErrUnauthorized) || errors.Is(err, domain.ErrDeviceNotFound)
}

// provisioningFailure words a failed registration once: a refusal by DPS
// (refused credentials, unknown registration) becomes a
// *domain.ProvisioningError that names what to check; other errors say
// that provisioning failed.
func provisioningFailure(err error) error {
	var pe *domain.ProvisioningError
	if errors.As(err, &pe) {
		return err
	}
	if isRefused(err) {
		return &domain.ProvisioningError{Status: domain.ProvisioningStatusRefused, Err: err}
	}
	return fmt.Errorf("provisioning: %w", err)
}

// hubRefusal words the hub's refusal of a device that DPS assigned (or
// that a connection string names) and says what to check.
func hubRefusal(a assignment, connStr bool, err error) error {
	check := "check the device key (or the certificate and its CA)"
	if connStr {
		check = "check the connection string's device id and key"
	}
	return fmt.Errorf("the hub refused device %q: %w; %s", a.deviceID, err, check)
}

// establish gets an assignment, opens a hub session and installs it as the
// current session. Cached credentials the hub refuses are re-provisioned
// once; an assignment fresh from DPS that is refused is an error.
func (c *Client) establish(ctx context.Context, initial bool) (*session, error) {
	a, err := c.assignment(ctx)
	if err != nil {
		return nil, err
	}
	s, err := c.openHub(ctx, a)
	if err != nil && a.fromCache && isRefused(err) && c.connStr == nil {
		c.log.Warn("the hub refused the cached credentials; provisioning again", "hub", a.hub, "err", err)
		c.setStatus(domain.Status{State: domain.StateConnecting, Reason: domain.ReasonReprovisioned, Err: err})
		// Forget the stale record: if DPS cannot be reached now, the next
		// attempt provisions again instead of retrying the refused hub.
		c.hold.mu.Lock()
		c.assign, c.hold.skipCache = nil, true
		c.hold.mu.Unlock()
		if a, err = c.provision(ctx); err != nil {
			return nil, err
		}
		s, err = c.openHub(ctx, a)
	}
	if err != nil && isRefused(err) {
		err = hubRefusal(a, c.connStr != nil, err)
	}
	if err != nil {
		return nil, err
	}
	c.hold.mu.Lock()
	if c.hold.phase == phaseClosed {
		c.hold.mu.Unlock()
		_ = s.Close()
		return nil, domain.ErrClosed
	}
	c.hold.sess = s
	c.hold.gaveUp = nil
	c.hold.broadcastLocked()
	c.setStatusLocked(domain.Status{State: domain.StateConnected, Reason: domain.ReasonConnectionOK, Transport: s.transport})
	c.hold.mu.Unlock()
	c.disp.requestSync(!initial)
	c.ob.kick() // deliver what waits in the outbox, first thing on every session
	return s, nil
}

// assignment returns the hub and device id to connect to: the one in
// memory, the connection string's, the cached one, or a new provisioning.
func (c *Client) assignment(ctx context.Context) (assignment, error) {
	c.hold.mu.Lock()
	a := c.assign
	c.hold.mu.Unlock()
	if a != nil {
		return *a, nil
	}
	if c.connStr != nil {
		a := assignment{hub: c.connStr.host, deviceID: c.connStr.deviceID}
		c.hold.mu.Lock()
		c.assign = &a
		c.hold.mu.Unlock()
		return a, nil
	}
	c.hold.mu.Lock()
	skipCache := c.hold.skipCache
	c.hold.mu.Unlock()
	if c.opts.Store != nil && !skipCache {
		rec, err := c.opts.Store.Load(ctx)
		switch {
		case err != nil && !errors.Is(err, ports.ErrNoCredentials):
			c.log.Warn("cannot read the credentials cache; provisioning", "err", err)
		case err != nil:
			c.log.Debug("no cached credentials")
		case !rec.Valid() || !rec.Matches(c.opts.IDScope, c.regID) || rec.Kind != c.opts.Credential.Kind || rec.ModelID != c.opts.ModelID:
			c.log.Info("cached credentials belong to another configuration; provisioning")
		default:
			a := assignment{hub: rec.Hub, deviceID: rec.DeviceID, fromCache: true}
			c.log.Info("using cached credentials", "hub", a.hub)
			c.hold.mu.Lock()
			c.assign = &a
			c.hold.mu.Unlock()
			return a, nil
		}
	}
	return c.provision(ctx)
}

// provision registers with DPS, persists the result and remembers it.
func (c *Client) provision(ctx context.Context) (assignment, error) {
	req := ports.ProvisioningRequest{
		Host:    c.opts.ProvisioningHost,
		IDScope: c.opts.IDScope,
		Registration: domain.RegistrationRequest{
			RegistrationID: c.regID,
			ModelID:        c.opts.ModelID,
			LegacyModelID:  c.opts.LegacyModelID,
			Payload:        c.opts.ProvisioningPayload,
		},
	}
	var res domain.Assignment
	err := c.withTransports(ctx, func(t ports.Transport) error {
		auth, _, err := c.auth(domain.DPSResource(c.opts.IDScope, c.regID), domain.DPSKeyName)
		if err != nil {
			return err
		}
		req.Auth = auth
		c.log.Info("provisioning", "host", req.Host, "transport", t.Name())
		res, err = t.Provision(ctx, req)
		return err
	})
	if err != nil {
		return assignment{}, provisioningFailure(err)
	}
	if res.Hub == "" || res.DeviceID == "" {
		return assignment{}, fmt.Errorf("%w: provisioning returned no hub or device id", domain.ErrMalformed)
	}
	a := assignment{hub: res.Hub, deviceID: res.DeviceID}
	c.log.Info("provisioned", "hub", a.hub, "substatus", res.Substatus)
	c.hold.mu.Lock()
	c.assign = &a
	c.provided = res.Payload
	c.hold.mu.Unlock()
	if c.opts.Store != nil {
		rec := domain.CachedCredentials{
			IDScope:        c.opts.IDScope,
			RegistrationID: c.regID,
			Hub:            a.hub,
			DeviceID:       a.deviceID,
			ModelID:        c.opts.ModelID,
			Kind:           c.opts.Credential.Kind,
			CertFile:       c.opts.Credential.CertFile,
			KeyFile:        c.opts.Credential.KeyFile,
			Saved:          time.Now().UTC(),
		}
		if err := c.opts.Store.Save(ctx, rec); err != nil {
			c.log.Warn("cannot save the credentials cache", "err", err)
		}
	}
	return a, nil
}

// auth builds the credentials of one request: a SAS token for resource
// valid TokenTTL from now, or the X.509 certificate.
func (c *Client) auth(resource, keyName string) (ports.Auth, time.Time, error) {
	if c.opts.Credential.UsesX509() {
		cert, err := c.opts.Credential.TLSCertificate()
		if err != nil {
			return ports.Auth{}, time.Time{}, err
		}
		return ports.Auth{Certificate: &cert}, time.Time{}, nil
	}
	expiry := time.Now().Add(c.opts.TokenTTL)
	tok, err := domain.BuildSAS(c.deviceKey, resource, expiry, keyName)
	if err != nil {
		return ports.Auth{}, time.Time{}, fmt.Errorf("%w: %w", domain.ErrInvalidConfig, err)
	}
	return ports.Auth{SASToken: tok}, expiry, nil
}

// openHub opens a hub session for a, trying the transports in order.
func (c *Client) openHub(ctx context.Context, a assignment) (*session, error) {
	var s *session
	err := c.withTransports(ctx, func(t ports.Transport) error {
		issued := time.Now()
		auth, expiry, err := c.auth(domain.HubResource(a.hub, a.deviceID), "")
		if err != nil {
			return err
		}
		c.log.Info("connecting to the hub", "hub", a.hub, "transport", t.Name())
		hs, err := t.Connect(ctx, ports.HubConnection{Host: a.hub, DeviceID: a.deviceID, ModelID: c.opts.ModelID, Auth: auth}, &c.disp)
		if err == nil && hs == nil {
			err = fmt.Errorf("%w: transport %s returned no session", domain.ErrMalformed, t.Name())
		}
		if err != nil {
			return err
		}
		s = &session{HubSession: hs, transport: t.Name(), issued: issued.Round(0), expiry: expiry.Round(0), connectedAt: time.Now()}
		return nil
	})
	return s, err
}

// withTransports calls fn with the preferred transport, then the others
// in order while fn fails with a retryable error. The transport that
// worked becomes the preferred one.
func (c *Client) withTransports(ctx context.Context, fn func(ports.Transport) error) error {
	ts := c.opts.Transports
	c.hold.mu.Lock()
	first := int(c.hold.preferred)
	c.hold.mu.Unlock()
	var err error
	for i := range ts {
		idx := (first + i) % len(ts)
		if i > 0 {
			c.setStatus(domain.Status{State: domain.StateConnecting, Reason: domain.ReasonTransportFallback, Err: err, Transport: ts[idx].Name()})
		}
		if err = fn(ts[idx]); err == nil {
			c.hold.mu.Lock()
			c.hold.preferred = int32(idx)
			c.hold.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil || !domain.IsRetryable(err) {
			return err
		}
		c.log.Warn("transport failed", "transport", ts[idx].Name(), "err", err)
	}
	return err
}
