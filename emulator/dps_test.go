package emulator

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotc-go/iotc/emulator/internal/pki"
)

// dpsSession is a DPS connection subscribed to its answers.
type dpsSession struct {
	*client
	reg string
	res chan paho.Message
}

func dialDPS(t *testing.T, e *Emulator, reg, password string, cert *tls.Certificate) (*dpsSession, error) {
	t.Helper()
	cl, err := dial(t, e, dialOpts{clientID: reg, username: dpsUser(e, reg), password: password, clean: true, cert: cert})
	if err != nil {
		return nil, err
	}
	return &dpsSession{client: cl, reg: reg, res: cl.subscribe("$dps/registrations/res/#", 1)}, nil
}

// request publishes a DPS request and returns the status, query and body
// of the answer.
func (s *dpsSession) request(topicPrefix string, extraQuery string, qos byte, body []byte) (int, map[string][]string, map[string]any) {
	s.t.Helper()
	rid := nextRID()
	s.publish(topicPrefix+"?$rid="+rid+extraQuery, qos, body)
	m := recv(s.t, s.res)
	status, q := parseResTopic(s.t, m.Topic(), "$dps/registrations/res/")
	if q.Get("$rid") != rid {
		s.t.Fatalf("answer %s does not echo $rid %s", m.Topic(), rid)
	}
	n, err := strconv.Atoi(status)
	if err != nil {
		s.t.Fatalf("status %q", status)
	}
	return n, q, decodeJSON(s.t, m.Payload())
}

// register runs the 202 -> poll -> 200 flow and returns the final answer.
func (s *dpsSession) register(qos byte, body string) map[string]any {
	s.t.Helper()
	status, q, ans := s.request("$dps/registrations/PUT/iotdps-register/", "", qos, []byte(body))
	if status != 202 || ans["status"] != "assigning" {
		s.t.Fatalf("register answered %d %v, want 202 assigning", status, ans)
	}
	if _, err := strconv.Atoi(q["retry-after"][0]); err != nil {
		s.t.Fatalf("retry-after %v", q["retry-after"])
	}
	opID, _ := ans["operationId"].(string)
	if opID == "" {
		s.t.Fatalf("no operationId in %v", ans)
	}
	status, _, ans = s.request("$dps/registrations/GET/iotdps-get-operationstatus/", "&operationId="+opID, qos, []byte(" "))
	if status != 200 || ans["operationId"] != opID {
		s.t.Fatalf("poll answered %d %v", status, ans)
	}
	return ans
}

func regState(t *testing.T, ans map[string]any) map[string]any {
	t.Helper()
	st, ok := ans["registrationState"].(map[string]any)
	if !ok {
		t.Fatalf("no registrationState in %v", ans)
	}
	return st
}

