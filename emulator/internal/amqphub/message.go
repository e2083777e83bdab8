package amqphub

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// batchFormat is the message-format of a batch: every data section holds one
// encoded message (Node's sendEventBatch, AMQP_BATCHING_FORMAT_CODE).
const batchFormat = 0x80013700

// maxBatch bounds the messages of one batch.
const maxBatch = 500

// annotation returns the message annotation key (symbol or string key,
// matched ignoring case).
func annotation(m *amqp.Message, key string) (any, bool) {
	for k, v := range m.Annotations {
		var ks string
		switch k := k.(type) {
		case string:
			ks = k
		case amqp.Symbol:
			ks = string(k)
		default:
			continue
		}
		if strings.EqualFold(ks, key) {
			return v, true
		}
	}
	return nil, false
}

// appProp returns the application property key, matched ignoring case.
func appProp(m *amqp.Message, key string) (any, bool) {
	if v, ok := m.ApplicationProperties[key]; ok {
		return v, true
	}
	for k, v := range m.ApplicationProperties {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// textOf formats a scalar AMQP value as text: strings and symbols as they
// are, numbers in decimal, uuids in canonical form, binary as hex, times
// in RFC 3339. ok is false for nil, lists and maps.
func textOf(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case amqp.Symbol:
		return string(v), true
	case amqp.UUID:
		return formatUUID(v), true
	case []byte:
		return hex.EncodeToString(v), true
	case bool:
		return strconv.FormatBool(v), true
	case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64, uint:
		return fmt.Sprint(v), true
	case float32:
		return strconv.FormatFloat(float64(v), 'g', -1, 32), true
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano), true
	}
	return "", false
}

// intOf converts an integer AMQP value, or a decimal string, to int64.
func intOf(v any) (int64, bool) {
	switch v := v.(type) {
	case int8:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case int64:
		return v, true
	case int:
		return int64(v), true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	case uint64:
		if v > 1<<62 {
			return 0, false
		}
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// formatUUID formats u as 8-4-4-4-12 lowercase hex.
func formatUUID(u amqp.UUID) string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// parseUUID parses the canonical 8-4-4-4-12 form (either case, optional braces).
func parseUUID(s string) (amqp.UUID, bool) {
	var u amqp.UUID
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, false
	}
	return u, true
}

// bodyOf returns the application data of m: its data sections joined, or
// an amqp-value holding a string or binary; nil otherwise.
func bodyOf(m *amqp.Message) []byte {
	if len(m.Data) == 1 {
		return m.Data[0]
	}
	if len(m.Data) > 1 {
		n := 0
		for _, d := range m.Data {
			n += len(d)
		}
		out := make([]byte, 0, n)
		for _, d := range m.Data {
			out = append(out, d...)
		}
		return out
	}
	switch v := m.Value.(type) {
	case string:
		return []byte(v)
	case []byte:
		return v
	}
	return nil
}

// bodyLen returns len(bodyOf(m)) without copying.
func bodyLen(m *amqp.Message) int {
	n := 0
	for _, d := range m.Data {
		n += len(d)
	}
	if len(m.Data) == 0 {
		switch v := m.Value.(type) {
		case string:
			n = len(v)
		case []byte:
			n = len(v)
		}
	}
	return n
}

// telemetryOf maps a device-to-cloud AMQP message to the core's telemetry
// (E.4). The body is copied: the delivery's buffer is the connection's.
func telemetryOf(m *amqp.Message) core.Telemetry {
	t := core.Telemetry{Body: slices.Clone(bodyOf(m)), System: map[string]string{}, Properties: map[string]string{}}
	if p := m.Properties; p != nil {
		t.MessageID, _ = textOf(p.MessageID)
		t.CorrelationID, _ = textOf(p.CorrelationID)
		if p.ContentType != nil {
			t.ContentType = *p.ContentType
		}
		if p.ContentEncoding != nil {
			t.ContentEncoding = *p.ContentEncoding
		}
		if p.To != nil {
			t.System[core.PropTo] = *p.To
		}
		if len(p.UserID) > 0 {
			t.System[core.PropUserID] = string(p.UserID)
		}
		if p.AbsoluteExpiryTime != nil && !p.AbsoluteExpiryTime.IsZero() {
			t.System[core.PropExpiry] = p.AbsoluteExpiryTime.UTC().Format(time.RFC3339Nano)
		}
	}
	if v, ok := annotation(m, "dt-subject"); ok {
		t.Component, _ = textOf(v)
	}
	for _, k := range []string{core.PropInterfaceID, core.PropDataSchema} {
		if v, ok := annotation(m, k); ok {
			setText(t.System, k, v)
		}
	}
	for k, v := range m.ApplicationProperties {
		if s, ok := textOf(v); ok {
			t.Properties[k] = s
		}
	}
	return t
}

func setText(dst map[string]string, key string, v any) {
	if s, ok := textOf(v); ok {
		dst[key] = s
	}
}

// c2dMessageOf builds the AMQP message of a cloud-to-device message (E.5).
func c2dMessageOf(deviceID string, c core.C2DMessage) *amqp.Message {
	to := "/devices/" + deviceID + "/messages/devicebound"
	m := &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: c.MessageID, To: &to},
		Data:       [][]byte{c.Body},
	}
	if c.CorrelationID != "" {
		m.Properties.CorrelationID = c.CorrelationID
	}
	if c.UserID != "" {
		m.Properties.UserID = []byte(c.UserID)
	}
	if len(c.Properties) > 0 {
		m.ApplicationProperties = make(map[string]any, len(c.Properties))
		for k, v := range c.Properties {
			m.ApplicationProperties[k] = v
		}
	}
	return m
}
