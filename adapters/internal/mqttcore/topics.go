package mqttcore

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/iotc-go/iotc/domain"
)

// API versions announced in CONNECT usernames.
const (
	// HubAPIVersion is the IoT Hub MQTT api-version (the one that carries
	// the IoT Plug and Play model-id).
	HubAPIVersion = "2021-04-12"
	// DPSAPIVersion is the Device Provisioning Service api-version.
	DPSAPIVersion = "2019-03-31"
)

// Subscription filters of IoT Hub and DPS over MQTT (IoT Hub allows a
// device at most 5 subscriptions; a session uses 4).
const (
	// TopicTwinResFilter receives twin GET and PATCH responses.
	TopicTwinResFilter = "$iothub/twin/res/#"
	// TopicDesiredFilter receives desired-property patches.
	TopicDesiredFilter = "$iothub/twin/PATCH/properties/desired/#"
	// TopicMethodsFilter receives direct-method requests.
	TopicMethodsFilter = "$iothub/methods/POST/#"
	// TopicDPSResFilter receives DPS responses.
	TopicDPSResFilter = "$dps/registrations/res/#"
)

const (
	topicTwinResPrefix     = "$iothub/twin/res/"
	topicDesiredPrefix     = "$iothub/twin/PATCH/properties/desired/"
	topicMethodsPrefix     = "$iothub/methods/POST/"
	topicDPSResPrefix      = "$dps/registrations/res/"
	topicTwinGet           = "$iothub/twin/GET/?$rid="
	topicTwinPatchReported = "$iothub/twin/PATCH/properties/reported/?$rid="
	topicDPSRegister       = "$dps/registrations/PUT/iotdps-register/?$rid="
	topicDPSPoll           = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="
)

// errTopic is wrapped by every topic parser error.
var errTopic = errors.New("unexpected topic")

// maxTopicLen bounds the topics the parsers accept (the MQTT limit).
const maxTopicLen = 65535

// HubUsername is the CONNECT user name of a device on an IoT hub:
// "{host}/{deviceID}/?api-version=...&model-id={escaped}&DeviceClientType={escaped}".
// model-id is left out when modelID is empty. It holds no secret.
func HubUsername(host, deviceID, modelID, clientVersion string) string {
	var sb strings.Builder
	sb.WriteString(host)
	sb.WriteByte('/')
	sb.WriteString(deviceID)
	sb.WriteString("/?api-version=")
	sb.WriteString(HubAPIVersion)
	if modelID != "" {
		sb.WriteString("&model-id=")
		sb.WriteString(domain.EscapeComponent(modelID))
	}
	if clientVersion != "" {
		sb.WriteString("&DeviceClientType=")
		sb.WriteString(domain.EscapeComponent(clientVersion))
	}
	return sb.String()
}

// DPSUsername is the CONNECT user name of a registration at DPS:
// "{idScope}/registrations/{registrationID}/api-version=...&ClientVersion={escaped}"
// (no '?' before api-version, as DPS expects). It holds no secret.
func DPSUsername(idScope, registrationID, clientVersion string) string {
	s := idScope + "/registrations/" + registrationID + "/api-version=" + DPSAPIVersion
	if clientVersion != "" {
		s += "&ClientVersion=" + domain.EscapeComponent(clientVersion)
	}
	return s
}

// TelemetryTopic is the topic of a device-to-cloud message with its
// property bag already encoded: "devices/{id}/messages/events/{bag}".
func TelemetryTopic(deviceID, encodedBag string) string {
	return "devices/" + deviceID + "/messages/events/" + encodedBag
}

// CloudToDeviceFilter is the subscription filter of cloud-to-device
// messages: "devices/{id}/messages/devicebound/#".
func CloudToDeviceFilter(deviceID string) string {
	return "devices/" + deviceID + "/messages/devicebound/#"
}

// MethodResponseTopic is "$iothub/methods/res/{status}/?$rid={rid}".
func MethodResponseTopic(status int, rid string) string {
	return "$iothub/methods/res/" + strconv.Itoa(status) + "/?$rid=" + rid
}

// queryValue returns the value of key in a "k=v&k=v" query (URL-decoded;
// the raw value when it is not valid escaping) and whether it was there.
func queryValue(query, key string) (string, bool) {
	for seg := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(seg, "=")
		if k != key {
			if dk, err := url.QueryUnescape(k); err != nil || dk != key {
				continue
			}
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			return dv, true
		}
		return v, true
	}
	return "", false
}

// splitStatusQuery parses "{status}/?{query}" (the part of a response
// topic after its prefix) into the status and the query.
func splitStatusQuery(rest string) (int, string, error) {
	statusText, query, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, "", fmt.Errorf("%w: no '/' after the status", errTopic)
	}
	status, err := strconv.Atoi(statusText)
	if err != nil || status < 100 || status > 999 {
		return 0, "", fmt.Errorf("%w: status %q is not a 3-digit number", errTopic, statusText)
	}
	query = strings.TrimPrefix(query, "?")
	return status, query, nil
}

// TwinResponse is a parsed "$iothub/twin/res/{status}/?$rid={rid}[&$version={n}]" topic.
type TwinResponse struct {
	// Status is the hub's status (200 GET, 204 PATCH, 4xx/5xx refusals).
	Status int
	// RID is the $rid of the request answered.
	RID string
	// Version is the $version of a reported patch response; HasVersion
	// says whether it was present.
	Version    int64
	HasVersion bool
}

