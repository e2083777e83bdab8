package amqpcore

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/domain"
)

// Link attach properties and message vocabulary of IoT Hub over AMQP.
const (
	propClientVersion      = "com.microsoft:client-version"
	propAPIVersion         = "com.microsoft:api-version"
	propChannelCorrelation = "com.microsoft:channel-correlation-id"
	propModelID            = "com.microsoft:model-id"
	hubAPIVersion          = "2021-04-12"
	dpsAPIVersion          = "2019-03-31"
)

// newUUID returns a random (version 4) UUID.
func newUUID() goamqp.UUID { return goamqp.UUID(domain.NewUUID()) }

// parseUUID parses the canonical 8-4-4-4-12 form, either case.
func parseUUID(s string) (goamqp.UUID, bool) {
	var u goamqp.UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, false
	}
	return u, true
}

// textOf formats a scalar AMQP value as text: strings and symbols as they
// are, numbers in decimal, uuids in canonical form, binary as hex, times
// in RFC 3339. ok is false for nil, lists and maps.
func textOf(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case goamqp.Symbol:
		return string(v), true
	case goamqp.UUID:
		return v.String(), true
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

// annotation returns the message annotation key (symbol or string key,
// matched ignoring case).
func annotation(m *goamqp.Message, key string) (any, bool) {
	for k, v := range m.Annotations {
		var ks string
		switch k := k.(type) {
		case string:
			ks = k
		case goamqp.Symbol:
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
func appProp(props map[string]any, key string) (any, bool) {
	if v, ok := props[key]; ok {
		return v, true
	}
	for k, v := range props {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// bodyOf returns the application data of m: its data sections joined, or
// an amqp-value holding a string or binary; nil otherwise.
func bodyOf(m *goamqp.Message) []byte {
	switch len(m.Data) {
	case 0:
	case 1:
		return m.Data[0]
	default:
		var out []byte
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

// correlationOf is the correlation-id of m as text ("" when absent).
func correlationOf(m *goamqp.Message) string {
	if m.Properties == nil || m.Properties.CorrelationID == nil {
		return ""
	}
	s, _ := textOf(m.Properties.CorrelationID)
	return s
}
