package emulator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"nhooyr.io/websocket"
)

func amqpTLS(e *Emulator) *tls.Config {
	return &tls.Config{RootCAs: e.CAPool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

func amqpDial(t *testing.T, e *Emulator, opts *amqp.ConnOptions) *amqp.Conn {
	t.Helper()
	if opts == nil {
		opts = &amqp.ConnOptions{}
	}
	opts.TLSConfig = amqpTLS(e)
	c, err := amqp.Dial(ctxT(t), "amqps://"+e.AMQPAddr(), opts)
	if err != nil {
		t.Fatalf("AMQP dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func amqpSessionOf(t *testing.T, c *amqp.Conn) *amqp.Session {
	t.Helper()
	s, err := c.NewSession(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// amqpPutToken authenticates id on the connection through $cbs, as the
// Node SDK does (no SASL), and returns the status-code.
func amqpPutToken(t *testing.T, s *amqp.Session, e *Emulator, id, token string) int32 {
	t.Helper()
	snd, err := s.NewSender(ctxT(t), "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(ctxT(t), "$cbs", &amqp.ReceiverOptions{Credit: 5})
	if err != nil {
		t.Fatal(err)
	}
	err = snd.Send(ctxT(t), &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: "put-1"},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken",
			"name": url.QueryEscape(e.HubHost() + "/devices/" + id)},
		Value: token,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := rcv.Receive(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = rcv.AcceptMessage(ctxT(t), r)
	if r.Properties == nil || r.Properties.CorrelationID != "put-1" {
		t.Fatalf("put-token reply correlation %#v", r.Properties)
	}
	code, _ := r.ApplicationProperties["status-code"].(int32)
	return code
}

func TestAMQPHubEndToEnd(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	const id = "amqp-dev"
	key, err := e.CreateDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	c := amqpDial(t, e, nil)
	s := amqpSessionOf(t, c)
	if code := amqpPutToken(t, s, e, id, hubSAS(t, e, id, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", time.Hour)); code != 401 {
		t.Fatalf("bad key: status %d", code)
	}
	if code := amqpPutToken(t, s, e, id, hubSAS(t, e, id, key, time.Hour)); code != 200 {
		t.Fatalf("put-token: status %d", code)
	}
	base := "amqps://" + e.HubHost() + "/devices/" + id

	// Telemetry, with the component annotation.
	msgs, stop := e.WatchTelemetry(id)
	defer stop()
	tel, err := s.NewSender(ctxT(t), base+"/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	ct := "application/json"
	if err := tel.Send(ctxT(t), &amqp.Message{
		Properties:  &amqp.MessageProperties{MessageID: "m1", ContentType: &ct},
		Annotations: amqp.Annotations{amqp.Symbol("dt-subject"): "thermostat1"},
		Data:        [][]byte{[]byte(`{"temperature":21.5}`)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		if m.Component != "thermostat1" || m.MessageID != "m1" || string(m.Body) != `{"temperature":21.5}` {
			t.Fatalf("telemetry %+v", m)
		}
	case <-time.After(wait):
		t.Fatal("no telemetry")
	}
	if v, err := e.LatestTelemetry(id, "thermostat1", "temperature"); err != nil || v.Value != 21.5 {
		t.Fatalf("latest %v %v", v, err)
	}
	if d, _ := e.Device(id); !d.Connected {
		t.Fatal("device not connected")
	}
	// Over 256 KiB: rejected, the link stays.
	err = tel.Send(ctxT(t), &amqp.Message{Data: [][]byte{make([]byte, 300<<10)}}, nil)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Condition != amqp.ErrCondResourceLimitExceeded {
		t.Fatalf("300 KiB telemetry: %v", err)
	}
	if err := tel.Send(ctxT(t), &amqp.Message{Data: [][]byte{[]byte(`{"temperature":22}`)}}, nil); err != nil {
		t.Fatalf("after a refusal: %v", err)
	}
	select {
	case <-msgs:
	case <-time.After(wait):
		t.Fatal("no telemetry after a refusal")
	}

	// Twin: GET, PATCH reported, desired notifications.
	props := map[string]any{"com.microsoft:channel-correlation-id": "twin:1"}
	twinSnd, err := s.NewSender(ctxT(t), base+"/twin", &amqp.SenderOptions{Properties: props, SettlementMode: amqp.SenderSettleModeSettled.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	twinRcv, err := s.NewReceiver(ctxT(t), base+"/twin", &amqp.ReceiverOptions{Properties: props, Credit: 10, RequestedSenderSettleMode: amqp.SenderSettleModeSettled.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	twinCall := func(corr, op, res, body string) *amqp.Message {
		t.Helper()
		ann := amqp.Annotations{amqp.Symbol("operation"): op}
		if res != "" {
			ann[amqp.Symbol("resource")] = res
		}
		if err := twinSnd.Send(ctxT(t), &amqp.Message{Properties: &amqp.MessageProperties{CorrelationID: corr}, Annotations: ann, Data: [][]byte{[]byte(body)}}, nil); err != nil {
			t.Fatal(err)
		}
		m, err := twinRcv.Receive(ctxT(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.Properties == nil || m.Properties.CorrelationID != corr {
			t.Fatalf("twin %s: correlation %#v", op, m.Properties)
		}
		return m
	}
	if m := twinCall("g1", "GET", "", " "); m.Annotations["status"] != int32(200) || !strings.Contains(string(m.GetData()), `"reported"`) {
		t.Fatalf("GET %v %q", m.Annotations, m.GetData())
	}
	m := twinCall("p1", "PATCH", "/properties/reported", `{"maxTemp":30}`)
	if m.Annotations["status"] != int32(204) || m.Annotations["version"] != int64(2) {
		t.Fatalf("PATCH %v", m.Annotations)
	}
	if _, rep, _ := e.Twin(id); rep["maxTemp"] != float64(30) {
		t.Fatalf("reported %v", rep)
	}
	twinCall("s1", "PUT", "/notifications/twin/properties/desired", " ")
	if err := e.WaitSubscribed(ctxT(t), id, TopicDesired); err != nil {
		t.Fatal(err)
	}
	if err := e.UpdateProperties(ctxT(t), id, "", map[string]any{"target": 23}); err != nil {
		t.Fatal(err)
	}
	m, err = twinRcv.Receive(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var patch map[string]any
	if err := json.Unmarshal(m.GetData(), &patch); err != nil || patch["target"] != float64(23) || patch["$version"] == nil {
		t.Fatalf("desired push %q: %v", m.GetData(), err)
	}

	// Direct method through the operator API.
	mprops := map[string]any{"com.microsoft:channel-correlation-id": id}
	req, err := s.NewReceiver(ctxT(t), base+"/methods/devicebound", &amqp.ReceiverOptions{Properties: mprops, Credit: 5})
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := s.NewSender(ctxT(t), base+"/methods/devicebound", &amqp.SenderOptions{Properties: mprops})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.WaitSubscribed(ctxT(t), id, TopicMethods); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res CommandResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := e.InvokeCommand(ctxT(t), id, "thermostat1", "getMaxMinReport", map[string]any{"since": "x"}, 5*time.Second)
		done <- result{r, err}
	}()
	rm, err := req.Receive(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = req.AcceptMessage(ctxT(t), rm)
	uid, ok := rm.Properties.CorrelationID.(amqp.UUID)
	if !ok || rm.ApplicationProperties["IoThub-methodname"] != "thermostat1*getMaxMinReport" {
		t.Fatalf("method request %#v %v", rm.Properties.CorrelationID, rm.ApplicationProperties)
	}
	if err := rsp.Send(ctxT(t), &amqp.Message{Properties: &amqp.MessageProperties{CorrelationID: uid},
		ApplicationProperties: map[string]any{"IoThub-status": int32(200)}, Data: [][]byte{[]byte(`{"max":30}`)}}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.res.Status != 200 || string(r.res.Payload) != `{"max":30}` {
			t.Fatalf("invoke %+v %v", r.res, r.err)
		}
	case <-time.After(wait):
		t.Fatal("no invoke result")
	}

	// Cloud-to-device: queued before the link, delivered, completed.
	if err := e.SendCloudToDevice(ctxT(t), id, []byte("hello"), map[string]string{"color": "red"}); err != nil {
		t.Fatal(err)
	}
	c2d, err := s.NewReceiver(ctxT(t), base+"/messages/devicebound", &amqp.ReceiverOptions{Credit: 5})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := c2d.Receive(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(cm.GetData()) != "hello" || cm.ApplicationProperties["color"] != "red" || cm.Properties.MessageID == nil {
		t.Fatalf("C2D %q %v %#v", cm.GetData(), cm.ApplicationProperties, cm.Properties)
	}
	if err := c2d.AcceptMessage(ctxT(t), cm); err != nil {
		t.Fatal(err)
	}

	// The operator drops the connection.
	if err := e.DisconnectDevice(id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("connection not closed by DisconnectDevice")
	}
}

func TestAMQPProvisionThenHubWithSASLPlain(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	const reg = "amqp-reg"
	key := derived(t, e.GroupKey(), reg)
	c := amqpDial(t, e, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain(e.IDScope()+"/registrations/"+reg, dpsSAS(t, e, reg, key, time.Hour))})
	s := amqpSessionOf(t, c)
	addr := e.IDScope() + "/registrations/" + reg
	snd, err := s.NewSender(ctxT(t), addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(ctxT(t), addr, &amqp.ReceiverOptions{Credit: 5})
	if err != nil {
		t.Fatal(err)
	}
	call := func(corr string, props map[string]any, body string) map[string]any {
		t.Helper()
		if err := snd.Send(ctxT(t), &amqp.Message{Properties: &amqp.MessageProperties{CorrelationID: corr}, ApplicationProperties: props, Data: [][]byte{[]byte(body)}}, nil); err != nil {
			t.Fatal(err)
		}
		m, err := rcv.Receive(ctxT(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = rcv.AcceptMessage(ctxT(t), m)
		if m.Properties == nil || m.Properties.CorrelationID != corr {
			t.Fatalf("DPS correlation %#v", m.Properties)
		}
		return decodeJSON(t, m.GetData())
	}
	op := call("c1", map[string]any{"iotdps-operation-type": "iotdps-register"}, `{"registrationId":"`+reg+`","payload":{"modelId":"dtmi:x;1"}}`)
	if op["status"] != "assigning" {
		t.Fatalf("register %v", op)
	}
	fin := call("c2", map[string]any{"iotdps-operation-type": "iotdps-get-operationstatus", "iotdps-operation-id": op["operationId"]}, "")
	if fin["status"] != "assigned" {
		t.Fatalf("poll %v", fin)
	}
	// The hub, with SASL PLAIN {id}@sas.{hub}.
	hc := amqpDial(t, e, &amqp.ConnOptions{SASLType: amqp.SASLTypePlain(reg+"@sas."+e.HubHost(), hubSAS(t, e, reg, key, time.Hour))})
	tel, err := amqpSessionOf(t, hc).NewSender(ctxT(t), "/devices/"+reg+"/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tel.Send(ctxT(t), &amqp.Message{Data: [][]byte{[]byte(`{"x":1}`)}}, nil); err != nil {
		t.Fatal(err)
	}
	if d, err := e.Device(reg); err != nil || d.ModelID != "dtmi:x;1" || !d.Connected {
		t.Fatalf("device %+v %v", d, err)
	}
}

func TestAMQPOverWebSocket(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	const id = "ws-dev"
	key, err := e.CreateDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: amqpTLS(e)}}
	defer hc.CloseIdleConnections()
	ws, _, err := websocket.Dial(ctxT(t), "wss://"+e.WebSocketAddr()+"/$iothub/websocket", &websocket.DialOptions{
		HTTPClient: hc, Subprotocols: []string{"AMQPWSB10"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ws.Subprotocol() != "AMQPWSB10" {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	c, err := amqp.NewConn(ctxT(t), websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := amqpSessionOf(t, c)
	if code := amqpPutToken(t, s, e, id, hubSAS(t, e, id, key, time.Hour)); code != 200 {
		t.Fatalf("put-token %d", code)
	}
	msgs, stop := e.WatchTelemetry(id)
	defer stop()
	tel, err := s.NewSender(ctxT(t), "/devices/"+id+"/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tel.Send(ctxT(t), &amqp.Message{Data: [][]byte{[]byte(`{"ws":true}`)}}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		if string(m.Body) != `{"ws":true}` {
			t.Fatalf("body %q", m.Body)
		}
	case <-time.After(wait):
		t.Fatal("no telemetry")
	}
}

func TestAMQPAndMQTTReplaceEachOther(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	const id = "both"
	key, err := e.CreateDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	mq := connectHub(t, e, id, key, true)
	c := amqpDial(t, e, nil)
	s := amqpSessionOf(t, c)
	if code := amqpPutToken(t, s, e, id, hubSAS(t, e, id, key, time.Hour)); code != 200 {
		t.Fatal(code)
	}
	if _, err := s.NewSender(ctxT(t), "/devices/"+id+"/messages/events", nil); err != nil {
		t.Fatal(err)
	}
	mq.expectLost() // AMQP took over
	// A command now goes over AMQP: no method link, so the device is offline for methods.
	if _, err := e.InvokeCommand(ctxT(t), id, "", "ping", nil, time.Second); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("invoke without a method link: %v", err)
	}
	connectHub(t, e, id, key, true) // MQTT takes it back
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("AMQP connection not closed when MQTT took over")
	}
	var ce *amqp.ConnError
	if err := c.Err(); !errors.As(err, &ce) || ce.RemoteErr == nil || ce.RemoteErr.Condition != amqp.ErrCondConnectionForced {
		t.Fatalf("AMQP connection ended with %v", c.Err())
	}
}