// ParseTwinResponseTopic parses a twin response topic. It returns an error
// (never panics) for any other topic or a missing $rid.
func ParseTwinResponseTopic(topic string) (TwinResponse, error) {
	var r TwinResponse
	if len(topic) > maxTopicLen {
		return r, fmt.Errorf("%w: %d bytes", errTopic, len(topic))
	}
	rest, ok := strings.CutPrefix(topic, topicTwinResPrefix)
	if !ok {
		return r, fmt.Errorf("%w: not a twin response", errTopic)
	}
	status, query, err := splitStatusQuery(rest)
	if err != nil {
		return r, err
	}
	r.Status = status
	if r.RID, ok = queryValue(query, "$rid"); !ok || r.RID == "" {
		return r, fmt.Errorf("%w: twin response without $rid", errTopic)
	}
	if v, ok := queryValue(query, "$version"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return r, fmt.Errorf("%w: twin response $version %q", errTopic, v)
		}
		r.Version, r.HasVersion = n, true
	}
	return r, nil
}

// ParseMethodRequestTopic parses "$iothub/methods/POST/{name}/?$rid={rid}"
// into the (URL-decoded) method name and the raw rid.
func ParseMethodRequestTopic(topic string) (name, rid string, err error) {
	if len(topic) > maxTopicLen {
		return "", "", fmt.Errorf("%w: %d bytes", errTopic, len(topic))
	}
	rest, ok := strings.CutPrefix(topic, topicMethodsPrefix)
	if !ok {
		return "", "", fmt.Errorf("%w: not a method request", errTopic)
	}
	i := strings.LastIndex(rest, "/?")
	if i < 0 {
		return "", "", fmt.Errorf("%w: method request without query", errTopic)
	}
	rawName, query := rest[:i], rest[i+2:]
	if name, err = url.PathUnescape(rawName); err != nil {
		name = rawName
	}
	if name == "" {
		return "", "", fmt.Errorf("%w: method request without a name", errTopic)
	}
	for seg := range strings.SplitSeq(query, "&") {
		if v, ok := strings.CutPrefix(seg, "$rid="); ok {
			rid = v
			break
		}
	}
	if rid == "" {
		return "", "", fmt.Errorf("%w: method request without $rid", errTopic)
	}
	return name, rid, nil
}

// ParseDesiredPatchTopic checks "$iothub/twin/PATCH/properties/desired/?$version={n}"
// and returns the version when the topic carries one (0 otherwise; the
// body's $version is authoritative).
func ParseDesiredPatchTopic(topic string) (int64, error) {
	if len(topic) > maxTopicLen {
		return 0, fmt.Errorf("%w: %d bytes", errTopic, len(topic))
	}
	rest, ok := strings.CutPrefix(topic, topicDesiredPrefix)
	if !ok {
		return 0, fmt.Errorf("%w: not a desired patch", errTopic)
	}
	v, ok := queryValue(strings.TrimPrefix(rest, "?"), "$version")
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: desired patch $version %q", errTopic, v)
	}
	return n, nil
}

// ParseCloudToDeviceTopic parses "devices/{deviceID}/messages/devicebound/{bag}"
// for the given device and decodes its property bag.
func ParseCloudToDeviceTopic(deviceID, topic string) (domain.PropertyBag, error) {
	if len(topic) > maxTopicLen {
		return nil, fmt.Errorf("%w: %d bytes", errTopic, len(topic))
	}
	bag, ok := strings.CutPrefix(topic, "devices/"+deviceID+"/messages/devicebound")
	if !ok {
		return nil, fmt.Errorf("%w: not a cloud-to-device message for this device", errTopic)
	}
	bag = strings.TrimPrefix(bag, "/")
	props, err := domain.DecodePropertyBag(bag)
	if err != nil {
		return nil, fmt.Errorf("%w: cloud-to-device property bag: %w", domain.ErrMalformed, err)
	}
	return props, nil
}

// DPSResponse is a parsed "$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]" topic.
type DPSResponse struct {
	// Status is DPS's status (200 final, 202 in progress, 429/5xx transient).
	Status int
	// RID is the $rid of the request answered.
	RID string
	// RetryAfter is the retry-after value, or -1 when absent (then
	// domain.ClampPollInterval applies the default).
	RetryAfter time.Duration
}

// ParseDPSResponseTopic parses a DPS response topic. retry-after is read
// as whole seconds; an unparsable value counts as absent.
func ParseDPSResponseTopic(topic string) (DPSResponse, error) {
	r := DPSResponse{RetryAfter: -1}
	if len(topic) > maxTopicLen {
		return r, fmt.Errorf("%w: %d bytes", errTopic, len(topic))
	}
	rest, ok := strings.CutPrefix(topic, topicDPSResPrefix)
	if !ok {
		return r, fmt.Errorf("%w: not a DPS response", errTopic)
	}
	status, query, err := splitStatusQuery(rest)
	if err != nil {
		return r, err
	}
	r.Status = status
	if r.RID, ok = queryValue(query, "$rid"); !ok || r.RID == "" {
		return r, fmt.Errorf("%w: DPS response without $rid", errTopic)
	}
	if v, ok := queryValue(query, "retry-after"); ok {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= 0 {
			r.RetryAfter = time.Duration(min(n, int64(domain.MaxPollInterval/time.Second))) * time.Second
		}
	}
	return r, nil
}
