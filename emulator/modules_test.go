package emulator

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/pki"
)

// moduleSAS is a module's hub token, signed with key.
func moduleSAS(t *testing.T, e *Emulator, dev, mod, key string) string {
	t.Helper()
	return testSAS(t, key, e.HubHost()+"/devices/"+dev+"/modules/"+mod, time.Now().Add(time.Hour), "")
}

func moduleUser(e *Emulator, dev, mod string) string {
	return e.HubHost() + "/" + dev + "/" + mod + "/?api-version=2021-04-12"
}

func keyOf(t *testing.T, body map[string]any) string {
	t.Helper()
	k, _ := body["authentication"].(map[string]any)["symmetricKey"].(map[string]any)["primaryKey"].(string)
	if k == "" {
		t.Fatalf("no primary key in %v", body)
	}
	return k
}

// newModule creates device dev and its module mod through the service API
// and returns the device's and the module's primary keys.
func newModule(t *testing.T, e *Emulator, dev, mod string) (devKey, modKey string) {
	t.Helper()
	st, _, d := service(t, e, "iothubowner", "PUT", "/devices/"+dev, map[string]any{})
	if st != 200 {
		t.Fatalf("create device: %d %v", st, d)
	}
	st, _, m := service(t, e, "iothubowner", "PUT", "/devices/"+dev+"/modules/"+mod, map[string]any{})
	if st != 200 {
		t.Fatalf("create module: %d %v", st, m)
	}
	return keyOf(t, d), keyOf(t, m)
}

// TestModuleMQTTConnectRefusals: a module connects with client id
// {device}/{module}, the user name {host}/{device}/{module}/?... and a
// token for .../devices/{device}/modules/{module} signed with its own key;
// any mismatch is refused with CONNACK 5.
func TestModuleMQTTConnectRefusals(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{WebSocketAddr: "127.0.0.1:0"})
	devKey, modKey := newModule(t, e, "md1", "m1")
	_, otherKey := func() (string, string) {
		st, _, m := service(t, e, "iothubowner", "PUT", "/devices/md1/modules/m2", map[string]any{})
		if st != 200 {
			t.Fatalf("create m2: %d", st)
		}
		return "", keyOf(t, m)
	}()
	good := dialOpts{clientID: "md1/m1", username: moduleUser(e, "md1", "m1"), password: moduleSAS(t, e, "md1", "m1", modKey), clean: true}
	for name, o := range map[string]dialOpts{
		"user name without the module":    {clientID: "md1/m1", username: hubUser(e, "md1", ""), password: good.password},
		"client id without the module":    {clientID: "md1", username: good.username, password: good.password},
		"client id of another module":     {clientID: "md1/m2", username: good.username, password: good.password},
		"client id of another device":     {clientID: "md2/m1", username: good.username, password: good.password},
		"the device's token":              {clientID: "md1/m1", username: good.username, password: hubSAS(t, e, "md1", devKey, time.Hour)},
		"module audience, device key":     {clientID: "md1/m1", username: good.username, password: moduleSAS(t, e, "md1", "m1", devKey)},
		"module audience, other's key":    {clientID: "md1/m1", username: good.username, password: moduleSAS(t, e, "md1", "m1", otherKey)},
		"other module's token":            {clientID: "md1/m1", username: good.username, password: moduleSAS(t, e, "md1", "m2", otherKey)},
		"unknown module":                  {clientID: "md1/m9", username: moduleUser(e, "md1", "m9"), password: moduleSAS(t, e, "md1", "m9", modKey)},
		"a device connecting as a module": {clientID: "md1", username: hubUser(e, "md1", ""), password: moduleSAS(t, e, "md1", "m1", modKey)},
	} {
		o.clean = true
		_, err := dial(t, e, o)
		if err == nil {
			t.Errorf("%s: connected", name)
			continue
		}
		expectRefused(t, err)
	}
	cl, err := dial(t, e, good)
	if err != nil {
		t.Fatalf("module connect: %v", err)
	}
	cl.close()
	// A disabled device's modules cannot connect.
	st, _, _ := service(t, e, "iothubowner", "PUT", "/devices/md1", map[string]any{"status": "disabled"}, "If-Match", "*")
	if st != 200 {
		t.Fatalf("disable: %d", st)
	}
	_, err = dial(t, e, good)
	expectRefused(t, err)
}

