package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// newHubDevice creates a device and connects it with all subscriptions.
func newHubDevice(t *testing.T, e *Emulator, id string) (*hubDevice, string) {
	t.Helper()
	key, err := e.CreateDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	return connectHub(t, e, id, key, true), key
}

func TestHubAuthRefusals(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	key, err := e.CreateDevice("d1")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := e.CreateDevice("d2")
	wrongAudience := testSAS(t, key, "elsewhere.azure-devices.net/devices/d1", time.Now().Add(time.Hour), "")
	// sr sent encoded, but signed over the decoded resource: a mistake an
	// SDK can make, which IoT Hub refuses.
	decSE := fmt.Sprint(time.Now().Add(time.Hour).Unix())
	decodedSigned := "SharedAccessSignature sr=" + url.QueryEscape(e.HubHost()+"/devices/d1") +
		"&sig=" + url.QueryEscape(hmacB64(t, key, e.HubHost()+"/devices/d1\n"+decSE)) + "&se=" + decSE
	for _, tc := range []struct{ name, clientID, user, password string }{
		{"wrong key", "d1", hubUser(e, "d1", ""), hubSAS(t, e, "d1", other, time.Hour)},
		{"expired token", "d1", hubUser(e, "d1", ""), hubSAS(t, e, "d1", key, -time.Second)},
		{"wrong audience", "d1", hubUser(e, "d1", ""), wrongAudience},
		{"unknown device", "ghost", hubUser(e, "ghost", ""), hubSAS(t, e, "ghost", key, time.Hour)},
		{"client id differs from user name", "d2", hubUser(e, "d1", ""), hubSAS(t, e, "d1", key, time.Hour)},
		{"module", "d1/m1", e.HubHost() + "/d1/m1/?api-version=2021-04-12", hubSAS(t, e, "d1", key, time.Hour)},
		{"token of another device", "d1", hubUser(e, "d1", ""), hubSAS(t, e, "d2", other, time.Hour)},
		{"malformed token", "d1", hubUser(e, "d1", ""), "SharedAccessSignature sr=x"},
		{"encoded sr signed decoded", "d1", hubUser(e, "d1", ""), decodedSigned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dial(t, e, dialOpts{clientID: tc.clientID, username: tc.user, password: tc.password})
			expectRefused(t, err)
		})
	}
	t.Run("C-style unencoded sr, Node-style field order", func(t *testing.T) {
		raw := e.HubHost() + "/devices/d1"
		se := fmt.Sprint(time.Now().Add(time.Hour).Unix())
		sig := url.QueryEscape(hmacB64(t, key, raw+"\n"+se))
		for _, tok := range []string{
			"SharedAccessSignature sr=" + raw + "&sig=" + sig + "&se=" + se,
			"SharedAccessSignature sig=" + sig + "&se=" + se + "&sr=" + raw,
		} {
			cl, err := dial(t, e, dialOpts{clientID: "d1", username: hubUser(e, "d1", "dtmi:c:style;1"), password: tok})
			if err != nil {
				t.Fatalf("token %q refused: %v", strings.SplitN(tok, "sig=", 2)[0], err)
			}
			cl.close()
		}
		if d, _ := e.Device("d1"); d.ModelID != "dtmi:c:style;1" {
			t.Fatalf("model id from the user name not stored: %q", d.ModelID)
		}
	})
}

