package amqphub

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/core"
	esas "github.com/iotc-go/iotc/emulator/internal/sas"
)

func ptr[T any](v T) *T { return &v }

func TestCBSPutTokenStatuses(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	c := h.dial(t, nil)
	cbs := newCBS(t, session(t, c))
	cases := []struct {
		name, audience, token string
		want                  int32
	}{
		{"C raw audience", testHost + "/devices/dev1", hubToken(t, "dev1", time.Hour), 200},
		{"Node encoded audience", esas.Escape(testHost + "/devices/dev2"), hubToken(t, "dev2", time.Hour), 200},
		{"wrong key", testHost + "/devices/dev1", func() string {
			tok, _ := esas.Build("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", esas.HubResource(testHost, "dev1"), time.Now().Add(time.Hour), "")
			return tok
		}(), 401},
		{"expired", testHost + "/devices/dev1", hubToken(t, "dev1", -time.Minute), 401},
		{"token for another device", testHost + "/devices/dev1", hubToken(t, "dev2", time.Hour), 401},
		{"other hub", "otherhub.azure-devices.net/devices/dev1", hubToken(t, "dev1", time.Hour), 401},
		{"unknown device", testHost + "/devices/nobody", hubToken(t, "nobody", time.Hour), 404},
		{"not a token", testHost + "/devices/dev1", "hello", 401},
		{"bad audience", "dev1", hubToken(t, "dev1", time.Hour), 400},
	}
	for _, tc := range cases {
		code, desc := cbs.putToken(t, tc.audience, tc.token)
		if code != tc.want {
			t.Errorf("%s: status %d (%s), want %d", tc.name, code, desc, tc.want)
		}
		if strings.Contains(desc, "sig=") {
			t.Errorf("%s: description leaks the token: %s", tc.name, desc)
		}
	}
}