// TestModuleOverMQTT: a module's telemetry lands in its device's history
// with the module id; its twin is its own; a module method reaches it; it
// may not publish to its device's telemetry topic nor subscribe to
// cloud-to-device messages (IoT Hub has none for modules).
func TestModuleOverMQTT(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{WebSocketAddr: "127.0.0.1:0"})
	devKey, modKey := newModule(t, e, "md1", "m1")
	// The device and its module are two connections: neither replaces the other.
	dev := connectHub(t, e, "md1", devKey, true)
	o := dialOpts{clientID: "md1/m1", username: moduleUser(e, "md1", "m1"), password: moduleSAS(t, e, "md1", "m1", modKey), clean: true}
	cl, err := dial(t, e, o)
	if err != nil {
		t.Fatal(err)
	}
	if st, _, _ := dev.twinRequest("$iothub/twin/GET/", nil); st != "200" {
		t.Fatalf("the device's twin GET after its module connected: %s", st)
	}
	if d, err := e.Device("md1"); err != nil || !d.Connected {
		t.Fatalf("device after its module connected: %+v %v", d, err)
	}
	twinRes := cl.subscribe("$iothub/twin/res/#", 0)
	desired := cl.subscribe("$iothub/twin/PATCH/properties/desired/#", 0)
	methods := cl.subscribe("$iothub/methods/POST/#", 0)
	d := &hubDevice{client: cl, id: "md1/m1", twinRes: twinRes, desired: desired, methods: methods}

	cl.publish("devices/md1/modules/m1/messages/events/%24.mid=mm1&k=v", 1, []byte(`{"t":1}`))
	hist, err := e.TelemetryHistory("md1", TelemetryFilter{})
	if err != nil || len(hist) != 1 {
		t.Fatalf("history: %v %v", hist, err)
	}
	sp := hist[0].SystemProperties()
	if hist[0].ModuleID != "m1" || sp["iothub-connection-module-id"] != "m1" || !strings.Contains(sp["iothub-connection-auth-method"], `"scope":"module","type":"sas"`) || sp["iothub-connection-device-id"] != "md1" || sp["message-id"] != "mm1" || hist[0].Properties["k"] != "v" {
		t.Fatalf("module message: %+v %v", hist[0], sp)
	}

	before, _ := time.Parse(time.RFC3339Nano, "2000-01-01T00:00:00Z")
	if _, _, mj := service(t, e, "registryRead", "GET", "/devices/md1/modules/m1", nil); mj["connectionState"] != "Connected" {
		t.Fatalf("module registry entry: %v", mj)
	} else if la, err := time.Parse(time.RFC3339Nano, mj["lastActivityTime"].(string)); err != nil || !la.After(before) {
		t.Fatalf("module lastActivityTime %v", mj["lastActivityTime"])
	}

	// Its twin: a reported patch, then a desired one from the service.
	status, q, _ := d.twinRequest("$iothub/twin/PATCH/properties/reported/", []byte(`{"fw":"2"}`))
	if status != "204" || q.Get("$version") != "2" {
		t.Fatalf("reported: %s %v", status, q)
	}
	st, hdr, _ := service(t, e, "service", "PATCH", "/twins/md1/modules/m1", map[string]any{"properties": map[string]any{"desired": map[string]any{"on": true}}})
	if st != 200 || hdr.Get("ETag") == "" {
		t.Fatalf("desired: %d", st)
	}
	if m := recv(t, desired); !strings.Contains(string(m.Payload()), `"on":true`) || !strings.Contains(string(m.Payload()), `"$version":2`) {
		t.Fatalf("desired patch at the module: %s", m.Payload())
	}
	status, _, body := d.twinRequest("$iothub/twin/GET/", nil)
	if status != "200" || !strings.Contains(string(body), `"fw":"2"`) || !strings.Contains(string(body), `"on":true`) {
		t.Fatalf("module twin GET: %s %s", status, body)
	}
	_, dr, err := e.Twin("md1")
	if err != nil || dr["fw"] != nil {
		t.Fatalf("the device twin has the module's report: %v %v", dr, err)
	}

	// A module method.
	done := make(chan map[string]any, 1)
	go func() {
		st, _, res := service(t, e, "service", "POST", "/twins/md1/modules/m1/methods", map[string]any{"methodName": "ping", "payload": 5, "responseTimeoutInSeconds": 10})
		if st != 200 {
			res = map[string]any{"http": st}
		}
		done <- res
	}()
	m := recv(t, methods)
	if !strings.HasPrefix(m.Topic(), "$iothub/methods/POST/ping/?$rid=") || string(m.Payload()) != "5" {
		t.Fatalf("method at the module: %s %s", m.Topic(), m.Payload())
	}
	cl.publish("$iothub/methods/res/200/?$rid="+strings.TrimPrefix(m.Topic(), "$iothub/methods/POST/ping/?$rid="), 0, []byte(`{"pong":true}`))
	if res := <-done; res["status"] != 200.0 || res["payload"].(map[string]any)["pong"] != true {
		t.Fatalf("method answer: %v", res)
	}

	// Another module's telemetry topic and its device's are not its own;
	// it has no cloud-to-device subscription: each ends the connection.
	cl.c.Publish("devices/md1/modules/m2/messages/events/", 1, false, []byte(`{}`))
	cl.expectLost()
	cl2, err := dial(t, e, o)
	if err != nil {
		t.Fatal(err)
	}
	cl2.c.Publish("devices/md1/messages/events/", 1, false, []byte(`{}`))
	cl2.expectLost()
	cl3, err := dial(t, e, o)
	if err != nil {
		t.Fatal(err)
	}
	cl3.c.Subscribe("devices/md1/modules/m1/messages/devicebound/#", 1, nil)
	cl3.expectLost()
	if hist, _ := e.TelemetryHistory("md1", TelemetryFilter{}); len(hist) != 1 {
		t.Fatalf("%d messages in the history, want the one", len(hist))
	}
	select {
	case err := <-dev.lost:
		t.Fatalf("the device lost its connection with its module's: %v", err)
	default:
	}
	if st, _, _ := dev.twinRequest("$iothub/twin/GET/", nil); st != "200" {
		t.Fatalf("the device's twin GET at the end: %s", st)
	}
}

