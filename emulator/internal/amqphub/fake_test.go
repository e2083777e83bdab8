package amqphub

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	esas "github.com/iotc-go/iotc/emulator/internal/sas"
)

// fakeBackend is an in-memory Backend for the tests: devices with keys or
// X.509, twins, cloud-to-device queues and DPS registrations.
type fakeBackend struct {
	host, scope string
	roots       *x509.CertPool

	mu       sync.Mutex
	keys     map[string]string // device id -> key
	x509IDs  map[string]bool   // devices that authenticate with certificates
	regKeys  map[string]string // registration id -> key
	sessions map[string]*fakeSession
	c2d      map[string][]*fakeC2D
	twins    map[string]*fakeTwin
	ops      map[string]string // operation id -> registration id
	opSeq    int

	connects  chan *fakeSession
	telemetry chan Telemetry
	settles   chan fakeSettle
}

type fakeTwin struct {
	desired, reported     map[string]any
	desiredV, reportedVer int64
}

type fakeC2D struct {
	msg      C2DMessage
	inflight *fakeSession
}

type fakeSettle struct {
	device, lockToken string
	outcome           C2DOutcome
}

func newFakeBackend(host, scope string) *fakeBackend {
	return &fakeBackend{
		host: host, scope: scope,
		keys: map[string]string{}, x509IDs: map[string]bool{}, regKeys: map[string]string{},
		sessions: map[string]*fakeSession{}, c2d: map[string][]*fakeC2D{}, twins: map[string]*fakeTwin{},
		ops:      map[string]string{},
		connects: make(chan *fakeSession, 16), telemetry: make(chan Telemetry, 64), settles: make(chan fakeSettle, 64),
	}
}

func (b *fakeBackend) addDevice(id, key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keys[id] = key
	b.twins[id] = &fakeTwin{desired: map[string]any{}, reported: map[string]any{}, desiredV: 1, reportedVer: 1}
}

func (b *fakeBackend) addX509Device(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.x509IDs[id] = true
	b.twins[id] = &fakeTwin{desired: map[string]any{}, reported: map[string]any{}, desiredV: 1, reportedVer: 1}
}

func (b *fakeBackend) session(id string) *fakeSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions[id]
}

// queueC2D queues a message and wakes the device's session.
func (b *fakeBackend) queueC2D(id string, m C2DMessage) {
	b.mu.Lock()
	b.c2d[id] = append(b.c2d[id], &fakeC2D{msg: m})
	s := b.sessions[id]
	b.mu.Unlock()
	if s != nil {
		s.dc.NotifyC2D()
	}
}

func (b *fakeBackend) queueLen(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.c2d[id])
}

// updateDesired applies a desired patch and pushes it to the device.
func (b *fakeBackend) updateDesired(id string, patch map[string]any) (int64, error) {
	b.mu.Lock()
	tw := b.twins[id]
	for k, v := range patch {
		tw.desired[k] = v
	}
	tw.desiredV++
	v := tw.desiredV
	s := b.sessions[id]
	b.mu.Unlock()
	if s == nil {
		return v, ErrDeviceGone
	}
	out := map[string]any{"$version": v}
	for k, val := range patch {
		out[k] = val
	}
	body, _ := json.Marshal(out)
	return v, s.dc.PushDesired(body)
}

func (b *fakeBackend) AuthenticateDevice(_ context.Context, deviceID, sasToken string) (time.Time, error) {
	b.mu.Lock()
	key, ok := b.keys[deviceID]
	b.mu.Unlock()
	if !ok {
		return time.Time{}, fmt.Errorf("%w: device %q", ErrNotFound, deviceID)
	}
	tok, err := esas.Parse(sasToken)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: malformed token", ErrUnauthorized)
	}
	if !tok.Names(esas.HubResource(b.host, deviceID)) {
		return time.Time{}, fmt.Errorf("%w: audience %q", ErrUnauthorized, tok.Resource)
	}
	if err := tok.Verify(key, time.Now()); err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return tok.Expiry, nil
}

func (b *fakeBackend) AuthenticateDeviceX509(_ context.Context, deviceID string, certs []*x509.Certificate) error {
	b.mu.Lock()
	ok := b.x509IDs[deviceID]
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: device %q has no X.509 identity", ErrUnauthorized, deviceID)
	}
	return b.verifyChain(deviceID, certs)
}

