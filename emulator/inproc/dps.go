package inproc

import (
	"context"
	"encoding/json"
	"fmt"
)

// Registration is DPS's final answer to a registration.
type Registration struct {
	// Status is "assigned", "failed" or "disabled".
	Status string
	// Substatus is "initialAssignment" or, when DPS holds a registration
	// state of an earlier assignment (not deleted through the DPS service
	// API since), "reprovisionedToInitialAssignment".
	Substatus string
	// AssignedHub and DeviceID are set when Status is "assigned".
	AssignedHub, DeviceID string
	// ErrorCode and ErrorMessage say why when it is not.
	ErrorCode    int
	ErrorMessage string
}

// DPSError is a DPS request refused with an error status (400 for a bad
// request body, 404 for an unknown operation, 500 when the state could
// not be stored).
type DPSError struct {
	// Status is the HTTP-like status.
	Status int
	// Code is the DPS error code (400004, 404201, ...).
	Code int
	// Message is DPS's description.
	Message string
}

func (e *DPSError) Error() string {
	return fmt.Sprintf("inproc: DPS status %d (code %d): %s", e.Status, e.Code, e.Message)
}

// Register registers a device with DPS as the emulator's DPS does, given
// the request body (JSON {"registrationId": ..., "payload": {"modelId":
// ...}}) and a SAS token for "{idScope}/registrations/{registrationID}"
// signed with the key derived from the group key. It returns the final
// state: a device of the group is assigned to HubHost (created on its
// first registration, its model id taken from the payload). Errors:
// ErrNotFound for an unknown ID scope, ErrInvalid for a malformed
// registration id, ErrUnauthorized for refused credentials, *DPSError for
// a refused request, ctx.Err().
func (h *Hub) Register(ctx context.Context, idScope, registrationID, sasToken string, body []byte) (Registration, error) {
	if err := ctx.Err(); err != nil {
		return Registration{}, err
	}
	auth, err := h.core.AuthenticateDPS(idScope, registrationID, sasToken, nil)
	if err != nil {
		return Registration{}, err
	}
	r := h.core.Register(auth, body)
	if r.Status != 202 {
		return Registration{}, dpsError(r.Status, r.Body)
	}
	var op struct {
		OperationID string `json:"operationId"`
	}
	if err := json.Unmarshal(r.Body, &op); err != nil {
		return Registration{}, fmt.Errorf("inproc: DPS answer: %w", err)
	}
	r = h.core.PollOperation(auth, op.OperationID)
	if r.Status != 200 {
		return Registration{}, dpsError(r.Status, r.Body)
	}
	var st struct {
		RegistrationState struct {
			Status       string `json:"status"`
			Substatus    string `json:"substatus"`
			AssignedHub  string `json:"assignedHub"`
			DeviceID     string `json:"deviceId"`
			ErrorCode    int    `json:"errorCode"`
			ErrorMessage string `json:"errorMessage"`
		} `json:"registrationState"`
	}
	if err := json.Unmarshal(r.Body, &st); err != nil {
		return Registration{}, fmt.Errorf("inproc: DPS answer: %w", err)
	}
	s := st.RegistrationState
	h.notify()
	return Registration{Status: s.Status, Substatus: s.Substatus, AssignedHub: s.AssignedHub, DeviceID: s.DeviceID,
		ErrorCode: s.ErrorCode, ErrorMessage: s.ErrorMessage}, nil
}

func dpsError(status int, body []byte) error {
	var e struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	_ = json.Unmarshal(body, &e) // an unexpected body leaves the status alone to tell
	return &DPSError{Status: status, Code: e.ErrorCode, Message: e.Message}
}
