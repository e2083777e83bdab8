package domain

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// IoT Hub limits that messages run into.
const (
	// MaxTelemetrySize is the largest device-to-cloud message IoT Hub
	// accepts: 256 KiB, body and application properties together.
	MaxTelemetrySize = 256 << 10
	// MaxTwinSectionSize is the largest desired or reported section: 32 KiB.
	MaxTwinSectionSize = 32 << 10
	// MaxMethodPayloadSize is the largest direct-method payload each way: 128 KiB.
	MaxMethodPayloadSize = 128 << 10
	// MaxCloudToDeviceSize is the largest cloud-to-device message: 64 KiB.
	MaxCloudToDeviceSize = 64 << 10
)

// Defaults of a telemetry message; IoT Central routes JSON telemetry only
// with these two set.
const (
	DefaultContentType     = "application/json"
	DefaultContentEncoding = "utf-8"
)

// Message is one device-to-cloud telemetry message.
type Message struct {
	// Body is sent as is. NewJSONMessage fills it from a value.
	Body []byte
	// ContentType defaults to DefaultContentType when empty.
	ContentType string
	// ContentEncoding defaults to DefaultContentEncoding when empty.
	ContentEncoding string
	// MessageID is optional; the SDK sets a random one when empty.
	MessageID string
	// CorrelationID is optional.
	CorrelationID string
	// CreationTime, when set, is sent as iothub-creation-time-utc.
	CreationTime time.Time
	// Component is the IoT Plug and Play component ($.sub); empty for the
	// root interface.
	Component string
	// Properties are application properties. Keys starting with "$." or
	// "iothub-" are reserved (except iothub-creation-time-utc).
	Properties map[string]string

	// checked: Checked validated this message; Validate (and EncodeTopic)
	// then do not run the rules again. Only Checked sets it, so a message
	// is validated once on its way from the client to the wire.
	checked bool
}

// NewJSONMessage encodes v as the JSON body of a new message. A []byte or
// json.RawMessage is used as is.
func NewJSONMessage(v any) (Message, error) {
	var body []byte
	switch b := v.(type) {
	case json.RawMessage:
		body = b
	case []byte:
		body = b
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			return Message{}, fmt.Errorf("iotc: encode telemetry: %w", err)
		}
	}
	return Message{Body: body}, nil
}

// WithDefaults returns m with the content type and encoding defaulted.
func (m Message) WithDefaults() Message {
	if m.ContentType == "" {
		m.ContentType = DefaultContentType
	}
	if m.ContentEncoding == "" {
		m.ContentEncoding = DefaultContentEncoding
	}
	return m
}

// Validate checks the message against IoT Hub's rules before it is sent:
// it returns ErrMessageTooLarge when the body plus properties exceed
// MaxTelemetrySize, and ErrInvalidConfig for a reserved or empty property key.
func (m Message) Validate() error {
	if m.checked {
		return nil
	}
	if err := m.checkKeys(); err != nil {
		return err
	}
	if n := m.Size(); n > MaxTelemetrySize {
		return fmt.Errorf("%w: telemetry of %d bytes exceeds the IoT Hub limit of %d", ErrMessageTooLarge, n, MaxTelemetrySize)
	}
	return nil
}

// Checked validates m as Validate does and returns it marked as checked:
// Validate and EncodeTopic on the result (the transport's, on its way to
// the wire) do not run the rules again. Change nothing in a checked
// message; build a new one instead.
func (m Message) Checked() (Message, error) {
	if err := m.Validate(); err != nil {
		return m, err
	}
	m.checked = true
	return m, nil
}

// EncodeProperties validates m as Validate does and returns its property
// bag encoded for the MQTT topic (PropertyBag().Encode()). Errors are
// Validate's.
func (m Message) EncodeProperties() (string, error) {
	return m.EncodeTopic("")
}

// EncodeTopic validates m as Validate does and returns prefix followed by
// m's property bag, encoded as PropertyBag().Encode() encodes it, built in
// a single allocation for the common message (no creation time, at most
// one application property): the MQTT telemetry topic is
// EncodeTopic("devices/{id}/messages/events/"). Errors are Validate's:
// ErrInvalidConfig for a reserved or empty property key,
// ErrMessageTooLarge over MaxTelemetrySize.
func (m Message) EncodeTopic(prefix string) (string, error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	m = m.WithDefaults()
	var created string
	if !m.CreationTime.IsZero() {
		created = m.CreationTime.UTC().Format(time.RFC3339Nano)
	}
	var (
		keys []string
		one  [1]string // the usual single property, without a sorted copy
	)
	switch len(m.Properties) {
	case 0:
	case 1:
		for k := range m.Properties {
			one[0] = k
		}
		keys = one[:]
	default:
		keys = slices.Sorted(maps.Keys(m.Properties))
	}
	if created != "" {
		for i := 0; i < len(keys); i++ {
			if keys[i] == PropCreationTimeUTC { // the CreationTime field wins
				keys = append(keys[:i:i], keys[i+1:]...)
				break
			}
		}
	}
	system := [...]struct{ key, value string }{
		{escapedMessageID, m.MessageID}, {escapedCorrelationID, m.CorrelationID},
		{escapedContentType, m.ContentType}, {escapedContentEncoding, m.ContentEncoding},
		{escapedComponent, m.Component}, {PropCreationTimeUTC, created},
	}
	// Size the result exactly first, so that it is allocated once.
	n, pairs := len(prefix), 0
	for _, p := range system {
		if p.value != "" {
			n += len(p.key) + 1 + escapedLen(p.value)
			pairs++
		}
	}
	for _, k := range keys {
		n += escapedLen(k) + 1 + escapedLen(m.Properties[k])
		pairs++
	}
	if pairs > 1 {
		n += pairs - 1
	}
	var sb strings.Builder
	sb.Grow(n)
	sb.WriteString(prefix)
	first := true
	pair := func(key string, escapedKey bool, value string) {
		if !first {
			sb.WriteByte('&')
		}
		first = false
		if escapedKey {
			sb.WriteString(key)
		} else {
			writeEscaped(&sb, key)
		}
		sb.WriteByte('=')
		switch value {
		case DefaultContentType:
			sb.WriteString(escapedDefaultContentType)
		case DefaultContentEncoding:
			sb.WriteString(DefaultContentEncoding) // nothing to escape
		default:
			writeEscaped(&sb, value)
		}
	}
	for _, p := range system {
		if p.value != "" {
			pair(p.key, true, p.value)
		}
	}
	for _, k := range keys {
		pair(k, false, m.Properties[k])
	}
	return sb.String(), nil
}

