package mqttcore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// The DPS poll loop is tested against a scripted DPS: a small MQTT server
// (paho's packet codec) on the far end of a net.Pipe, inside a synctest
// bubble, so every wait runs on the fake clock and the request times the
// server records are exact. synctest.Test also fails if a goroutine of
// the transport or of the server outlives the test.

// dpsReq is one request the fake DPS received.
type dpsReq struct {
	at          time.Time // fake time of arrival
	kind        string    // "register" or "poll"
	topic       string
	rid         string
	operationID string
	body        string
}

// dpsAns is the fake DPS's answer to one request.
type dpsAns struct {
	status     int
	retryAfter string // "" sends no retry-after
	body       string
	rid        string        // answer with this rid instead of the request's
	silent     bool          // send nothing
	dropAfter  time.Duration // when > 0: answer, then close the connection this much later
	rawTopic   string        // send on this topic instead
	also       *dpsAns       // then send this too
}

// fakeDPS serves one MQTT connection at a time with a script.
type fakeDPS struct {
	t       *testing.T
	connack byte // CONNACK return code
	suback  byte // granted QoS of the subscription (0x80 refuses)
	// dropOnSubscribe closes the connection instead of a SUBACK;
	// silentOnSubscribe sends nothing.
	dropOnSubscribe, silentOnSubscribe bool
	// dropOnPublish closes the connection instead of a PUBACK.
	dropOnPublish bool
	// answer returns the answer to request n (0-based).
	answer func(n int, r dpsReq) dpsAns

	mu      sync.Mutex
	reqs    []dpsReq
	connect *packets.ConnectPacket
	wg      sync.WaitGroup
}

// dial is a Dialer: it starts serving the far end of a pipe.
func (f *fakeDPS) dial(ctx context.Context, host string, _ *tls.Config) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	client, server := net.Pipe()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer server.Close()
		f.serve(server)
	}()
	return client, nil
}

func (f *fakeDPS) requests() []dpsReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]dpsReq(nil), f.reqs...)
}

func (f *fakeDPS) serve(c net.Conn) {
	write := func(p packets.ControlPacket) bool { return p.Write(c) == nil }
	for {
		p, err := packets.ReadPacket(c)
		if err != nil {
			return
		}
		switch p := p.(type) {
		case *packets.ConnectPacket:
			f.mu.Lock()
			f.connect = p
			f.mu.Unlock()
			ack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
			ack.ReturnCode = f.connack
			if !write(ack) || f.connack != 0 {
				return
			}
		case *packets.SubscribePacket:
			if f.dropOnSubscribe {
				return
			}
			if f.silentOnSubscribe {
				continue
			}
			ack := packets.NewControlPacket(packets.Suback).(*packets.SubackPacket)
			ack.MessageID = p.MessageID
			for range p.Topics {
				ack.ReturnCodes = append(ack.ReturnCodes, f.suback)
			}
			if !write(ack) {
				return
			}
		case *packets.PublishPacket:
			if f.dropOnPublish {
				return
			}
			if p.Qos == 1 {
				ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
				ack.MessageID = p.MessageID
				if !write(ack) {
					return
				}
			}
			r := parseDPSRequest(f.t, p.TopicName, string(p.Payload))
			f.mu.Lock()
			n := len(f.reqs)
			f.reqs = append(f.reqs, r)
			f.mu.Unlock()
			for a := f.answer(n, r); ; a = *a.also {
				if !a.silent {
					rid := r.rid
					if a.rid != "" {
						rid = a.rid
					}
					topic := fmt.Sprintf("$dps/registrations/res/%d/?$rid=%s", a.status, rid)
					if a.retryAfter != "" {
						topic += "&retry-after=" + a.retryAfter
					}
					if a.rawTopic != "" {
						topic = a.rawTopic
					}
					pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
					pub.TopicName, pub.Payload = topic, []byte(a.body)
					if !write(pub) {
						return
					}
				}
				if a.dropAfter > 0 {
					time.AfterFunc(a.dropAfter, func() { c.Close() })
				}
				if a.also == nil {
					break
				}
			}
		case *packets.PingreqPacket:
			if !write(packets.NewControlPacket(packets.Pingresp)) {
				return
			}
		case *packets.DisconnectPacket:
			return
		}
	}
}

