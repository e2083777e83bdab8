package wire

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind classifies a topic a device publishes to.
type Kind int

// The request topics a device may publish to.
const (
	// KindTelemetry is devices/{id}/messages/events/{property bag}, or
	// devices/{id}/modules/{mid}/messages/events/{property bag} for a module.
	KindTelemetry Kind = iota + 1
	// KindTwinGet is $iothub/twin/GET/?$rid={rid}.
	KindTwinGet
	// KindTwinPatchReported is $iothub/twin/PATCH/properties/reported/?$rid={rid}.
	KindTwinPatchReported
	// KindMethodResponse is $iothub/methods/res/{status}/?$rid={rid}.
	KindMethodResponse
	// KindDPSRegister is $dps/registrations/PUT/iotdps-register/?$rid={rid}.
	KindDPSRegister
	// KindDPSPoll is $dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}.
	KindDPSPoll
)

// String names the kind for logs.
func (k Kind) String() string {
	switch k {
	case KindTelemetry:
		return "telemetry"
	case KindTwinGet:
		return "twin-get"
	case KindTwinPatchReported:
		return "twin-patch-reported"
	case KindMethodResponse:
		return "method-response"
	case KindDPSRegister:
		return "dps-register"
	case KindDPSPoll:
		return "dps-poll"
	}
	return "unknown"
}

// MaxTopicLen bounds the topics ParseTopic accepts (MQTT allows 65535).
const MaxTopicLen = 65535

// Topic is a parsed device-to-cloud topic.
type Topic struct {
	Kind Kind
	// DeviceID is the device named in a telemetry topic.
	DeviceID string
	// ModuleID is the module named in a module's telemetry topic, "" for
	// a device's.
	ModuleID string
	// PropertyBag is the raw (still encoded) property bag of a telemetry topic.
	PropertyBag string
	// RID is the $rid value exactly as sent (to be echoed unchanged).
	RID string
	// Status is the status code of a method response.
	Status int
	// OperationID is the operationId of a DPS poll, URL-decoded.
	OperationID string
}

const (
	prefixTwinGet        = "$iothub/twin/GET/"
	prefixTwinReported   = "$iothub/twin/PATCH/properties/reported/"
	prefixMethodResponse = "$iothub/methods/res/"
	prefixDPSRegister    = "$dps/registrations/PUT/iotdps-register/"
	prefixDPSPoll        = "$dps/registrations/GET/iotdps-get-operationstatus/"
	telemetryInfix       = "/messages/events"
)

// ParseTopic classifies a device-to-cloud publish topic and extracts its
// parameters. Request topics must carry a non-empty $rid; a method response
// needs a numeric status; a DPS poll needs an operationId. Every other topic
// (including another service's topics and cloud-to-device topics) returns
// an error wrapping ErrMalformed. It never checks who may use the topic: see
// PublishAllowed. On error the Topic is the zero value.
func ParseTopic(topic string) (Topic, error) {
	t, err := parseTopic(topic)
	if err != nil {
		return Topic{}, err
	}
	return t, nil
}

func parseTopic(topic string) (Topic, error) {
	var t Topic
	if topic == "" || len(topic) > MaxTopicLen {
		return t, fmt.Errorf("%w: topic length %d", ErrMalformed, len(topic))
	}
	if strings.ContainsAny(topic, "+#\x00") {
		return t, fmt.Errorf("%w: topic %q has a wildcard or NUL", ErrMalformed, topic)
	}
	switch {
	case strings.HasPrefix(topic, "devices/"):
		rest := topic[len("devices/"):]
		id, after, ok := strings.Cut(rest, "/")
		if !ok || id == "" {
			break
		}
		if m, ok := strings.CutPrefix(after, "modules/"); ok {
			mid, mafter, ok := strings.Cut(m, "/")
			if !ok || mid == "" {
				break
			}
			t.ModuleID, after = mid, mafter
		}
		bag, ok := strings.CutPrefix(after, "messages/events")
		if !ok || (bag != "" && bag[0] != '/') {
			break
		}
		t.Kind, t.DeviceID, t.PropertyBag = KindTelemetry, id, strings.TrimPrefix(bag, "/")
		return t, nil
	case strings.HasPrefix(topic, prefixTwinGet):
		return requestTopic(KindTwinGet, topic[len(prefixTwinGet):])
	case strings.HasPrefix(topic, prefixTwinReported):
		return requestTopic(KindTwinPatchReported, topic[len(prefixTwinReported):])
	case strings.HasPrefix(topic, prefixMethodResponse):
		status, q, ok := strings.Cut(topic[len(prefixMethodResponse):], "/")
		n, err := strconv.Atoi(status)
		if !ok || err != nil || n < 0 || n > 999 {
			return t, fmt.Errorf("%w: method response topic %q needs a status code", ErrMalformed, topic)
		}
		t, err = requestTopic(KindMethodResponse, q)
		t.Status = n
		return t, err
	case strings.HasPrefix(topic, prefixDPSRegister):
		return requestTopic(KindDPSRegister, topic[len(prefixDPSRegister):])
	case strings.HasPrefix(topic, prefixDPSPoll):
		t, err := requestTopic(KindDPSPoll, topic[len(prefixDPSPoll):])
		if err != nil {
			return t, err
		}
		if t.OperationID == "" {
			return t, fmt.Errorf("%w: poll topic %q has no operationId", ErrMalformed, topic)
		}
		return t, nil
	}
	return Topic{}, fmt.Errorf("%w: unknown topic %q", ErrMalformed, topic)
}

