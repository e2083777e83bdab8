package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang/mock/gomock"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/mocks"
	"github.com/iotc-go/iotc/ports"
)

var dialErr = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}

func TestConnectProvisionsWithGroupKeyAndPersists(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.store.EXPECT().Load(gomock.Any()).Return(domain.CachedCredentials{}, ports.ErrNoCredentials)
		e.tr.EXPECT().Provision(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, req ports.ProvisioningRequest) (domain.Assignment, error) {
			if req.Host != domain.DefaultProvisioningHost || req.IDScope != testScope {
				t.Errorf("provisioning host/scope = %q/%q", req.Host, req.IDScope)
			}
			if req.Registration.RegistrationID != testDev || req.Registration.ModelID != testModel {
				t.Errorf("registration = %+v", req.Registration)
			}
			if req.Auth.Certificate != nil {
				t.Error("certificate set for a symmetric key")
			}
			st := verifyToken(t, req.Auth.SASToken, domain.DPSResource(testScope, testDev), domain.DPSKeyName, derivedKey)
			if got := st.Expiry.Sub(time.Now()); got <= domain.DefaultTokenTTL-time.Second || got > domain.DefaultTokenTTL {
				t.Errorf("DPS token lifetime %v, want the default TTL", got)
			}
			return domain.Assignment{Hub: testHub, DeviceID: testDev}, nil
		})
		e.store.EXPECT().Save(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, rec domain.CachedCredentials) error {
			if rec.Hub != testHub || rec.DeviceID != testDev || rec.IDScope != testScope || rec.RegistrationID != testDev ||
				rec.Kind != domain.KindGroupKey || rec.ModelID != testModel || rec.Saved.IsZero() {
				t.Errorf("saved record %+v", rec)
			}
			return nil
		})
		h := newHub(e.ctrl, emptyTwin)
		e.hubConnects(connResult{hub: h})
		o := e.options()
		o.Store = e.store
		c := e.client(o)

		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		conn := <-e.conns
		if conn.Host != testHub || conn.DeviceID != testDev || conn.ModelID != testModel {
			t.Errorf("hub connection %+v", conn)
		}
		verifyToken(t, conn.Auth.SASToken, domain.HubResource(testHub, testDev), "", derivedKey)
		if !c.IsConnected() || c.Status().State != domain.StateConnected {
			t.Errorf("status after Connect: %v", c.Status())
		}
		if c.opts.Credential.Key != groupKey {
			t.Error("the group key was overwritten")
		}
		if c.DeviceID() != testDev {
			t.Errorf("DeviceID %q", c.DeviceID())
		}
		closeClient(t, c)
		if !h.closed() {
			t.Error("Close did not close the session")
		}
		want := []domain.Status{
			{State: domain.StateConnecting},
			{State: domain.StateConnected, Reason: domain.ReasonConnectionOK, Transport: "mqtt"},
			{State: domain.StateClosed, Reason: domain.ReasonClientClose},
		}
		if got := e.status(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("statuses\n got %v\nwant %v", got, want)
		}
	})
}

func TestCachedCredentials(t *testing.T) {
	match := domain.CachedCredentials{IDScope: testScope, RegistrationID: testDev, Hub: "cached.azure-devices.net", DeviceID: testDev, ModelID: testModel, Kind: domain.KindGroupKey}
	for _, tc := range []struct {
		name      string
		rec       domain.CachedCredentials
		err       error
		provision bool
	}{
		{name: "matching record is used", rec: match},
		{name: "other scope", rec: func() domain.CachedCredentials { r := match; r.IDScope = "0neOTHER"; return r }(), provision: true},
		{name: "other device", rec: func() domain.CachedCredentials { r := match; r.RegistrationID = "dev2"; return r }(), provision: true},
		{name: "other model", rec: func() domain.CachedCredentials { r := match; r.ModelID = "dtmi:x;2"; return r }(), provision: true},
		{name: "other kind", rec: func() domain.CachedCredentials { r := match; r.Kind = domain.KindDeviceKey; return r }(), provision: true},
		{name: "incomplete", rec: func() domain.CachedCredentials { r := match; r.Hub = ""; return r }(), provision: true},
		{name: "unreadable store", err: errors.New("disk on fire"), provision: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				e.store.EXPECT().Load(gomock.Any()).Return(tc.rec, tc.err)
				wantHub := match.Hub
				if tc.provision {
					wantHub = testHub
					e.provisions(testHub, 1)
					e.store.EXPECT().Save(gomock.Any(), gomock.Any()).Return(nil)
				}
				e.hubConnects(connResult{hub: newHub(e.ctrl, emptyTwin)})
				o := e.options()
				o.Store = e.store
				c := e.client(o)
				defer closeClient(t, c)
				if err := c.Connect(context.Background(), nil); err != nil {
					t.Fatalf("Connect: %v", err)
				}
				if conn := <-e.conns; conn.Host != wantHub {
					t.Errorf("connected to %q, want %q", conn.Host, wantHub)
				}
			})
		})
	}
}

