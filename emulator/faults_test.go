package emulator

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"nhooyr.io/websocket"
)

// faultTopic is a telemetry topic whose property bag asks for a fault, as
// the official SDKs' e2e tests send it over MQTT.
func faultTopic(id, kind, reason string, delay, duration int) string {
	v := url.Values{}
	v.Set("AzIoTHub_FaultOperationType", kind)
	v.Set("AzIoTHub_FaultOperationCloseReason", reason)
	v.Set("AzIoTHub_FaultOperationDelayInSecs", itoa(delay))
	v.Set("AzIoTHub_FaultOperationDurationInSecs", itoa(duration))
	return "devices/" + id + "/messages/events/" + v.Encode()
}

func itoa(n int) string { return fmtInt(n) }

func fmtInt(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// mqttDevice dials device id over MQTT or MQTT/WebSockets with a fresh token.
func mqttDevice(t *testing.T, e *Emulator, id, key string, ws bool) (*client, error) {
	t.Helper()
	return dial(t, e, dialOpts{clientID: id, username: hubUser(e, id, ""), password: hubSAS(t, e, id, key, time.Hour), clean: true, websocket: ws})
}

func connackCode(err error) byte {
	var ce *connectError
	if errors.As(err, &ce) {
		return ce.code
	}
	return 0
}

// eventually retries fn until it returns nil, within wait.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: still failing after %v: %v", what, wait, err)
}

// TestMQTTFaultProperties sends each fault message an MQTT device can ask
// for, over MQTT and MQTT/WebSockets, and checks what the device sees: the
// connection dropped, refusals (CONNACK 3 or 5) while the fault lasts, and
// a connection accepted again afterwards.
func TestMQTTFaultProperties(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	cases := []struct {
		kind, reason string
		duration     int
		refusal      byte // CONNACK code of a reconnect during the fault; 0: accepted at once
	}{
		{"KillTcp", "boom", 0, 0},
		{"KillTcp", "byebye", 0, 0},
		{"ShutDownMqtt", "byebye", 2, 3},
		{"InvokeAuthError", "boom", 2, 5},
	}
	for _, ws := range []bool{false, true} {
		for _, tc := range cases {
			name := tc.kind + "/" + tc.reason
			if ws {
				name = "ws/" + name
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				id := strings.ToLower(strings.ReplaceAll(name, "/", "-"))
				key, err := e.CreateDevice(id)
				if err != nil {
					t.Fatal(err)
				}
				cl, err := mqttDevice(t, e, id, key, ws)
				if err != nil {
					t.Fatal(err)
				}
				msgs, stop := e.WatchTelemetry(id)
				defer stop()
				cl.publish(faultTopic(id, tc.kind, tc.reason, 0, tc.duration), 1, []byte(`{"fault":true}`))
				select {
				case m := <-msgs: // the fault message itself is acknowledged and kept
					if m.Properties["AzIoTHub_FaultOperationType"] != tc.kind {
						t.Fatalf("stored properties %v", m.Properties)
					}
				case <-time.After(wait):
					t.Fatal("fault message not received")
				}
				cl.expectLost()
				if tc.refusal != 0 {
					_, err := mqttDevice(t, e, id, key, ws)
					if got := connackCode(err); got != tc.refusal {
						t.Fatalf("reconnect during the fault: %v, want CONNACK %d", err, tc.refusal)
					}
				}
				eventually(t, "reconnect after the fault", func() error {
					c, err := mqttDevice(t, e, id, key, ws)
					if err == nil {
						c.close()
					}
					return err
				})
			})
		}
	}
}

// TestMQTTAMQPOnlyFaultIgnored: an AMQP link kill asked over MQTT does
// nothing; the connection stays and works.
func TestMQTTAMQPOnlyFaultIgnored(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	const id = "mqtt-amqp-fault"
	key, _ := e.CreateDevice(id)
	cl, err := mqttDevice(t, e, id, key, false)
	if err != nil {
		t.Fatal(err)
	}
	msgs, stop := e.WatchTelemetry(id)
	defer stop()
	cl.publish(faultTopic(id, "KillAmqpD2CLink", "boom", 0, 0), 1, []byte(`{}`))
	time.Sleep(2 * core.TelemetryFaultMinDelay) // let the scheduled fault fire (not a timing assertion)
	cl.publish("devices/"+id+"/messages/events/", 1, []byte(`{"after":1}`))
	// The fault message itself is stored like any other; it comes first.
	for _, want := range []string{`{}`, `{"after":1}`} {
		select {
		case m := <-msgs:
			if string(m.Body) != want {
				t.Fatalf("body %q, want %q", m.Body, want)
			}
		case <-time.After(wait):
			t.Fatal("connection did not survive an AMQP-only fault")
		}
	}
}