// The system property keys as EscapeComponent encodes them.
const (
	escapedMessageID       = "%24.mid"
	escapedCorrelationID   = "%24.cid"
	escapedContentType     = "%24.ct"
	escapedContentEncoding = "%24.ce"
	escapedComponent       = "%24.sub"

	escapedDefaultContentType = "application%2Fjson"
)

func (m Message) checkKeys() error {
	for k := range m.Properties {
		if k == "" {
			return fmt.Errorf("%w: empty application property key", ErrInvalidConfig)
		}
		if strings.HasPrefix(k, "$.") || (len(k) >= 7 && strings.EqualFold(k[:7], "iothub-") && k != PropCreationTimeUTC) {
			return fmt.Errorf("%w: application property %q uses a reserved prefix", ErrInvalidConfig, k)
		}
	}
	return nil
}

// Size is the number of bytes IoT Hub counts against MaxTelemetrySize:
// the body and every property key and value.
// It is computed without building the bag.
func (m Message) Size() int {
	m = m.WithDefaults()
	n := len(m.Body)
	for _, p := range [...]struct{ k, v string }{
		{PropMessageID, m.MessageID}, {PropCorrelationID, m.CorrelationID},
		{PropContentType, m.ContentType}, {PropContentEncoding, m.ContentEncoding},
		{PropComponent, m.Component},
	} {
		if p.v != "" {
			n += len(p.k) + len(p.v)
		}
	}
	created := !m.CreationTime.IsZero()
	if created {
		n += len(PropCreationTimeUTC) + len(m.CreationTime.UTC().Format(time.RFC3339Nano))
	}
	for k, v := range m.Properties {
		if k == PropCreationTimeUTC && created {
			continue
		}
		n += len(k) + len(v)
	}
	return n
}

// PropertyBag returns the system properties then the application
// properties (sorted by key), with defaults applied, ready to encode once.
func (m Message) PropertyBag() PropertyBag {
	m = m.WithDefaults()
	bag := make(PropertyBag, 0, 6+len(m.Properties))
	add := func(k, v string) {
		if v != "" {
			bag = append(bag, BagEntry{Key: k, Value: v})
		}
	}
	add(PropMessageID, m.MessageID)
	add(PropCorrelationID, m.CorrelationID)
	add(PropContentType, m.ContentType)
	add(PropContentEncoding, m.ContentEncoding)
	add(PropComponent, m.Component)
	if !m.CreationTime.IsZero() {
		add(PropCreationTimeUTC, m.CreationTime.UTC().Format(time.RFC3339Nano))
	}
	for _, k := range slices.Sorted(maps.Keys(m.Properties)) {
		if k == PropCreationTimeUTC && !m.CreationTime.IsZero() {
			continue
		}
		bag = append(bag, BagEntry{Key: k, Value: m.Properties[k]})
	}
	return bag
}

// CloudMessage is a cloud-to-device message as the device receives it.
type CloudMessage struct {
	Body []byte
	// Properties holds every property of the message, system properties
	// under their "$." names (e.g. "$.mid") and application properties
	// (e.g. "method-name") under their own.
	Properties map[string]string
}

// MessageID returns the $.mid system property.
func (c CloudMessage) MessageID() string { return c.Properties[PropMessageID] }

// ParseCloudMessage builds a CloudMessage from a decoded property bag.
func ParseCloudMessage(body []byte, bag PropertyBag) CloudMessage {
	return CloudMessage{Body: body, Properties: bag.Map()}
}

// Outcome is how a cloud-to-device message is settled with IoT Hub.
type Outcome int

// Settlement outcomes of a cloud-to-device message, IoT Hub's three.
const (
	// Complete: the message was handled; the hub deletes it. MQTT sends
	// PUBACK; AMQP settles it accepted.
	Complete Outcome = iota
	// Abandon: the device cannot handle it now; the hub delivers it again
	// (up to its max delivery count, 10 by default). MQTT cannot abandon
	// on an open connection: the message is left unacknowledged and comes
	// again on the next connection; AMQP settles it released.
	Abandon
	// Reject: the message can never be handled; the hub dead-letters it.
	// AMQP settles it rejected; MQTT has no reject and sends PUBACK, as the
	// Azure IoT C SDK does, so the message is not delivered again.
	Reject
)

// String returns "complete", "abandon" or "reject".
func (o Outcome) String() string {
	switch o {
	case Complete:
		return "complete"
	case Abandon:
		return "abandon"
	case Reject:
		return "reject"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}