// TestModulesSurviveDataDirRestart: modules, their keys and etags and
// their twins (tags, desired, reported, $versions) are kept in the data
// directory; a module connects with its old key after a restart; a
// device deleted before a restart comes back without its modules.
func TestModulesSurviveDataDirRestart(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	e1, err := startData(t, Options{DataDir: dataDir, WebSocketAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = e1.Close()
		}
	})
	_, modKey := newModule(t, e1, "keep", "m1")
	newModule(t, e1, "gone", "m1")
	st, _, edge := service(t, e1, "iothubowner", "PUT", "/devices/edge", map[string]any{"capabilities": map[string]any{"iotEdge": true}})
	if st != 200 {
		t.Fatalf("edge: %d", st)
	}
	if st, _, _ := service(t, e1, "service", "PATCH", "/twins/keep/modules/m1", map[string]any{"tags": map[string]any{"site": "a"}, "properties": map[string]any{"desired": map[string]any{"on": true}}}); st != 200 {
		t.Fatalf("module twin: %d", st)
	}
	cl, err := dial(t, e1, dialOpts{clientID: "keep/m1", username: moduleUser(e1, "keep", "m1"), password: moduleSAS(t, e1, "keep", "m1", modKey), clean: true})
	if err != nil {
		t.Fatal(err)
	}
	d := &hubDevice{client: cl, id: "keep/m1", twinRes: cl.subscribe("$iothub/twin/res/#", 0)}
	if status, _, _ := d.twinRequest("$iothub/twin/PATCH/properties/reported/", []byte(`{"fw":"1"}`)); status != "204" {
		t.Fatalf("reported: %s", status)
	}
	cl.publish("devices/keep/modules/m1/messages/events/", 1, []byte(`{"kept":1}`))
	cl.close()
	if st, _, _ := service(t, e1, "iothubowner", "DELETE", "/devices/gone", nil); st != 204 {
		t.Fatalf("delete: %d", st)
	}
	_, _, mod1 := service(t, e1, "registryRead", "GET", "/devices/keep/modules/m1", nil)
	_, _, twin1 := service(t, e1, "service", "GET", "/twins/keep/modules/m1", nil)
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true

	e2, err := startData(t, Options{DataDir: dataDir, WebSocketAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e2.Close() })
	_, _, mod2 := service(t, e2, "registryRead", "GET", "/devices/keep/modules/m1", nil)
	_, _, twin2 := service(t, e2, "service", "GET", "/twins/keep/modules/m1", nil)
	for _, m := range []map[string]any{mod1, mod2, twin1, twin2} {
		delete(m, "lastActivityTime")
		delete(m, "connectionState")
	}
	if jsonOf(t, mod2) != jsonOf(t, mod1) || jsonOf(t, twin2) != jsonOf(t, twin1) {
		t.Fatalf("after restart\n module %s\n twin %s\nwant\n module %s\n twin %s", jsonOf(t, mod2), jsonOf(t, twin2), jsonOf(t, mod1), jsonOf(t, twin1))
	}
	hist, err := e2.TelemetryHistory("keep", TelemetryFilter{})
	if err != nil || len(hist) != 1 || hist[0].ModuleID != "m1" || hist[0].SystemProperties()["iothub-connection-auth-method"] != `{"scope":"module","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}` {
		t.Fatalf("module telemetry after restart: %+v %v", hist, err)
	}
	props := twin2["properties"].(map[string]any)
	if props["reported"].(map[string]any)["fw"] != "1" || props["desired"].(map[string]any)["on"] != true || twin2["tags"].(map[string]any)["site"] != "a" {
		t.Fatalf("module twin after restart: %v", twin2)
	}
	// The module connects with its old key; its twin continues its versions.
	cl, err = dial(t, e2, dialOpts{clientID: "keep/m1", username: moduleUser(e2, "keep", "m1"), password: moduleSAS(t, e2, "keep", "m1", modKey), clean: true})
	if err != nil {
		t.Fatalf("module connect after restart: %v", err)
	}
	d = &hubDevice{client: cl, id: "keep/m1", twinRes: cl.subscribe("$iothub/twin/res/#", 0)}
	if status, q, _ := d.twinRequest("$iothub/twin/PATCH/properties/reported/", []byte(`{"fw":"2"}`)); status != "204" || q.Get("$version") != "3" {
		t.Fatalf("reported after restart: %s %v", status, q)
	}
	// The deleted device's module is gone with it; the edge device keeps its scope and modules.
	if st, _, _ := service(t, e2, "iothubowner", "PUT", "/devices/gone", map[string]any{}); st != 200 {
		t.Fatalf("recreate: %d", st)
	}
	if st, _, body := service(t, e2, "registryRead", "GET", "/devices/gone/modules/m1", nil); st != 404 || !strings.HasPrefix(body["Message"].(string), "ErrorCode:ModuleNotFound;") {
		t.Fatalf("module of the deleted device: %d %v", st, body)
	}
	_, _, edge2 := service(t, e2, "registryRead", "GET", "/devices/edge", nil)
	if edge2["deviceScope"] != edge["deviceScope"] || edge2["capabilities"].(map[string]any)["iotEdge"] != true {
		t.Fatalf("edge device after restart: %v, want scope %v", edge2, edge["deviceScope"])
	}
	if st, _, _ := service(t, e2, "registryRead", "GET", "/devices/edge/modules/$edgeHub", nil); st != 200 {
		t.Fatalf("$edgeHub after restart: %d", st)
	}
}

