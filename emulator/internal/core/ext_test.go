package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

func TestParseModelAndDeviceModel(t *testing.T) {
	c := New(Config{IDScope: "0ne", HubHost: "hub"})
	defer c.Close()
	var doc map[string]any
	_ = json.Unmarshal([]byte(`{"@type":["ModelDefinition","DeviceModel"],"capabilityModel":{"@id":"dtmi:x:cm;1","@type":"Interface",
		"contents":[{"@type":["Property","Cloud"],"name":"status"},{"@type":"Property","name":"mode","writable":true},
		{"@type":"Command","name":"reboot"},{"@type":"Telemetry","name":"temp"},
		{"@type":"Component","name":"ref","schema":"dtmi:x:other;1"},
		{"@type":"Component","name":"th","schema":{"@type":"Interface","contents":[{"@type":"Property","name":"t","writable":true}]}}],
		"extends":[{"@type":"Interface","contents":[{"@type":"Command","name":"ext"}]}]}}`), &doc)
	if _, err := c.PutTemplate("dtmi:x:tpl;1", doc); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{"capabilityModel":{}}`, `{"@type":["DeviceModel"]}`,
		`{"@type":["DeviceModel"],"capabilityModel":{"contents":[{"@type":"Property"}]}}`,
		`{"@type":["DeviceModel"],"capabilityModel":{"contents":5}}`} {
		var d map[string]any
		_ = json.Unmarshal([]byte(bad), &d)
		if _, err := c.PutTemplate("t", d); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := c.CreateDevice("d1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.DeviceModel("d1"); ok {
		t.Fatal("a device without template has a model")
	}
	// The capability model id matches too (a device announcing it).
	cm := "dtmi:x:cm;1"
	if _, _, err := c.PutDevice("d1", DeviceSpec{Template: &cm}); err != nil {
		t.Fatal(err)
	}
	m, ok := c.DeviceModel("d1")
	if !ok || !m.Root.Properties["mode"] || m.Root.Properties["status"] || !m.Root.Commands["reboot"] || !m.Root.Commands["ext"] ||
		!m.Root.Telemetry["temp"] || !m.Components["ref"].Open || !m.Components["th"].Properties["t"] {
		t.Fatalf("model = %+v (%v)", m, ok)
	}
	if err := c.DeleteTemplate("dtmi:x:tpl;1"); err != nil { // assigned by model id, not by template id
		t.Fatal(err)
	}
	if err := c.DeleteTemplate("dtmi:x:tpl;1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestCommandHistoryKeepsNewest(t *testing.T) {
	c := New(Config{IDScope: "0ne", HubHost: "hub"})
	defer c.Close()
	if _, err := c.CreateDevice("d1"); err != nil {
		t.Fatal(err)
	}
	for i := range MaxCommandHistory + 3 {
		if err := c.RecordCommand("d1", CommandRecord{ID: fmt.Sprint(i), Name: "reboot"}); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.RecordCommand("d1", CommandRecord{ID: "other", Component: "c", Name: "reboot"})
	h, err := c.CommandHistory("d1", "", "reboot")
	if err != nil || len(h) != MaxCommandHistory || h[0].ID != "3" || h[len(h)-1].ID != fmt.Sprint(MaxCommandHistory+2) {
		t.Fatalf("history = %+v, %v", h, err)
	}
	if h, _ := c.CommandHistory("d1", "c", "reboot"); len(h) != 1 {
		t.Fatalf("component history = %+v", h)
	}
	if err := c.RecordCommand("ghost", CommandRecord{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ghost: %v", err)
	}
}

func TestVerificationCodes(t *testing.T) {
	c := New(Config{IDScope: "0ne", HubHost: "hub", Groups: []EnrollmentGroup{{ID: "g", PrimaryKey: RandomKey(), SecondaryKey: RandomKey(), Enabled: true}}})
	defer c.Close()
	code, err := c.IssueVerificationCode("g", "primary")
	if err != nil || code == "" {
		t.Fatal(code, err)
	}
	if err := c.ConsumeVerificationCode("g", "secondary", code, "T"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("code for the wrong entry: %v", err)
	}
	if err := c.ConsumeVerificationCode("g", "primary", code, "T"); err != nil || !c.CertificateVerified("g", "T") {
		t.Fatalf("consume: %v", err)
	}
	if err := c.ConsumeVerificationCode("g", "primary", code, "T"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("code reused: %v", err)
	}
	if _, err := c.IssueVerificationCode("ghost", "primary"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ghost group: %v", err)
	}
	if err := c.DeleteEnrollmentGroup("g"); err != nil || len(c.EnrollmentGroups()) != 0 {
		t.Fatalf("delete group: %v", err)
	}
}
