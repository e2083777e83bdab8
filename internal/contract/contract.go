// Package contract is the reusable contract suite of the SDK's ports. A
// transport adapter is done when RunTransport passes against it: the
// suite starts the in-process emulator on ephemeral ports and checks every
// behaviour ports.Transport and ports.HubSession promise, through the
// adapter only.
package contract

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/ports"
)

// StepTimeout bounds each scenario of the suite (a failure, not a timing
// assertion: a working transport finishes in milliseconds).
const StepTimeout = 30 * time.Second

// DPSHost is the provisioning host name the suite asks for: the emulator
// serves DPS and the hub on one listener and its certificate names
// localhost.
const DPSHost = "localhost"

// NewTransport builds the transport under test for an emulator (its
// MQTTAddr port, CAPool, ...).
type NewTransport func(e *emulator.Emulator) ports.Transport

// Suite is one run of the contract: an emulator and a transport.
type Suite struct {
	E  *emulator.Emulator
	Tr ports.Transport
	// prefix keeps device ids unique per suite run.
	prefix string
	seq    atomic.Int64
}

// Start starts an emulator (MQTT on 127.0.0.1:0, REST disabled, DPS
// retry-after 0 so polls are immediate) and the transport, closing the
// emulator when t ends.
func Start(t testing.TB, newTransport NewTransport) *Suite {
	t.Helper()
	e, err := emulator.Start(context.Background(), &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1})
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	tr := newTransport(e)
	if tr == nil {
		t.Fatal("newTransport returned nil")
	}
	return &Suite{E: e, Tr: tr, prefix: strings.ToLower(strings.ReplaceAll(tr.Name(), "/", "-"))}
}

// DeviceID returns a fresh device id.
func (s *Suite) DeviceID(kind string) string {
	return fmt.Sprintf("%s-%s-%d", s.prefix, kind, s.seq.Add(1))
}

// NewDevice creates a device in the emulator and returns its id and key.
func (s *Suite) NewDevice(t testing.TB) (id, key string) {
	t.Helper()
	id = s.DeviceID("dev")
	key, err := s.E.CreateDevice(id)
	if err != nil {
		t.Fatalf("CreateDevice(%s): %v", id, err)
	}
	return id, key
}

// HubSAS signs a hub token for id valid for one hour.
func (s *Suite) HubSAS(t testing.TB, id, key string) string {
	t.Helper()
	tok, err := domain.BuildSAS(key, domain.HubResource(s.E.HubHost(), id), time.Now().Add(time.Hour), "")
	if err != nil {
		t.Fatalf("BuildSAS: %v", err)
	}
	return tok
}

