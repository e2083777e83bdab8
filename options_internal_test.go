package iotc

import (
	"testing"
	"time"

	"github.com/iotc-go/iotc/domain"
)

// nil and zero fields keep the message's defaults; set fields win; the
// Properties map is copied, so changing it after the call changes nothing.
func TestTelemetryOptionsDefaultsAndCopy(t *testing.T) {
	m, err := domain.NewJSONMessage(map[string]int{"x": 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := withTelemetryOptions(m, nil); got.ContentType != m.ContentType || got.Component != "" || got.MessageID != "" || got.Properties != nil {
		t.Fatalf("nil options changed the message: %+v", got)
	}
	if got := withTelemetryOptions(m, &TelemetryOptions{}); got.ContentType != m.ContentType || got.ContentEncoding != m.ContentEncoding {
		t.Fatalf("zero options changed the defaults: %+v", got)
	}
	props := map[string]string{"a": "1"}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	got := withTelemetryOptions(m, &TelemetryOptions{Component: "c", Properties: props, MessageID: "m", CorrelationID: "k", CreationTime: at, ContentType: "text/plain", ContentEncoding: "ascii"})
	props["a"] = "2"
	if got.Component != "c" || got.Properties["a"] != "1" || got.MessageID != "m" || got.CorrelationID != "k" || !got.CreationTime.Equal(at) || got.ContentType != "text/plain" || got.ContentEncoding != "ascii" {
		t.Fatalf("options not applied or Properties not copied: %+v", got)
	}
}
