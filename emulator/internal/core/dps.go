package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// dpsOp is one registration operation, answered to polls.
type dpsOp struct {
	regID   string
	created time.Time
	body    []byte // the final 200 answer
}

// opRef names an operation in Core.opsOrder, oldest first.
type opRef struct {
	id      string
	created time.Time
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

// DPSResponse is the answer to a DPS request, the same for every protocol.
type DPSResponse struct {
	// Status is the HTTP-like status (202, 200, 400, 401, 404, 500).
	Status int
	// RetryAfter is the retry-after in seconds, -1 for none.
	RetryAfter int
	// Body is the JSON answer.
	Body []byte
}

// parseRegisterRequest decodes a DPS register body and returns the
// registration id it names ("" when absent) and the model id of its
// payload (modelId, else the legacy iotcModelId; "" when absent). It
// returns an error for a body that is not a JSON object (null included)
// and for a model id that is not a DTMI of at most MaxModelIDLength
// characters.
func parseRegisterRequest(body []byte) (regID, modelID string, err error) {
	var req registerRequest
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) == 0 || b[0] != '{' {
		return "", "", errors.New("register body is not a JSON object")
	}
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
	if modelID != "" && !ValidDTMI(modelID) {
		return "", "", fmt.Errorf("%w: modelId is not a DTMI of at most %d characters", ErrInvalid, MaxModelIDLength)
	}
	if modelID == "" {
		// The legacy field also carried "urn:" ids: only its length and
		// characters are checked.
		modelID = p.IotcModelID
		if len(modelID) > MaxModelIDLength || strings.Trim(modelID, legacyModelIDChars) != "" {
			return "", "", fmt.Errorf("%w: iotcModelId is not a model id of at most %d characters", ErrInvalid, MaxModelIDLength)
		}
	}
	return req.RegistrationID, modelID, nil
}

// legacyModelIDChars are the characters of a legacy iotcModelId.
const legacyModelIDChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:;._-"

// MaxModelIDLength is the longest model id (DTMI) a registration may
// carry: DTDL's limit for an interface identifier, 2048 characters.
const MaxModelIDLength = 2048

// dtmiPattern is the DTMI syntax: "dtmi:" path segments of letters,
// digits and underscores (starting with a letter, not ending with an
// underscore) separated by ':', then ';' and a version of 1 to 9 digits
// without a leading zero.
var dtmiPattern = regexp.MustCompile(`^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*;[1-9][0-9]{0,8}$`)

// ValidDTMI reports whether s is a digital twin model identifier of at
// most MaxModelIDLength characters.
func ValidDTMI(s string) bool {
	return len(s) <= MaxModelIDLength && dtmiPattern.MatchString(s)
}

func (c *Core) answer(status, retryAfter int, v any) DPSResponse {
	body, err := json.Marshal(v)
	if err != nil {
		return DPSResponse{Status: 500, RetryAfter: -1, Body: []byte(`{"errorCode":500000,"message":"encode answer"}`)}
	}
	return DPSResponse{Status: status, RetryAfter: retryAfter, Body: body}
}

// dpsFail returns an error answer (no retry-after, error body).
func (c *Core) dpsFail(regID string, status int, code int, msg string) DPSResponse {
	c.log.Info("DPS request refused", "registration_id", regID, "status", status, "reason", msg)
	return c.answer(status, -1, dpsError{
		ErrorCode: code, TrackingID: NewUUID(), Message: msg, TimestampUtc: c.now().Format(dpsTimeFormat),
	})
}

// PollOperation answers an operation-status poll of an authenticated
// registration: the final state of its operation, or 404.
func (c *Core) PollOperation(a DPSAuth, operationID string) DPSResponse {
	c.mu.Lock()
	op, ok := c.ops[operationID]
	c.mu.Unlock()
	if !ok || op.regID != a.RegistrationID {
		return c.dpsFail(a.RegistrationID, 404, dpsErrNotFound, "operation "+strconv.Quote(operationID)+" not found")
	}
	return DPSResponse{Status: 200, RetryAfter: -1, Body: op.body}
}