// Connect opens a hub session for id with key and a recorder of its
// events; the session is closed when t ends.
func (s *Suite) Connect(t testing.TB, ctx context.Context, id, key string) (ports.HubSession, *Recorder) {
	t.Helper()
	rec := NewRecorder()
	sess, err := s.Tr.Connect(ctx, ports.HubConnection{
		Host: s.E.HubHost(), DeviceID: id, ModelID: "dtmi:com:example:Thermostat;1",
		Auth: ports.Auth{SASToken: s.HubSAS(t, id, key)},
	}, rec)
	if err != nil {
		t.Fatalf("Connect(%s): %v", id, err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	return sess, rec
}

// MethodEvent is one direct-method request seen by a Recorder, with its
// reply.
type MethodEvent struct {
	Req     ports.MethodRequest
	Respond func(ctx context.Context, status int, payload []byte) error
}

// CloudEvent is one cloud-to-device delivery seen by a Recorder.
type CloudEvent struct {
	Msg    domain.CloudMessage
	Settle func(domain.Outcome)
}

// Recorder is a ports.EventHandler that records every event on buffered
// channels (an event that does not fit is counted in Dropped).
type Recorder struct {
	Desired chan []byte
	Methods chan MethodEvent
	Cloud   chan CloudEvent
	Dropped atomic.Int64
}

// NewRecorder returns a Recorder with room for 256 events of each kind.
func NewRecorder() *Recorder {
	return &Recorder{
		Desired: make(chan []byte, 256),
		Methods: make(chan MethodEvent, 256),
		Cloud:   make(chan CloudEvent, 256),
	}
}

// OnDesiredPatch implements ports.EventHandler.
func (r *Recorder) OnDesiredPatch(patch []byte) {
	select {
	case r.Desired <- patch:
	default:
		r.Dropped.Add(1)
	}
}

// OnMethod implements ports.EventHandler.
func (r *Recorder) OnMethod(req ports.MethodRequest, respond func(ctx context.Context, status int, payload []byte) error) {
	select {
	case r.Methods <- MethodEvent{Req: req, Respond: respond}:
	default:
		r.Dropped.Add(1)
	}
}

// OnCloudMessage implements ports.EventHandler.
func (r *Recorder) OnCloudMessage(msg domain.CloudMessage, settle func(domain.Outcome)) {
	select {
	case r.Cloud <- CloudEvent{Msg: msg, Settle: settle}:
	default:
		r.Dropped.Add(1)
	}
}

// recv waits for one value from ch or fails the test when ctx ends.
func recv[T any](t testing.TB, ctx context.Context, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		var zero T
		t.Fatalf("no %s: %v", what, ctx.Err())
		return zero
	}
}

// SendAndSee sends once with send and returns the first message of
// device id the emulator reports. The watch is registered before the send,
// so the message cannot slip past it.
func (s *Suite) SendAndSee(t testing.TB, ctx context.Context, id string, send func() error) emulator.Telemetry {
	t.Helper()
	msgs, stop := s.E.WatchTelemetry(id)
	defer stop()
	if err := send(); err != nil {
		t.Fatalf("send telemetry: %v", err)
	}
	select {
	case tel := <-msgs:
		return tel
	case <-ctx.Done():
		t.Fatalf("telemetry of %s never reached the emulator: %v", id, ctx.Err())
		return emulator.Telemetry{}
	}
}

func stepContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), StepTimeout)
	t.Cleanup(cancel)
	return ctx
}

func jsonEqual(t testing.TB, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("not JSON: %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expected JSON %q: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("JSON = %s, want %s", gb, wb)
	}
}

// RunTransport runs the whole contract against the transport that
// newTransport builds. Scenarios run in parallel on one emulator.
func RunTransport(t *testing.T, newTransport NewTransport) {
	s := Start(t, newTransport)
	t.Run("ProvisionFailed", func(t *testing.T) { testProvisionFailed(t, newTransport) })
	t.Run("Name", func(t *testing.T) {
		if s.Tr.Name() == "" {
			t.Fatal("empty Name")
		}
	})
	t.Run("Provision", func(t *testing.T) {
		t.Run("GroupKey", s.testProvisionGroupKey)
		t.Run("DeviceKey", s.testProvisionDeviceKey)
		t.Run("WrongKey", s.testProvisionWrongKey)
		t.Run("InvalidRequest", s.testProvisionInvalid)
		t.Run("CancelledContext", s.testProvisionCancelled)
	})
	t.Run("Hub", func(t *testing.T) {
		t.Run("WrongKey", s.testConnectWrongKey)
		t.Run("InvalidConnection", s.testConnectInvalid)
		t.Run("Telemetry", s.testTelemetry)
		t.Run("TelemetryTooLarge", s.testTelemetryTooLarge)
		t.Run("TelemetryConcurrent", s.testTelemetryConcurrent)
		t.Run("TwinGet", s.testTwinGet)
		t.Run("ReportedPatch", s.testReportedPatch)
		t.Run("DesiredPatch", s.testDesiredPatch)
		t.Run("Method", s.testMethod)
		t.Run("CloudToDevice", s.testCloudToDevice)
		t.Run("CloudToDeviceOutcomes", s.testCloudToDeviceOutcomes)
		t.Run("DeadSessionErrors", s.testDeadSessionErrors)
		t.Run("ConnectionDropped", s.testDropped)
		t.Run("SecondConnection", s.testSecondConnection)
		t.Run("Close", s.testClose)
		t.Run("RenewToken", s.testRenewToken)
	})
}