func TestTelemetry(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	d, _ := newHubDevice(t, e, "tele")
	msgs, stop := e.WatchTelemetry("tele")
	defer stop()
	next := func() Telemetry {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(wait):
			t.Fatal("no telemetry arrived")
			return Telemetry{}
		}
	}
	d.publish("devices/tele/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&%24.sub=thermostat1&%24.mid=m-1&color=red%20blue", 1,
		[]byte(`{"temperature":21.5,"ok":true}`))
	m := next()
	if m.DeviceID != "tele" || m.Component != "thermostat1" || string(m.Body) != `{"temperature":21.5,"ok":true}` ||
		m.Properties["color"] != "red blue" || m.ContentType != "application/json" || m.ContentEncoding != "utf-8" ||
		m.MessageID != "m-1" || len(m.Properties) != 1 || m.Received.IsZero() {
		t.Fatalf("telemetry %+v", m)
	}
	v, err := e.LatestTelemetry("tele", "thermostat1", "temperature")
	if err != nil || v.Value != 21.5 || v.Timestamp.IsZero() {
		t.Fatalf("LatestTelemetry = %+v, %v", v, err)
	}
	if _, err := e.LatestTelemetry("tele", "", "temperature"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("root component has no temperature, got %v", err)
	}

	// QoS 0, literal "$.sub" key.
	d.publish("devices/tele/messages/events/$.sub=c2", 0, []byte(`{"humidity":40}`))
	if m := next(); m.Component != "c2" {
		t.Fatalf("component %q, want c2", m.Component)
	}
	if v, err := e.LatestTelemetry("tele", "c2", "humidity"); err != nil || v.Value != 40.0 {
		t.Fatalf("humidity %+v, %v", v, err)
	}
	// No property bag, a body that is not JSON.
	d.publish("devices/tele/messages/events/", 1, []byte(`not json`))
	if m := next(); m.Component != "" || string(m.Body) != "not json" || len(m.System) != 0 {
		t.Fatalf("telemetry %+v", m)
	}
	// Exactly the limit is accepted.
	d.publish("devices/tele/messages/events/", 1, bytes.Repeat([]byte("a"), MaxTelemetryBody))
	if m := next(); len(m.Body) != MaxTelemetryBody {
		t.Fatalf("body of %d bytes", len(m.Body))
	}
	if _, err := e.LatestTelemetry("ghost", "", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
}

func TestNextTelemetrySeesMessagesAfterTheCall(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	d, _ := newHubDevice(t, e, "nt")
	got := make(chan Telemetry, 1)
	ctx := ctxT(t)
	go func() {
		m, err := e.NextTelemetry(ctx, "nt")
		if err != nil {
			t.Errorf("NextTelemetry: %v", err)
		}
		got <- m
	}()
	// The goroutine may not have registered yet; each publish waits for its
	// PUBACK, and a later one arrives after the registration.
	for i := 0; ; i++ {
		d.publish("devices/nt/messages/events/", 1, []byte(fmt.Sprintf(`{"n":%d}`, i)))
		select {
		case m := <-got:
			if m.DeviceID != "nt" || !strings.HasPrefix(string(m.Body), `{"n":`) {
				t.Fatalf("NextTelemetry = %+v", m)
			}
			return
		case <-ctx.Done():
			t.Fatal("NextTelemetry never returned")
		default:
		}
	}
}

func TestNextTelemetryContext(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := e.NextTelemetry(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("NextTelemetry on a cancelled context: %v", err)
	}
	if n := e.core.Watchers(); n != 0 {
		t.Fatalf("%d watchers left behind", n)
	}
}

