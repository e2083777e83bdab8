package domain

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// DefaultProvisioningHost is the global Device Provisioning Service endpoint.
const DefaultProvisioningHost = "global.azure-devices-provisioning.net"

// DPS polling bounds: the service's retry-after is honoured but clamped to
// [MinPollInterval, MaxPollInterval]; DefaultPollInterval applies when the
// service gives none. DPS allows 5 polls per 10 s per device: see
// DPSPacer and DPSRetryWait.
const (
	DefaultPollInterval = 2 * time.Second
	MinPollInterval     = 0
	MaxPollInterval     = 5 * time.Minute
)

// RegistrationRequest is what the device sends to DPS.
type RegistrationRequest struct {
	RegistrationID string
	// ModelID is sent as payload {"modelId": ...} (IoT Plug and Play).
	ModelID string
	// LegacyModelID also sends it as "iotcModelId" (older IoT Central apps).
	LegacyModelID bool
	// Payload is extra custom-allocation data merged into the payload.
	Payload map[string]any
}

// Body encodes the register request body.
func (r RegistrationRequest) Body() ([]byte, error) {
	body := map[string]any{"registrationId": r.RegistrationID}
	payload := map[string]any{}
	for k, v := range r.Payload {
		payload[k] = v
	}
	if r.ModelID != "" {
		payload["modelId"] = r.ModelID
		if r.LegacyModelID {
			payload["iotcModelId"] = r.ModelID
		}
	}
	if len(payload) > 0 {
		body["payload"] = payload
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("iotc: encode registration: %w", err)
	}
	return b, nil
}

// DPS operation statuses.
const (
	DPSUnassigned  = "unassigned"
	DPSAssigning   = "assigning"
	DPSAssigned    = "assigned"
	DPSFailed      = "failed"
	DPSDisabled    = "disabled"
	DPSBlacklisted = "blacklisted"
)

// OperationStatus is a DPS register or operation-status response body.
type OperationStatus struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *RegistrationState `json:"registrationState,omitempty"`
}

// RegistrationState is the registrationState of an operation status.
type RegistrationState struct {
	RegistrationID string          `json:"registrationId"`
	AssignedHub    string          `json:"assignedHub"`
	DeviceID       string          `json:"deviceId"`
	Status         string          `json:"status"`
	Substatus      string          `json:"substatus"`
	ErrorCode      int             `json:"errorCode"`
	ErrorMessage   string          `json:"errorMessage"`
	Payload        json.RawMessage `json:"payload,omitempty"`
}

// ParseOperationStatus parses a DPS response body (ErrMalformed on bad JSON).
func ParseOperationStatus(b []byte) (OperationStatus, error) {
	var s OperationStatus
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%w: DPS response: %v", ErrMalformed, err)
	}
	s.Status = strings.ToLower(s.Status)
	return s, nil
}

// Assignment is the result of a successful provisioning.
type Assignment struct {
	// Hub is the assigned IoT hub host name.
	Hub string
	// DeviceID is the device id the hub knows the device by.
	DeviceID string
	// Substatus is e.g. "initialAssignment" or "reprovisionedToInitialAssignment".
	Substatus string
	// Payload is the custom allocation payload, if any.
	Payload json.RawMessage
}

// ProvisioningStatusRefused is the Status of a ProvisioningError made
// when DPS refused the connection or the request itself (MQTT CONNACK 4/5,
// AMQP SASL, HTTP 401/403/404) before any registration answer.
const ProvisioningStatusRefused = "refused"

// ProvisioningError is a final DPS answer other than assigned, or a
// refusal of the registration by DPS (Status ProvisioningStatusRefused,
// the refusal in Err). errors.Is matches ErrUnauthorized for a disabled or
// blacklisted enrollment, a 401xxx code, or an Err that matches it.
type ProvisioningError struct {
	Status    string // failed, disabled, blacklisted, refused
	ErrorCode int
	Message   string
	// Err is the refusal behind a "refused" status; nil otherwise.
	Err error
}

