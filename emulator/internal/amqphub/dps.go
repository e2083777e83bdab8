package amqphub

import (
	"context"
	"strings"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
	"github.com/iotc-go/iotc/emulator/internal/core"
)

// DPS request vocabulary (B.3).
const (
	dpsOpType       = "iotdps-operation-type"
	dpsOpID         = "iotdps-operation-id"
	dpsForce        = "iotdps-forceRegistration"
	dpsOpRegister   = "iotdps-register"
	dpsOpStatus     = "iotdps-get-operationstatus"
	dpsRetryAfter   = "retry-after"
	dpsStatusCode   = "status-code"
	maxDPSErrorDesc = 1024
)

// dpsReg is one authenticated registration on this connection.
type dpsReg struct {
	scope, regID string
	auth         core.DPSAuth
}

// dpsKey names a registration of the connection: the ID scope ignores
// case, the registration id (a device id) does not.
func dpsKey(scope, regID string) string {
	return strings.ToLower(scope) + "/registrations/" + regID
}

// attachDPS accepts a DPS link when the connection authenticated that
// registration with SASL PLAIN, or authenticates it by its TLS client
// certificate.
func (cs *connState) attachDPS(ctx context.Context, ls *linkState) error {
	a := ls.addr
	key := dpsKey(a.scope, a.regID)
	cs.mu.Lock()
	reg := cs.dps[key]
	certs := cs.certs
	cs.mu.Unlock()
	if reg == nil {
		if len(certs) == 0 {
			return unauthorized("registration %q is not authenticated: use SASL PLAIN {scope}/registrations/{id} with a SAS token, or a client certificate", a.regID)
		}
		auth, err := cs.s.b.AuthenticateDPS(a.scope, a.regID, "", certs)
		if err != nil {
			e := amqpError(err)
			if e.Condition != amqp1.ErrCondNotFound && e.Condition != amqp1.ErrCondInternalError {
				e.Condition = amqp1.ErrCondUnauthorizedAccess
			}
			return e
		}
		reg = &dpsReg{scope: a.scope, regID: a.regID, auth: auth}
	}
	ls.reg = reg
	if ls.l.Role() == amqp1.RoleSender {
		ls.out = newOutbox(ls.l, cs.s.opts.OutboxSize, &cs.wg)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.dps[key] == nil {
		cs.dps[key] = reg
	}
	cs.links[ls.l] = ls
	return nil
}

// dpsRequest runs a register or operation-status request. A 2xx answer
// goes to the registration's receiver link with the request's
// correlation-id and retry-after; an error answer rejects the request with
// status-code and retry-after in the error info.
func (cs *connState) dpsRequest(ctx context.Context, ls *linkState, m *amqp.Message) amqp1.Outcome {
	ov, _ := appProp(m, dpsOpType)
	op, _ := textOf(ov)
	var resp core.DPSResponse
	switch {
	case strings.EqualFold(op, dpsOpRegister):
		// iotdps-forceRegistration needs no handling: every register
		// request re-evaluates the registration.
		resp = cs.s.b.Register(ls.reg.auth, bodyOf(m))
	case strings.EqualFold(op, dpsOpStatus):
		iv, _ := appProp(m, dpsOpID)
		id, _ := textOf(iv)
		if id == "" {
			return rejected(amqp1.ErrCondInvalidField, "operation-status request without "+dpsOpID)
		}
		resp = cs.s.b.PollOperation(ls.reg.auth, id)
	default:
		return rejected(amqp1.ErrCondInvalidField, "unknown "+dpsOpType+" "+quoteShort(op))
	}
	if resp.Status < 200 || resp.Status >= 300 {
		cs.log.Info("DPS request refused", "registration_id", ls.reg.regID, "status", resp.Status)
		info := map[string]any{dpsStatusCode: int32(resp.Status)}
		if resp.RetryAfter >= 0 {
			info[dpsRetryAfter] = int32(resp.RetryAfter)
		}
		desc := string(resp.Body)
		if len(desc) > maxDPSErrorDesc {
			desc = desc[:maxDPSErrorDesc]
		}
		return &amqp1.Rejected{Error: &amqp1.Error{Condition: dpsCondition(resp.Status), Description: desc, Info: info}}
	}
	reply := &amqp.Message{Data: [][]byte{resp.Body}}
	if m.Properties != nil && m.Properties.CorrelationID != nil {
		reply.Properties = &amqp.MessageProperties{CorrelationID: m.Properties.CorrelationID}
	}
	if resp.RetryAfter >= 0 {
		reply.ApplicationProperties = map[string]any{dpsRetryAfter: int32(resp.RetryAfter)}
	}
	cs.mu.Lock()
	var out *linkState
	for _, x := range cs.links {
		if x.reg == ls.reg && x.out != nil && (out == nil || x.seq > out.seq) {
			out = x
		}
	}
	cs.mu.Unlock()
	if out == nil {
		cs.log.Info("DPS answer not delivered: no receiver link", "registration_id", ls.reg.regID)
		return &amqp1.Accepted{}
	}
	if err := out.out.post(reply, nil); err != nil {
		cs.log.Info("DPS answer not delivered", "registration_id", ls.reg.regID, "error", err)
	}
	return &amqp1.Accepted{}
}

// dpsCondition maps a DPS error status to an AMQP condition.
func dpsCondition(status int) amqp1.Symbol {
	switch {
	case status == 401 || status == 403:
		return amqp1.ErrCondUnauthorizedAccess
	case status == 404:
		return amqp1.ErrCondNotFound
	case status == 429:
		return amqp1.ErrCondServerBusy
	case status >= 400 && status < 500:
		return amqp1.ErrCondInvalidField
	}
	return amqp1.ErrCondInternalError
}