func TestConnectionDroppedOnViolation(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	if _, err := e.CreateDevice("victim"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		act  func(d *hubDevice)
	}{
		{"QoS0 publish to another device's telemetry", func(d *hubDevice) {
			d.c.Publish("devices/victim/messages/events/", 0, false, []byte("{}"))
		}},
		{"QoS1 publish to another device's telemetry", func(d *hubDevice) {
			d.c.Publish("devices/victim/messages/events/", 1, false, []byte("{}"))
		}},
		{"publish to a twin response topic", func(d *hubDevice) {
			d.c.Publish("$iothub/twin/res/200/?$rid=1", 0, false, []byte("{}"))
		}},
		{"publish to the desired patch topic", func(d *hubDevice) {
			d.c.Publish("$iothub/twin/PATCH/properties/desired/?$version=9", 0, false, []byte("{}"))
		}},
		{"publish to an unknown topic", func(d *hubDevice) {
			d.c.Publish("random/topic", 0, false, []byte("{}"))
		}},
		{"publish a DPS request", func(d *hubDevice) {
			d.c.Publish("$dps/registrations/PUT/iotdps-register/?$rid=1", 1, false, []byte("{}"))
		}},
		{"twin request without $rid", func(d *hubDevice) {
			d.c.Publish("$iothub/twin/GET/", 0, false, []byte{})
		}},
		{"subscribe to another device's messages", func(d *hubDevice) {
			d.c.Subscribe("devices/victim/messages/devicebound/#", 1, nil)
		}},
		{"subscribe to everything", func(d *hubDevice) {
			d.c.Subscribe("#", 0, nil)
		}},
		{"oversize telemetry", func(d *hubDevice) {
			d.c.Publish("devices/"+d.id+"/messages/events/", 1, false, bytes.Repeat([]byte("x"), MaxTelemetryBody+1))
		}},
		{"QoS 2 publish", func(d *hubDevice) {
			d.c.Publish("devices/"+d.id+"/messages/events/", 2, false, []byte("{}"))
		}},
		{"malformed property bag", func(d *hubDevice) {
			d.c.Publish("devices/"+d.id+"/messages/events/a=%zz", 1, false, []byte("{}"))
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newHubDevice(t, e, fmt.Sprintf("bad-%d", i))
			tc.act(d)
			d.expectLost()
			waitOffline(t, e, d.id)
		})
	}
}