func TestCachedCredentialsRefusedReprovisionOnce(t *testing.T) {
	for _, refusal := range []error{
		fmt.Errorf("connack 5: %w", domain.ErrUnauthorized),
		&domain.HubError{Op: "connect", Status: 404},
	} {
		t.Run(refusal.Error(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				e.cache("stale.azure-devices.net")
				e.provisions(testHub, 1)
				saved := make(chan domain.CachedCredentials, 1)
				e.store.EXPECT().Save(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, r domain.CachedCredentials) error {
					saved <- r
					return nil
				})
				e.hubConnects(connResult{err: refusal}, connResult{hub: newHub(e.ctrl, emptyTwin)})
				o := e.options()
				o.Store = e.store
				c := e.client(o)
				defer closeClient(t, c)
				if err := c.Connect(context.Background(), nil); err != nil {
					t.Fatalf("Connect: %v", err)
				}
				if first, second := <-e.conns, <-e.conns; first.Host != "stale.azure-devices.net" || second.Host != testHub {
					t.Errorf("connected to %q then %q", first.Host, second.Host)
				}
				if r := <-saved; r.Hub != testHub {
					t.Errorf("persisted hub %q", r.Hub)
				}
				e.requireStatus(domain.StateConnecting, domain.ReasonReprovisioned)
			})
		})
	}
}

func TestRefusedAfterReprovisioningStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.cache("stale.azure-devices.net")
		e.provisions(testHub, 1) // exactly once
		e.store.EXPECT().Save(gomock.Any(), gomock.Any()).Return(nil)
		refused := fmt.Errorf("connack 5: %w", domain.ErrUnauthorized)
		e.hubConnects(connResult{err: refused}, connResult{err: refused})
		o := e.options()
		o.Store = e.store
		c := e.client(o)
		defer closeClient(t, c)
		err := c.Connect(context.Background(), nil)
		if !errors.Is(err, domain.ErrUnauthorized) {
			t.Fatalf("Connect = %v, want ErrUnauthorized", err)
		}
		e.requireStatus(domain.StateDisconnected, domain.ReasonBadCredential)
	})
}

func TestFreshCredentialsRefusedAreNotReprovisioned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.noCache()
		e.provisions(testHub, 1)
		e.hubConnects(connResult{err: fmt.Errorf("connack 4: %w", domain.ErrUnauthorized)})
		o := e.options()
		o.Store = e.store
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); !errors.Is(err, domain.ErrUnauthorized) {
			t.Fatalf("Connect = %v", err)
		}
		if c.IsConnected() {
			t.Error("connected after a refusal")
		}
	})
}

func TestProvisioningRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		reason domain.Reason
	}{
		{"disabled", &domain.ProvisioningError{Status: domain.DPSDisabled}, domain.ReasonDeviceDisabled},
		{"unauthorized", fmt.Errorf("dps connack 5: %w", domain.ErrUnauthorized), domain.ReasonBadCredential},
		{"failed", &domain.ProvisioningError{Status: domain.DPSFailed, ErrorCode: 400207, Message: "bad payload"}, domain.ReasonCommunicationError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				e.tr.EXPECT().Provision(gomock.Any(), gomock.Any()).Return(domain.Assignment{}, tc.err).Times(1)
				c := e.client(e.options()) // no Connect expectation: reaching the hub fails the test
				defer closeClient(t, c)
				err := c.Connect(context.Background(), nil)
				if !errors.Is(err, tc.err) {
					t.Fatalf("Connect = %v, want %v", err, tc.err)
				}
				e.requireStatus(domain.StateDisconnected, tc.reason)
				if st := c.Status(); st.State != domain.StateDisconnected || st.Err == nil {
					t.Errorf("status %v", st)
				}
			})
		})
	}
}