// requestTopic parses "?$rid=..&k=v" after a request prefix.
func requestTopic(kind Kind, q string) (Topic, error) {
	t := Topic{Kind: kind}
	q, ok := strings.CutPrefix(q, "?")
	if !ok {
		return t, fmt.Errorf("%w: %s topic has no query", ErrMalformed, kind)
	}
	for _, seg := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(seg, "=")
		switch unescapeLenient(k) {
		case "$rid":
			if t.RID == "" {
				t.RID = v
			}
		case "operationId":
			if t.OperationID == "" {
				t.OperationID = unescapeLenient(v)
			}
		}
	}
	if t.RID == "" {
		return t, fmt.Errorf("%w: %s topic has no $rid", ErrMalformed, kind)
	}
	return t, nil
}

// PublishAllowed reports whether a connection of role may publish to the
// parsed topic t: a hub device only to its own telemetry topic and to the
// twin and method requests; a DPS connection only to its register and poll
// requests. deviceID is the connection's identity (RoleHub): a device id,
// or "{deviceId}/{moduleId}" for a module, whose telemetry topic is
// devices/{deviceId}/modules/{moduleId}/messages/events/.
func PublishAllowed(role Role, deviceID string, t Topic) bool {
	switch role {
	case RoleHub:
		switch t.Kind {
		case KindTelemetry:
			if t.ModuleID != "" {
				return t.DeviceID+"/"+t.ModuleID == deviceID
			}
			return t.DeviceID == deviceID
		case KindTwinGet, KindTwinPatchReported, KindMethodResponse:
			return true
		}
	case RoleDPS:
		return t.Kind == KindDPSRegister || t.Kind == KindDPSPoll
	}
	return false
}

// C2DFilterPrefix is the start of every cloud-to-device filter of deviceID.
func C2DFilterPrefix(deviceID string) string {
	return "devices/" + deviceID + "/messages/devicebound/"
}

// SubscribeAllowed reports whether a connection of role may subscribe to
// filter: a hub device to filters under $iothub/twin/, $iothub/methods/ and
// its own devices/{id}/messages/devicebound/ (a module, whose deviceID is
// "{deviceId}/{moduleId}", has no cloud-to-device messages); a DPS
// connection to filters under $dps/registrations/res/. Invalid filters
// are refused.
func SubscribeAllowed(role Role, deviceID, filter string) bool {
	if !ValidFilter(filter) {
		return false
	}
	switch role {
	case RoleHub:
		return strings.HasPrefix(filter, "$iothub/twin/") ||
			strings.HasPrefix(filter, "$iothub/methods/") ||
			(deviceID != "" && !strings.Contains(deviceID, "/") && strings.HasPrefix(filter, C2DFilterPrefix(deviceID)))
	case RoleDPS:
		return strings.HasPrefix(filter, "$dps/registrations/res/")
	}
	return false
}

// ValidFilter reports whether filter is a well-formed MQTT topic filter:
// not empty, '#' only as the whole last level, '+' only as a whole level.
func ValidFilter(filter string) bool {
	if filter == "" || len(filter) > MaxTopicLen || strings.ContainsRune(filter, 0) {
		return false
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

// MatchFilter reports whether topic matches the MQTT filter. As MQTT
// requires, a filter starting with a wildcard does not match a topic that
// starts with '$'.
func MatchFilter(filter, topic string) bool {
	if !ValidFilter(filter) || topic == "" {
		return false
	}
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fl := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) {
			return false
		}
		if f != "+" && f != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}
