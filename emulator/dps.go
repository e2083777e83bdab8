package emulator

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator/internal/wire"
)

// dpsOp is one registration operation, answered to polls.
type dpsOp struct {
	regID   string
	created time.Time
	body    []byte // the final 200 answer
}

// dpsOpTTL is how long an operation id can be polled.
const dpsOpTTL = 30 * time.Minute

// DPS error codes used in failed registrations and error answers.
const (
	dpsErrBadRequest   = 400004
	dpsErrUnauthorized = 401002
	dpsErrNotFound     = 404201
	dpsTimeFormat      = "2006-01-02T15:04:05.0000000Z"
)

type registrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUtc     string          `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus,omitempty"`
	ErrorCode              int             `json:"errorCode,omitempty"`
	ErrorMessage           string          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUtc string          `json:"lastUpdatedDateTimeUtc"`
	Etag                   string          `json:"etag,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
}

type operationStatus struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *registrationState `json:"registrationState,omitempty"`
}

type dpsError struct {
	ErrorCode    int    `json:"errorCode"`
	TrackingID   string `json:"trackingId"`
	Message      string `json:"message"`
	TimestampUtc string `json:"timestampUtc"`
}

// registerRequest is the body of a register PUT (B.1).
type registerRequest struct {
	RegistrationID string          `json:"registrationId"`
	Payload        json.RawMessage `json:"payload"`
}

// ParseRegisterRequest decodes a DPS register body and returns the
// registration id it names ("" when absent) and the model id of its
// payload (modelId, else the legacy iotcModelId; "" when absent). It
// returns an error for a body that is not a JSON object.
func parseRegisterRequest(body []byte) (regID, modelID string, err error) {
	var req registerRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return "", "", fmt.Errorf("register body is not a JSON object: %w", err)
	}
	var p struct {
		ModelID     string `json:"modelId"`
		IotcModelID string `json:"iotcModelId"`
	}
	if len(req.Payload) > 0 {
		_ = json.Unmarshal(req.Payload, &p) // a payload of another shape carries no model
	}
	modelID = p.ModelID
	if modelID == "" {
		modelID = p.IotcModelID
	}
	return req.RegistrationID, modelID, nil
}

func (e *Emulator) dpsAnswer(c *conn, status int, rid string, retryAfter int, v any) {
	topic := "$dps/registrations/res/" + strconv.Itoa(status) + "/?$rid=" + rid
	if retryAfter >= 0 {
		topic += "&retry-after=" + strconv.Itoa(retryAfter)
	}
	body, err := json.Marshal(v)
	if err != nil {
		e.log.Error("encode DPS answer", "error", err)
		return
	}
	if !c.subscribed(topic) {
		e.log.Warn("DPS answer not delivered: not subscribed to $dps/registrations/res/#", "registration_id", c.id)
		return
	}
	if err := e.send(c, topic, body); err != nil {
		e.log.Warn("DPS answer not delivered", "registration_id", c.id, "error", err)
	}
}

// dpsFail returns an error answer (status, no retry-after, error body).
func (e *Emulator) dpsFail(c *conn, status int, code int, msg string) (int, int, any) {
	e.log.Warn("DPS request refused", "registration_id", c.id, "status", status, "reason", msg)
	return status, -1, dpsError{
		ErrorCode: code, TrackingID: newUUID(), Message: msg, TimestampUtc: e.now().Format(dpsTimeFormat),
	}
}

func (e *Emulator) handleDPS(c *conn, t wire.Topic, body []byte) {
	switch t.Kind {
	case wire.KindDPSRegister:
		status, retryAfter, v := e.dpsRegisterResult(c, body)
		e.dpsAnswer(c, status, t.RID, retryAfter, v)
	case wire.KindDPSPoll:
		status, retryAfter, v := e.dpsPollResult(c, t.OperationID)
		e.dpsAnswer(c, status, t.RID, retryAfter, v)
	}
}

// dpsPollResult answers an operation-status poll (any protocol).
func (e *Emulator) dpsPollResult(c *conn, operationID string) (status, retryAfter int, v any) {
	e.mu.Lock()
	op, ok := e.ops[operationID]
	e.mu.Unlock()
	if !ok || op.regID != c.id {
		return e.dpsFail(c, 404, dpsErrNotFound, "operation "+strconv.Quote(operationID)+" not found")
	}
	return 200, -1, json.RawMessage(op.body)
}

// dpsRegisterResult decides the registration outright (any protocol),
// keeps the final answer for the poll and returns 202 assigning with the
// retry-after, or an error answer.
func (e *Emulator) dpsRegisterResult(c *conn, body []byte) (status, retryAfter int, v any) {
	regID, modelID, err := parseRegisterRequest(body)
	if err != nil {
		return e.dpsFail(c, 400, dpsErrBadRequest, err.Error())
	}
	if regID != "" && regID != c.id {
		return e.dpsFail(c, 400, dpsErrBadRequest, "registrationId "+strconv.Quote(regID)+" is not the connection's")
	}
	opID := "4." + randomHex(8) + "." + newUUID()
	now := e.now()
	ts := now.Format(dpsTimeFormat)
	st := &registrationState{RegistrationID: c.id, LastUpdatedDateTimeUtc: ts}
	final := operationStatus{OperationID: opID, RegistrationState: st}

	e.mu.Lock()
	d, exists := e.devices[c.id]
	var g EnrollmentGroup
	var hasGroup bool
	if c.groupID != "" {
		g, hasGroup = e.group(c.groupID)
	}
	switch {
	case c.groupID != "" && !hasGroup:
		st.Status, st.ErrorCode, st.ErrorMessage = "failed", dpsErrNotFound, "enrollment group "+c.groupID+" no longer exists"
	case hasGroup && !g.Enabled:
		st.Status, st.ErrorCode, st.ErrorMessage = "disabled", dpsErrUnauthorized, "enrollment group "+g.ID+" is disabled"
	case exists && !d.enabled:
		st.Status, st.ErrorCode, st.ErrorMessage = "disabled", dpsErrUnauthorized, "device "+c.id+" is disabled"
	case !exists && (!hasGroup || !e.cfg.autoApprove):
		st.Status, st.ErrorCode, st.ErrorMessage = "failed", dpsErrUnauthorized, "device "+c.id+" is not approved (auto-approve is off)"
	default:
		if !exists {
			d = newDevice(c.id, now)
			e.devices[c.id] = d
		}
		substatus := "initialAssignment"
		if d.provisioned {
			substatus = "reprovisionedToInitialAssignment"
		}
		if hasGroup {
			d.groupID = g.ID
			d.x509 = g.IsX509()
			if !d.x509 {
				pk, _ := domain.DeriveDeviceKey(g.PrimaryKey, c.id)
				sk, _ := domain.DeriveDeviceKey(g.SecondaryKey, c.id)
				d.groupKeys = [2]string{pk, sk}
			}
		}
		if modelID != "" {
			d.modelID = modelID
		}
		d.provisioned = true
		d.lastActivity = now
		st.Status, st.Substatus = "assigned", substatus
		st.CreatedDateTimeUtc = d.created.Format(dpsTimeFormat)
		st.AssignedHub, st.DeviceID = e.cfg.hubHost, c.id
		st.Etag = strconv.Quote(randomHex(8))
	}
	final.Status = st.Status
	fb, err := json.Marshal(final)
	if err == nil {
		for id, op := range e.ops {
			if now.Sub(op.created) > dpsOpTTL {
				delete(e.ops, id)
			}
		}
		e.ops[opID] = &dpsOp{regID: c.id, created: now, body: fb}
	}
	e.mu.Unlock()
	if err != nil {
		return e.dpsFail(c, 500, 500000, "encode registration state")
	}
	e.log.Info("registration", "registration_id", c.id, "status", st.Status, "group_id", c.groupID, "model_id", modelID)
	return 202, e.cfg.retryAfter, operationStatus{OperationID: opID, Status: "assigning"}
}