// parseDPSRequest reads a register or operation-status topic.
func parseDPSRequest(t *testing.T, topic, body string) dpsReq {
	r := dpsReq{at: time.Now(), topic: topic, body: body}
	var query string
	switch {
	case strings.HasPrefix(topic, topicDPSRegister):
		r.kind, query = "register", strings.TrimPrefix(topic, "$dps/registrations/PUT/iotdps-register/?")
	case strings.HasPrefix(topic, topicDPSPoll):
		r.kind, query = "poll", strings.TrimPrefix(topic, "$dps/registrations/GET/iotdps-get-operationstatus/?")
	default:
		t.Errorf("fake DPS: unexpected topic %q", topic)
		return r
	}
	r.rid, _ = queryValue(query, "$rid")
	r.operationID, _ = queryValue(query, "operationId")
	return r
}

const (
	testScope = "0ne00ABCDEF"
	testReg   = "Dev-1.a"
	testOp    = "4.0f1e2d3c.op id/1"
	assigned  = `{"operationId":"4.0f1e2d3c.op id/1","status":"assigned","registrationState":{"registrationId":"Dev-1.a","assignedHub":"hub.test","deviceId":"Dev-1.a","status":"assigned","substatus":"initialAssignment"}}`
	assigning = `{"operationId":"4.0f1e2d3c.op id/1","status":"assigning"}`
)

func provisionReq() ports.ProvisioningRequest {
	return ports.ProvisioningRequest{
		Host:         "dps.test",
		IDScope:      testScope,
		Registration: domain.RegistrationRequest{RegistrationID: testReg, ModelID: "dtmi:x;1"},
		Auth:         ports.Auth{SASToken: "SharedAccessSignature sr=x&sig=y&se=1"},
	}
}

// provision runs Provision against f in a bubble and returns its result;
// the bubble ends only when every goroutine has.
func provision(t *testing.T, f *fakeDPS, ctx context.Context) (domain.Assignment, error) {
	t.Helper()
	f.t = t
	c := New(Config{Dial: f.dial, RequestTimeout: 30 * time.Second})
	a, err := c.Provision(ctx, provisionReq())
	f.wg.Wait()
	return a, err
}

// gaps returns the time between consecutive requests.
func gaps(reqs []dpsReq) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(reqs); i++ {
		out = append(out, reqs[i].at.Sub(reqs[i-1].at))
	}
	return out
}

func TestDPSHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 202 with retry-after 3, then 7, then 1 (with 2 polls in the
		// window: the rate does not delay it), then assigned.
		waits := []string{"3", "7", "1"}
		f := &fakeDPS{suback: 1, answer: func(n int, r dpsReq) dpsAns {
			if n < len(waits) {
				return dpsAns{status: 202, retryAfter: waits[n], body: assigning}
			}
			return dpsAns{status: 200, body: assigned}
		}}
		a, err := provision(t, f, context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if a.Hub != "hub.test" || a.DeviceID != testReg {
			t.Fatalf("assignment %+v", a)
		}
		reqs := f.requests()
		if len(reqs) != 4 {
			t.Fatalf("%d requests, want 4 (register + 3 polls)", len(reqs))
		}
		want := []time.Duration{3 * time.Second, 7 * time.Second, time.Second}
		for i, g := range gaps(reqs) {
			if g != want[i] {
				t.Errorf("wait before request %d = %v, want the retry-after %v", i+1, g, want[i])
			}
		}
		var reg struct {
			RegistrationID string            `json:"registrationId"`
			Payload        map[string]string `json:"payload"`
		}
		if reqs[0].kind != "register" || json.Unmarshal([]byte(reqs[0].body), &reg) != nil || reg.RegistrationID != testReg || reg.Payload["modelId"] != "dtmi:x;1" {
			t.Errorf("register request %+v", reqs[0])
		}
		for _, r := range reqs[1:] {
			if r.kind != "poll" || r.operationID != testOp || r.body != " " {
				t.Errorf("poll %+v, want operationId %q and body \" \"", r, testOp)
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.connect == nil || f.connect.ClientIdentifier != testReg || !f.connect.CleanSession ||
			f.connect.Username != DPSUsername(testScope, testReg, DefaultClientVersion) || string(f.connect.Password) != provisionReq().Auth.SASToken {
			t.Errorf("CONNECT %v", f.connect)
		}
	})
}

func TestDPSRetryAfterDefaultsAndClamps(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter string
		want       time.Duration
	}{
		{"absent: the SDKs' 2 s default", "", domain.DefaultPollInterval},
		{"unparsable: the default", "soon", domain.DefaultPollInterval},
		{"absurd: capped at 5 minutes", "86400", domain.MaxPollInterval},
		{"zero: at once", "0", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeDPS{suback: 1, answer: func(n int, r dpsReq) dpsAns {
					if n == 0 {
						return dpsAns{status: 202, retryAfter: tt.retryAfter, body: assigning}
					}
					return dpsAns{status: 200, body: assigned}
				}}
				if _, err := provision(t, f, context.Background()); err != nil {
					t.Fatal(err)
				}
				g := gaps(f.requests())
				if len(g) != 1 || g[0] != tt.want {
					t.Fatalf("waits %v, want [%v]", g, tt.want)
				}
			})
		})
	}
}

