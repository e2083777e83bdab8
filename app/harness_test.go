package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang/mock/gomock"
	"go.uber.org/goleak"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/internal/sastest"
	"github.com/iotc-go/iotc/mocks"
	"github.com/iotc-go/iotc/ports"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testScope = "0ne00TEST1"
	testDev   = "dev1"
	testModel = "dtmi:com:example:Thermostat;1"
	testHub   = "hub1.azure-devices.net"
	// groupKey is the bytes 0..63, the vector of seed-features §2.1.
	groupKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="
	// derivedKey is groupKey derived for "dev1"... computed in init.
	emptyTwin = `{"desired":{"$version":1},"reported":{"$version":1}}`
)

var derivedKey = func() string {
	k, err := domain.DeriveDeviceKey(groupKey, testDev)
	if err != nil {
		panic(err)
	}
	return k
}()

// hub is one mocked hub session with channels that record what the
// client did with it.
type hub struct {
	*mocks.MockHubSession
	done      chan struct{}
	closeOnce sync.Once
	mu        sync.Mutex
	err       error
	desired   map[string]any // the twin, updated by desire and PatchReported
	rep       map[string]any
	getErr    func() error // when set, GetTwin fails with its result (nil: succeeds)
	twinReads int          // GetTwin calls, guarded by mu
	reported  chan string
	responses chan response
	sent      chan domain.Message
	renewals  chan string
	renewErr  error
	sendHook  func(domain.Message) error // replaces the default send, if set
	// sendCtxHook replaces the default send, if set, and sees its context.
	sendCtxHook func(context.Context, domain.Message) error
}

type response struct {
	rid    string
	status int
	body   string
}

func newHub(ctrl *gomock.Controller, twin string) *hub {
	h := &hub{
		MockHubSession: mocks.NewMockHubSession(ctrl),
		done:           make(chan struct{}),
		reported:       make(chan string, 64),
		responses:      make(chan response, 64),
		sent:           make(chan domain.Message, 64),
		renewals:       make(chan string, 64),
		renewErr:       domain.ErrNotSupported,
	}
	m := h.MockHubSession.EXPECT()
	m.Done().Return(h.done).AnyTimes()
	m.Err().DoAndReturn(func() error { h.mu.Lock(); defer h.mu.Unlock(); return h.err }).AnyTimes()
	m.Close().DoAndReturn(func() error { h.kill(nil); return nil }).AnyTimes()
	var doc struct{ Desired, Reported map[string]any }
	if err := json.Unmarshal([]byte(twin), &doc); err != nil {
		panic(fmt.Sprintf("bad test twin %q: %v", twin, err))
	}
	h.desired, h.rep = doc.Desired, doc.Reported
	if h.desired == nil {
		h.desired = map[string]any{"$version": 1.0}
	}
	if h.rep == nil {
		h.rep = map[string]any{"$version": 1.0}
	}
	m.GetTwin(gomock.Any()).DoAndReturn(func(context.Context) ([]byte, error) {
		if h.closed() {
			return nil, fmt.Errorf("%w: session closed", domain.ErrNotConnected)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.twinReads++
		if h.getErr != nil {
			if err := h.getErr(); err != nil {
				return nil, err
			}
		}
		return json.Marshal(map[string]any{"desired": h.desired, "reported": h.rep})
	}).AnyTimes()
	m.PatchReported(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, b []byte) (int64, error) {
		if h.closed() {
			return 0, fmt.Errorf("%w: session closed", domain.ErrNotConnected)
		}
		var patch map[string]any
		if err := json.Unmarshal(b, &patch); err != nil {
			return 0, &domain.HubError{Op: "reported patch", Status: 400}
		}
		h.mu.Lock()
		mergeJSON(h.rep, patch)
		v, _ := h.rep["$version"].(float64)
		h.rep["$version"] = v + 1
		h.mu.Unlock()
		h.reported <- string(b)
		return int64(v + 1), nil
	}).AnyTimes()
	m.SendTelemetry(gomock.Any(), gomock.Any()).DoAndReturn(func(ctx context.Context, msg domain.Message) error {
		if h.sendCtxHook != nil {
			return h.sendCtxHook(ctx, msg)
		}
		if h.sendHook != nil {
			return h.sendHook(msg)
		}
		if h.closed() {
			return fmt.Errorf("%w: session closed", domain.ErrNotConnected)
		}
		h.sent <- msg
		return nil
	}).AnyTimes()
	m.RenewToken(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, tok string) error {
		h.renewals <- tok
		return h.renewErr
	}).AnyTimes()
	return h
}