// TestModuleThumbprint: a selfSigned module connects over MQTT with the
// certificate whose thumbprint it was given, and only with it; its
// device's certificate is not its own.
func TestModuleThumbprint(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{WebSocketAddr: "127.0.0.1:0"})
	ca, err := pki.NewCA("module thumbprint test")
	if err != nil {
		t.Fatal(err)
	}
	modCert, err := ca.IssueClient("anything", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	devCert, err := ca.IssueClient("tpd", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tpOf := func(raw []byte) string { s := sha256.Sum256(raw); return hex.EncodeToString(s[:]) }
	if st, _, b := service(t, e, "iothubowner", "PUT", "/devices/tpd", map[string]any{"authentication": map[string]any{"type": "selfSigned",
		"x509Thumbprint": map[string]any{"primaryThumbprint": tpOf(devCert.Cert.Raw)}}}); st != 200 {
		t.Fatalf("device: %d %v", st, b)
	}
	if st, _, b := service(t, e, "iothubowner", "PUT", "/devices/tpd/modules/m", map[string]any{"authentication": map[string]any{"type": "selfSigned",
		"x509Thumbprint": map[string]any{"primaryThumbprint": tpOf(modCert.Cert.Raw)}}}); st != 200 {
		t.Fatalf("module: %d %v", st, b)
	}
	o := dialOpts{clientID: "tpd/m", username: moduleUser(e, "tpd", "m"), clean: true}
	o.cert = &devCert.TLS
	_, err = dial(t, e, o)
	expectRefused(t, err)
	o.cert = &modCert.TLS
	cl, err := dial(t, e, o)
	if err != nil {
		t.Fatalf("module connect with its certificate: %v", err)
	}
	cl.publish("devices/tpd/modules/m/messages/events/", 1, []byte(`{}`))
	hist, err := e.TelemetryHistory("tpd", TelemetryFilter{})
	if err != nil || len(hist) != 1 || hist[0].ModuleID != "m" || hist[0].AuthMethod != `{"scope":"module","type":"x509Certificate","issuer":"iothub","acceptingIpFilterRule":null}` {
		t.Fatalf("module telemetry: %+v %v", hist, err)
	}
}
