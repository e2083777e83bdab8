package eventhubs

import (
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