func (b *fakeBackend) verifyChain(id string, certs []*x509.Certificate) error {
	if len(certs) == 0 || certs[0].Subject.CommonName != id {
		return fmt.Errorf("%w: certificate CN is not %q", ErrUnauthorized, id)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: b.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return nil
}

func (b *fakeBackend) ConnectDevice(_ context.Context, deviceID string, dc DeviceConn) (DeviceSession, error) {
	s := &fakeSession{b: b, id: deviceID, dc: dc, changed: make(chan struct{}, 64), closed: make(chan struct{})}
	b.mu.Lock()
	old := b.sessions[deviceID]
	b.sessions[deviceID] = s
	b.mu.Unlock()
	if old != nil {
		old.dc.Close(errors.New("a newer connection of the device"))
	}
	b.connects <- s
	return s, nil
}

func (b *fakeBackend) AuthenticateDPS(_ context.Context, cred DPSCredentials) (DPSSession, error) {
	if cred.IDScope != b.scope {
		return nil, fmt.Errorf("%w: ID scope %q", ErrNotFound, cred.IDScope)
	}
	if cred.SASToken == "" {
		if err := b.verifyChain(cred.RegistrationID, cred.Certificates); err != nil {
			return nil, err
		}
		return &fakeDPS{b: b, regID: cred.RegistrationID}, nil
	}
	b.mu.Lock()
	key, ok := b.regKeys[cred.RegistrationID]
	b.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: registration %q", ErrUnauthorized, cred.RegistrationID)
	}
	tok, err := esas.Parse(cred.SASToken)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed token", ErrUnauthorized)
	}
	if !tok.Names(esas.DPSResource(b.scope, cred.RegistrationID)) {
		return nil, fmt.Errorf("%w: audience", ErrUnauthorized)
	}
	if err := tok.Verify(key, time.Now()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return &fakeDPS{b: b, regID: cred.RegistrationID}, nil
}

type fakeDPS struct {
	b     *fakeBackend
	regID string
}

func (d *fakeDPS) Register(_ context.Context, body []byte, _ bool) DPSResponse {
	var req struct {
		RegistrationID string `json:"registrationId"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.RegistrationID != d.regID {
		return DPSResponse{Status: 400, RetryAfter: -1, Body: []byte(`{"errorCode":400004,"message":"bad request"}`)}
	}
	d.b.mu.Lock()
	d.b.opSeq++
	op := "4.op." + strconv.Itoa(d.b.opSeq)
	d.b.ops[op] = d.regID
	d.b.mu.Unlock()
	return DPSResponse{Status: 202, RetryAfter: 1, Body: []byte(`{"operationId":"` + op + `","status":"assigning"}`)}
}

func (d *fakeDPS) OperationStatus(_ context.Context, operationID string) DPSResponse {
	d.b.mu.Lock()
	reg, ok := d.b.ops[operationID]
	d.b.mu.Unlock()
	if !ok || reg != d.regID {
		return DPSResponse{Status: 404, RetryAfter: 3, Body: []byte(`{"errorCode":404201,"message":"operation not found"}`)}
	}
	body, _ := json.Marshal(map[string]any{
		"operationId": operationID, "status": "assigned",
		"registrationState": map[string]any{"registrationId": reg, "assignedHub": d.b.host, "deviceId": reg, "status": "assigned"},
	})
	return DPSResponse{Status: 200, RetryAfter: -1, Body: body}
}

// fakeSession is one device session.
type fakeSession struct {
	b       *fakeBackend
	id      string
	dc      DeviceConn
	changed chan struct{}
	closed  chan struct{}
	once    sync.Once
	nClose  int
}

func (s *fakeSession) Telemetry(_ context.Context, t Telemetry) error {
	if t.Properties["fail"] == "throttle" {
		return fmt.Errorf("%w: test throttling", ErrThrottled)
	}
	s.b.telemetry <- t
	return nil
}

func (s *fakeSession) Twin(context.Context) (int, []byte) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	tw := s.b.twins[s.id]
	d := map[string]any{"$version": tw.desiredV}
	for k, v := range tw.desired {
		d[k] = v
	}
	r := map[string]any{"$version": tw.reportedVer}
	for k, v := range tw.reported {
		r[k] = v
	}
	body, _ := json.Marshal(map[string]any{"desired": d, "reported": r})
	return 200, body
}

func (s *fakeSession) PatchReported(_ context.Context, patch []byte) (int, int64, []byte) {
	var p map[string]any
	if err := json.Unmarshal(patch, &p); err != nil {
		return 400, 0, []byte(`{"message":"not a JSON object"}`)
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	tw := s.b.twins[s.id]
	for k, v := range p {
		tw.reported[k] = v
	}
	tw.reportedVer++
	return 204, tw.reportedVer, nil
}

func (s *fakeSession) NextC2D(context.Context) (C2DMessage, bool) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	for _, m := range s.b.c2d[s.id] {
		if m.inflight == nil {
			m.inflight = s
			return m.msg, true
		}
	}
	return C2DMessage{}, false
}

func (s *fakeSession) SettleC2D(_ context.Context, lockToken string, outcome C2DOutcome) error {
	s.b.mu.Lock()
	q := s.b.c2d[s.id]
	for i, m := range q {
		if m.msg.LockToken != lockToken {
			continue
		}
		if outcome == C2DAbandon {
			m.inflight = nil
		} else {
			s.b.c2d[s.id] = append(q[:i:i], q[i+1:]...)
		}
		break
	}
	s.b.mu.Unlock()
	s.b.settles <- fakeSettle{device: s.id, lockToken: lockToken, outcome: outcome}
	return nil
}

func (s *fakeSession) SubscriptionsChanged() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *fakeSession) Close() {
	s.b.mu.Lock()
	s.nClose++
	if s.b.sessions[s.id] == s {
		delete(s.b.sessions, s.id)
	}
	for _, m := range s.b.c2d[s.id] {
		if m.inflight == s {
			m.inflight = nil
		}
	}
	s.b.mu.Unlock()
	s.once.Do(func() { close(s.closed) })
}

func (s *fakeSession) closeCount() int {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return s.nClose
}