// TestDPSRetriesTransientAnswers: 429 and 5xx answers are retried (the
// same request again, after retry-after, at least 1 s), then the
// registration completes.
func TestDPSRetriesTransientAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		script := []dpsAns{
			{status: 429, retryAfter: "4", body: `{"errorCode":429001,"message":"throttled"}`},
			{status: 503, retryAfter: "0", body: `{"errorCode":503000}`},
			{status: 500, body: `oops`},
			{status: 202, retryAfter: "1", body: assigning},
			{status: 429, retryAfter: "0"},
			{status: 200, body: assigned},
		}
		f := &fakeDPS{suback: 1, answer: func(n int, r dpsReq) dpsAns { return script[n] }}
		a, err := provision(t, f, context.Background())
		if err != nil {
			t.Fatalf("Provision after transient answers: %v", err)
		}
		if a.DeviceID != testReg {
			t.Fatalf("assignment %+v", a)
		}
		reqs := f.requests()
		kinds := make([]string, len(reqs))
		for i, r := range reqs {
			kinds[i] = r.kind
		}
		if want := "register register register register poll poll"; strings.Join(kinds, " ") != want {
			t.Fatalf("requests %v, want %s", kinds, want)
		}
		// 429 retry-after 4; 503 retry-after 0 -> 1 s; 500 without -> 2 s;
		// 202 retry-after 1; 429 retry-after 0 -> 1 s, but the 5 requests
		// so far span 8 s, so the sixth waits until 10 s after the first.
		want := []time.Duration{4 * time.Second, time.Second, 2 * time.Second, time.Second, 2 * time.Second}
		for i, g := range gaps(reqs) {
			if g != want[i] {
				t.Errorf("wait before request %d = %v, want %v", i+1, g, want[i])
			}
		}
	})
}

// TestDPSNeverExceedsTheRate: a DPS that always says retry-after=0 is
// polled at most 5 times in any 10 s.
func TestDPSNeverExceedsTheRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const polls = 23
		f := &fakeDPS{suback: 1, answer: func(n int, r dpsReq) dpsAns {
			if n < polls {
				return dpsAns{status: 202, retryAfter: "0", body: assigning}
			}
			return dpsAns{status: 200, body: assigned}
		}}
		start := time.Now()
		if _, err := provision(t, f, context.Background()); err != nil {
			t.Fatal(err)
		}
		reqs := f.requests()
		if len(reqs) != polls+1 {
			t.Fatalf("%d requests, want %d", len(reqs), polls+1)
		}
		for i := domain.DPSRequestLimit; i < len(reqs); i++ {
			if d := reqs[i].at.Sub(reqs[i-domain.DPSRequestLimit].at); d < domain.DPSRequestWindow {
				t.Fatalf("requests %d..%d within %v: more than %d in %v", i-domain.DPSRequestLimit, i, d, domain.DPSRequestLimit, domain.DPSRequestWindow)
			}
		}
		// ...and no slower than the rate needs: 24 requests in bursts of 5.
		if took := reqs[len(reqs)-1].at.Sub(start); took != 40*time.Second {
			t.Errorf("24 requests took %v, want 40s", took)
		}
	})
}

func TestDPSPollsRunOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDPS{suback: 1, answer: func(int, dpsReq) dpsAns {
			return dpsAns{status: 202, retryAfter: "2", body: assigning}
		}}
		_, err := provision(t, f, context.Background())
		if !errors.Is(err, domain.ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		if n := len(f.requests()); n != maxDPSPolls {
			t.Fatalf("%d requests, want %d", n, maxDPSPolls)
		}
	})
}

func TestDPSFinalAnswers(t *testing.T) {
	tests := []struct {
		name  string
		ans   dpsAns
		check func(error) bool
	}{
		{"401 unauthorized", dpsAns{status: 401, body: `{"errorCode":401002,"message":"bad sig"}`}, func(err error) bool {
			var he *domain.HubError
			return errors.As(err, &he) && he.Status == 401 && he.Code == 401002 && errors.Is(err, domain.ErrUnauthorized)
		}},
		{"404 not found", dpsAns{status: 404, body: `{}`}, func(err error) bool {
			var he *domain.HubError
			return errors.As(err, &he) && he.Status == 404 && !domain.IsRetryable(err)
		}},
		{"failed registration", dpsAns{status: 200, body: `{"operationId":"o","status":"failed","registrationState":{"errorCode":400208,"errorMessage":"no hub"}}`}, func(err error) bool {
			var pe *domain.ProvisioningError
			return errors.As(err, &pe) && pe.ErrorCode == 400208
		}},
		{"disabled", dpsAns{status: 200, body: `{"operationId":"o","status":"disabled"}`}, func(err error) bool {
			return errors.Is(err, domain.ErrUnauthorized)
		}},
		{"malformed body", dpsAns{status: 202, body: `{`}, func(err error) bool { return errors.Is(err, domain.ErrMalformed) }},
		{"assigning without an operation id", dpsAns{status: 202, body: `{"status":"assigning"}`}, func(err error) bool {
			return errors.Is(err, domain.ErrMalformed)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeDPS{suback: 1, answer: func(int, dpsReq) dpsAns { return tt.ans }}
				_, err := provision(t, f, context.Background())
				if err == nil || !tt.check(err) {
					t.Fatalf("err = %v", err)
				}
				if n := len(f.requests()); n != 1 {
					t.Fatalf("%d requests, want 1 (no retry)", n)
				}
			})
		})
	}
}

// TestDPSIgnoresAnswersToOtherRequests: an answer with another $rid (a
// late one) or on a topic that is no DPS answer is skipped; the loop
// waits for its own.
func TestDPSIgnoresAnswersToOtherRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDPS{suback: 1, answer: func(n int, r dpsReq) dpsAns {
			if n == 0 {
				return dpsAns{status: 401, rid: "999", also: &dpsAns{rawTopic: "$dps/registrations/res/abc/?$rid=1", body: "{}",
					also: &dpsAns{status: 202, retryAfter: "0", body: assigning}}}
			}
			return dpsAns{status: 200, body: assigned}
		}}
		if _, err := provision(t, f, context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestDPSConnectionLost covers the connection dropping at each step: the
// error wraps domain.ErrNotConnected (so the caller retries) and names the
// step; nothing is left running.
func TestDPSConnectionLost(t *testing.T) {
	tests := []struct {
		name string
		f    *fakeDPS
		step string
	}{
		{"while subscribing", &fakeDPS{suback: 1, dropOnSubscribe: true}, "subscribe"},
		{"while publishing", &fakeDPS{suback: 1, dropOnPublish: true}, "publish"},
		// (The drop comes a fake second after the PUBACK: dropping at once
		// would race the PUBACK, and then the step is "publish".)
		{"while waiting for the answer", &fakeDPS{suback: 1, answer: func(int, dpsReq) dpsAns {
			return dpsAns{silent: true, dropAfter: time.Second}
		}}, "wait for response"},
		{"while waiting to poll", &fakeDPS{suback: 1, answer: func(n int, r dpsReq) dpsAns {
			return dpsAns{status: 202, retryAfter: "30", body: assigning, dropAfter: 5 * time.Second}
		}}, "wait to poll"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, err := provision(t, tt.f, context.Background())
				if !errors.Is(err, domain.ErrNotConnected) || !domain.IsRetryable(err) {
					t.Fatalf("err = %v, want ErrNotConnected", err)
				}
				if !strings.Contains(err.Error(), tt.step) {
					t.Fatalf("err = %v, want the step %q", err, tt.step)
				}
			})
		})
	}
}