// Register decides a registration outright, keeps the final answer for
// the poll and returns 202 assigning with the retry-after, or an error
// answer.
func (c *Core) Register(a DPSAuth, body []byte) DPSResponse {
	regID, modelID, err := parseRegisterRequest(body)
	if err != nil {
		return c.dpsFail(a.RegistrationID, 400, dpsErrBadRequest, err.Error())
	}
	if regID != "" && regID != a.RegistrationID {
		return c.dpsFail(a.RegistrationID, 400, dpsErrBadRequest, "registrationId "+strconv.Quote(regID)+" is not the connection's")
	}
	id := a.RegistrationID
	opID := "4." + RandomHex(8) + "." + NewUUID()
	now := c.now()
	ts := now.Format(dpsTimeFormat)
	st := &registrationState{RegistrationID: id, LastUpdatedDateTimeUtc: ts}
	final := operationStatus{OperationID: opID, RegistrationState: st}

	var staged <-chan error
	c.mu.Lock()
	svc := c.dpsLocked()
	var enr *Enrollment
	if a.Enrollment {
		enr = svc.enrollments[id]
	}
	devID := id
	if enr != nil {
		devID = enr.Device()
	}
	d, exists := c.devices[devID]
	var g EnrollmentGroup
	var hasGroup bool
	if a.GroupID != "" {
		g, hasGroup = c.group(a.GroupID)
	}
	var settings DPSSettings
	switch {
	case enr != nil:
		settings = enr.DPS
	case hasGroup && g.DPS != nil:
		settings = *g.DPS
	}
	prev := svc.regs[id]
	switch {
	case a.Enrollment && enr == nil:
		st.Status, st.ErrorCode, st.ErrorMessage = "failed", dpsErrNotFound, "enrollment "+id+" no longer exists"
	case enr != nil && !enr.Enabled:
		st.Status, st.ErrorCode, st.ErrorMessage = "disabled", dpsErrUnauthorized, "enrollment "+id+" is disabled"
	case a.GroupID != "" && !hasGroup:
		st.Status, st.ErrorCode, st.ErrorMessage = "failed", dpsErrNotFound, "enrollment group "+a.GroupID+" no longer exists"
	case hasGroup && !g.Enabled:
		st.Status, st.ErrorCode, st.ErrorMessage = "disabled", dpsErrUnauthorized, "enrollment group "+g.ID+" is disabled"
	case exists && !d.enabled:
		st.Status, st.ErrorCode, st.ErrorMessage = "disabled", dpsErrUnauthorized, "device "+devID+" is disabled"
	case !settings.hubAllowed(c.cfg.HubHost):
		st.Status, st.ErrorCode, st.ErrorMessage = "failed", dpsErrNoHub, "the enrollment names no IoT hub this emulator serves ("+c.cfg.HubHost+")"
	case !exists && enr == nil && (!hasGroup || !c.cfg.AutoApprove):
		st.Status, st.ErrorCode, st.ErrorMessage = "failed", dpsErrUnauthorized, "device "+id+" is not approved (auto-approve is off)"
	default:
		if !exists {
			d = newDevice(devID, now)
			c.devices[devID] = d
			c.sinkNotificationLocked(d, DeviceNotification{Op: OpCreateDeviceIdentity})
			c.observeLocked(FeedEvent{Kind: FeedRegistered, DeviceID: devID, Time: now})
		}
		wasProvisioned := d.provisioned
		// A first assignment, or one after the registration state was
		// deleted, gets the enrollment's initial twin.
		first := prev == nil || prev.Status != "assigned"
		substatus := SubstatusInitial
		if !first {
			substatus = SubstatusReprovisioned
		}
		switch {
		case enr != nil:
			d.groupID = ""
			d.x509 = enr.IsX509()
			if d.x509 {
				d.indivKeys, d.groupKeys = [2]string{}, [2]string{}
				d.thumbprints = enr.thumbprints()
			} else {
				d.indivKeys = [2]string{enr.PrimaryKey, enr.SecondaryKey}
				d.thumbprints = nil
			}
			d.edge = enr.DPS.IotEdge
		case hasGroup:
			d.groupID = g.ID
			d.x509 = g.IsX509()
			if !d.x509 {
				pk, _ := deriveKey(g.PrimaryKey, id)
				sk, _ := deriveKey(g.SecondaryKey, id)
				d.groupKeys = [2]string{pk, sk}
			}
			if g.Type == GroupTypeIoTEdge {
				d.edge = true
			}
		}
		if first {
			c.applyInitialTwinLocked(d, settings.InitialTwin, now)
		}
		if modelID != "" {
			d.modelID = modelID
		}
		d.provisioned = true
		d.lastActivity = now
		st.Status, st.Substatus = "assigned", substatus
		st.CreatedDateTimeUtc = d.created.Format(dpsTimeFormat)
		st.AssignedHub, st.DeviceID = c.cfg.HubHost, devID
		staged = c.stageDeviceLocked(d)
		if !wasProvisioned {
			c.observeLocked(FeedEvent{Kind: FeedProvisioned, DeviceID: devID, Time: now})
		}
	}
	rs := &RegistrationState{RegistrationID: id, Status: st.Status, Substatus: st.Substatus, ErrorCode: st.ErrorCode,
		ErrorMessage: st.ErrorMessage, GroupID: a.GroupID, Created: now, Updated: now, ETag: newETag()}
	if st.Status == "assigned" {
		rs.DeviceID, rs.AssignedHub = devID, c.cfg.HubHost
		if prev != nil && prev.Status == "assigned" {
			rs.Created = prev.Created
		}
		st.CreatedDateTimeUtc = rs.Created.Format(dpsTimeFormat)
	}
	st.Etag = rs.ETag
	svc.regs[id] = rs
	staged2 := c.stageLocked(regStateChange(rs))
	final.Status = st.Status
	fb, err := json.Marshal(final)
	if err == nil {
		// Operations expire oldest first, in the order they were made: the
		// sweep looks only at those due (a scan of every operation on each
		// registration made a fleet's registrations quadratic).
		for len(c.opsOrder) > 0 && now.Sub(c.opsOrder[0].created) > dpsOpTTL {
			old := c.opsOrder[0]
			if op := c.ops[old.id]; op != nil && op.created.Equal(old.created) {
				delete(c.ops, old.id)
			}
			c.opsOrder[0] = opRef{}
			c.opsOrder = c.opsOrder[1:]
		}
		c.ops[opID] = &dpsOp{regID: id, created: now, body: fb}
		c.opsOrder = append(c.opsOrder, opRef{id: opID, created: now})
	}
	c.mu.Unlock()
	if err != nil {
		return c.dpsFail(id, 500, 500000, "encode registration state")
	}
	if err := errors.Join(awaitNow(staged), awaitNow(staged2)); err != nil {
		return c.dpsFail(id, 500, 500000, "registration not stored")
	}
	c.log.Info("registration", "registration_id", id, "status", st.Status, "group_id", a.GroupID, "model_id", modelID)
	return c.answer(202, c.cfg.RetryAfter, operationStatus{OperationID: opID, Status: "assigning"})
}