func TestCBSUnsupportedOperationAndType(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	c := h.dial(t, nil)
	s := session(t, c)
	cbs := newCBS(t, s)
	for _, props := range []map[string]any{
		{"operation": "delete-token", "type": "servicebus.windows.net:sastoken", "name": testHost + "/devices/dev1"},
		{"operation": "put-token", "type": "jwt", "name": testHost + "/devices/dev1"},
	} {
		m := &amqp.Message{Properties: &amqp.MessageProperties{MessageID: "x"}, ApplicationProperties: props, Value: hubToken(t, "dev1", time.Hour)}
		if err := cbs.snd.Send(testCtx(t), m, nil); err != nil {
			t.Fatal(err)
		}
		r, err := cbs.rcv.Receive(testCtx(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = cbs.rcv.AcceptMessage(testCtx(t), r)
		if r.ApplicationProperties["status-code"] != int32(400) || r.Properties.CorrelationID != "x" {
			t.Errorf("%v: reply %v %#v", props, r.ApplicationProperties, r.Properties.CorrelationID)
		}
	}
}

func TestLinksNeedAToken(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	c := h.dial(t, nil)
	s := session(t, c)
	_, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", nil)
	if got := condition(err); got != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("attach without token: %v (condition %q)", err, got)
	}
	cbs := newCBS(t, s)
	if code, _ := cbs.putToken(t, testHost+"/devices/dev1", hubToken(t, "dev1", time.Hour)); code != 200 {
		t.Fatal(code)
	}
	// The token of dev1 gives no access to dev2's nodes.
	for _, addr := range []string{"/devices/dev2/messages/events", "amqps://" + testHost + "/devices/dev2/twin"} {
		_, err = s.NewSender(testCtx(t), addr, nil)
		if got := condition(err); got != amqp.ErrCondUnauthorizedAccess {
			t.Errorf("foreign device %s: %v", addr, err)
		}
	}
	_, err = s.NewReceiver(testCtx(t), "/devices/dev2/messages/devicebound", nil)
	if got := condition(err); got != amqp.ErrCondUnauthorizedAccess {
		t.Errorf("foreign C2D: %v", err)
	}
	// Unknown nodes, a module (the device's token does not authorize it) and wrong directions.
	_, err = s.NewSender(testCtx(t), "/devices/dev1/nowhere", nil)
	if got := condition(err); got != amqp.ErrCondNotFound {
		t.Errorf("unknown node: %v", err)
	}
	_, err = s.NewSender(testCtx(t), "/devices/dev1/modules/m1/messages/events", nil)
	if got := condition(err); got != amqp.ErrCondUnauthorizedAccess {
		t.Errorf("module: %v", err)
	}
	_, err = s.NewReceiver(testCtx(t), "/devices/dev1/messages/events", nil)
	if got := condition(err); got != amqp.ErrCondNotAllowed {
		t.Errorf("receiving from events: %v", err)
	}
	// dev1's own node works, with the C SDK's absolute, upper-case address.
	if _, err := s.NewSender(testCtx(t), "AMQPS://"+testHost+"/DEVICES/dev1/Messages/Events", nil); err != nil {
		t.Errorf("own node: %v", err)
	}
}

func TestTelemetryMapping(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	telemetry := h.watchTelemetry(t, "dev1")
	_, s, _ := h.connectDevice(t, "dev1")
	snd, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", &amqp.SenderOptions{
		Properties: map[string]any{"com.microsoft:client-version": "test/1.0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := &amqp.Message{
		Properties: &amqp.MessageProperties{
			MessageID: "m1", CorrelationID: amqp.UUID{1, 2, 3}, ContentType: ptr("application/json"), ContentEncoding: ptr("utf-8"),
		},
		ApplicationProperties: map[string]any{"color": "red", "n": int32(7)},
		Annotations:           amqp.Annotations{amqp.Symbol("dt-subject"): "thermostat1"},
		Data:                  [][]byte{[]byte(`{"temperature":`), []byte(`21.5}`)},
	}
	if err := snd.Send(testCtx(t), m, nil); err != nil {
		t.Fatalf("send: %v", err)
	}
	got := recv(t, telemetry)
	if string(got.Body) != `{"temperature":21.5}` || got.Component != "thermostat1" {
		t.Errorf("body %q component %q", got.Body, got.Component)
	}
	if got.MessageID != "m1" || got.ContentType != "application/json" || got.ContentEncoding != "utf-8" ||
		got.CorrelationID != "01020300-0000-0000-0000-000000000000" {
		t.Errorf("system properties %+v", got)
	}
	// What a reader of the built-in endpoint sees, by IoT Hub's names.
	want := map[string]string{
		core.PropMessageID: "m1", core.PropContentType: "application/json", core.PropContentEncoding: "utf-8",
		core.PropComponent: "thermostat1", core.PropCorrelationID: "01020300-0000-0000-0000-000000000000",
		core.PropDeviceID: "dev1", core.PropAuthMethod: core.AuthMethodSAS,
	}
	sys := got.SystemProperties()
	for k, v := range want {
		if sys[k] != v {
			t.Errorf("system property %s = %q, want %q", k, sys[k], v)
		}
	}
	if sys[core.PropEnqueuedTime] == "" {
		t.Errorf("no %s in %v", core.PropEnqueuedTime, sys)
	}
	if got.Properties["color"] != "red" || got.Properties["n"] != "7" {
		t.Errorf("properties %v", got.Properties)
	}
}

func TestTelemetrySizeLimitAndErrors(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	telemetry := h.watchTelemetry(t, "dev1")
	_, s, _ := h.connectDevice(t, "dev1")
	snd, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = snd.Send(testCtx(t), &amqp.Message{Data: [][]byte{bytes.Repeat([]byte("x"), 300<<10)}}, nil)
	if got := condition(err); got != amqp.ErrCondResourceLimitExceeded {
		t.Fatalf("300 KiB: %v (condition %q)", err, got)
	}
	if err := snd.Send(testCtx(t), &amqp.Message{Data: [][]byte{bytes.Repeat([]byte("y"), 200<<10)}}, nil); err != nil {
		t.Fatalf("200 KiB: %v", err)
	}
	if got := recv(t, telemetry); len(got.Body) != 200<<10 {
		t.Fatalf("stored %d bytes", len(got.Body))
	}
	if err := h.m.InjectFault("dev1", core.Fault{Kind: core.FaultMaxMessageQuota, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	err = snd.Send(testCtx(t), &amqp.Message{Data: [][]byte{[]byte("{}")}}, nil)
	if got := condition(err); got != amqp.ErrCondResourceLimitExceeded {
		t.Fatalf("over quota: %v", err)
	}
	h.m.ClearFaults("dev1")
	// The link survives refusals.
	if err := snd.Send(testCtx(t), &amqp.Message{Data: [][]byte{[]byte("{}")}}, nil); err != nil {
		t.Fatal(err)
	}
	recv(t, telemetry)
}

func TestTelemetryBatch(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	telemetry := h.watchTelemetry(t, "dev1")
	_, s, _ := h.connectDevice(t, "dev1")
	snd, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	var parts [][]byte
	for _, body := range []string{`{"a":1}`, `{"a":2}`} {
		b, err := (&amqp.Message{Properties: &amqp.MessageProperties{MessageID: body}, Data: [][]byte{[]byte(body)}}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, b)
	}
	if err := snd.Send(testCtx(t), &amqp.Message{Format: batchFormat, Data: parts}, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`{"a":1}`, `{"a":2}`} {
		got := recv(t, telemetry)
		if string(got.Body) != want || got.MessageID != want {
			t.Errorf("batch item %q %q, want %q", got.Body, got.MessageID, want)
		}
	}
}

func TestSASLPlainDevice(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	telemetry := h.watchTelemetry(t, "dev1")
	c := h.dial(t, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain("dev1@sas.myhub", hubToken(t, "dev1", time.Hour))})
	s := session(t, c)
	snd, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(testCtx(t), &amqp.Message{Data: [][]byte{[]byte("{}")}}, nil); err != nil {
		t.Fatal(err)
	}
	recv(t, telemetry)
	if _, err := s.NewSender(testCtx(t), "/devices/dev2/messages/events", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("dev2 with dev1's PLAIN identity: %v", err)
	}

	for _, user := range []string{"dev1@sas.otherhub", "dev1", "dev1@sas.root.myhub"} {
		_, err := amqp.Dial(testCtx(t), "amqp://"+h.addr, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain(user, hubToken(t, "dev1", time.Hour))})
		if err == nil {
			t.Errorf("PLAIN user %q accepted", user)
		}
	}
	_, err = amqp.Dial(testCtx(t), "amqp://"+h.addr, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain("dev1@sas.myhub", hubToken(t, "dev1", -time.Minute))})
	if err == nil {
		t.Error("expired PLAIN token accepted")
	}
}