// Error says what DPS answered and then what to check.
func (e *ProvisioningError) Error() string {
	s := "provisioning " + e.Status
	if e.ErrorCode != 0 {
		s += fmt.Sprintf(" (code %d)", e.ErrorCode)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if hint := e.hint(); hint != "" {
		s += "; " + hint
	}
	return s
}

// hint names what the user should check.
func (e *ProvisioningError) hint() string {
	switch {
	case e.Status == DPSDisabled, e.Status == DPSBlacklisted:
		return "the device or its enrollment group is disabled (or blocked) in the application"
	case e.Status == ProvisioningStatusRefused, e.ErrorCode/1000 == 401:
		return "check the ID scope, the device id and the key (or the certificate and its CA)"
	case e.ErrorCode/1000 == 404:
		return "check the ID scope and the device id"
	}
	return ""
}

// Unwrap returns Err.
func (e *ProvisioningError) Unwrap() error { return e.Err }

// Is matches ErrUnauthorized for disabled or blacklisted enrollments and
// for 401xxx error codes (a refusal in Err matches through Unwrap).
func (e *ProvisioningError) Is(target error) bool {
	if target == ErrUnauthorized {
		return e.Status == DPSDisabled || e.Status == DPSBlacklisted || e.ErrorCode/1000 == 401
	}
	return false
}

// Assignment returns the assignment of an "assigned" status, or a
// *ProvisioningError for failed/disabled ones, or ErrMalformed when an
// assigned status lacks the hub or device id.
func (s OperationStatus) Assignment() (Assignment, error) {
	switch s.Status {
	case DPSAssigned:
		rs := s.RegistrationState
		if rs == nil || rs.AssignedHub == "" || rs.DeviceID == "" {
			return Assignment{}, fmt.Errorf("%w: assigned without hub or device id", ErrMalformed)
		}
		return Assignment{Hub: rs.AssignedHub, DeviceID: rs.DeviceID, Substatus: rs.Substatus, Payload: rs.Payload}, nil
	case DPSFailed, DPSDisabled, DPSBlacklisted:
		pe := &ProvisioningError{Status: s.Status}
		if rs := s.RegistrationState; rs != nil {
			pe.ErrorCode, pe.Message = rs.ErrorCode, rs.ErrorMessage
		}
		return Assignment{}, pe
	}
	return Assignment{}, fmt.Errorf("%w: DPS status %q is not final", ErrMalformed, s.Status)
}

// ClampPollInterval applies DefaultPollInterval to a missing (negative)
// retry-after and clamps it to [MinPollInterval, MaxPollInterval].
func ClampPollInterval(d time.Duration) time.Duration {
	if d < 0 {
		return DefaultPollInterval
	}
	return max(MinPollInterval, min(d, MaxPollInterval))
}

// CachedCredentials is what the credentials cache keeps between runs: the
// result of provisioning. It holds no secret: the key or certificate comes
// from the configuration each time, so a stolen cache file grants nothing.
type CachedCredentials struct {
	// IDScope and RegistrationID identify the configuration the record
	// belongs to; a record for another scope or id is ignored.
	IDScope        string `json:"idScope"`
	RegistrationID string `json:"registrationId"`
	// Hub and DeviceID are the assignment.
	Hub      string `json:"hub"`
	DeviceID string `json:"deviceId"`
	// ModelID is the model the device was provisioned with.
	ModelID string `json:"modelId,omitempty"`
	// Kind is the credential kind used.
	Kind CredentialKind `json:"kind"`
	// CertFile and KeyFile are the X.509 paths used, when Kind is KindX509.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// Saved is when the record was written.
	Saved time.Time `json:"saved"`
}

// Valid reports whether the record is complete enough to connect with.
func (c CachedCredentials) Valid() bool { return c.Hub != "" && c.DeviceID != "" }

// Matches reports whether the record belongs to this scope and registration.
func (c CachedCredentials) Matches(idScope, registrationID string) bool {
	return strings.EqualFold(c.IDScope, idScope) && c.RegistrationID == registrationID
}