func (s *Suite) provisionRequest(reg, key string) (ports.ProvisioningRequest, error) {
	tok, err := domain.BuildSAS(key, domain.DPSResource(s.E.IDScope(), reg), time.Now().Add(time.Hour), domain.DPSKeyName)
	if err != nil {
		return ports.ProvisioningRequest{}, err
	}
	return ports.ProvisioningRequest{
		Host: DPSHost, IDScope: s.E.IDScope(),
		Registration: domain.RegistrationRequest{RegistrationID: reg, ModelID: "dtmi:com:example:Thermostat;1"},
		Auth:         ports.Auth{SASToken: tok},
	}, nil
}

func (s *Suite) testProvisionGroupKey(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	reg := s.DeviceID("grp")
	key, err := domain.DeriveDeviceKey(s.E.GroupKey(), reg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := s.provisionRequest(reg, key)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Tr.Provision(ctx, req)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if a.Hub != s.E.HubHost() || a.DeviceID != reg {
		t.Fatalf("assignment = %+v, want hub %q device %q", a, s.E.HubHost(), reg)
	}
	// The derived key is the device's hub key: the assignment is usable.
	sess, _ := s.Connect(t, ctx, a.DeviceID, key)
	if _, err := sess.GetTwin(ctx); err != nil {
		t.Fatalf("GetTwin after provisioning: %v", err)
	}
}

func (s *Suite) testProvisionDeviceKey(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	req, err := s.provisionRequest(id, key)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Tr.Provision(ctx, req)
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if a.Hub != s.E.HubHost() || a.DeviceID != id {
		t.Fatalf("assignment = %+v", a)
	}
}

func (s *Suite) testProvisionWrongKey(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, _ := s.NewDevice(t)
	req, err := s.provisionRequest(id, "d3JvbmcgZGV2aWNlIGtleSB3cm9uZyBkZXZpY2Uga2V5")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Tr.Provision(ctx, req)
	if !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("Provision with a wrong key = %v, want ErrUnauthorized", err)
	}
	if domain.IsRetryable(err) {
		t.Fatalf("refused credentials reported as retryable: %v", err)
	}
}

func (s *Suite) testProvisionInvalid(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	for name, req := range map[string]ports.ProvisioningRequest{
		"no host":  {IDScope: "0ne", Registration: domain.RegistrationRequest{RegistrationID: "r"}, Auth: ports.Auth{SASToken: "x"}},
		"no scope": {Host: DPSHost, Registration: domain.RegistrationRequest{RegistrationID: "r"}, Auth: ports.Auth{SASToken: "x"}},
		"no reg":   {Host: DPSHost, IDScope: "0ne", Auth: ports.Auth{SASToken: "x"}},
		"no auth":  {Host: DPSHost, IDScope: "0ne", Registration: domain.RegistrationRequest{RegistrationID: "r"}},
	} {
		if _, err := s.Tr.Provision(ctx, req); !errors.Is(err, domain.ErrInvalidConfig) {
			t.Errorf("%s: Provision = %v, want ErrInvalidConfig", name, err)
		}
	}
}