func TestAnonymousThenCBS(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	c := h.dial(t, &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()})
	s := session(t, c)
	cbs := newCBS(t, s)
	if code, _ := cbs.putToken(t, testHost+"/devices/dev1", hubToken(t, "dev1", time.Hour)); code != 200 {
		t.Fatal(code)
	}
	if _, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", nil); err != nil {
		t.Fatal(err)
	}
}

func TestTokenExpiryEndsSessionAndRenewalKeepsIt(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	telemetry := h.watchTelemetry(t, "dev1")
	c := h.dial(t, nil)
	s := session(t, c)
	cbs := newCBS(t, s)
	// dev1: a short token, renewed before it expires.
	short := time.Now().Add(3 * time.Second) // se has whole seconds: at least 2s to attach
	if code, _ := cbs.putToken(t, testHost+"/devices/dev1", sas(t, esas.HubResource(testHost, "dev1"), short)); code != 200 {
		t.Fatal(code)
	}
	snd1, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	sess1 := recv(t, h.m.connects)
	if code, _ := cbs.putToken(t, testHost+"/devices/dev1", hubToken(t, "dev1", time.Hour)); code != 200 {
		t.Fatal(code)
	}
	// dev2: a short token, not renewed.
	if code, _ := cbs.putToken(t, testHost+"/devices/dev2", sas(t, esas.HubResource(testHost, "dev2"), short)); code != 200 {
		t.Fatal(code)
	}
	snd2, err := s.NewSender(testCtx(t), "/devices/dev2/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	sess2 := recv(t, h.m.connects)

	recv(t, sess2.gone) // dev2's session ends at expiry
	err = snd2.Send(testCtx(t), &amqp.Message{Data: [][]byte{[]byte("{}")}}, nil)
	if got := condition(err); got != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("send after expiry: %v (condition %q)", err, got)
	}
	if _, err := s.NewSender(testCtx(t), "/devices/dev2/messages/events", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("attach after expiry: %v", err)
	}
	// dev1's first token expired at the same time as dev2's; the renewal kept it.
	if err := snd1.Send(testCtx(t), &amqp.Message{Data: [][]byte{[]byte("{}")}}, nil); err != nil {
		t.Fatalf("renewed device: %v", err)
	}
	recv(t, telemetry)
	if ended(sess1) {
		t.Fatal("renewed session closed")
	}
	// A new token for dev2 lets it attach again, with a new session.
	if code, _ := cbs.putToken(t, testHost+"/devices/dev2", hubToken(t, "dev2", time.Hour)); code != 200 {
		t.Fatal(code)
	}
	if _, err := s.NewSender(testCtx(t), "/devices/dev2/messages/events", nil); err != nil {
		t.Fatal(err)
	}
	if recv(t, h.m.connects) == sess2 {
		t.Fatal("old session reused")
	}
}

