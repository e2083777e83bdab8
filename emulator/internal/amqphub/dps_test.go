package amqphub

import (
	"crypto/tls"
	"encoding/json"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	esas "github.com/iotc-go/iotc/emulator/internal/sas"
)

func dpsToken(t *testing.T, reg string) string {
	return sas(t, esas.DPSResource(testScope, reg), time.Now().Add(time.Hour))
}

// dpsLinks attaches the DPS sender and receiver as the C SDK does.
func dpsLinks(t *testing.T, s *amqp.Session, addr string) (*amqp.Sender, *amqp.Receiver) {
	t.Helper()
	props := map[string]any{"com.microsoft:api-version": "2021-06-01"}
	snd, err := s.NewSender(testCtx(t), addr, &amqp.SenderOptions{Name: "sender_link", SourceAddress: "remote_endpoint", Properties: props})
	if err != nil {
		t.Fatalf("DPS sender: %v", err)
	}
	rcv, err := s.NewReceiver(testCtx(t), addr, &amqp.ReceiverOptions{Name: "recv_link", TargetAddress: "local_endpoint", Properties: props, Credit: 5})
	if err != nil {
		t.Fatalf("DPS receiver: %v", err)
	}
	return snd, rcv
}

func dpsCall(t *testing.T, snd *amqp.Sender, rcv *amqp.Receiver, corr string, props map[string]any, body string) (*amqp.Message, error) {
	t.Helper()
	m := &amqp.Message{Properties: &amqp.MessageProperties{CorrelationID: corr}, ApplicationProperties: props, Data: [][]byte{[]byte(body)}}
	if err := snd.Send(testCtx(t), m, nil); err != nil {
		return nil, err
	}
	r, err := rcv.Receive(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rcv.AcceptMessage(testCtx(t), r); err != nil {
		t.Fatal(err)
	}
	if r.Properties == nil || r.Properties.CorrelationID != corr {
		t.Fatalf("DPS reply correlation-id %#v, want %q", r.Properties, corr)
	}
	return r, nil
}

func TestDPSRegisterAndPoll(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	c := h.dial(t, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain(testScope+"/registrations/reg1", dpsToken(t, "reg1"))})
	s := session(t, c)
	snd, rcv := dpsLinks(t, s, "amqps://global.azure-devices-provisioning.net/"+testScope+"/registrations/reg1")
	r, err := dpsCall(t, snd, rcv, "6f1a-1", map[string]any{"iotdps-operation-type": "iotdps-register", "iotdps-forceRegistration": false},
		`{"registrationId":"reg1","payload":{"modelId":"dtmi:x;1"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if r.ApplicationProperties["retry-after"] != int32(1) {
		t.Errorf("retry-after %#v", r.ApplicationProperties["retry-after"])
	}
	var st struct {
		OperationID string `json:"operationId"`
		Status      string `json:"status"`
	}
	if err := json.Unmarshal(r.GetData(), &st); err != nil || st.Status != "assigning" || st.OperationID == "" {
		t.Fatalf("register answer %q: %v", r.GetData(), err)
	}
	// Node's status query: empty body, operation id in the properties.
	r, err = dpsCall(t, snd, rcv, "6f1a-2", map[string]any{"iotdps-operation-type": "iotdps-get-operationstatus", "iotdps-operation-id": st.OperationID}, "")
	if err != nil {
		t.Fatal(err)
	}
	var fin struct {
		Status            string `json:"status"`
		RegistrationState struct {
			AssignedHub, DeviceID string
		} `json:"registrationState"`
	}
	if err := json.Unmarshal(r.GetData(), &fin); err != nil || fin.Status != "assigned" || fin.RegistrationState.AssignedHub != testHost {
		t.Fatalf("poll answer %q: %v", r.GetData(), err)
	}
	if _, ok := r.ApplicationProperties["retry-after"]; ok {
		t.Error("final answer carries retry-after")
	}
	// Errors reject the request with status-code and retry-after in the info.
	err = snd.Send(testCtx(t), &amqp.Message{ApplicationProperties: map[string]any{
		"iotdps-operation-type": "iotdps-get-operationstatus", "iotdps-operation-id": "nope"}, Data: [][]byte{[]byte(" ")}}, nil)
	ae, ok := err.(*amqp.Error)
	if !ok || ae.Condition != amqp.ErrCondNotFound || ae.Info["status-code"] != int32(404) {
		t.Fatalf("unknown operation: %#v", err)
	}
	err = snd.Send(testCtx(t), &amqp.Message{ApplicationProperties: map[string]any{"iotdps-operation-type": "iotdps-dance"}, Data: [][]byte{nil}}, nil)
	if condition(err) != amqp.ErrCondInvalidField {
		t.Fatalf("unknown operation type: %v", err)
	}
	// The SASL identity covers reg1 only.
	if _, err := s.NewSender(testCtx(t), testScope+"/registrations/reg2", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("other registration: %v", err)
	}
}

func TestDPSRefusals(t *testing.T) {
	t.Parallel()
	h := startHarness(t, false)
	for _, tc := range []struct{ user, token string }{
		{testScope + "/registrations/reg1", sas(t, esas.DPSResource(testScope, "reg1"), time.Now().Add(-time.Minute))},
		{testScope + "/registrations/reg1", dpsToken(t, "reg2")},
		{"0neOTHER/registrations/reg1", sas(t, esas.DPSResource("0neOTHER", "reg1"), time.Now().Add(time.Hour))},
		{testScope + "/registrations/unknown", dpsToken(t, "unknown")},
	} {
		if _, err := amqp.Dial(testCtx(t), "amqp://"+h.addr, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain(tc.user, tc.token)}); err == nil {
			t.Errorf("PLAIN %s accepted", tc.user)
		}
	}
	// No SASL and no certificate: DPS links are refused.
	c := h.dial(t, nil)
	if _, err := session(t, c).NewSender(testCtx(t), testScope+"/registrations/reg1", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("anonymous DPS link: %v", err)
	}
}

func TestDPSX509(t *testing.T) {
	t.Parallel()
	h := startHarness(t, true)
	leaf, err := h.ca.IssueClient("regx", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := h.dial(t, &amqp.ConnOptions{TLSConfig: &tls.Config{RootCAs: poolOf(h.ca), Certificates: []tls.Certificate{leaf.TLS}, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}})
	s := session(t, c)
	snd, rcv := dpsLinks(t, s, testScope+"/registrations/regx")
	r, err := dpsCall(t, snd, rcv, "x1", map[string]any{"iotdps-operation-type": "iotdps-register"}, `{"registrationId":"regx"}`)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(r.GetData()) {
		t.Fatalf("answer %q", r.GetData())
	}
	if _, err := s.NewSender(testCtx(t), testScope+"/registrations/other", nil); condition(err) != amqp.ErrCondUnauthorizedAccess {
		t.Fatalf("certificate regx for registration other: %v", err)
	}
}
