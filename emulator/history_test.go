package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// sendTelemetry publishes body with the property bag over MQTT and waits
// until the emulator has stored it.
func sendTelemetry(t *testing.T, d *hubDevice, msgs <-chan Telemetry, bag string, body []byte) Telemetry {
	t.Helper()
	d.publish("devices/"+d.id+"/messages/events/"+bag, 1, body)
	select {
	case m := <-msgs:
		return m
	case <-ctxT(t).Done():
		t.Fatalf("telemetry %s never arrived", body)
		return Telemetry{}
	}
}

func TestTelemetryHistory(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{TelemetryHistory: 4, RESTAddr: "127.0.0.1:0"})
	d, _ := newHubDevice(t, e, "hist")
	msgs, stop := e.WatchTelemetry("hist")
	defer stop()
	var sent []Telemetry
	for i := range 6 {
		bag := fmt.Sprintf("%%24.mid=m%d&%%24.ct=application%%2Fjson&%%24.ce=utf-8&seq=%d", i, i)
		if i%2 == 1 {
			bag += "&%24.sub=thermostat1"
		}
		sent = append(sent, sendTelemetry(t, d, msgs, bag, fmt.Appendf(nil, `{"n":%d}`, i)))
	}

	all, err := e.TelemetryHistory("hist", TelemetryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	// The limit of 4 keeps the newest, oldest first.
	if len(all) != 4 {
		t.Fatalf("history holds %d messages, want 4", len(all))
	}
	for i, m := range all {
		want := fmt.Sprintf(`{"n":%d}`, i+2)
		if string(m.Body) != want || m.MessageID != fmt.Sprintf("m%d", i+2) || m.Properties["seq"] != fmt.Sprint(i+2) {
			t.Errorf("history[%d] = %s %v %v, want %s", i, m.Body, m.System, m.Properties, want)
		}
		if i > 0 && m.Received.Before(all[i-1].Received) {
			t.Errorf("history[%d] received before history[%d]", i, i-1)
		}
	}

	comp, err := e.TelemetryHistory("hist", TelemetryFilter{Component: "thermostat1", ByComponent: true})
	if err != nil || len(comp) != 2 || string(comp[0].Body) != `{"n":3}` || string(comp[1].Body) != `{"n":5}` {
		t.Fatalf("component filter = %d messages, %v", len(comp), err)
	}
	root, err := e.TelemetryHistory("hist", TelemetryFilter{ByComponent: true})
	if err != nil || len(root) != 2 || string(root[0].Body) != `{"n":2}` || root[0].Component != "" {
		t.Fatalf("root filter = %+v, %v", root, err)
	}
	since, err := e.TelemetryHistory("hist", TelemetryFilter{Since: sent[3].Received})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range since {
		if !m.Received.After(sent[3].Received) {
			t.Errorf("since filter kept a message received at %v, not after %v", m.Received, sent[3].Received)
		}
	}
	if len(since) == 0 || string(since[len(since)-1].Body) != `{"n":5}` {
		t.Fatalf("since filter = %d messages", len(since))
	}
	last, err := e.TelemetryHistory("hist", TelemetryFilter{Limit: 1})
	if err != nil || len(last) != 1 || string(last[0].Body) != `{"n":5}` {
		t.Fatalf("limit 1 = %+v, %v", last, err)
	}
	// Copies: changing a returned message leaves the history as it was.
	all[0].Properties["seq"] = "changed"
	all[0].Body[0] = 'X'
	again, _ := e.TelemetryHistory("hist", TelemetryFilter{Limit: 4})
	if again[0].Properties["seq"] != "2" || again[0].Body[0] != '{' {
		t.Fatal("TelemetryHistory returned the stored message, not a copy")
	}
	if _, err := e.TelemetryHistory("ghost", TelemetryFilter{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}

	// The REST route shows the same, with the system properties named.
	sendTelemetry(t, d, msgs, "%24.cid=corr-7&unit=C", []byte("not json"))
	status, body := restDo(t, e, "GET", "/api/emulator/devices/hist/telemetry?component=&limit=2", e.APIToken(), nil)
	if status != http.StatusOK {
		t.Fatalf("GET telemetry: %d %s", status, body)
	}
	var got struct {
		Value []struct {
			Component     string            `json:"component"`
			MessageID     string            `json:"messageId"`
			CorrelationID string            `json:"correlationId"`
			ContentType   string            `json:"contentType"`
			Encoding      string            `json:"contentEncoding"`
			Properties    map[string]string `json:"properties"`
			Data          json.RawMessage   `json:"data"`
			DataBase64    []byte            `json:"dataBase64"`
		} `json:"value"`
	}
	if err := json.Unmarshal(body, &got); err != nil || len(got.Value) != 2 {
		t.Fatalf("GET telemetry body %s: %v", body, err)
	}
	a, b := got.Value[0], got.Value[1]
	if a.MessageID != "m4" || a.ContentType != "application/json" || a.Encoding != "utf-8" || string(a.Data) != `{"n":4}` || a.Properties["seq"] != "4" {
		t.Errorf("first = %+v", a)
	}
	if b.CorrelationID != "corr-7" || b.Properties["unit"] != "C" || b.Data != nil || string(b.DataBase64) != "not json" {
		t.Errorf("second = %+v", b)
	}
	if status, _ := restDo(t, e, "GET", "/api/emulator/devices/hist/telemetry?since=bad", e.APIToken(), nil); status != http.StatusBadRequest {
		t.Fatalf("bad since: %d", status)
	}
}

func TestTelemetryHistoryOff(t *testing.T) {
	t.Parallel()
	e := startEmu(t, &Options{TelemetryHistory: -1})
	d, _ := newHubDevice(t, e, "nohist")
	msgs, stop := e.WatchTelemetry("nohist")
	defer stop()
	sendTelemetry(t, d, msgs, "", []byte(`{"t":1}`))
	if h, err := e.TelemetryHistory("nohist", TelemetryFilter{}); err != nil || len(h) != 0 {
		t.Fatalf("history with TelemetryHistory -1: %d messages, %v", len(h), err)
	}
	// The latest value is still kept.
	if v, err := e.LatestTelemetry("nohist", "", "t"); err != nil || v.Value != 1.0 {
		t.Fatalf("LatestTelemetry = %+v, %v", v, err)
	}
}

func TestTelemetryHistoryDefault(t *testing.T) {
	t.Parallel()
	e := startEmu(t, nil)
	d, _ := newHubDevice(t, e, "defhist")
	msgs, stop := e.WatchTelemetry("defhist")
	defer stop()
	for i := range 3 {
		sendTelemetry(t, d, msgs, "", fmt.Appendf(nil, "%d", i))
	}
	if h, _ := e.TelemetryHistory("defhist", TelemetryFilter{}); len(h) != 3 {
		t.Fatalf("default history holds %d of 3", len(h))
	}
	if DefaultTelemetryHistory != 1000 {
		t.Fatalf("DefaultTelemetryHistory = %d", DefaultTelemetryHistory)
	}
}
