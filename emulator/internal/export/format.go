package export

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Schema is the "schema" of every exported message.
const Schema = "default@v1"

// Application properties of exported Event Hubs messages (the same values
// as the body's fields).
const (
	PropDeviceID      = "iotcentral-device-id"
	PropApplicationID = "iotcentral-application-id"
	PropMessageSource = "iotcentral-message-source"
	PropMessageType   = "iotcentral-message-type"
)

// timeLayout is IoT Central's enqueuedTime: UTC with milliseconds.
const timeLayout = "2006-01-02T15:04:05.000Z"

// Message is one exported message: its JSON body and the application
// properties an Event Hubs destination adds.
type Message struct {
	// DeviceID is the device ("" for a template lifecycle message).
	DeviceID string
	// Body is the JSON message in IoT Central's export format.
	Body []byte
	// Properties are the iotcentral-* application properties.
	Properties map[string]string
}

// wireMessage is the export format; field order follows IoT Central's
// documented examples.
type wireMessage struct {
	ApplicationID     string             `json:"applicationId"`
	MessageSource     string             `json:"messageSource"`
	MessageType       string             `json:"messageType,omitempty"`
	DeviceID          string             `json:"deviceId,omitempty"`
	Schema            string             `json:"schema"`
	TemplateID        string             `json:"templateId,omitempty"`
	EnqueuedTime      string             `json:"enqueuedTime"`
	Telemetry         json.RawMessage    `json:"telemetry,omitempty"`
	Properties        []PropertyChange   `json:"properties,omitempty"`
	Enrichments       map[string]any     `json:"enrichments"`
	Module            string             `json:"module,omitempty"`
	Component         string             `json:"component,omitempty"`
	MessageProperties *map[string]string `json:"messageProperties,omitempty"`
}

// PropertyChange is one entry of a property change message.
type PropertyChange struct {
	// Name is the property name.
	Name string `json:"name"`
	// Value is its new value (null when removed).
	Value any `json:"value"`
	// Module is the IoT Edge module ("" for a device property).
	Module string `json:"module,omitempty"`
	// Component is the component ("" for the root component).
	Component string `json:"component,omitempty"`
}

// deviceInfo is what the format and the enrichments need of a device.
type deviceInfo struct {
	ID, DisplayName, TemplateID, TemplateDisplayName, ModelID string
	// TemplateModelID is the "@id" of the template's capability model.
	TemplateModelID                 string
	Enabled, Provisioned, Simulated bool
	Organizations                   []string
	known                           bool
}

// sourceOf says which export source an event belongs to and its
// messageType; ok is false for events no source exports.
func sourceOf(k core.FeedKind) (source, msgType string, ok bool) {
	switch k {
	case core.FeedTelemetry:
		return SourceTelemetry, "", true
	case core.FeedReported:
		return SourceProperties, "devicePropertyReportedChange", true
	case core.FeedDesired:
		return SourceProperties, "devicePropertyDesiredChange", true
	case core.FeedConnected:
		return SourceDeviceConnectivity, "connected", true
	case core.FeedDisconnected:
		return SourceDeviceConnectivity, "disconnected", true
	case core.FeedRegistered:
		return SourceDeviceLifecycle, "registered", true
	case core.FeedDeleted:
		return SourceDeviceLifecycle, "deleted", true
	case core.FeedProvisioned:
		return SourceDeviceLifecycle, "provisioned", true
	case core.FeedEnabled:
		return SourceDeviceLifecycle, "enabled", true
	case core.FeedDisabled:
		return SourceDeviceLifecycle, "disabled", true
	case core.FeedDisplayNameChanged:
		return SourceDeviceLifecycle, "displayNameChanged", true
	case core.FeedTemplateAssigned:
		return SourceDeviceLifecycle, "deviceTemplateChanged", true
	case core.FeedTemplateCreated:
		return SourceDeviceTemplateLifecycle, "created", true
	case core.FeedTemplateUpdated:
		return SourceDeviceTemplateLifecycle, "updated", true
	case core.FeedTemplateDeleted:
		return SourceDeviceTemplateLifecycle, "deleted", true
	}
	return "", "", false
}