func TestDPSGroupKeyRegistrationThenHub(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RetryAfter: 3 * time.Second})
	for _, tc := range []struct {
		name, reg, body string
		qos             byte
		model           string
	}{
		{name: "node-style QoS1 modelId", reg: "thermo-1", qos: 1, model: "dtmi:com:example:Thermostat;1",
			body: `{"registrationId":"thermo-1","payload":{"modelId":"dtmi:com:example:Thermostat;1"}}`},
		{name: "C-style QoS0 legacy iotcModelId", reg: "thermo-2", qos: 0, model: "dtmi:legacy:x;2",
			body: `{"registrationId":"thermo-2","payload":{"iotcModelId":"dtmi:legacy:x;2"}}`},
		{name: "python null payload", reg: "thermo-3", qos: 1, body: `{"payload":null,"registrationId":"thermo-3"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := derived(t, e.GroupKey(), tc.reg)
			s, err := dialDPS(t, e, tc.reg, dpsSAS(t, e, tc.reg, key, time.Hour), nil)
			if err != nil {
				t.Fatalf("DPS connect: %v", err)
			}
			ans := s.register(tc.qos, tc.body)
			st := regState(t, ans)
			if ans["status"] != "assigned" || st["status"] != "assigned" || st["assignedHub"] != e.HubHost() ||
				st["deviceId"] != tc.reg || st["registrationId"] != tc.reg || st["substatus"] != "initialAssignment" {
				t.Fatalf("final answer %v", ans)
			}
			for _, f := range []string{"createdDateTimeUtc", "lastUpdatedDateTimeUtc", "etag"} {
				if s, _ := st[f].(string); s == "" {
					t.Errorf("registrationState.%s missing", f)
				}
			}
			d, err := e.Device(tc.reg)
			if err != nil || !d.Provisioned || d.ModelID != tc.model || d.GroupID != "default" || d.PrimaryKey != key {
				t.Fatalf("device after registration: %+v, %v", d, err)
			}
			// The assigned device reaches the hub with the derived key.
			h := connectHub(t, e, tc.reg, key, false)
			status, _, _ := h.twinRequest("$iothub/twin/GET/", nil)
			if status != "200" {
				t.Fatalf("twin GET after provisioning: %s", status)
			}
		})
	}
}

func TestDPSRetryAfterIsWholeSeconds(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RetryAfter: -1})
	key := derived(t, e.GroupKey(), "r0")
	s, err := dialDPS(t, e, "r0", dpsSAS(t, e, "r0", key, time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, q, _ := s.request("$dps/registrations/PUT/iotdps-register/", "", 1, []byte(`{"registrationId":"r0"}`))
	if got := q["retry-after"]; len(got) != 1 || got[0] != "0" {
		t.Fatalf("retry-after %v, want 0", got)
	}
}

func TestDPSRefusals(t *testing.T) {
	t.Parallel()
	off := false
	e := startEmu(t, &Options{AutoApprove: &off})
	disabled, err := e.PutEnrollmentGroup(EnrollmentGroup{ID: "off", Enabled: false})
	if err != nil {
		t.Fatal(err)
	}
	groupKey := e.GroupKey()

	refused := func(t *testing.T, user, reg, password string) {
		t.Helper()
		_, err := dial(t, e, dialOpts{clientID: reg, username: user, password: password, clean: true})
		expectRefused(t, err)
	}
	t.Run("wrong key", func(t *testing.T) {
		refused(t, dpsUser(e, "r1"), "r1", dpsSAS(t, e, "r1", derived(t, groupKey, "someone-else"), time.Hour))
	})
	t.Run("expired token", func(t *testing.T) {
		refused(t, dpsUser(e, "r1"), "r1", dpsSAS(t, e, "r1", derived(t, groupKey, "r1"), -time.Minute))
	})
	t.Run("unknown scope", func(t *testing.T) {
		refused(t, "0neFFFFFFFF/registrations/r1/api-version=2019-03-31", "r1", dpsSAS(t, e, "r1", derived(t, groupKey, "r1"), time.Hour))
	})
	t.Run("client id differs", func(t *testing.T) {
		refused(t, dpsUser(e, "r1"), "r2", dpsSAS(t, e, "r1", derived(t, groupKey, "r1"), time.Hour))
	})
	t.Run("garbage password", func(t *testing.T) {
		refused(t, dpsUser(e, "r1"), "r1", "SharedAccessSignature nonsense")
	})
	t.Run("user name neither hub nor DPS", func(t *testing.T) {
		refused(t, "nonsense", "r1", dpsSAS(t, e, "r1", derived(t, groupKey, "r1"), time.Hour))
	})
	t.Run("disabled group", func(t *testing.T) {
		s, err := dialDPS(t, e, "r3", dpsSAS(t, e, "r3", derived(t, disabled.PrimaryKey, "r3"), time.Hour), nil)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		ans := s.register(1, `{"registrationId":"r3"}`)
		st := regState(t, ans)
		if ans["status"] != "disabled" || st["status"] != "disabled" || st["errorCode"] == nil {
			t.Fatalf("answer %v, want status disabled with an errorCode", ans)
		}
		if _, err := e.Device("r3"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("device of a disabled group was created: %v", err)
		}
	})
	t.Run("not approved", func(t *testing.T) {
		s, err := dialDPS(t, e, "r4", dpsSAS(t, e, "r4", derived(t, groupKey, "r4"), time.Hour), nil)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		ans := s.register(1, `{"registrationId":"r4"}`)
		if st := regState(t, ans); ans["status"] != "failed" || st["errorCode"] == nil {
			t.Fatalf("answer %v, want failed with an errorCode", ans)
		}
	})
	t.Run("individual enrollment registers without auto-approve", func(t *testing.T) {
		key, err := e.CreateDevice("r5")
		if err != nil {
			t.Fatal(err)
		}
		s, err := dialDPS(t, e, "r5", dpsSAS(t, e, "r5", key, time.Hour), nil)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		if ans := s.register(1, `{"registrationId":"r5"}`); ans["status"] != "assigned" {
			t.Fatalf("answer %v", ans)
		}
		if d, _ := e.Device("r5"); d.GroupID != "" || d.PrimaryKey != key || !d.Provisioned {
			t.Fatalf("device %+v", d)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		key, err := e.CreateDevice("r6")
		if err != nil {
			t.Fatal(err)
		}
		s, err := dialDPS(t, e, "r6", dpsSAS(t, e, "r6", key, time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		if status, _, ans := s.request("$dps/registrations/PUT/iotdps-register/", "", 1, []byte(`{not json`)); status != 400 || ans["errorCode"] == nil {
			t.Fatalf("malformed body: %d %v", status, ans)
		}
		if status, _, _ := s.request("$dps/registrations/PUT/iotdps-register/", "", 1, []byte(`{"registrationId":"other"}`)); status != 400 {
			t.Fatalf("foreign registrationId: %d", status)
		}
		if status, _, _ := s.request("$dps/registrations/GET/iotdps-get-operationstatus/", "&operationId=nope", 0, []byte(" ")); status != 404 {
			t.Fatalf("unknown operation: %d", status)
		}
		// The session survives all of that.
		if ans := s.register(0, `{"registrationId":"r6"}`); ans["status"] != "assigned" {
			t.Fatalf("answer %v", ans)
		}
	})
	t.Run("DPS connection may not use hub topics", func(t *testing.T) {
		key, _ := e.CreateDevice("r7")
		s, err := dialDPS(t, e, "r7", dpsSAS(t, e, "r7", key, time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		s.c.Publish("devices/r7/messages/events/", 0, false, []byte("{}"))
		s.expectLost()
	})
}

func TestX509Provisioning(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("test device CA")
	if err != nil {
		t.Fatal(err)
	}
	e := startEmu(t, &Options{Groups: []EnrollmentGroup{{ID: "certs", Enabled: true, CACertPEM: ca.CertPEM}}})
	if e.GroupKey() != "" {
		t.Fatalf("GroupKey %q with only an X.509 group", e.GroupKey())
	}
	leaf, err := ca.IssueClient("cert-dev", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dialDPS(t, e, "cert-dev", "", &leaf.TLS)
	if err != nil {
		t.Fatalf("DPS connect with certificate: %v", err)
	}
	ans := s.register(1, `{"registrationId":"cert-dev","payload":{"modelId":"dtmi:x:y;1"}}`)
	if st := regState(t, ans); ans["status"] != "assigned" || st["deviceId"] != "cert-dev" {
		t.Fatalf("answer %v", ans)
	}
	d, err := e.Device("cert-dev")
	if err != nil || d.Attestation != AttestationX509 || d.GroupID != "certs" || d.PrimaryKey != "" {
		t.Fatalf("device %+v, %v", d, err)
	}
	hub, err := dial(t, e, dialOpts{clientID: "cert-dev", username: hubUser(e, "cert-dev", ""), cert: &leaf.TLS})
	if err != nil {
		t.Fatalf("hub connect with certificate: %v", err)
	}
	h := subscribeAll(t, hub, "cert-dev")
	if status, _, _ := h.twinRequest("$iothub/twin/GET/", nil); status != "200" {
		t.Fatalf("twin GET: %s", status)
	}

	other, err := pki.NewCA("rogue CA")
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := other.IssueClient("cert-dev", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrongCN, err := ca.IssueClient("someone-else", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := ca.IssueClient("cert-dev", -time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]*tls.Certificate{"foreign CA": &rogue.TLS, "CN differs": &wrongCN.TLS, "expired": &expired.TLS} {
		t.Run(name, func(t *testing.T) {
			_, err := dial(t, e, dialOpts{clientID: "cert-dev", username: dpsUser(e, "cert-dev"), clean: true, cert: cert})
			expectRefused(t, err)
			_, err = dial(t, e, dialOpts{clientID: "cert-dev", username: hubUser(e, "cert-dev", ""), cert: cert})
			expectRefused(t, err)
		})
	}
	t.Run("no credential at all", func(t *testing.T) {
		_, err := dial(t, e, dialOpts{clientID: "cert-dev", username: hubUser(e, "cert-dev", "")})
		expectRefused(t, err)
	})
	t.Run("disabled group", func(t *testing.T) {
		if _, err := e.PutEnrollmentGroup(EnrollmentGroup{ID: "certs", Enabled: false, CACertPEM: ca.CertPEM}); err != nil {
			t.Fatal(err)
		}
		_, err := dial(t, e, dialOpts{clientID: "cert-dev", username: hubUser(e, "cert-dev", ""), cert: &leaf.TLS})
		expectRefused(t, err)
	})
}

func TestDPSAnswerJSONShape(t *testing.T) {
	t.Parallel()
	// The final answer decodes into the shape the SDKs expect (B.5).
	e := startEmu(t, nil)
	key := derived(t, e.GroupKey(), "shape")
	s, err := dialDPS(t, e, "shape", dpsSAS(t, e, "shape", key, time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	ans := s.register(1, `{"registrationId":"shape"}`)
	b, _ := json.Marshal(ans)
	var typed struct {
		OperationID       string `json:"operationId"`
		Status            string `json:"status"`
		RegistrationState struct {
			AssignedHub string `json:"assignedHub"`
			DeviceID    string `json:"deviceId"`
		} `json:"registrationState"`
	}
	if err := json.Unmarshal(b, &typed); err != nil || typed.RegistrationState.AssignedHub != "localhost" || typed.RegistrationState.DeviceID != "shape" {
		t.Fatalf("typed answer %+v, %v", typed, err)
	}
}