// mergeJSON applies a JSON merge patch (null removes a member).
func mergeJSON(dst, patch map[string]any) {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			sub, ok := dst[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				dst[k] = sub
			}
			mergeJSON(sub, pv)
		default:
			dst[k] = v
		}
	}
}

// wire is what the transport hands the client: its events handler, to
// which OnMethod adds the request's reply, recorded in h.responses.
type wire struct {
	ports.EventHandler
	h *hub
}

// OnMethod delivers req with a reply on h.
func (w *wire) OnMethod(req ports.MethodRequest) {
	w.EventHandler.OnMethod(req, func(_ context.Context, status int, body []byte) error {
		w.h.responses <- response{req.RequestID, status, string(body)}
		return nil
	})
}

// desire changes the desired properties as the service would: the twin
// gets the patch and a new $version, and ev receives the patch with it.
// It returns the new version.
func (h *hub) desire(ev *wire, patch string) int64 {
	var p map[string]any
	if err := json.Unmarshal([]byte(patch), &p); err != nil {
		panic(fmt.Sprintf("bad test patch %q: %v", patch, err))
	}
	h.mu.Lock()
	mergeJSON(h.desired, p)
	v, _ := h.desired["$version"].(float64)
	v++
	h.desired["$version"] = v
	// $metadata says at which version each value was written, as IoT Hub's.
	meta, _ := h.desired["$metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		h.desired["$metadata"] = meta
	}
	for k, pv := range p {
		if sub, ok := pv.(map[string]any); ok && sub["__t"] == "c" {
			cm, _ := meta[k].(map[string]any)
			if cm == nil {
				cm = map[string]any{}
				meta[k] = cm
			}
			for sk := range sub {
				cm[sk] = map[string]any{"$lastUpdatedVersion": v}
			}
			continue
		}
		meta[k] = map[string]any{"$lastUpdatedVersion": v}
	}
	h.mu.Unlock()
	p["$version"] = v
	b, _ := json.Marshal(p)
	ev.OnDesiredPatch(b)
	return int64(v)
}

// kill ends the session with err, as a dropped connection does.
func (h *hub) kill(err error) {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.err = err
		h.mu.Unlock()
		close(h.done)
	})
}

func (h *hub) closed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// connResult is the scripted answer to one HubConnector.Connect call.
type connResult struct {
	hub *hub
	err error
}

// env is a client under test with its mocked transport and store.
type env struct {
	t      *testing.T
	ctrl   *gomock.Controller
	tr     *mocks.MockTransport
	store  *mocks.MockCredentialStore
	conns  chan ports.HubConnection
	events chan *wire

	mu       sync.Mutex
	statuses []domain.Status
}

func newEnv(t *testing.T) *env {
	ctrl := gomock.NewController(t)
	e := &env{
		t:      t,
		ctrl:   ctrl,
		tr:     mocks.NewMockTransport(ctrl),
		store:  mocks.NewMockCredentialStore(ctrl),
		conns:  make(chan ports.HubConnection, 64),
		events: make(chan *wire, 64),
	}
	e.tr.EXPECT().Name().Return("mqtt").AnyTimes()
	return e
}