// telemetryBody returns the message body as a JSON object, ok false when
// it is not one (IoT Central exports only JSON telemetry).
func telemetryBody(t core.Telemetry) (map[string]any, bool) {
	var m map[string]any
	if err := json.Unmarshal(t.Body, &m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

// messageProperties are the properties the device sent with the message:
// its application properties and the creation time it set.
func messageProperties(t core.Telemetry) map[string]string {
	out := maps.Clone(t.Properties)
	if out == nil {
		out = map[string]string{}
	}
	if v, ok := t.System[core.PropCreationTime]; ok {
		out[core.PropCreationTime] = v
	}
	return out
}

// propertyChanges flattens a twin patch into property change entries,
// sorted by component then name: a component section ("__t": "c") gives
// its properties with the component; a writable property's acknowledgement
// ({"value", "ac", "av", "ad"}) gives its value. "$" keys are skipped.
func propertyChanges(patch map[string]any, module string) []PropertyChange {
	var out []PropertyChange
	for name, v := range patch {
		if strings.HasPrefix(name, "$") {
			continue
		}
		if sec, ok := v.(map[string]any); ok && sec["__t"] == "c" {
			for inner, iv := range sec {
				if inner == "__t" || strings.HasPrefix(inner, "$") {
					continue
				}
				out = append(out, PropertyChange{Name: inner, Value: ackValue(iv), Module: module, Component: name})
			}
			continue
		}
		out = append(out, PropertyChange{Name: name, Value: ackValue(v), Module: module})
	}
	slices.SortFunc(out, func(a, b PropertyChange) int {
		if c := strings.Compare(a.Component, b.Component); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// ackValue unwraps a writable property acknowledgement to its value.
func ackValue(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	if _, hasV := m["value"]; !hasV {
		return v
	}
	if _, hasAC := m["ac"]; !hasAC {
		return v
	}
	for k := range m {
		if k != "value" && k != "ac" && k != "av" && k != "ad" {
			return v
		}
	}
	return m["value"]
}

// buildMessage makes the exported message of ev for source; ok is false
// when ev gives none (a telemetry body that is not a JSON object, an
// empty property patch).
func buildMessage(appID string, ev core.FeedEvent, dev deviceInfo, enrichments map[string]any) (Message, bool) {
	source, msgType, ok := sourceOf(ev.Kind)
	if !ok {
		return Message{}, false
	}
	if enrichments == nil {
		enrichments = map[string]any{}
	}
	w := wireMessage{
		ApplicationID: appID, MessageSource: source, MessageType: msgType, DeviceID: ev.DeviceID,
		Schema: Schema, TemplateID: dev.TemplateID, EnqueuedTime: ev.Time.UTC().Format(timeLayout),
		Enrichments: enrichments,
	}
	switch source {
	case SourceTelemetry:
		body, ok := telemetryBody(ev.Telemetry)
		if !ok {
			return Message{}, false
		}
		w.Telemetry, _ = json.Marshal(body)
		w.Module, w.Component = ev.Telemetry.ModuleID, ev.Telemetry.Component
		mp := messageProperties(ev.Telemetry)
		w.MessageProperties = &mp
	case SourceProperties:
		w.Properties = propertyChanges(ev.Patch, "")
		if len(w.Properties) == 0 {
			return Message{}, false
		}
	case SourceDeviceTemplateLifecycle:
		w.DeviceID, w.TemplateID = "", ev.TemplateID
	}
	body, err := json.Marshal(w)
	if err != nil {
		return Message{}, false
	}
	props := map[string]string{PropApplicationID: appID, PropMessageSource: source}
	if w.DeviceID != "" {
		props[PropDeviceID] = w.DeviceID
	}
	if msgType != "" {
		props[PropMessageType] = msgType
	}
	return Message{DeviceID: w.DeviceID, Body: body, Properties: props}, true
}

// formatTime formats a status time as IoT Central does.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}
