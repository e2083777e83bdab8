package mqtthub

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/wire"
)

// Until its CONNACK is written, a connection is reached by nothing: a
// persistent session's inherited subscriptions are in place before the
// CONNACK, and a method or desired patch sent then would reach the device
// before its CONNACK (it fails the connection and the command is lost).
func TestNothingReachesADeviceBeforeItsCONNACK(t *testing.T) {
	s, err := New(Config{Addr: "-", MaxTelemetryBody: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	var got atomic.Int64 // bytes the device received
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		buf := make([]byte, 4096)
		for {
			n, err := client.Read(buf)
			got.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	cl := s.srv.NewClient(server, "test", "dev1", false)
	for _, f := range []string{"$iothub/methods/POST/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/twin/res/#", "devices/dev1/messages/devicebound/#"} {
		cl.State.Subscriptions.Add(f, packets.Subscription{Filter: f})
	}
	c := &conn{s: s, cl: cl, role: wire.RoleHub, id: "dev1"}
	for _, f := range []core.Feature{core.FeatureMethods, core.FeatureDesired, core.FeatureTwin, core.FeatureC2D} {
		if c.Subscribed(f) {
			t.Errorf("subscribed to %v before the CONNACK", f)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a call that would send returns at once instead of waiting for an answer
	if _, _, err := c.InvokeMethod(ctx, "reboot", nil); !errors.Is(err, errNotSubscribed) {
		t.Errorf("a method before the CONNACK: %v, want it refused as not subscribed", err)
	}
	if err := c.PushDesired([]byte(`{}`), 2); err != nil {
		t.Errorf("a desired patch before the CONNACK: %v, want nothing sent", err)
	}
	c.NotifyC2D()
	_ = server.Close()
	<-drained
	if n := got.Load(); n != 0 {
		t.Errorf("the device received %d bytes before its CONNACK", n)
	}
	c.established.Store(true)
	for _, f := range []core.Feature{core.FeatureMethods, core.FeatureDesired, core.FeatureTwin, core.FeatureC2D} {
		if !c.Subscribed(f) {
			t.Errorf("not subscribed to %v after the CONNACK", f)
		}
	}
}