func TestTwin(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	d, _ := newHubDevice(t, e, "twin")

	// GET on a fresh twin, with the Node/Python " " body.
	status, _, body := d.twinRequest("$iothub/twin/GET/", []byte(" "))
	doc := decodeJSON(t, body)
	desired, _ := doc["desired"].(map[string]any)
	reported, _ := doc["reported"].(map[string]any)
	if status != "200" || desired["$version"] != 1.0 || reported["$version"] != 1.0 || desired["$metadata"] == nil {
		t.Fatalf("GET %s %s", status, body)
	}

	// Reported patch: 204, $version in the topic, empty body.
	status, q, body := d.twinRequest("$iothub/twin/PATCH/properties/reported/", []byte(`{"battery":55,"obj":{"x":1,"y":2}}`))
	if status != "204" || q.Get("$version") != "2" || len(body) != 0 {
		t.Fatalf("PATCH answered %s %v %q", status, q, body)
	}
	status, q, _ = d.twinRequest("$iothub/twin/PATCH/properties/reported/", []byte(`{"obj":{"x":null}}`))
	if status != "204" || q.Get("$version") != "3" {
		t.Fatalf("second PATCH answered %s %v", status, q)
	}
	_, rep, err := e.Twin("twin")
	if err != nil {
		t.Fatal(err)
	}
	if rep["battery"] != 55.0 || rep["$version"] != int64(3) {
		t.Fatalf("reported %v", rep)
	}
	if obj := rep["obj"].(map[string]any); len(obj) != 1 || obj["y"] != 2.0 {
		t.Fatalf("null did not delete: %v", obj)
	}

	// Bad patches: 400 with a body; the connection stays.
	for _, bad := range []string{`{not json`, `[1,2]`, `{"a.b":1}`, `{"s":"` + strings.Repeat("x", 5000) + `"}`} {
		status, _, body := d.twinRequest("$iothub/twin/PATCH/properties/reported/", []byte(bad))
		if status != "400" || len(body) == 0 {
			t.Fatalf("patch %.30q answered %s %q, want 400 with a body", bad, status, body)
		}
	}
	// Fill the section past 32 KiB in steps that are each valid.
	var lastStatus string
	for i := range 10 {
		lastStatus, _, _ = d.twinRequest("$iothub/twin/PATCH/properties/reported/", fmt.Appendf(nil, `{"k%d":"%s"}`, i, strings.Repeat("z", 4000)))
	}
	if lastStatus != "400" {
		t.Fatalf("a reported section over 32 KiB answered %s, want 400", lastStatus)
	}
	_, rep, _ = e.Twin("twin")
	delete(rep, "$metadata")
	if b, _ := json.Marshal(rep); len(b) > MaxTwinSection+100 {
		t.Fatalf("reported section grew to %d bytes", len(b))
	}

	// Desired update from the operator, pushed with $version.
	if err := e.UpdateProperties(ctxT(t), "twin", "thermostat1", map[string]any{"targetTemperature": 23}); err != nil {
		t.Fatal(err)
	}
	m := recv(t, d.desired)
	if m.Topic() != "$iothub/twin/PATCH/properties/desired/?$version=2" {
		t.Fatalf("desired push on %q", m.Topic())
	}
	push := decodeJSON(t, m.Payload())
	comp, _ := push["thermostat1"].(map[string]any)
	if push["$version"] != 2.0 || comp["targetTemperature"] != 23.0 || comp["__t"] != "c" {
		t.Fatalf("desired push %s", m.Payload())
	}
	if err := e.UpdateProperties(ctxT(t), "twin", "", map[string]any{"rate": "5m"}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, d.desired); !strings.HasSuffix(m.Topic(), "?$version=3") || decodeJSON(t, m.Payload())["rate"] != "5m" {
		t.Fatalf("second push %s %s", m.Topic(), m.Payload())
	}
	status, _, body = d.twinRequest("$iothub/twin/GET/", nil)
	desired = decodeJSON(t, body)["desired"].(map[string]any)
	if status != "200" || desired["$version"] != 3.0 || desired["rate"] != "5m" {
		t.Fatalf("GET after desired updates: %s", body)
	}
	if err := e.UpdateProperties(ctxT(t), "twin", "", map[string]any{"bad.name": 1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad desired name: %v", err)
	}
	if err := e.UpdateProperties(ctxT(t), "nobody", "", map[string]any{"a": 1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
	big := map[string]any{}
	for i := range 9 {
		big[fmt.Sprintf("p%d", i)] = strings.Repeat("q", 4000)
	}
	if err := e.UpdateProperties(ctxT(t), "twin", "", big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("desired section over 32 KiB: %v", err)
	}
}

func TestTwinAndMethodTrafficIsPerDevice(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	a, _ := newHubDevice(t, e, "a")
	b, _ := newHubDevice(t, e, "b")

	// a's twin answer must not reach b: b's first answer is its own
	// (twinRequest fails when the first answer carries another $rid).
	if status, _, _ := a.twinRequest("$iothub/twin/GET/", nil); status != "200" {
		t.Fatal(status)
	}
	if status, _, _ := b.twinRequest("$iothub/twin/GET/", nil); status != "200" {
		t.Fatal(status)
	}
	// a's desired push must not reach b.
	if err := e.UpdateProperties(ctxT(t), "a", "", map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	recv(t, a.desired)
	if err := e.UpdateProperties(ctxT(t), "b", "", map[string]any{"y": 2}); err != nil {
		t.Fatal(err)
	}
	if p := decodeJSON(t, recv(t, b.desired).Payload()); p["y"] != 2.0 || p["x"] != nil {
		t.Fatalf("b's first desired push is %v", p)
	}
	// a's method request must not reach b: b's first request is its own.
	answer := func(d *hubDevice) {
		m := recv(t, d.methods)
		d.publish("$iothub/methods/res/200/?$rid="+ridOf(t, m.Topic()), 0, []byte(`"`+d.id+`"`))
	}
	go answer(a)
	res, err := e.InvokeCommand(ctxT(t), "a", "", "who", nil, wait)
	if err != nil || string(res.Payload) != `"a"` {
		t.Fatalf("a answered %+v, %v", res, err)
	}
	go answer(b)
	res, err = e.InvokeCommand(ctxT(t), "b", "", "who", nil, wait)
	if err != nil || string(res.Payload) != `"b"` {
		t.Fatalf("b answered %+v, %v", res, err)
	}
	// b cannot answer a's request with a's $rid.
	go func() {
		m := recv(t, a.methods)
		b.publish("$iothub/methods/res/200/?$rid="+ridOf(t, m.Topic()), 0, []byte(`"forged"`))
		b.twinRequest("$iothub/twin/GET/", nil) // b's forged answer has been processed
		a.publish("$iothub/methods/res/200/?$rid="+ridOf(t, m.Topic()), 0, []byte(`"a"`))
	}()
	res, err = e.InvokeCommand(ctxT(t), "a", "", "who", nil, wait)
	if err != nil || string(res.Payload) != `"a"` {
		t.Fatalf("a answered %+v, %v (b's forged answer must not count)", res, err)
	}
}

func TestMethods(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	d, _ := newHubDevice(t, e, "m")
	type req struct{ topic, body string }
	got := make(chan req, 1)
	go func() {
		m := recv(t, d.methods)
		got <- req{m.Topic(), string(m.Payload())}
		d.publish("$iothub/methods/res/201/?$rid="+ridOf(t, m.Topic()), 1, []byte(`{"maxTemp":21.5}`))
	}()
	res, err := e.InvokeCommand(ctxT(t), "m", "thermostat1", "getMaxMinReport", "2024-01-01T00:00:00Z", wait)
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	if !strings.HasPrefix(r.topic, "$iothub/methods/POST/thermostat1*getMaxMinReport/?$rid=") || r.body != `"2024-01-01T00:00:00Z"` {
		t.Fatalf("request %+v", r)
	}
	if res.Status != 201 || string(res.Payload) != `{"maxTemp":21.5}` || res.RequestID == "" {
		t.Fatalf("result %+v", res)
	}
	// A command run from the Go API is in the command history, under the
	// id it returned.
	hist, err := e.CommandHistory("m", "thermostat1", "getMaxMinReport")
	if err != nil || len(hist) != 1 || hist[0].ID != res.RequestID || hist[0].ResponseCode != 201 ||
		string(hist[0].Request) != `"2024-01-01T00:00:00Z"` || string(hist[0].Response) != `{"maxTemp":21.5}` {
		t.Fatalf("command history %+v, %v", hist, err)
	}

	// A non-JSON answer comes back as a JSON string; nil payload sends null.
	go func() {
		m := recv(t, d.methods)
		got <- req{m.Topic(), string(m.Payload())}
		d.publish("$iothub/methods/res/500/?$rid="+ridOf(t, m.Topic()), 0, []byte(`oops`))
	}()
	res, err = e.InvokeCommand(ctxT(t), "m", "", "reboot", nil, wait)
	if err != nil || res.Status != 500 || string(res.Payload) != `"oops"` {
		t.Fatalf("result %+v, %v", res, err)
	}
	if r := <-got; r.body != "null" || !strings.HasPrefix(r.topic, "$iothub/methods/POST/reboot/?$rid=") {
		t.Fatalf("request %+v", r)
	}

	// No answer: ErrTimeout; the late answer is ignored.
	res, err = e.InvokeCommand(ctxT(t), "m", "", "slow", map[string]int{"n": 1}, 50*time.Millisecond)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("InvokeCommand without an answer = %+v, %v; want ErrTimeout", res, err)
	}
	late := recv(t, d.methods)
	if string(late.Payload()) != `{"n":1}` {
		t.Fatalf("slow request body %q", late.Payload())
	}
	d.publish("$iothub/methods/res/200/?$rid="+ridOf(t, late.Topic()), 0, []byte(`{}`))
	if status, _, _ := d.twinRequest("$iothub/twin/GET/", nil); status != "200" {
		t.Fatal("connection unusable after a late method answer")
	}

	if _, err := e.InvokeCommand(ctxT(t), "ghost", "", "x", nil, time.Second); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
	if _, err := e.InvokeCommand(ctxT(t), "m", "", "a/b", nil, time.Second); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := e.CreateDevice("off"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.InvokeCommand(ctxT(t), "off", "", "x", nil, time.Second); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("offline device: %v", err)
	}
	// Connected but not subscribed to methods: offline for methods.
	key, _ := e.CreateDevice("nosub")
	if _, err := dial(t, e, dialOpts{clientID: "nosub", username: hubUser(e, "nosub", ""), password: hubSAS(t, e, "nosub", key, time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.InvokeCommand(ctxT(t), "nosub", "", "x", nil, time.Second); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("unsubscribed device: %v", err)
	}
}

func TestInvokeWaitsForConnection(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	key, err := e.CreateDevice("late")
	if err != nil {
		t.Fatal(err)
	}
	type out struct {
		res CommandResult
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := e.core.InvokeCommand(ctxT(t), "late", "", "ping", nil, wait, wait)
		done <- out{res, err}
	}()
	d := connectHub(t, e, "late", key, true)
	m := recv(t, d.methods)
	d.publish("$iothub/methods/res/200/?$rid="+ridOf(t, m.Topic()), 0, []byte(`"pong"`))
	if o := <-done; o.err != nil || string(o.res.Payload) != `"pong"` {
		t.Fatalf("invoke = %+v, %v", o.res, o.err)
	}
}

func TestC2DQueuedWhileOfflineAndRedelivered(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	key, err := e.CreateDevice("c2d")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	// First session (persistent) subscribes, then leaves.
	d := connectHub(t, e, "c2d", key, false)
	d.close()
	waitOffline(t, e, "c2d")

	if err := e.SendCloudToDevice(ctx, "c2d", []byte("hello"), map[string]string{"color": "red"}); err != nil {
		t.Fatal(err)
	}
	if err := e.QueueCommand(ctx, "c2d", "thermostat1", "reboot", map[string]int{"delay": 5}); err != nil {
		t.Fatal(err)
	}

	// Reconnect with the persistent session and no new SUBSCRIBE, acks off:
	// the kept subscription brings the queued messages.
	inbox := make(chan paho.Message, 10)
	cl, err := dial(t, e, dialOpts{
		clientID: "c2d", username: hubUser(e, "c2d", ""), password: hubSAS(t, e, "c2d", key, time.Hour),
		manualAck: true, onMessage: func(_ paho.Client, m paho.Message) { inbox <- m },
	})
	if err != nil {
		t.Fatal(err)
	}
	first, second := recv(t, inbox), recv(t, inbox)
	if string(first.Payload()) != "hello" { // paho hands messages to handlers concurrently
		first, second = second, first
	}
	if !strings.HasPrefix(first.Topic(), "devices/c2d/messages/devicebound/%24.mid=") ||
		!strings.Contains(first.Topic(), "&%24.to=%2Fdevices%2Fc2d%2Fmessages%2Fdevicebound") ||
		!strings.HasSuffix(first.Topic(), "&color=red") || string(first.Payload()) != "hello" || first.Qos() != 1 || first.Duplicate() {
		t.Fatalf("first message %s %q qos %d dup %v", first.Topic(), first.Payload(), first.Qos(), first.Duplicate())
	}
	if !strings.HasSuffix(second.Topic(), "&method-name=thermostat1%2Areboot") || string(second.Payload()) != `{"delay":5}` {
		t.Fatalf("queued command %s %q", second.Topic(), second.Payload())
	}
	// The property bag is URL query encoding (decoded here by the
	// standard library, not by the SDK's codec).
	bag, err := url.ParseQuery(strings.TrimPrefix(second.Topic(), "devices/c2d/messages/devicebound/"))
	if err != nil {
		t.Fatal(err)
	}
	if mn := bag.Get("method-name"); mn != "thermostat1*reboot" {
		t.Fatalf("method-name %q", mn)
	}
	// Acknowledge only the first, then drop the connection.
	first.Ack()
	h := &hubDevice{client: cl, id: "c2d", twinRes: cl.subscribe("$iothub/twin/res/#", 0)}
	h.twinRequest("$iothub/twin/GET/", nil) // the PUBACK was read before this request
	if n := pendingC2D(e, "c2d"); n != 1 {
		t.Fatalf("%d messages queued after one ack, want 1", n)
	}
	cl.close()
	waitOffline(t, e, "c2d")

	// A clean session gets the unacknowledged message again once it subscribes.
	d2 := connectHub(t, e, "c2d", key, true)
	again := recv(t, d2.c2d)
	if again.Topic() != second.Topic() || !again.Duplicate() {
		t.Fatalf("redelivery %s dup=%v, want %s dup=true", again.Topic(), again.Duplicate(), second.Topic())
	}
	// paho sends its automatic PUBACK after the handler returned: wait for it (bounded).
	if err := e.core.WaitPendingC2D(ctxT(t), "c2d", 0); err != nil {
		t.Fatalf("%d messages still queued after the acks: %v", pendingC2D(e, "c2d"), err)
	}
	// Delivered at once to a connected, subscribed device.
	if err := e.SendCloudToDevice(ctx, "c2d", []byte("live"), nil); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, d2.c2d); string(m.Payload()) != "live" {
		t.Fatalf("live message %q", m.Payload())
	}
}

func TestC2DQueueLimitAndSize(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	if _, err := e.CreateDevice("full"); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for i := range MaxC2DQueue {
		if err := e.SendCloudToDevice(ctx, "full", []byte(fmt.Sprint(i)), nil); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := e.SendCloudToDevice(ctx, "full", []byte("one too many"), nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("51st message: %v, want ErrQueueFull", err)
	}
	if err := e.QueueCommand(ctx, "full", "", "x", nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("queued command on a full queue: %v", err)
	}
	if err := e.SendCloudToDevice(ctx, "ghost", nil, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
	if _, err := e.CreateDevice("small"); err != nil {
		t.Fatal(err)
	}
	if err := e.SendCloudToDevice(ctx, "small", make([]byte, MaxC2DBody+1), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize message: %v", err)
	}
}

func TestOneConnectionPerDevice(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	first, key := newHubDevice(t, e, "dup")
	second := connectHub(t, e, "dup", key, true)
	first.expectLost()
	if status, _, _ := second.twinRequest("$iothub/twin/GET/", nil); status != "200" {
		t.Fatal("the newer connection does not work")
	}
	if d, _ := e.Device("dup"); !d.Connected {
		t.Fatal("device not connected after the takeover")
	}
}

func TestDisconnectDevice(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	d, _ := newHubDevice(t, e, "drop")
	if err := e.DisconnectDevice("drop"); err != nil {
		t.Fatal(err)
	}
	d.expectLost()
	waitOffline(t, e, "drop")
	if err := e.DisconnectDevice("drop"); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("second drop: %v", err)
	}
	if err := e.DisconnectDevice("ghost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
}

func TestCloseWithHalfOpenConnection(t *testing.T) {
	t.Parallel()
	e, err := Start(t.Context(), &Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "127.0.0.1:0", CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	// A TCP connection that never speaks TLS must not keep Close waiting.
	c, err := net.Dial("tcp", e.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, _ := e.CreateDevice("probe")
	probe := connectHub(t, e, "probe", key, true) // accepted after the raw connection
	probe.close()
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := e.NextTelemetry(t.Context(), "probe"); !errors.Is(err, ErrClosed) {
		t.Fatalf("NextTelemetry after Close: %v", err)
	}
}

// waitOffline waits until the emulator has seen the device's connection end.
func waitOffline(t *testing.T, e *Emulator, id string) {
	t.Helper()
	if err := e.core.WaitOffline(ctxT(t), id); err != nil {
		t.Fatalf("device never went offline: %v", err)
	}
}

func pendingC2D(e *Emulator, id string) int { return e.core.PendingC2D(id) }

func TestConnectionDroppedWhenTokenExpires(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	key, err := e.CreateDevice("short")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := dial(t, e, dialOpts{clientID: "short", username: hubUser(e, "short", ""), password: hubSAS(t, e, "short", key, 2*time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	cl.expectLost()
	waitOffline(t, e, "short")
}
