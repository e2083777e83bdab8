package devicehttp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// appPrefix starts the name of an application property's header.
const appPrefix = "iothub-app-"

// systemSetter stores one system property named by its header (or batch
// property) name into t.
var systemSetters = map[string]func(t *core.Telemetry, v string){
	"iothub-messageid":         func(t *core.Telemetry, v string) { t.MessageID = v },
	"iothub-correlationid":     func(t *core.Telemetry, v string) { t.CorrelationID = v },
	"iothub-contenttype":       func(t *core.Telemetry, v string) { t.ContentType = v },
	"iothub-contentencoding":   func(t *core.Telemetry, v string) { t.ContentEncoding = v },
	"iothub-userid":            func(t *core.Telemetry, v string) { t.System[core.PropUserID] = v },
	"iothub-to":                func(t *core.Telemetry, v string) { t.System[core.PropTo] = v },
	"iothub-expiry":            func(t *core.Telemetry, v string) { t.System[core.PropExpiry] = v },
	"iothub-creation-time-utc": func(t *core.Telemetry, v string) { t.System[core.PropCreationTime] = v },
	"iothub-interface-id":      func(t *core.Telemetry, v string) { t.System[core.PropInterfaceID] = v },
	"dt-subject":               func(t *core.Telemetry, v string) { t.Component = v },
	"dt-dataschema":            func(t *core.Telemetry, v string) { t.System[core.PropDataSchema] = v },
}

// setProperty stores one header or batch property (name as sent) into t:
// an iothub-app-{name} application property under {name}, a system
// property by its IoT Hub name; others are ignored, as IoT Hub does.
func setProperty(t *core.Telemetry, name, value string) error {
	lower := strings.ToLower(name)
	if rest, ok := strings.CutPrefix(lower, appPrefix); ok {
		if rest == "" {
			return fmt.Errorf("%w: an application property has an empty name", ErrBadRequest)
		}
		t.Properties[name[len(appPrefix):]] = value
		return nil
	}
	if set, ok := systemSetters[lower]; ok {
		set(t, value)
	}
	return nil
}

// size is what IoT Hub counts against its message limit: the body and
// every property's name and value.
func size(t core.Telemetry) int {
	n := len(t.Body) + len(t.MessageID) + len(t.CorrelationID) + len(t.ContentType) + len(t.ContentEncoding) + len(t.Component)
	for k, v := range t.Properties {
		n += len(k) + len(v)
	}
	for k, v := range t.System {
		n += len(k) + len(v)
	}
	return n
}

// events takes one message or a batch and stores each into the core's
// telemetry, as from any transport; 204 once stored.
func (h *Handler) events(w http.ResponseWriter, r *http.Request, id Identity) error {
	if err := h.admit(r.Context(), id, core.OpTelemetry); err != nil {
		return err
	}
	batch := false
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		batch = err == nil && strings.EqualFold(mt, BatchContentType)
	}
	var msgs []core.Telemetry
	var err error
	if batch {
		msgs, err = readBatch(w, r)
	} else {
		var t core.Telemetry
		t, err = readSingle(w, r)
		msgs = []core.Telemetry{t}
	}
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	for _, t := range msgs {
		t.DeviceID, t.ModuleID, t.AuthMethod, t.Received = id.DeviceID, id.ModuleID, id.AuthMethod, now
		if err := h.core.StoreTelemetry(t); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func newTelemetry() core.Telemetry {
	return core.Telemetry{Properties: map[string]string{}, System: map[string]string{}}
}

// readSingle reads a message whose body is the request's and whose
// properties are its headers. Header names arrive case-folded (HTTP header
// names are case-insensitive): application property names are lower-cased.
func readSingle(w http.ResponseWriter, r *http.Request) (core.Telemetry, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxMessage))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return core.Telemetry{}, fmt.Errorf("%w: the message body exceeds %d bytes", core.ErrTooLarge, MaxMessage)
		}
		return core.Telemetry{}, fmt.Errorf("%w: read body: %v", ErrBadRequest, err)
	}
	t := newTelemetry()
	t.Body = body
	for name, vals := range r.Header {
		if len(vals) == 0 {
			continue
		}
		if err := setProperty(&t, strings.ToLower(name), vals[0]); err != nil {
			return core.Telemetry{}, err
		}
	}
	if n := size(t); n > MaxMessage {
		return core.Telemetry{}, fmt.Errorf("%w: the message, body and properties, is %d bytes, over %d", core.ErrTooLarge, n, MaxMessage)
	}
	return t, nil
}

// batchItem is one message of a batch.
type batchItem struct {
	Body          *string         `json:"body"`
	Base64Encoded *bool           `json:"base64Encoded"`
	Properties    json.RawMessage `json:"properties"`
}

// readBatch reads a JSON array of messages: "body" base64 (or the text
// itself with "base64Encoded": false), "properties" named as the headers
// of a single message (iothub-app-{name}, iothub-messageid, ...; names keep
// their case).
func readBatch(w http.ResponseWriter, r *http.Request) ([]core.Telemetry, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBatchRequest))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("%w: the batch request exceeds %d bytes", core.ErrTooLarge, MaxBatchRequest)
		}
		return nil, fmt.Errorf("%w: read body: %v", ErrBadRequest, err)
	}
	var items []batchItem
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&items); err != nil {
		return nil, fmt.Errorf("%w: the batch is not a JSON array of {body, base64Encoded, properties}: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the batch's JSON array", ErrBadRequest)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("%w: the batch holds no message", ErrBadRequest)
	}
	if len(items) > MaxBatchMessages {
		return nil, fmt.Errorf("%w: the batch holds %d messages, at most %d", ErrBadRequest, len(items), MaxBatchMessages)
	}
	out := make([]core.Telemetry, 0, len(items))
	total := 0
	for i, it := range items {
		if it.Body == nil {
			return nil, fmt.Errorf("%w: batch message %d has no string \"body\"", ErrBadRequest, i)
		}
		t := newTelemetry()
		if it.Base64Encoded == nil || *it.Base64Encoded {
			t.Body, err = base64.StdEncoding.DecodeString(*it.Body)
			if err != nil {
				return nil, fmt.Errorf("%w: batch message %d: body is not base64: %v", ErrBadRequest, i, err)
			}
		} else {
			t.Body = []byte(*it.Body)
		}
		if len(it.Properties) > 0 && string(it.Properties) != "null" {
			var props map[string]string
			if err := json.Unmarshal(it.Properties, &props); err != nil {
				return nil, fmt.Errorf("%w: batch message %d: properties must be an object of strings: %v", ErrBadRequest, i, err)
			}
			for k, v := range props {
				if err := setProperty(&t, k, v); err != nil {
					return nil, fmt.Errorf("batch message %d: %w", i, err)
				}
			}
		}
		n := size(t)
		if n > MaxMessage {
			return nil, fmt.Errorf("%w: batch message %d is %d bytes, over %d", core.ErrTooLarge, i, n, MaxMessage)
		}
		if total += n; total > MaxBatch {
			return nil, fmt.Errorf("%w: the batch's messages exceed %d bytes", core.ErrTooLarge, MaxBatch)
		}
		out = append(out, t)
	}
	return out, nil
}
