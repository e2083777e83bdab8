package core

import (
	"encoding/json"
	"testing"
	"time"
)

// Operations expire after dpsOpTTL, oldest first, swept by later
// registrations; younger ones stay pollable.
func TestDPSOperationsExpireOldestFirst(t *testing.T) {
	c := New(Config{IDScope: "0ne", HubHost: "hub", Groups: []EnrollmentGroup{{ID: "g", PrimaryKey: RandomKey(), SecondaryKey: RandomKey(), Enabled: true}}})
	defer c.Close()
	register := func(id string) string {
		t.Helper()
		r := c.Register(DPSAuth{RegistrationID: id, GroupID: "g"}, []byte(`{"registrationId":"`+id+`"}`))
		var st struct {
			OperationID string `json:"operationId"`
		}
		if r.Status != 202 || json.Unmarshal(r.Body, &st) != nil || st.OperationID == "" {
			t.Fatalf("register %s: %d %s", id, r.Status, r.Body)
		}
		return st.OperationID
	}
	old1, old2 := register("a"), register("b")
	// Age the first two past the TTL, as if half an hour had gone by.
	c.mu.Lock()
	for i := range c.opsOrder[:2] {
		aged := c.opsOrder[i].created.Add(-dpsOpTTL - time.Minute)
		c.opsOrder[i].created = aged
		c.ops[c.opsOrder[i].id].created = aged
	}
	c.mu.Unlock()
	young := register("c")
	for id, op := range map[string]string{"a": old1, "b": old2} {
		if r := c.PollOperation(DPSAuth{RegistrationID: id, GroupID: "g"}, op); r.Status != 404 {
			t.Errorf("expired operation of %s answered %d", id, r.Status)
		}
	}
	if r := c.PollOperation(DPSAuth{RegistrationID: "c", GroupID: "g"}, young); r.Status != 200 {
		t.Errorf("young operation answered %d %s", r.Status, r.Body)
	}
	c.mu.Lock()
	n := len(c.opsOrder)
	c.mu.Unlock()
	if n != 1 {
		t.Errorf("%d operations left in the expiry order, want 1", n)
	}
}

// A registration polls only its own operations (IoT Hub DPS answers 404
// for another registration's operation id).
func TestDPSOperationBelongsToItsRegistration(t *testing.T) {
	c := New(Config{IDScope: "0ne", HubHost: "hub", AutoApprove: true, Groups: []EnrollmentGroup{{ID: "g", PrimaryKey: RandomKey(), SecondaryKey: RandomKey(), Enabled: true}}})
	defer c.Close()
	r := c.Register(DPSAuth{RegistrationID: "a", GroupID: "g"}, []byte(`{"registrationId":"a"}`))
	var st struct {
		OperationID string `json:"operationId"`
	}
	if r.Status != 202 || json.Unmarshal(r.Body, &st) != nil || st.OperationID == "" {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	for _, other := range []string{"b", "A"} {
		if r := c.PollOperation(DPSAuth{RegistrationID: other, GroupID: "g"}, st.OperationID); r.Status != 404 {
			t.Errorf("registration %s polled a's operation: %d %s", other, r.Status, r.Body)
		}
	}
	if r := c.PollOperation(DPSAuth{RegistrationID: "a", GroupID: "g"}, st.OperationID); r.Status != 200 {
		t.Errorf("a's own poll: %d %s", r.Status, r.Body)
	}
}