func TestNetworkErrorsRetriedWithoutReprovisioning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.cache(testHub) // any Provision call fails the test
		e.hubConnects(connResult{err: dialErr}, connResult{err: dialErr}, connResult{hub: newHub(e.ctrl, emptyTwin)})
		o := e.options()
		o.Store = e.store
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		e.requireStatus(domain.StateConnecting, domain.ReasonNoNetwork)
		if !c.IsConnected() {
			t.Error("not connected")
		}
	})
}

func TestConnectMaxAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.cache(testHub)
		e.hubConnects(connResult{err: dialErr}, connResult{err: dialErr}, connResult{err: dialErr})
		o := e.options()
		o.Store = e.store
		o.MaxAttempts = 3
		c := e.client(o)
		defer closeClient(t, c)
		err := c.Connect(context.Background(), nil)
		if !errors.Is(err, dialErr) {
			t.Fatalf("Connect = %v", err)
		}
		e.requireStatus(domain.StateDisconnected, domain.ReasonRetryExpired)
	})
}

func TestConnectRespectsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.cache(testHub)
		e.tr.EXPECT().Connect(gomock.Any(), gomock.Any(), gomock.Any()).Return(nil, dialErr).MinTimes(1)
		o := e.options()
		o.Store = e.store
		c := e.client(o)
		defer closeClient(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Connect(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Connect = %v, want the context's deadline", err)
		}
	})
}

func TestTransportFallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		ws := mocks.NewMockTransport(e.ctrl)
		ws.EXPECT().Name().Return("mqttws").AnyTimes()
		e.tr.EXPECT().Provision(gomock.Any(), gomock.Any()).Return(domain.Assignment{}, dialErr)
		ws.EXPECT().Provision(gomock.Any(), gomock.Any()).Return(domain.Assignment{Hub: testHub, DeviceID: testDev}, nil)
		ws.EXPECT().Connect(gomock.Any(), gomock.Any(), gomock.Any()).Return(newHub(e.ctrl, emptyTwin), nil)
		o := e.options()
		o.Transports = []ports.Transport{e.tr, ws}
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		var fallback, connected bool
		for _, s := range e.status() {
			fallback = fallback || (s.Reason == domain.ReasonTransportFallback && s.Transport == "mqttws" && errors.Is(s.Err, dialErr))
			connected = connected || (s.State == domain.StateConnected && s.Transport == "mqttws")
		}
		if !fallback || !connected {
			t.Errorf("statuses %v", e.status())
		}
	})
}

func TestConnectionStringSkipsDPS(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.hubConnects(connResult{hub: newHub(e.ctrl, emptyTwin)})
		o := e.options()
		o.DeviceID, o.IDScope = "", ""
		o.Credential = domain.Credential{Kind: domain.KindConnectionString, ConnectionString: "HostName=cs.azure-devices.net;DeviceId=csdev;SharedAccessKey=" + groupKey}
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		conn := <-e.conns
		if conn.Host != "cs.azure-devices.net" || conn.DeviceID != "csdev" {
			t.Errorf("connection %+v", conn)
		}
		verifyToken(t, conn.Auth.SASToken, domain.HubResource("cs.azure-devices.net", "csdev"), "", groupKey)
	})
}