// testProvisionFailed registers an unknown device with an emulator that
// approves only known devices: DPS answers "failed".
func testProvisionFailed(t *testing.T, newTransport NewTransport) {
	t.Parallel()
	ctx := stepContext(t)
	approve := false
	e, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1, AutoApprove: &approve})
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	s := &Suite{E: e, Tr: newTransport(e), prefix: "failed"}
	reg := s.DeviceID("unknown")
	key, err := domain.DeriveDeviceKey(e.GroupKey(), reg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := s.provisionRequest(reg, key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Tr.Provision(ctx, req)
	var pe *domain.ProvisioningError
	if !errors.As(err, &pe) || pe.Status != domain.DPSFailed {
		t.Fatalf("Provision of an unapproved device = %v, want a *domain.ProvisioningError with status failed", err)
	}
	if domain.IsRetryable(err) {
		t.Fatalf("a failed registration is reported as retryable: %v", err)
	}
}

func (s *Suite) testProvisionCancelled(t *testing.T) {
	t.Parallel()
	id, key := s.NewDevice(t)
	req, err := s.provisionRequest(id, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Tr.Provision(ctx, req); !errors.Is(err, context.Canceled) {
		t.Fatalf("Provision with a cancelled context = %v, want context.Canceled", err)
	}
}

func (s *Suite) testConnectWrongKey(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, _ := s.NewDevice(t)
	_, err := s.Tr.Connect(ctx, ports.HubConnection{
		Host: s.E.HubHost(), DeviceID: id,
		Auth: ports.Auth{SASToken: s.HubSAS(t, id, "d3JvbmcgZGV2aWNlIGtleSB3cm9uZyBkZXZpY2Uga2V5")},
	}, NewRecorder())
	if !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("Connect with a wrong key = %v, want ErrUnauthorized", err)
	}
}

func (s *Suite) testConnectInvalid(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	auth := ports.Auth{SASToken: "x"}
	for name, c := range map[string]struct {
		conn ports.HubConnection
		ev   ports.EventHandler
	}{
		"no host":    {ports.HubConnection{DeviceID: "d", Auth: auth}, NewRecorder()},
		"no device":  {ports.HubConnection{Host: s.E.HubHost(), Auth: auth}, NewRecorder()},
		"no auth":    {ports.HubConnection{Host: s.E.HubHost(), DeviceID: "d"}, NewRecorder()},
		"no handler": {ports.HubConnection{Host: s.E.HubHost(), DeviceID: "d", Auth: auth}, nil},
	} {
		if _, err := s.Tr.Connect(ctx, c.conn, c.ev); !errors.Is(err, domain.ErrInvalidConfig) {
			t.Errorf("%s: Connect = %v, want ErrInvalidConfig", name, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	id, key := s.NewDevice(t)
	_, err := s.Tr.Connect(cctx, ports.HubConnection{Host: s.E.HubHost(), DeviceID: id, Auth: ports.Auth{SASToken: s.HubSAS(t, id, key)}}, NewRecorder())
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Connect with a cancelled context = %v, want context.Canceled", err)
	}
}

func (s *Suite) testTelemetry(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	created := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	m := domain.Message{
		Body:          []byte(`{"temperature":21.5}`),
		MessageID:     "msg-1",
		CorrelationID: "corr-1",
		CreationTime:  created,
		Component:     "thermostat1",
		Properties:    map[string]string{"alert": "true", "a b&c": "x/y=z"},
	}
	tel := s.SendAndSee(t, ctx, id, func() error { return sess.SendTelemetry(ctx, m) })
	if string(tel.Body) != `{"temperature":21.5}` {
		t.Errorf("body = %q", tel.Body)
	}
	if tel.Component != "thermostat1" {
		t.Errorf("component = %q, want thermostat1", tel.Component)
	}
	for k, want := range map[string]string{"alert": "true", "a b&c": "x/y=z", domain.PropCreationTimeUTC: "2025-03-04T05:06:07Z"} {
		if got := tel.Properties[k]; got != want {
			t.Errorf("property %q = %q, want %q (all: %v)", k, got, want, tel.Properties)
		}
	}
	for name, got := range map[string][2]string{
		"message id": {tel.MessageID, "msg-1"}, "correlation id": {tel.CorrelationID, "corr-1"},
		"content type": {tel.ContentType, domain.DefaultContentType}, "content encoding": {tel.ContentEncoding, domain.DefaultContentEncoding},
	} {
		if got[0] != got[1] {
			t.Errorf("%s = %q, want %q (message %+v)", name, got[0], got[1], tel)
		}
	}
}

func (s *Suite) testTelemetryTooLarge(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	big := domain.Message{Body: bytes.Repeat([]byte("a"), domain.MaxTelemetrySize)}
	marker := domain.Message{Body: []byte(`{"marker":1}`)}
	sentBig := false
	tel := s.SendAndSee(t, ctx, id, func() error {
		if !sentBig {
			sentBig = true
			if err := sess.SendTelemetry(ctx, big); !errors.Is(err, domain.ErrMessageTooLarge) {
				return fmt.Errorf("oversized SendTelemetry = %v, want ErrMessageTooLarge", err)
			}
		}
		return sess.SendTelemetry(ctx, marker)
	})
	if string(tel.Body) != `{"marker":1}` {
		t.Fatalf("first message seen is %d bytes, not the marker: the oversized one was sent", len(tel.Body))
	}
	select {
	case <-sess.Done():
		t.Fatalf("session ended after an oversized message: %v", sess.Err())
	default:
	}
}

func (s *Suite) testTelemetryConcurrent(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- sess.SendTelemetry(ctx, domain.Message{Body: fmt.Appendf(nil, `{"i":%d}`, i)})
		}()
	}
	for range n {
		if err := recv(t, ctx, errs, "send result"); err != nil {
			t.Fatalf("concurrent SendTelemetry: %v", err)
		}
	}
}

func (s *Suite) testTwinGet(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	if err := s.E.UpdateProperties(ctx, id, "", map[string]any{"targetTemperature": 22}); err != nil {
		t.Fatalf("UpdateProperties: %v", err)
	}
	b, err := sess.GetTwin(ctx)
	if err != nil {
		t.Fatalf("GetTwin: %v", err)
	}
	tw, err := domain.ParseTwin(b)
	if err != nil {
		t.Fatalf("ParseTwin(%s): %v", b, err)
	}
	if tw.DesiredVersion < 2 {
		t.Errorf("desired $version = %d after one update, want >= 2", tw.DesiredVersion)
	}
	if v := fmt.Sprint(tw.Desired["targetTemperature"]); v != "22" {
		t.Errorf("desired = %v, want targetTemperature 22", tw.Desired)
	}
}

func (s *Suite) testReportedPatch(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	v1, err := sess.PatchReported(ctx, []byte(`{"maxTemp":21.5,"obj":{"x":1}}`))
	if err != nil {
		t.Fatalf("PatchReported: %v", err)
	}
	v2, err := sess.PatchReported(ctx, []byte(`{"maxTemp":23,"obj":{"x":null}}`))
	if err != nil {
		t.Fatalf("PatchReported: %v", err)
	}
	if v2 <= v1 {
		t.Fatalf("reported versions %d then %d: not increasing", v1, v2)
	}
	_, reported, err := s.E.Twin(id)
	if err != nil {
		t.Fatal(err)
	}
	if reported["maxTemp"] != 23.0 {
		t.Errorf("emulator reported = %v, want maxTemp 23", reported)
	}
	b, err := sess.GetTwin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tw, err := domain.ParseTwin(b)
	if err != nil {
		t.Fatal(err)
	}
	if tw.ReportedVersion != v2 {
		t.Errorf("twin reported $version = %d, want %d", tw.ReportedVersion, v2)
	}
	if _, err := sess.PatchReported(ctx, []byte(`{not json`)); !errors.As(err, new(*domain.HubError)) {
		t.Errorf("PatchReported(bad JSON) = %v, want a *domain.HubError", err)
	}
	big := fmt.Appendf(nil, `{"x":"%s"}`, strings.Repeat("a", domain.MaxTwinSectionSize))
	if _, err := sess.PatchReported(ctx, big); !errors.Is(err, domain.ErrMessageTooLarge) {
		t.Errorf("PatchReported(over 32 KiB) = %v, want ErrMessageTooLarge", err)
	}
	if _, err := sess.PatchReported(ctx, []byte(`{"after":"errors"}`)); err != nil {
		t.Errorf("session unusable after refused patches: %v", err)
	}
}

func (s *Suite) testDesiredPatch(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, rec := s.Connect(t, ctx, id, key)
	_ = sess
	if err := s.E.UpdateProperties(ctx, id, "", map[string]any{"targetTemperature": 25}); err != nil {
		t.Fatalf("UpdateProperties: %v", err)
	}
	if err := s.E.UpdateProperties(ctx, id, "thermostat1", map[string]any{"mode": "eco"}); err != nil {
		t.Fatalf("UpdateProperties: %v", err)
	}
	v1, props1, err := domain.ParseDesiredPatch(recv(t, ctx, rec.Desired, "desired patch"))
	if err != nil {
		t.Fatal(err)
	}
	if len(props1) != 1 || props1[0].Name != "targetTemperature" || string(props1[0].Value) != "25" {
		t.Errorf("first patch = %+v", props1)
	}
	v2, props2, err := domain.ParseDesiredPatch(recv(t, ctx, rec.Desired, "desired patch"))
	if err != nil {
		t.Fatal(err)
	}
	if v2 <= v1 {
		t.Errorf("desired versions %d then %d: not increasing (or out of order)", v1, v2)
	}
	if len(props2) != 1 || props2[0].Component != "thermostat1" || props2[0].Name != "mode" || string(props2[0].Value) != `"eco"` {
		t.Errorf("second patch = %+v", props2)
	}
}

func (s *Suite) testMethod(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, rec := s.Connect(t, ctx, id, key)
	var last MethodEvent
	type result struct {
		res emulator.CommandResult
		err error
	}
	for _, tc := range []struct {
		component, name, method string
		payload                 any
		status                  int
		response                string
	}{
		{"thermostat1", "getMaxMinReport", "thermostat1*getMaxMinReport", map[string]any{"since": "2024-01-01T00:00:00Z"}, 200, `{"maxTemp":21.5}`},
		{"", "reboot", "reboot", 5, 404, `{"error":"unknown"}`},
		{"", "slow", "slow", nil, 500, `"text"`},
	} {
		done := make(chan result, 1)
		go func() {
			res, err := s.E.InvokeCommand(ctx, id, tc.component, tc.name, tc.payload, StepTimeout)
			done <- result{res, err}
		}()
		last = recv(t, ctx, rec.Methods, "method request")
		req := last.Req
		if req.Method != tc.method || req.RequestID == "" {
			t.Fatalf("request = %+v, want method %q", req, tc.method)
		}
		want, _ := json.Marshal(tc.payload)
		jsonEqual(t, req.Payload, string(want))
		if err := last.Respond(ctx, tc.status, []byte(tc.response)); err != nil {
			t.Fatalf("respond: %v", err)
		}
		r := recv(t, ctx, done, "command result")
		if r.err != nil {
			t.Fatalf("InvokeCommand: %v", r.err)
		}
		if r.res.Status != tc.status {
			t.Errorf("status = %d, want %d", r.res.Status, tc.status)
		}
		jsonEqual(t, r.res.Payload, tc.response)
	}
	if err := last.Respond(ctx, 200, make([]byte, domain.MaxMethodPayloadSize+1)); !errors.Is(err, domain.ErrMessageTooLarge) {
		t.Errorf("respond(over 128 KiB) = %v, want ErrMessageTooLarge", err)
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	if err := last.Respond(ctx, 200, nil); !errors.Is(err, domain.ErrNotConnected) {
		t.Errorf("respond after the session closed = %v, want ErrNotConnected", err)
	}
}

func (s *Suite) testCloudToDevice(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, rec := s.Connect(t, ctx, id, key)
	if err := s.E.SendCloudToDevice(ctx, id, []byte("hello"), map[string]string{"color": "red", "method-name": "thermostat1*reboot"}); err != nil {
		t.Fatalf("SendCloudToDevice: %v", err)
	}
	ev := recv(t, ctx, rec.Cloud, "cloud-to-device message")
	if string(ev.Msg.Body) != "hello" || ev.Msg.Properties["color"] != "red" || ev.Msg.Properties[domain.PropMethodName] != "thermostat1*reboot" {
		t.Fatalf("message = %q %v", ev.Msg.Body, ev.Msg.Properties)
	}
	mid := ev.Msg.MessageID()
	if mid == "" {
		t.Fatalf("no $.mid in %v", ev.Msg.Properties)
	}
	// Not settled: closing and reconnecting redelivers it.
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	sess2, rec2 := s.Connect(t, ctx, id, key)
	ev2 := recv(t, ctx, rec2.Cloud, "redelivered cloud-to-device message")
	if ev2.Msg.MessageID() != mid || string(ev2.Msg.Body) != "hello" {
		t.Fatalf("redelivered %q (mid %q), want hello (mid %q)", ev2.Msg.Body, ev2.Msg.MessageID(), mid)
	}
	ev2.Settle(domain.Complete)
	ev2.Settle(domain.Complete) // idempotent
	if err := sess2.Close(); err != nil {
		t.Fatal(err)
	}
	// Settled: the next session gets only what is sent later.
	_, rec3 := s.Connect(t, ctx, id, key)
	if err := s.E.SendCloudToDevice(ctx, id, []byte("second"), nil); err != nil {
		t.Fatalf("SendCloudToDevice: %v", err)
	}
	ev3 := recv(t, ctx, rec3.Cloud, "second cloud-to-device message")
	if string(ev3.Msg.Body) != "second" {
		t.Fatalf("after settling, the next session got %q (mid %q) first, want second", ev3.Msg.Body, ev3.Msg.MessageID())
	}
	ev3.Settle(domain.Complete)
	ev.Settle(domain.Complete) // settling on a closed session must not panic or block
}

func (s *Suite) testDropped(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	if err := s.E.DisconnectDevice(id); err != nil {
		t.Fatalf("DisconnectDevice: %v", err)
	}
	recv(t, ctx, sess.Done(), "end of the dropped session")
	err := sess.Err()
	if err == nil || !errors.Is(err, domain.ErrNotConnected) || !domain.IsRetryable(err) {
		t.Fatalf("Err after a drop = %v, want a retryable error wrapping ErrNotConnected", err)
	}
	if err := sess.SendTelemetry(ctx, domain.Message{Body: []byte(`{}`)}); !errors.Is(err, domain.ErrNotConnected) {
		t.Errorf("SendTelemetry on a dead session = %v, want ErrNotConnected", err)
	}
	if _, err := sess.GetTwin(ctx); !errors.Is(err, domain.ErrNotConnected) {
		t.Errorf("GetTwin on a dead session = %v, want ErrNotConnected", err)
	}
	if err := sess.Close(); err != nil {
		t.Errorf("Close after a drop = %v", err)
	}
	// The device can connect again (the app's reconnect).
	sess2, _ := s.Connect(t, ctx, id, key)
	if _, err := sess2.GetTwin(ctx); err != nil {
		t.Fatalf("GetTwin after reconnecting: %v", err)
	}
}

func (s *Suite) testSecondConnection(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	first, _ := s.Connect(t, ctx, id, key)
	second, _ := s.Connect(t, ctx, id, key)
	recv(t, ctx, first.Done(), "end of the first session after a second connection")
	if first.Err() == nil {
		t.Error("first session ended without an error")
	}
	if _, err := second.GetTwin(ctx); err != nil {
		t.Fatalf("second session: %v", err)
	}
}

func (s *Suite) testClose(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	if err := sess.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := sess.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	recv(t, ctx, sess.Done(), "Done after Close")
	if err := sess.Err(); err != nil {
		t.Errorf("Err after Close = %v, want nil", err)
	}
	if err := sess.SendTelemetry(ctx, domain.Message{Body: []byte(`{}`)}); !errors.Is(err, domain.ErrNotConnected) {
		t.Errorf("SendTelemetry after Close = %v, want ErrNotConnected", err)
	}
	if _, err := sess.PatchReported(ctx, []byte(`{}`)); !errors.Is(err, domain.ErrNotConnected) {
		t.Errorf("PatchReported after Close = %v, want ErrNotConnected", err)
	}
}

func (s *Suite) testRenewToken(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	// A token signed with the wrong key: a transport that renews in place
	// must present it and have it refused; one that cannot says so.
	_, other := s.NewDevice(t)
	bad, err := domain.BuildSAS(other, domain.HubResource(s.E.HubHost(), id), time.Now().Add(time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	err = sess.RenewToken(ctx, bad)
	inPlace := !errors.Is(err, domain.ErrNotSupported)
	if inPlace && !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("RenewToken(wrong key) = %v, want ErrUnauthorized (renewed in place) or ErrNotSupported", err)
	}
	if !inPlace {
		if _, err := sess.GetTwin(ctx); err != nil {
			t.Fatalf("session after RenewToken: %v", err)
		}
		return
	}
	// In place: a good token is taken and the session goes on.
	sess2, _ := s.Connect(t, ctx, id, key)
	if err := sess2.RenewToken(ctx, s.HubSAS(t, id, key)); err != nil {
		t.Fatalf("RenewToken(good token) = %v", err)
	}
	if err := sess2.SendTelemetry(ctx, domain.Message{Body: []byte(`{"after":"renewal"}`)}.WithDefaults()); err != nil {
		t.Fatalf("SendTelemetry after RenewToken: %v", err)
	}
}

// testCloudToDeviceOutcomes: a completed or rejected message never comes
// again; an abandoned one does (on this session or the next).
func (s *Suite) testCloudToDeviceOutcomes(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, rec := s.Connect(t, ctx, id, key)
	outcome := map[string]domain.Outcome{"complete": domain.Complete, "abandon": domain.Abandon, "reject": domain.Reject}
	for _, body := range []string{"complete", "abandon", "reject"} {
		if err := s.E.SendCloudToDevice(ctx, id, []byte(body), nil); err != nil {
			t.Fatalf("SendCloudToDevice: %v", err)
		}
	}
	mids := map[string]string{}
	for len(mids) < 3 {
		ev := recv(t, ctx, rec.Cloud, "cloud-to-device message")
		body := string(ev.Msg.Body)
		if _, seen := mids[body]; seen {
			continue // an abandoned message already back
		}
		mids[body] = ev.Msg.MessageID()
		ev.Settle(outcome[body])
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	_, rec2 := s.Connect(t, ctx, id, key)
	if err := s.E.SendCloudToDevice(ctx, id, []byte("end"), nil); err != nil {
		t.Fatalf("SendCloudToDevice: %v", err)
	}
	gotAbandoned := false
	for {
		ev := recv(t, ctx, rec2.Cloud, "cloud-to-device message on the next session")
		body := string(ev.Msg.Body)
		ev.Settle(domain.Complete)
		if body == "end" {
			break
		}
		switch body {
		case "abandon":
			if ev.Msg.MessageID() != mids["abandon"] {
				t.Errorf("abandoned message came back with id %q, want %q", ev.Msg.MessageID(), mids["abandon"])
			}
			gotAbandoned = true
		default:
			t.Errorf("the %s message came back after it was settled %s", body, body)
		}
	}
	// An abandoned message may also have come back on the first session
	// (AMQP releases it at once); over MQTT it waits for the next one.
	for len(rec.Cloud) > 0 {
		if ev := <-rec.Cloud; string(ev.Msg.Body) == "abandon" {
			gotAbandoned = true
		}
	}
	if !gotAbandoned {
		t.Error("the abandoned message was never delivered again")
	}
}

// testDeadSessionErrors: sends cut by a dropped connection fail with
// errors wrapping ErrNotConnected whose text carries no address.
func (s *Suite) testDeadSessionErrors(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	errs := make(chan error, 64)
	stop := make(chan struct{})
	var senders sync.WaitGroup
	for range 8 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := sess.SendTelemetry(ctx, domain.Message{Body: []byte(`{"x":1}`)}.WithDefaults())
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // let the senders get going (not a timing assertion)
	if err := s.E.DisconnectDevice(id); err != nil {
		t.Fatalf("DisconnectDevice: %v", err)
	}
	recv(t, ctx, sess.Done(), "end of the dropped session")
	close(stop)
	senders.Wait()
	close(errs)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, domain.ErrNotConnected) {
			t.Errorf("%s = %v, want an error wrapping ErrNotConnected", what, err)
		}
		if text := err.Error(); strings.Contains(text, "127.0.0.1") || strings.Contains(text, "[::1]") {
			t.Errorf("%s text carries an address: %q", what, text)
		}
	}
	n := 0
	for err := range errs {
		n++
		check("send cut by the drop", err)
	}
	if n == 0 {
		t.Error("no send failed although the session was dropped under them")
	}
	check("Err after the drop", sess.Err())
}
