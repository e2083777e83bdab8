package restapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// faultFake is the fake backend with the optional fault part.
type faultFake struct {
	*fakeBackend
	got     []FaultRequest
	cleared []string
}

func (f *faultFake) InjectFault(_ context.Context, id string, r FaultRequest) error {
	if err := f.known(id); err != nil {
		return err
	}
	if r.Type != "KillTcp" {
		return badRequestf("unknown fault %q", r.Type)
	}
	f.got = append(f.got, r)
	return nil
}

func (f *faultFake) ClearFaults(_ context.Context, id string) error {
	if err := f.known(id); err != nil {
		return err
	}
	f.cleared = append(f.cleared, id)
	return nil
}

func TestFaultRoutes(t *testing.T) {
	e := newEnv(t)
	if r := e.call("POST", "/api/emulator/devices/dev1/faults", `{"type":"KillTcp"}`); r.status != http.StatusNotImplemented {
		t.Fatalf("backend without faults: %d %s", r.status, r.raw)
	}
	ff := &faultFake{fakeBackend: e.f}
	srv := httptest.NewServer(New(ff, Options{Token: testToken}))
	t.Cleanup(srv.Close)
	e.srv = srv
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/api/emulator/devices/dev1/faults", `{"type":"KillTcp","closeReason":"byebye","delayInSecs":1}`, http.StatusAccepted},
		{"POST", "/api/emulator/devices/dev1/faults", `{"type":"Other"}`, http.StatusBadRequest},
		{"POST", "/api/emulator/devices/dev1/faults", `{"type":""}`, http.StatusBadRequest},
		{"POST", "/api/emulator/devices/dev1/faults", `{"type":"KillTcp","closeReason":"maybe"}`, http.StatusBadRequest},
		{"POST", "/api/emulator/devices/dev1/faults", `{"type":"KillTcp","delayInSecs":-1}`, http.StatusBadRequest},
		{"POST", "/api/emulator/devices/dev1/faults", `{"type":`, http.StatusBadRequest},
		{"POST", "/api/emulator/devices/ghost/faults", `{"type":"KillTcp"}`, http.StatusNotFound},
		{"DELETE", "/api/emulator/devices/dev1/faults", "", http.StatusNoContent},
		{"GET", "/api/emulator/devices/dev1/faults", "", http.StatusMethodNotAllowed},
	} {
		if r := e.call(tc.method, tc.path, tc.body); r.status != tc.want {
			t.Errorf("%s %s %s: %d %s, want %d", tc.method, tc.path, tc.body, r.status, r.raw, tc.want)
		}
	}
	if len(ff.got) != 1 || !(ff.got[0] == FaultRequest{Type: "KillTcp", CloseReason: "byebye", DelayInSecs: 1}) {
		t.Fatalf("injected %+v", ff.got)
	}
	if len(ff.cleared) != 1 || ff.cleared[0] != "dev1" {
		t.Fatalf("cleared %v", ff.cleared)
	}
	if r := e.callAuth("POST", "/api/emulator/devices/dev1/faults", `{"type":"KillTcp"}`, "wrong"); r.status != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", r.status)
	}
}