func TestX509(t *testing.T) {
	certPEM, keyPEM := selfSigned(t, "x509dev")
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.tr.EXPECT().Provision(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, req ports.ProvisioningRequest) (domain.Assignment, error) {
			if req.Auth.Certificate == nil || req.Auth.SASToken != "" {
				t.Errorf("DPS auth %+v", req.Auth)
			}
			if req.Registration.RegistrationID != "x509dev" {
				t.Errorf("registration id %q, want the certificate CN", req.Registration.RegistrationID)
			}
			return domain.Assignment{Hub: testHub, DeviceID: "x509dev"}, nil
		})
		h := newHub(e.ctrl, emptyTwin)
		e.hubConnects(connResult{hub: h})
		o := e.options()
		o.DeviceID = ""
		o.Credential = domain.Credential{Kind: domain.KindX509, CertPEM: certPEM, KeyPEM: keyPEM}
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		if conn := <-e.conns; conn.Auth.Certificate == nil || conn.Auth.SASToken != "" || conn.DeviceID != "x509dev" {
			t.Errorf("hub auth %+v", conn)
		}
		// No token, so no renewal: a day later the first session is still in use.
		time.Sleep(24 * time.Hour)
		if h.closed() || len(h.renewals) != 0 {
			t.Error("an X.509 session was renewed")
		}
	})
}

func TestNewRejectsBadOptions(t *testing.T) {
	tr := mocks.NewMockTransport(gomock.NewController(t))
	good := Options{DeviceID: "d", IDScope: "s", Credential: domain.Credential{Kind: domain.KindDeviceKey, Key: groupKey}, Transports: []ports.Transport{tr}}
	for _, tc := range []struct {
		name string
		edit func(*Options)
	}{
		{"no transport", func(o *Options) { o.Transports = nil }},
		{"nil transport", func(o *Options) { o.Transports = []ports.Transport{nil} }},
		{"no credential", func(o *Options) { o.Credential = domain.Credential{} }},
		{"bad key", func(o *Options) { o.Credential.Key = "not base64!" }},
		{"no scope", func(o *Options) { o.IDScope = "" }},
		{"no device", func(o *Options) { o.DeviceID = "" }},
		{"short ttl", func(o *Options) { o.TokenTTL = time.Second }},
		{"negative attempts", func(o *Options) { o.MaxAttempts = -1 }},
		{"bad backoff", func(o *Options) { o.Backoff = domain.Backoff{Base: time.Minute, Cap: time.Second} }},
		{"x509 connection string", func(o *Options) {
			o.Credential = domain.Credential{Kind: domain.KindConnectionString, ConnectionString: "HostName=h;DeviceId=d;x509=true"}
		}},
		{"device id differs from connection string", func(o *Options) {
			o.Credential = domain.Credential{Kind: domain.KindConnectionString, ConnectionString: "HostName=h;DeviceId=other;SharedAccessKey=" + groupKey}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.edit(&o)
			c, err := New(o)
			if !errors.Is(err, domain.ErrInvalidConfig) {
				t.Fatalf("New = %v, %v; want ErrInvalidConfig", c, err)
			}
			if strings.Contains(err.Error(), groupKey) {
				t.Errorf("error leaks the key: %v", err)
			}
		})
	}
	if _, err := New(good); err != nil {
		t.Fatalf("good options: %v", err)
	}
}

func TestRefusedCacheThenDPSUnreachableRetriesDPSNotTheStaleHub(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.cache("stale.azure-devices.net")
		gomock.InOrder(
			e.tr.EXPECT().Provision(gomock.Any(), gomock.Any()).Return(domain.Assignment{}, dialErr),
			e.tr.EXPECT().Provision(gomock.Any(), gomock.Any()).Return(domain.Assignment{Hub: testHub, DeviceID: testDev}, nil),
		)
		e.store.EXPECT().Save(gomock.Any(), gomock.Any()).Return(nil)
		e.hubConnects(connResult{err: fmt.Errorf("connack 5: %w", domain.ErrUnauthorized)}, connResult{hub: newHub(e.ctrl, emptyTwin)})
		o := e.options()
		o.Store = e.store
		c := e.client(o)
		defer closeClient(t, c)
		if err := c.Connect(context.Background(), nil); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		if first, second := <-e.conns, <-e.conns; first.Host != "stale.azure-devices.net" || second.Host != testHub {
			t.Errorf("connected to %q then %q", first.Host, second.Host)
		}
	})
}