func TestC2DSettlement(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	h.queueC2D(t, "dev1", "hello", map[string]string{"iothub-ack": "full", "color": "red"})
	_, s, _ := h.connectDevice(t, "dev1")
	rcv, err := s.NewReceiver(testCtx(t), "amqps://"+testHost+"/devices/dev1/messages/devicebound",
		&amqp.ReceiverOptions{Credit: 5, SettlementMode: amqp.ReceiverSettleModeFirst.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rcv.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := m.Properties.MessageID.(string)
	if string(m.GetData()) != "hello" || first == "" || *m.Properties.To != "/devices/dev1/messages/devicebound" ||
		m.ApplicationProperties["iothub-ack"] != "full" || m.ApplicationProperties["color"] != "red" {
		t.Fatalf("C2D message %+v %+v %v", m.Properties, m.Properties.To, m.ApplicationProperties)
	}
	// released = abandon: redelivered.
	if err := rcv.ReleaseMessage(testCtx(t), m); err != nil {
		t.Fatal(err)
	}
	m, err = rcv.Receive(testCtx(t), nil)
	if err != nil || m.Properties.MessageID != first {
		t.Fatalf("redelivery: %v %v", err, m)
	}
	if n := h.m.PendingC2D("dev1"); n != 1 {
		t.Fatalf("%d pending after the release, want 1", n)
	}
	// accepted = complete.
	if err := rcv.AcceptMessage(testCtx(t), m); err != nil {
		t.Fatal(err)
	}
	h.waitPending(t, "dev1", 0)
	if dl := h.m.DeadLetters("dev1"); len(dl) != 0 {
		t.Fatalf("completed message dead-lettered: %v", dl)
	}
	// A message queued while the link is attached; rejected = reject.
	h.queueC2D(t, "dev1", "again", nil)
	m, err = rcv.Receive(testCtx(t), nil)
	if err != nil || string(m.GetData()) != "again" {
		t.Fatalf("second message: %v %v", err, m)
	}
	if err := rcv.RejectMessage(testCtx(t), m, nil); err != nil {
		t.Fatal(err)
	}
	h.waitPending(t, "dev1", 0)
	if dl := h.m.DeadLetters("dev1"); len(dl) != 1 || string(dl[0].Body) != "again" {
		t.Fatalf("dead letters after reject: %v", dl)
	}
}

func TestC2DInFlightReturnsOnDisconnect(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	h.queueC2D(t, "dev1", "hello", nil)
	c, s, _ := h.connectDevice(t, "dev1")
	rcv, err := s.NewReceiver(testCtx(t), "/devices/dev1/messages/devicebound", &amqp.ReceiverOptions{Credit: 1})
	if err != nil {
		t.Fatal(err)
	}
	sess := recv(t, h.m.connects)
	first, err := rcv.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close() // never settled
	recv(t, sess.gone)
	if n := h.m.PendingC2D("dev1"); n != 1 {
		t.Fatalf("queue holds %d, want the unsettled message kept", n)
	}
	_, s2, _ := h.connectDevice(t, "dev1")
	rcv2, err := s2.NewReceiver(testCtx(t), "/devices/dev1/messages/devicebound", &amqp.ReceiverOptions{Credit: 1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rcv2.Receive(testCtx(t), nil)
	if err != nil || m.Properties.MessageID != first.Properties.MessageID {
		t.Fatalf("redelivery on the new connection: %v %v", err, m)
	}
	if err := rcv2.AcceptMessage(testCtx(t), m); err != nil {
		t.Fatal(err)
	}
}

// methodLinks attaches the method channel as the C SDK does.
func methodLinks(t *testing.T, s *amqp.Session, id string) (*amqp.Receiver, *amqp.Sender) {
	t.Helper()
	props := map[string]any{"com.microsoft:channel-correlation-id": id, "com.microsoft:api-version": "2020-09-30"}
	addr := "amqps://" + testHost + "/devices/" + id + "/methods/devicebound"
	rcv, err := s.NewReceiver(testCtx(t), addr, &amqp.ReceiverOptions{Name: "methods_requests_link-" + id, TargetAddress: "requests", Properties: props, Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	snd, err := s.NewSender(testCtx(t), addr, &amqp.SenderOptions{Name: "methods_responses_link-" + id, SourceAddress: "responses", Properties: props})
	if err != nil {
		t.Fatal(err)
	}
	return rcv, snd
}

func TestDirectMethodRoundTrip(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	_, s, _ := h.connectDevice(t, "dev1")
	snd, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = snd
	sess := recv(t, h.m.connects)
	if _, _, err := sess.InvokeMethod(testCtx(t), "reboot", []byte("{}")); !errors.Is(err, ErrNotSubscribed) {
		t.Fatalf("invoke without a method link: %v", err)
	}
	if sess.Subscribed(core.FeatureMethods) {
		t.Fatal("subscribed before attach")
	}
	rcv, rsp := methodLinks(t, s, "dev1")
	if !sess.Subscribed(core.FeatureMethods) {
		t.Fatal("not subscribed after attach")
	}
	type result struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		st, body, err := sess.InvokeMethod(testCtx(t), "thermostat*getMaxMinReport", []byte(`{"since":"now"}`))
		done <- result{st, body, err}
	}()
	req, err := rcv.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rcv.AcceptMessage(testCtx(t), req); err != nil {
		t.Fatal(err)
	}
	id, ok := req.Properties.CorrelationID.(amqp.UUID)
	if !ok {
		t.Fatalf("correlation-id %T, want the AMQP uuid type", req.Properties.CorrelationID)
	}
	if req.ApplicationProperties["IoThub-methodname"] != "thermostat*getMaxMinReport" || string(req.GetData()) != `{"since":"now"}` {
		t.Fatalf("request %v %q", req.ApplicationProperties, req.GetData())
	}
	// A response for an unknown id is accepted and ignored.
	if err := rsp.Send(testCtx(t), &amqp.Message{
		Properties:            &amqp.MessageProperties{CorrelationID: amqp.UUID{9}},
		ApplicationProperties: map[string]any{"IoThub-status": int32(200)}, Data: [][]byte{[]byte("{}")},
	}, nil); err != nil {
		t.Fatal(err)
	}
	// A response without a status is rejected.
	err = rsp.Send(testCtx(t), &amqp.Message{Properties: &amqp.MessageProperties{CorrelationID: id}, Data: [][]byte{[]byte("{}")}}, nil)
	if condition(err) != amqp.ErrCondInvalidField {
		t.Fatalf("response without status: %v", err)
	}
	if err := rsp.Send(testCtx(t), &amqp.Message{
		Properties:            &amqp.MessageProperties{CorrelationID: id},
		ApplicationProperties: map[string]any{"IoThub-status": int32(201)},
		Data:                  [][]byte{[]byte(`{"maxTemp":21.5}`)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	r := recv(t, done)
	if r.err != nil || r.status != 201 || string(r.body) != `{"maxTemp":21.5}` {
		t.Fatalf("invoke result %d %q %v", r.status, r.body, r.err)
	}

	// Node re-encodes the uuid string as a uuid, but a string form works too.
	go func() {
		st, body, err := sess.InvokeMethod(testCtx(t), "ping", nil)
		done <- result{st, body, err}
	}()
	req, err = rcv.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = rcv.AcceptMessage(testCtx(t), req)
	if err := rsp.Send(testCtx(t), &amqp.Message{
		Properties:            &amqp.MessageProperties{CorrelationID: formatUUID(req.Properties.CorrelationID.(amqp.UUID))},
		ApplicationProperties: map[string]any{"IoThub-status": "500"},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, done); r.err != nil || r.status != 500 || len(r.body) != 0 {
		t.Fatalf("second invoke %d %q %v", r.status, r.body, r.err)
	}

	// A caller timeout ends the call.
	ctx, cancel := context.WithCancel(testCtx(t))
	go func() {
		st, body, err := sess.InvokeMethod(ctx, "slow", nil)
		done <- result{st, body, err}
	}()
	if _, err := rcv.Receive(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	if r := recv(t, done); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled invoke: %v", r.err)
	}
}

// twinLinks attaches the twin channel as the Node SDK does.
func twinLinks(t *testing.T, s *amqp.Session, id string) (*amqp.Sender, *amqp.Receiver) {
	t.Helper()
	props := map[string]any{"com.microsoft:channel-correlation-id": "twin:" + id + "-chan", "com.microsoft:api-version": "2021-04-12"}
	addr := "/devices/" + id + "/twin"
	snd, err := s.NewSender(testCtx(t), addr, &amqp.SenderOptions{Properties: props, SettlementMode: amqp.SenderSettleModeSettled.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(testCtx(t), addr, &amqp.ReceiverOptions{Properties: props, Credit: 10, RequestedSenderSettleMode: amqp.SenderSettleModeSettled.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	return snd, rcv
}

func twinRequestMsg(corr, op, resource, body string) *amqp.Message {
	ann := amqp.Annotations{amqp.Symbol("operation"): op}
	if resource != "" {
		ann[amqp.Symbol("resource")] = resource
	}
	return &amqp.Message{Properties: &amqp.MessageProperties{CorrelationID: corr}, Annotations: ann, Data: [][]byte{[]byte(body)}}
}

func TestTwinOperations(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	_, s, _ := h.connectDevice(t, "dev1")
	snd, rcv := twinLinks(t, s, "dev1")
	sess := recv(t, h.m.connects)
	call := func(corr, op, res, body string) *amqp.Message {
		t.Helper()
		if err := snd.Send(testCtx(t), twinRequestMsg(corr, op, res, body), nil); err != nil {
			t.Fatal(err)
		}
		m, err := rcv.Receive(testCtx(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.Properties == nil || m.Properties.CorrelationID != corr {
			t.Fatalf("%s: correlation-id %#v, want %q", op, m.Properties, corr)
		}
		return m
	}
	m := call("c1", "GET", "", " ")
	if m.Annotations["status"] != int32(200) {
		t.Fatalf("GET status %#v", m.Annotations["status"])
	}
	var doc struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	}
	if err := json.Unmarshal(m.GetData(), &doc); err != nil || doc.Desired["$version"] != float64(1) {
		t.Fatalf("GET body %q: %v", m.GetData(), err)
	}
	m = call("c2", "PATCH", "/properties/reported", `{"maxTempSinceLastReboot":21.5}`)
	if m.Annotations["status"] != int32(204) || m.Annotations["version"] != int64(2) {
		t.Fatalf("PATCH annotations %#v", m.Annotations)
	}
	m = call("c3", "PATCH", "/properties/reported", `not json`)
	if m.Annotations["status"] != int32(400) {
		t.Fatalf("bad PATCH annotations %#v", m.Annotations)
	}
	if _, ok := m.Annotations["version"]; ok {
		t.Fatal("error answer carries a version")
	}
	m = call("c4", "DANCE", "", " ")
	if m.Annotations["status"] != int32(400) {
		t.Fatalf("unknown op %#v", m.Annotations)
	}
	// Not subscribed yet: the patch is not pushed (the next message on the
	// receiver is the answer to c5, which call checks).
	if sess.Subscribed(core.FeatureDesired) {
		t.Fatal("subscribed to desired patches before PUT")
	}
	if err := h.m.UpdateProperties(testCtx(t), "dev1", "", map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	m = call("c5", "PUT", "/notifications/twin/properties/desired", " ")
	if m.Annotations["status"] != int32(200) || !sess.Subscribed(core.FeatureDesired) {
		t.Fatalf("PUT %#v", m.Annotations)
	}
	if err := h.m.UpdateProperties(testCtx(t), "dev1", "", map[string]any{"targetTemperature": 23}); err != nil {
		t.Fatal(err)
	}
	desired, _, err := h.m.Twin("dev1")
	if err != nil {
		t.Fatal(err)
	}
	v := desired["$version"]
	m, err = rcv.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Properties != nil && m.Properties.CorrelationID != nil {
		t.Fatalf("desired push has correlation-id %#v", m.Properties.CorrelationID)
	}
	var patch map[string]any
	if err := json.Unmarshal(m.GetData(), &patch); err != nil || patch["$version"] != toFloat(v) || patch["targetTemperature"] != float64(23) {
		t.Fatalf("desired push %q: %v", m.GetData(), err)
	}
	m = call("c6", "DELETE", "/notifications/twin/properties/desired", " ")
	if m.Annotations["status"] != int32(200) || sess.Subscribed(core.FeatureDesired) {
		t.Fatalf("DELETE %#v", m.Annotations)
	}
	// Unsubscribed: nothing pushed (the next message answers c7).
	if err := h.m.UpdateProperties(testCtx(t), "dev1", "", map[string]any{"x": 2}); err != nil {
		t.Fatal(err)
	}
	if m = call("c7", "GET", "", " "); m.Annotations["status"] != int32(200) {
		t.Fatalf("GET after DELETE %#v", m.Annotations)
	}
}

func TestNewConnectionReplacesOld(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	c1, s1, _ := h.connectDevice(t, "dev1")
	snd1, err := s1.NewSender(testCtx(t), "/devices/dev1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	old := recv(t, h.m.connects)
	_, s2, _ := h.connectDevice(t, "dev1")
	if _, err := s2.NewSender(testCtx(t), "/devices/dev1/messages/events", nil); err != nil {
		t.Fatal(err)
	}
	recv(t, h.m.connects)
	recv(t, old.gone)
	// The old connection was closed by the server with connection:forced.
	err = snd1.Send(testCtx(t), &amqp.Message{Data: [][]byte{[]byte("{}")}}, nil)
	if err == nil {
		t.Fatal("old connection still sends")
	}
	var ce *amqp.ConnError
	if !errors.As(err, &ce) {
		_, err = c1.NewSession(testCtx(t), nil)
		if !errors.As(err, &ce) {
			t.Fatalf("old connection error %v", err)
		}
	}
	if ce.RemoteErr == nil || ce.RemoteErr.Condition != amqp.ErrCondConnectionForced {
		t.Fatalf("old connection closed with %v", ce)
	}
}

func TestX509Device(t *testing.T) {
	t.Parallel()
	h := startHarness(t, true)
	h.addX509Device(t, "devx")
	telemetry := h.watchTelemetry(t, "devx")
	leaf, err := h.ca.IssueClient("devx", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := h.dial(t, &amqp.ConnOptions{TLSConfig: &tls.Config{RootCAs: poolOf(h.ca), Certificates: []tls.Certificate{leaf.TLS}, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}})
	s := session(t, c)
	snd, err := s.NewSender(testCtx(t), "amqps://"+testHost+"/devices/devx/messages/events", nil)
	if err != nil {
		t.Fatalf("X.509 attach: %v", err)
	}
	if err := snd.Send(testCtx(t), &amqp.Message{Data: [][]byte{[]byte("{}")}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, telemetry); got.AuthMethod != core.AuthMethodX509 {
		t.Fatalf("auth method %q, want X.509", got.AuthMethod)
	}
	if _, err := s.NewSender(testCtx(t), "/devices/dev1/messages/events", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("certificate for devx used for dev1: %v", err)
	}
	// Without a client certificate nothing is authorized.
	c2 := h.dial(t, &amqp.ConnOptions{TLSConfig: &tls.Config{RootCAs: poolOf(h.ca), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}})
	if _, err := session(t, c2).NewSender(testCtx(t), "/devices/devx/messages/events", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("no certificate: %v", err)
	}
}

// toFloat is a JSON number as encoding/json decodes it.
func toFloat(v any) float64 {
	switch n := v.(type) {
	case float64:
		return n
	case int64:
		return float64(n)
	case int:
		return float64(n)
	}
	return -1
}

// Device ids are case-sensitive, as in IoT Hub: a token for dev1 does
// not open DEV1's links, and nothing sent there is stored as dev1's.
func TestDeviceIDsAreCaseSensitive(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	_, s, cbs := h.connectDevice(t, "dev1")
	if _, err := s.NewSender(testCtx(t), "/devices/DEV1/messages/events", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("link for DEV1 with dev1's token: %v", err)
	}
	// A token naming DEV1 (no such device) is refused too.
	if code, _ := cbs.putToken(t, testHost+"/devices/DEV1", hubToken(t, "DEV1", time.Hour)); code != 404 {
		t.Fatalf("put-token for DEV1: %d, want 404", code)
	}
	if n, err := h.m.TelemetryHistory("dev1", core.HistoryFilter{}); err != nil || len(n) != 0 {
		t.Fatalf("dev1 history %v, %v", n, err)
	}
}
