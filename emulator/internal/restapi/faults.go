package restapi

import (
	"context"
	"net/http"
)

// AllDevices is the device id of /api/devices/{id}/faults that means
// every device (RefuseConnections and InvokeThrottling only).
const AllDevices = "*"

// FaultRequest is the body of POST /api/devices/{id}/faults (emulator
// extension): the fields of IoT Hub's AzIoTHub_FaultOperation* message
// properties.
type FaultRequest struct {
	// Type is the AzIoTHub_FaultOperationType value (KillTcp, ...,
	// InvokeAuthError) or RefuseConnections, ExpireToken, RevokeKey.
	Type string `json:"type"`
	// CloseReason is "boom" (ungraceful, the default) or "byebye" (graceful).
	CloseReason string `json:"closeReason,omitempty"`
	// DelayInSecs is how long until the fault starts (default 0).
	DelayInSecs float64 `json:"delayInSecs,omitempty"`
	// DurationInSecs is how long a windowed fault lasts (default 5).
	DurationInSecs float64 `json:"durationInSecs,omitempty"`
}

// FaultBackend is the optional part of a Backend that injects faults; a
// Backend without it answers the fault routes 501 NotImplemented.
type FaultBackend interface {
	// InjectFault schedules the fault on device id (AllDevices for every
	// device). Errors: ErrNotFound, ErrBadRequest (unknown type, bad
	// delay or duration, a per-device fault for AllDevices).
	InjectFault(ctx context.Context, id string, f FaultRequest) error
	// ClearFaults ends the device's fault windows and restores revoked
	// keys and expired tokens. Errors: ErrNotFound.
	ClearFaults(ctx context.Context, id string) error
}

// postFault handles POST /api/devices/{id}/faults: 202 Accepted with the
// request echoed (the fault starts after its delay).
func (h *handler) postFault(w http.ResponseWriter, r *http.Request) {
	fb, ok := h.b.(FaultBackend)
	if !ok {
		h.fail(w, r, http.StatusNotImplemented, "NotImplemented", "this backend does not inject faults")
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	var f FaultRequest
	if err := decodeJSON(body, &f); err != nil {
		h.failErr(w, r, err)
		return
	}
	if f.Type == "" {
		h.failErr(w, r, badRequestf("the fault needs a type"))
		return
	}
	if f.CloseReason != "" && f.CloseReason != "boom" && f.CloseReason != "byebye" {
		h.failErr(w, r, badRequestf("closeReason %q is neither \"boom\" nor \"byebye\"", f.CloseReason))
		return
	}
	if f.DelayInSecs < 0 || f.DurationInSecs < 0 {
		h.failErr(w, r, badRequestf("delayInSecs and durationInSecs must not be negative"))
		return
	}
	err = fb.InjectFault(r.Context(), r.PathValue("id"), f)
	h.respond(w, r, http.StatusAccepted, f, err)
}

// deleteFaults handles DELETE /api/devices/{id}/faults: 204 No Content.
func (h *handler) deleteFaults(w http.ResponseWriter, r *http.Request) {
	fb, ok := h.b.(FaultBackend)
	if !ok {
		h.fail(w, r, http.StatusNotImplemented, "NotImplemented", "this backend does not inject faults")
		return
	}
	if err := fb.ClearFaults(r.Context(), r.PathValue("id")); err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