// TestMQTTThrottlingAndQuota: throttling first shapes, then answers twin
// requests 429 and ends the connection on telemetry, and refuses new
// connections with CONNACK 3 until it ends; the quota fault ends the
// connection on telemetry.
func TestMQTTThrottlingAndQuota(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	const id = "throttled"
	key, _ := e.CreateDevice(id)
	d := connectHub(t, e, id, key, true)
	if err := e.Throttle(id, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	// Shaping phase: answered (200), later 429.
	saw429 := false
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && !saw429 {
		status, _, _ := d.twinRequest("$iothub/twin/GET/", nil)
		switch status {
		case "200":
		case "429":
			saw429 = true
		default:
			t.Fatalf("twin status %s", status)
		}
	}
	if !saw429 {
		t.Fatal("no 429 while throttled")
	}
	d.c.Publish("devices/"+id+"/messages/events/", 1, false, []byte(`{}`))
	d.expectLost()
	if _, err := mqttDevice(t, e, id, key, false); connackCode(err) != 3 {
		t.Fatalf("connect while throttled: %v, want CONNACK 3", err)
	}
	eventually(t, "connect after throttling", func() error {
		c, err := mqttDevice(t, e, id, key, false)
		if err == nil {
			c.close()
		}
		return err
	})

	if err := e.InjectFault(id, Fault{Kind: FaultMaxMessageQuota, Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := mqttDevice(t, e, id, key, false); connackCode(err) != 3 {
		t.Fatalf("connect over quota: %v, want CONNACK 3", err)
	}
	e.ClearFaults(id)
	cl, err := mqttDevice(t, e, id, key, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.InjectFault(id, Fault{Kind: FaultMaxMessageQuota, Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	cl.c.Publish("devices/"+id+"/messages/events/", 1, false, []byte(`{}`))
	cl.expectLost()
	e.ClearFaults(id)
}

// TestRefuseExpireRevokeMQTT: refusals leave live connections alone; an
// expired token drops the connection and is refused while a fresh one is
// accepted; a revoked key is refused until ClearFaults.
func TestRefuseExpireRevokeMQTT(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	const id = "refuse-dev"
	key, _ := e.CreateDevice(id)
	tok := hubSAS(t, e, id, key, time.Hour)
	cl, err := dial(t, e, dialOpts{clientID: id, username: hubUser(e, id, ""), password: tok, clean: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.RefuseConnections("", time.Minute); err != nil {
		t.Fatal(err)
	}
	if !cl.c.IsConnectionOpen() {
		t.Fatal("refusal dropped a live connection")
	}
	other, _ := e.CreateDevice("refuse-other")
	if _, err := mqttDevice(t, e, "refuse-other", other, false); connackCode(err) != 3 {
		t.Fatalf("connect while refused: %v, want CONNACK 3", err)
	}
	e.ClearFaults("")
	if err := e.RefuseConnections(id, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero refusal: %v", err)
	}

	if err := e.ExpireToken(id); err != nil {
		t.Fatal(err)
	}
	cl.expectLost()
	_, err = dial(t, e, dialOpts{clientID: id, username: hubUser(e, id, ""), password: tok, clean: true})
	expectRefused(t, err)
	cl2, err := dial(t, e, dialOpts{clientID: id, username: hubUser(e, id, ""), password: hubSAS(t, e, id, key, 2*time.Hour), clean: true})
	if err != nil {
		t.Fatalf("fresh token after ExpireToken: %v", err)
	}

	if err := e.RevokeDeviceKey(id); err != nil {
		t.Fatal(err)
	}
	cl2.expectLost()
	_, err = mqttDevice(t, e, id, key, false)
	expectRefused(t, err)
	e.ClearFaults(id)
	if c, err := mqttDevice(t, e, id, key, false); err != nil {
		t.Fatalf("after ClearFaults: %v", err)
	} else {
		c.close()
	}
	if err := e.InjectFault(id, Fault{Kind: "Nope"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown fault: %v", err)
	}
	if err := e.InjectFault("nobody", Fault{Kind: FaultKillTCP}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
}

// amqpDevice is a raw go-amqp device: a connection authenticated through
// $cbs, a telemetry sender and a C2D receiver.
type amqpDevice struct {
	c                  *amqp.Conn
	s                  *amqp.Session
	tel                *amqp.Sender
	c2d, twin, methods *amqp.Receiver
	cbs                *amqp.Receiver
}

func dialAMQPDevice(t *testing.T, e *Emulator, id, key string, ws bool, props map[string]any) (*amqpDevice, error) {
	t.Helper()
	var c *amqp.Conn
	var err error
	if ws {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: amqpTLS(e)}}
		t.Cleanup(hc.CloseIdleConnections)
		wsc, _, err := websocket.Dial(ctxT(t), "wss://"+e.WebSocketAddr()+"/$iothub/websocket", &websocket.DialOptions{
			HTTPClient: hc, Subprotocols: []string{"AMQPWSB10"},
		})
		if err != nil {
			return nil, err
		}
		c, err = amqp.NewConn(ctxT(t), websocket.NetConn(context.Background(), wsc, websocket.MessageBinary), nil)
		if err != nil {
			return nil, err
		}
	} else {
		c, err = amqp.Dial(ctxT(t), "amqps://"+e.AMQPAddr(), &amqp.ConnOptions{TLSConfig: amqpTLS(e)})
		if err != nil {
			return nil, err
		}
	}
	t.Cleanup(func() { _ = c.Close() })
	s := amqpSessionOf(t, c)
	if code := amqpPutToken(t, s, e, id, hubSAS(t, e, id, key, time.Hour)); code != 200 {
		return nil, errors.New("put-token status " + fmtInt(int(code)))
	}
	cbs, err := s.NewReceiver(ctxT(t), "$cbs", &amqp.ReceiverOptions{Credit: 1})
	if err != nil {
		return nil, err
	}
	base := "amqps://" + e.HubHost() + "/devices/" + id
	tel, err := s.NewSender(ctxT(t), base+"/messages/events", &amqp.SenderOptions{Properties: props})
	if err != nil {
		return nil, err
	}
	c2d, err := s.NewReceiver(ctxT(t), base+"/messages/devicebound", &amqp.ReceiverOptions{Credit: 5})
	if err != nil {
		return nil, err
	}
	chanProps := map[string]any{"com.microsoft:channel-correlation-id": "twin:" + id}
	twin, err := s.NewReceiver(ctxT(t), base+"/twin", &amqp.ReceiverOptions{Credit: 5, Properties: chanProps})
	if err != nil {
		return nil, err
	}
	methods, err := s.NewReceiver(ctxT(t), base+"/methods/devicebound", &amqp.ReceiverOptions{Credit: 5,
		Properties: map[string]any{"com.microsoft:channel-correlation-id": "methods:" + id}})
	if err != nil {
		return nil, err
	}
	return &amqpDevice{c: c, s: s, tel: tel, c2d: c2d, twin: twin, methods: methods, cbs: cbs}, nil
}

func faultMessage(kind, reason string, duration int) *amqp.Message {
	return &amqp.Message{
		ApplicationProperties: map[string]any{
			"AzIoTHub_FaultOperationType":           kind,
			"AzIoTHub_FaultOperationCloseReason":    reason,
			"AzIoTHub_FaultOperationDelayInSecs":    "0",
			"AzIoTHub_FaultOperationDurationInSecs": fmtInt(duration),
		},
		Data: [][]byte{[]byte(`{"fault":true}`)},
	}
}

// amqpCond is the AMQP error condition of err, "" when none.
func amqpCond(err error) string {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return string(ae.Condition)
	}
	var le *amqp.LinkError
	if errors.As(err, &le) && le.RemoteErr != nil {
		return string(le.RemoteErr.Condition)
	}
	var ce *amqp.ConnError
	if errors.As(err, &ce) && ce.RemoteErr != nil {
		return string(ce.RemoteErr.Condition)
	}
	return ""
}

// expectC2DEnds waits until the device's C2D receiver fails (its link,
// session or connection ended) and returns the error.
func (d *amqpDevice) expectC2DEnds(t *testing.T) error {
	t.Helper()
	return expectEnds(t, "C2D", d.c2d)
}

// expectEnds waits until r fails and returns the error.
func expectEnds(t *testing.T, what string, r *amqp.Receiver) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := r.Receive(ctx, nil)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("the %s link did not end: %v", what, err)
	}
	return err
}

// linkOnlyKill checks that only r's link was detached, with
// amqp:link:detach-forced: the C2D link and the connection stay.
func linkOnlyKill(what string, r func(*amqpDevice) *amqp.Receiver) func(t *testing.T, d *amqpDevice) {
	return func(t *testing.T, d *amqpDevice) {
		if err := expectEnds(t, what, r(d)); amqpCond(err) != "amqp:link:detach-forced" {
			t.Fatalf("%s error %v, want amqp:link:detach-forced", what, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if _, err := d.c2d.Receive(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the C2D link ended too: %v", err)
		}
	}
}

// TestAMQPFaultProperties sends each AMQP fault message over AMQP and
// AMQP/WebSockets and checks what the device sees, then that it can
// connect and send again.
func TestAMQPFaultProperties(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	cases := []struct {
		kind, reason string
		check        func(t *testing.T, d *amqpDevice)
	}{
		{"KillTcp", "boom", func(t *testing.T, d *amqpDevice) { d.expectC2DEnds(t) }},
		{"KillAmqpConnection", "byebye", func(t *testing.T, d *amqpDevice) {
			if err := d.expectC2DEnds(t); amqpCond(err) != "amqp:connection:forced" {
				t.Fatalf("C2D error %v, want amqp:connection:forced", err)
			}
		}},
		{"KillAmqpSession", "boom", func(t *testing.T, d *amqpDevice) { d.expectC2DEnds(t) }},
		{"ShutDownAmqp", "byebye", func(t *testing.T, d *amqpDevice) { d.expectC2DEnds(t) }},
		{"KillAmqpC2DLink", "boom", func(t *testing.T, d *amqpDevice) {
			if err := d.expectC2DEnds(t); amqpCond(err) != "amqp:link:detach-forced" {
				t.Fatalf("C2D error %v, want amqp:link:detach-forced", err)
			}
		}},
		{"KillAmqpD2CLink", "boom", func(t *testing.T, d *amqpDevice) {
			eventually(t, "telemetry link detached", func() error {
				if err := d.tel.Send(ctxT(t), &amqp.Message{Data: [][]byte{[]byte(`{}`)}}, nil); err == nil {
					return errors.New("telemetry still accepted")
				}
				return nil
			})
		}},
		{"KillAmqpTwinLinkReq", "boom", linkOnlyKill("twin", func(d *amqpDevice) *amqp.Receiver { return d.twin })},
		{"KillAmqpMethodReqLink", "boom", linkOnlyKill("methods", func(d *amqpDevice) *amqp.Receiver { return d.methods })},
		{"KillAmqpCBSLinkReq", "boom", linkOnlyKill("$cbs", func(d *amqpDevice) *amqp.Receiver { return d.cbs })},
		{"InvokeAuthError", "boom", func(t *testing.T, d *amqpDevice) {
			if err := d.expectC2DEnds(t); amqpCond(err) != "amqp:unauthorized-access" {
				t.Fatalf("C2D error %v, want amqp:unauthorized-access", err)
			}
		}},
	}
	for _, ws := range []bool{false, true} {
		for _, tc := range cases {
			name := tc.kind + "/" + tc.reason
			if ws {
				name = "ws/" + name
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				id := strings.ToLower(strings.ReplaceAll(name, "/", "-"))
				key, err := e.CreateDevice(id)
				if err != nil {
					t.Fatal(err)
				}
				d, err := dialAMQPDevice(t, e, id, key, ws, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := d.tel.Send(ctxT(t), faultMessage(tc.kind, tc.reason, 1), nil); err != nil {
					t.Fatalf("fault message: %v", err)
				}
				tc.check(t, d)
				eventually(t, "connect and send after the fault", func() error {
					d2, err := dialAMQPDevice(t, e, id, key, ws, nil)
					if err != nil {
						return err
					}
					defer d2.c.Close()
					return d2.tel.Send(ctxT(t), &amqp.Message{Data: [][]byte{[]byte(`{"after":true}`)}}, nil)
				})
			})
		}
	}
}

// TestAMQPThrottlingQuotaAndModelID: throttled telemetry is refused with
// com.microsoft:server-busy after the shaping phase, over-quota telemetry
// with amqp:resource-limit-exceeded; new sessions are refused meanwhile.
// The link's com.microsoft:model-id becomes the device's model id.
func TestAMQPThrottlingQuotaAndModelID(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	const id = "amqp-throttled"
	const model = "dtmi:com:example:Thermostat;1"
	key, _ := e.CreateDevice(id)
	d, err := dialAMQPDevice(t, e, id, key, false, map[string]any{"com.microsoft:model-id": model})
	if err != nil {
		t.Fatal(err)
	}
	if dev, _ := e.Device(id); dev.ModelID != model {
		t.Fatalf("model id %q, want %q", dev.ModelID, model)
	}
	if err := e.Throttle(id, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	var cond string
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && cond == "" {
		err := d.tel.Send(ctxT(t), &amqp.Message{Data: [][]byte{[]byte(`{}`)}}, nil)
		cond = amqpCond(err)
		if err != nil && cond == "" {
			t.Fatalf("send: %v", err)
		}
	}
	if cond != "com.microsoft:server-busy" {
		t.Fatalf("throttled send: condition %q", cond)
	}
	eventually(t, "send after throttling", func() error {
		return d.tel.Send(ctxT(t), &amqp.Message{Data: [][]byte{[]byte(`{}`)}}, nil)
	})
	if err := d.tel.Send(ctxT(t), faultMessage("InvokeMaxMessageQuota", "boom", 60), nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "quota refusal", func() error {
		err := d.tel.Send(ctxT(t), &amqp.Message{Data: [][]byte{[]byte(`{}`)}}, nil)
		if c := amqpCond(err); c != "amqp:resource-limit-exceeded" {
			return errors.New("condition " + c)
		}
		return nil
	})
	e.ClearFaults(id)
}

// TestRESTFaults injects through the operator API.
func TestRESTFaults(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{RESTAddr: "127.0.0.1:0"})
	const id = "rest-fault"
	key, _ := e.CreateDevice(id)
	cl, err := mqttDevice(t, e, id, key, false)
	if err != nil {
		t.Fatal(err)
	}
	tok := e.APIToken()
	if code, body := restDo(t, e, "POST", "/api/emulator/devices/"+id+"/faults", tok, map[string]any{"type": "Bogus"}); code != 422 {
		t.Fatalf("bogus fault: %d %s", code, body)
	}
	if code, _ := restDo(t, e, "POST", "/api/emulator/devices/nobody/faults", tok, map[string]any{"type": "KillTcp"}); code != 404 {
		t.Fatalf("unknown device: %d", code)
	}
	if code, _ := restDo(t, e, "POST", "/api/emulator/devices/"+id+"/faults", "", map[string]any{"type": "KillTcp"}); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code, body := restDo(t, e, "POST", "/api/emulator/devices/"+id+"/faults", tok, map[string]any{"type": "InvokeAuthError", "durationInSecs": 60}); code != 202 {
		t.Fatalf("auth fault: %d %s", code, body)
	}
	cl.expectLost()
	_, err = mqttDevice(t, e, id, key, false)
	expectRefused(t, err)
	if code, _ := restDo(t, e, "DELETE", "/api/emulator/devices/"+id+"/faults", tok, nil); code != 204 {
		t.Fatalf("clear: %d", code)
	}
	if c, err := mqttDevice(t, e, id, key, false); err != nil {
		t.Fatalf("after clear: %v", err)
	} else {
		c.close()
	}
	if code, body := restDo(t, e, "POST", "/api/emulator/devices/*/faults", tok, map[string]any{"type": "RefuseConnections", "durationInSecs": 60}); code != 202 {
		t.Fatalf("refuse all: %d %s", code, body)
	}
	if _, err := mqttDevice(t, e, id, key, false); connackCode(err) != 3 {
		t.Fatalf("refused connect: %v", err)
	}
	if code, _ := restDo(t, e, "POST", "/api/emulator/devices/*/faults", tok, map[string]any{"type": "KillTcp"}); code != 400 {
		t.Fatalf("KillTcp for every device: %d", code)
	}
	restDo(t, e, "DELETE", "/api/emulator/devices/*/faults", tok, nil)
}