func (e *env) options() Options {
	return Options{
		DeviceID:   testDev,
		IDScope:    testScope,
		Credential: domain.Credential{Kind: domain.KindGroupKey, Key: groupKey},
		ModelID:    testModel,
		Transports: []ports.Transport{e.tr},
		OnStatus: func(s domain.Status) {
			e.mu.Lock()
			e.statuses = append(e.statuses, s)
			e.mu.Unlock()
		},
	}
}

func (e *env) client(o Options) *Client {
	e.t.Helper()
	c, err := New(o)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	return c
}

// status returns the statuses delivered so far, after letting the
// bubble's goroutines settle.
func (e *env) status() []domain.Status {
	synctest.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]domain.Status(nil), e.statuses...)
}

// hasStatus reports whether a status with state and reason was reported.
func (e *env) hasStatus(state domain.State, reason domain.Reason) bool {
	for _, s := range e.status() {
		if s.State == state && s.Reason == reason {
			return true
		}
	}
	return false
}

func (e *env) requireStatus(state domain.State, reason domain.Reason) {
	e.t.Helper()
	if !e.hasStatus(state, reason) {
		e.t.Fatalf("no status %v (%v) among %v", state, reason, e.status())
	}
}

// noCache makes the store report an empty cache and accept saves.
func (e *env) noCache() {
	e.store.EXPECT().Load(gomock.Any()).Return(domain.CachedCredentials{}, fmt.Errorf("file absent: %w", ports.ErrNoCredentials)).AnyTimes()
	e.store.EXPECT().Save(gomock.Any(), gomock.Any()).Return(nil).AnyTimes()
}

// cache makes the store return a record for hub.
func (e *env) cache(hub string) {
	e.store.EXPECT().Load(gomock.Any()).Return(domain.CachedCredentials{
		IDScope: testScope, RegistrationID: testDev, Hub: hub, DeviceID: testDev,
		ModelID: testModel, Kind: domain.KindGroupKey,
	}, nil).AnyTimes()
}

// provisions scripts DPS to assign hub, times times.
func (e *env) provisions(hub string, times int) {
	e.tr.EXPECT().Provision(gomock.Any(), gomock.Any()).Return(domain.Assignment{Hub: hub, DeviceID: testDev}, nil).Times(times)
}

// hubConnects scripts the answers of successive hub Connect calls.
func (e *env) hubConnects(results ...connResult) {
	var mu sync.Mutex
	i := 0
	e.tr.EXPECT().Connect(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, conn ports.HubConnection, ev ports.EventHandler) (ports.HubSession, error) {
			mu.Lock()
			r := results[i]
			i++
			mu.Unlock()
			e.conns <- conn
			if r.err != nil {
				return nil, r.err
			}
			e.events <- &wire{EventHandler: ev, h: r.hub}
			return r.hub, nil
		}).Times(len(results))
}

func closeClient(t *testing.T, c *Client) {
	t.Helper()
	if err := c.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// jsonEqual compares two JSON documents structurally.
func jsonEqual(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("bad JSON %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want JSON %q: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON differs:\n got %s\nwant %s", got, want)
	}
}

// verifyToken checks a SAS token: its resource, key name and signature.
func verifyToken(t *testing.T, tok, resource, keyName, key string) domain.SASToken {
	t.Helper()
	st, err := domain.ParseSAS(tok)
	if err != nil {
		t.Fatalf("ParseSAS: %v", err)
	}
	if !sastest.MatchesResource(st, resource) {
		t.Fatalf("token resource %q, want %q", st.Resource, resource)
	}
	if st.KeyName != keyName {
		t.Fatalf("token skn %q, want %q", st.KeyName, keyName)
	}
	if err := sastest.Verify(st, key, time.Now()); err != nil {
		t.Fatalf("token does not verify with the expected key: %v", err)
	}
	return st
}

// selfSigned returns a self-signed certificate for cn and its key, as PEM.
func selfSigned(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
