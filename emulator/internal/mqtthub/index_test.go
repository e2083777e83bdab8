package mqtthub

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"net/url"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/sas"
)

// mochiClient returns the connected mochi client of device id.
func mochiClient(t *testing.T, s *Server, id string) *mqtt.Client {
	t.Helper()
	for _, cl := range s.srv.Clients.GetAll() {
		if c := s.connOf(cl); c != nil && c.id == id {
			return cl
		}
	}
	t.Fatalf("no connection of %s", id)
	return nil
}

// signForTest builds a device SAS token for the hub resource.
func signForTest(t *testing.T, key, resource string, expiry time.Time) string {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	se := strconv.FormatInt(expiry.Unix(), 10)
	m := hmac.New(sha256.New, k)
	m.Write([]byte(sas.Escape(resource) + "\n" + se))
	return "SharedAccessSignature sr=" + sas.Escape(resource) + "&sig=" + sas.Escape(base64.StdEncoding.EncodeToString(m.Sum(nil))) + "&se=" + se
}

// pipeDevice connects device id to s over a net.Pipe as a paho client
// with a persistent session. It returns the client, the client's end of
// the pipe and a channel closed once ServeConn returned.
func pipeDevice(t *testing.T, s *Server, host, id, key string) (paho.Client, net.Conn, <-chan struct{}) {
	t.Helper()
	clientEnd, serverEnd := net.Pipe()
	served := make(chan struct{})
	go func() { defer close(served); s.ServeConn(serverEnd, nil) }()
	opts := paho.NewClientOptions().AddBroker("tcp://pipe:1883").SetClientID(id).
		SetUsername(host + "/" + id + "/?api-version=2021-04-12").
		SetPassword(signForTest(t, key, host+"/devices/"+id, time.Now().Add(time.Hour))).
		SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(false).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) { return clientEnd, nil })
	cl := paho.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		clientEnd.Close()
		t.Fatalf("connect: %v", tok.Error())
	}
	return cl, clientEnd, served
}

// A device's subscriptions stay in its own state but not in mochi's topic
// index, which the front-end never routes through (it would hold a branch
// per device for its cloud-to-device filter); queued cloud-to-device
// messages are still delivered on the subscription.
func TestSubscriptionsLeaveMochisIndex(t *testing.T) {
	const host, id = "hub.test", "indexed"
	c := core.New(core.Config{IDScope: "0ne0", HubHost: host})
	key, err := c.CreateDevice(id)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Addr: "-", Model: c, MaxTelemetryBody: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cl, _, served := pipeDevice(t, s, host, id, key)
	got := make(chan []byte, 1)
	c2d := "devices/" + id + "/messages/devicebound/#"
	if tok := cl.SubscribeMultiple(map[string]byte{c2d: 1, "$iothub/methods/POST/#": 0}, func(_ paho.Client, m paho.Message) { got <- m.Payload() }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if err := c.SendCloudToDevice(t.Context(), id, []byte("hello"), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "hello" {
			t.Fatalf("cloud-to-device body %q", b)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cloud-to-device message not delivered")
	}
	// The subscriptions leave the index once their SUBACK is written, which
	// may be after the message above was delivered on them.
	for _, topic := range []string{"devices/" + id + "/messages/devicebound/x", "$iothub/methods/POST/m/?$rid=1"} {
		deadline := time.Now().Add(30 * time.Second)
		for len(s.srv.Topics.Subscribers(topic).Subscriptions) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("mochi's index still holds a subscriber for %s", topic)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if !s.connOf(mochiClient(t, s, id)).subscribed("devices/" + id + "/messages/devicebound/x") {
		t.Error("the device's own state lost its cloud-to-device subscription")
	}
	cl.Disconnect(100)
	<-served
}
