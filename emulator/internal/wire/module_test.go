package wire

import "testing"

// A module's telemetry topic names its device and module; a module
// connection ("{device}/{module}") may publish to its own topic only, and
// subscribe to no cloud-to-device filter.
func TestModuleTopics(t *testing.T) {
	tp, err := ParseTopic("devices/d1/modules/m1/messages/events/%24.mid=x&a=b")
	if err != nil || tp.Kind != KindTelemetry || tp.DeviceID != "d1" || tp.ModuleID != "m1" || tp.PropertyBag != "%24.mid=x&a=b" {
		t.Fatalf("module telemetry topic: %+v %v", tp, err)
	}
	for _, bad := range []string{"devices/d1/modules//messages/events/", "devices/d1/modules/m1", "devices/d1/modules/m1/messages/eventsx", "devices/d1/modules/m1/inputs/x"} {
		if _, err := ParseTopic(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	for _, c := range []struct {
		id, topic string
		ok        bool
	}{
		{"d1/m1", "devices/d1/modules/m1/messages/events/", true},
		{"d1/m1", "devices/d1/modules/m2/messages/events/", false},
		{"d1/m1", "devices/d1/messages/events/", false},
		{"d1", "devices/d1/modules/m1/messages/events/", false},
		{"d1", "devices/d1/messages/events/", true},
	} {
		tp, err := ParseTopic(c.topic)
		if err != nil {
			t.Fatal(err)
		}
		if got := PublishAllowed(RoleHub, c.id, tp); got != c.ok {
			t.Errorf("%s publishing to %s: %v, want %v", c.id, c.topic, got, c.ok)
		}
	}
	for _, f := range []string{"devices/d1/modules/m1/messages/devicebound/#", "devices/d1/m1/messages/devicebound/#", "devices/d1/messages/devicebound/#"} {
		if SubscribeAllowed(RoleHub, "d1/m1", f) {
			t.Errorf("module subscribed to %s", f)
		}
	}
	if !SubscribeAllowed(RoleHub, "d1/m1", "$iothub/methods/POST/#") || !SubscribeAllowed(RoleHub, "d1", "devices/d1/messages/devicebound/#") {
		t.Error("allowed subscriptions refused")
	}
}
