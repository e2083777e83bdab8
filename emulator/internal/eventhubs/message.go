package eventhubs

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Annotations the endpoint sets on every event it delivers.
const (
	annSeq       = "x-opt-sequence-number"
	annOffset    = "x-opt-offset"
	annEnqueued  = "x-opt-enqueued-time"
	annPartKey   = "x-opt-partition-key"
	annSource    = "iothub-message-source"
	annGenID     = "iothub-connection-auth-generation-id"
	sourceDevice = "Telemetry"
	// sourceTwinChange is the message source of twin change events.
	sourceTwinChange = "twinChangeEvents"
	// sourceLifecycle is the message source of device lifecycle events.
	sourceLifecycle = "deviceLifecycleEvents"
)

// telemetryMessage is a device-to-cloud message as the built-in endpoint
// stores it: the body, application properties, message and correlation
// ids, content type and encoding, and the annotations IoT Hub adds
// (iothub-connection-*, iothub-enqueuedtime, iothub-message-source, and
// the component / interface / data schema the device set).
func telemetryMessage(t core.Telemetry, generationID string) *amqp.Message {
	m := &amqp.Message{Data: [][]byte{t.Body}}
	if t.MessageID != "" || t.CorrelationID != "" || t.ContentType != "" || t.ContentEncoding != "" {
		p := &amqp.MessageProperties{}
		if t.MessageID != "" {
			p.MessageID = t.MessageID
		}
		if t.CorrelationID != "" {
			p.CorrelationID = t.CorrelationID
		}
		if t.ContentType != "" {
			p.ContentType = &t.ContentType
		}
		if t.ContentEncoding != "" {
			p.ContentEncoding = &t.ContentEncoding
		}
		m.Properties = p
	}
	if len(t.Properties) > 0 {
		m.ApplicationProperties = make(map[string]any, len(t.Properties))
		for k, v := range t.Properties {
			m.ApplicationProperties[k] = v
		}
	}
	a := amqp.Annotations{
		core.PropDeviceID: t.DeviceID,
		annSource:         sourceDevice,
		annGenID:          generationID,
	}
	if t.ModuleID != "" {
		a[core.PropModuleID] = t.ModuleID
	}
	if t.AuthMethod != "" {
		a[core.PropAuthMethod] = t.AuthMethod
	}
	if !t.Received.IsZero() {
		a[core.PropEnqueuedTime] = t.Received.UTC().Truncate(time.Millisecond)
	}
	if t.Component != "" {
		a[core.PropComponent] = t.Component
	}
	for k, v := range t.System {
		if strings.HasPrefix(k, "iothub-") || strings.HasPrefix(k, "dt-") {
			if _, set := a[k]; !set {
				a[k] = v
			}
		}
	}
	m.Annotations = a
	return m
}

// notificationMessage is IoT Hub's twin change event (OpUpdateTwin: the
// body {"version": twin version, "properties": {section: patch with
// $version}}, iothub-message-schema twinChangeNotification,
// iothub-message-source twinChangeEvents) or device lifecycle event (the
// body the device's twin, iothub-message-schema
// deviceLifecycleNotification, iothub-message-source
// deviceLifecycleEvents), with the application properties hubName,
// deviceId, operationTimestamp and opType.
func notificationMessage(n core.DeviceNotification, hubName string) *amqp.Message {
	var body []byte
	schema, source := "deviceLifecycleNotification", sourceLifecycle
	if n.Op == core.OpUpdateTwin {
		section := make(map[string]any, len(n.Patch)+1)
		for k, v := range n.Patch {
			section[k] = v
		}
		section["$version"] = n.Version
		body, _ = json.Marshal(map[string]any{"version": n.TwinVersion, "properties": map[string]any{n.Section: section}})
		schema, source = "twinChangeNotification", sourceTwinChange
	} else {
		body, _ = json.Marshal(n.Twin)
	}
	ct, ce := "application/json", "utf-8"
	at := n.Time.UTC().Truncate(time.Millisecond)
	return &amqp.Message{
		Data:       [][]byte{body},
		Properties: &amqp.MessageProperties{ContentType: &ct, ContentEncoding: &ce},
		ApplicationProperties: map[string]any{
			"hubName":               hubName,
			"deviceId":              n.DeviceID,
			"operationTimestamp":    at.Format("2006-01-02T15:04:05.0000000Z"),
			"iothub-message-schema": schema,
			"opType":                n.Op,
		},
		Annotations: amqp.Annotations{
			core.PropDeviceID:     n.DeviceID,
			annSource:             source,
			annGenID:              n.GenerationID,
			core.PropEnqueuedTime: at,
		},
	}
}

// delivered is ev as a receiver gets it: its message with the event's
// sequence number, offset, enqueued time and partition key annotations.
// The stored message is not changed (many receivers share it).
func delivered(ev *event) *amqp.Message {
	out := *ev.msg
	a := make(amqp.Annotations, len(ev.msg.Annotations)+4)
	for k, v := range ev.msg.Annotations {
		a[k] = v
	}
	a[annSeq] = ev.seq
	a[annOffset] = strconv.FormatInt(ev.offset, 10)
	a[annEnqueued] = ev.enqueued
	if ev.partKey != "" {
		a[annPartKey] = ev.partKey
	}
	out.Annotations = a
	out.DeliveryTag = nil
	out.Format = 0
	return &out
}