// TestDPSFailNamesNoAddress: a lost connection or a failed token reported
// by a TCP error keeps the cause (errors.Is) but not the addresses.
func TestDPSFailNamesNoAddress(t *testing.T) {
	local := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 50123}
	remote := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 8883}
	opErr := &net.OpError{Op: "read", Net: "tcp", Source: local, Addr: remote, Err: syscall.ECONNRESET}
	d := &dpsConn{lostErr: fmt.Errorf("pinger: %w", opErr)}
	for _, err := range []error{d.fail("wait for response", errConnLost), d.fail("publish", opErr)} {
		if !errors.Is(err, domain.ErrNotConnected) || !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%v: want ErrNotConnected and the cause", err)
		}
		if text := err.Error(); strings.Contains(text, "10.0.0.") || strings.Contains(text, "8883") || !strings.Contains(text, "connection reset") {
			t.Errorf("error text %q names an address or lost the cause", text)
		}
	}
}

func TestDPSRequestTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDPS{suback: 1, answer: func(int, dpsReq) dpsAns { return dpsAns{silent: true} }}
		start := time.Now()
		_, err := provision(t, f, context.Background())
		if !errors.Is(err, domain.ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		if took := time.Since(start); took < 30*time.Second {
			t.Fatalf("gave up after %v, before the 30 s request timeout", took)
		}
	})
}

func TestDPSContextEnds(t *testing.T) {
	t.Run("while waiting to poll", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeDPS{suback: 1, answer: func(int, dpsReq) dpsAns {
				return dpsAns{status: 202, retryAfter: "60", body: assigning}
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := provision(t, f, ctx)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want the context's", err)
			}
			if n := len(f.requests()); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
		})
	})
	t.Run("while waiting for the answer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeDPS{suback: 1, answer: func(int, dpsReq) dpsAns { return dpsAns{silent: true} }}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := provision(t, f, ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want the context's", err)
			}
		})
	})
	t.Run("while subscribing", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := provision(t, &fakeDPS{suback: 1, silentOnSubscribe: true}, ctx)
			if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, domain.ErrNotConnected) {
				t.Fatalf("err = %v, want the context's only", err)
			}
		})
	})
	t.Run("before connecting", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := provision(t, &fakeDPS{suback: 1}, ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
		})
	})
}

func TestDPSRefusals(t *testing.T) {
	for _, tt := range []struct {
		name string
		f    *fakeDPS
		want error
	}{
		{"CONNACK 5", &fakeDPS{connack: 5}, domain.ErrUnauthorized},
		{"CONNACK 4", &fakeDPS{connack: 4}, domain.ErrUnauthorized},
		{"SUBACK 0x80", &fakeDPS{suback: 0x80}, domain.ErrUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				if _, err := provision(t, tt.f, context.Background()); !errors.Is(err, tt.want) {
					t.Fatalf("err = %v, want %v", err, tt.want)
				}
			})
		})
	}
}

func TestProvisionValidatesTheRequest(t *testing.T) {
	c := New(Config{Dial: func(context.Context, string, *tls.Config) (net.Conn, error) {
		t.Error("dialed for an invalid request")
		return nil, errors.New("no")
	}})
	for _, mod := range []func(*ports.ProvisioningRequest){
		func(r *ports.ProvisioningRequest) { r.Host = "" },
		func(r *ports.ProvisioningRequest) { r.IDScope = "" },
		func(r *ports.ProvisioningRequest) { r.Registration.RegistrationID = "" },
		func(r *ports.ProvisioningRequest) { r.Auth = ports.Auth{} },
		func(r *ports.ProvisioningRequest) { r.Registration.Payload = map[string]any{"f": func() {}} },
	} {
		req := provisionReq()
		mod(&req)
		if _, err := c.Provision(context.Background(), req); !errors.Is(err, domain.ErrInvalidConfig) {
			t.Errorf("Provision(%+v) = %v, want ErrInvalidConfig", req, err)
		}
	}
}
