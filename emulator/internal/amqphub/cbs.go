package amqphub

import (
	"context"
	"errors"
	"strings"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
)

// CBS put-token vocabulary (E.2).
const (
	cbsOperation     = "put-token"
	cbsTypeSB        = "servicebus.windows.net:sastoken"
	cbsTypeHub       = "azure-devices.net:sastoken"
	cbsStatusCode    = "status-code"
	cbsStatusDesc    = "status-description"
	maxCBSTokenBytes = 4096
)

// attachCBS accepts a $cbs link in either direction.
func (cs *connState) attachCBS(ls *linkState) error {
	if ls.l.Role() == amqp1.RoleSender {
		ls.out = newOutbox(ls.l, cs.s.opts.OutboxSize, &cs.wg)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.links[ls.l] = ls
	if ls.out != nil {
		cs.cbsOut = append(cs.cbsOut, ls)
	}
	return nil
}

// cbsRequest handles a put-token and answers on the $cbs receiver link
// with status-code 200 (or 400/401/404) and correlation-id = message-id.
func (cs *connState) cbsRequest(ctx context.Context, m *amqp.Message) amqp1.Outcome {
	status, desc := cs.putToken(ctx, m)
	reply := &amqp.Message{
		ApplicationProperties: map[string]any{cbsStatusCode: int32(status), cbsStatusDesc: desc},
	}
	var replyTo string
	if p := m.Properties; p != nil {
		if p.MessageID != nil {
			reply.Properties = &amqp.MessageProperties{CorrelationID: p.MessageID}
		}
		if p.ReplyTo != nil {
			replyTo = *p.ReplyTo
		}
	}
	cs.mu.Lock()
	var out, match *linkState
	for _, ls := range cs.cbsOut {
		if replyTo != "" && strings.EqualFold(targetOf(ls), replyTo) && (match == nil || ls.seq > match.seq) {
			match = ls
		}
		if out == nil || ls.seq > out.seq {
			out = ls
		}
	}
	if match != nil {
		out = match
	}
	cs.mu.Unlock()
	if out == nil {
		cs.log.Info("put-token answer not delivered: no $cbs receiver link", "status", status)
		return &amqp1.Accepted{}
	}
	if err := out.out.post(reply, nil); err != nil {
		cs.log.Info("put-token answer not delivered", "error", err)
	}
	return &amqp1.Accepted{}
}

func targetOf(ls *linkState) string {
	if t := ls.l.Target(); t != nil {
		return t.Address
	}
	return ""
}

// putToken checks one put-token request and records the token; it returns
// the CBS status and description. Descriptions never quote the token.
func (cs *connState) putToken(ctx context.Context, m *amqp.Message) (int, string) {
	opv, _ := appProp(m, "operation")
	op, _ := textOf(opv)
	if !strings.EqualFold(op, cbsOperation) {
		return 400, "unsupported operation " + quoteShort(op)
	}
	tv, _ := appProp(m, "type")
	typ, _ := textOf(tv)
	if !strings.EqualFold(typ, cbsTypeSB) && !strings.EqualFold(typ, cbsTypeHub) {
		return 400, "unsupported token type " + quoteShort(typ)
	}
	nv, _ := appProp(m, "name")
	name, _ := textOf(nv)
	if cs.eh != nil && cs.eh.ClaimsAudience(name) {
		status, desc := cs.eh.PutToken(name, string(bodyOf(m)))
		if status == 200 {
			cs.mu.Lock()
			c := cs.conn
			cs.mu.Unlock()
			if c != nil {
				c.SetLoggedIn()
			}
		} else {
			cs.s.opts.Reporter.Refused(netlimit.KindAMQPAuth, "Event Hubs put-token refused", "status", status)
		}
		return status, desc
	}
	if isServiceAudience(name, cs.s.opts.HubHost) {
		return cs.putServiceToken(m)
	}
	aud, err := parseAudience(name)
	if err != nil {
		return 400, "bad audience: " + err.Error()
	}
	if aud.moduleID != "" {
		return 400, "modules are not supported by the emulator"
	}
	if !strings.EqualFold(aud.host, cs.s.opts.HubHost) {
		cs.s.opts.Reporter.Refused(netlimit.KindAMQPAuth, "put-token refused: audience names another hub", "audience_host", netlimit.Quote(aud.host), "hub_host", cs.s.opts.HubHost)
		return 401, "Unauthorized: audience names hub " + quoteShort(aud.host)
	}
	token := string(bodyOf(m))
	if token == "" || len(token) > maxCBSTokenBytes {
		return 400, "the token must be a non-empty amqp-value string"
	}
	auth, err := cs.s.b.AuthenticateHub(aud.deviceID, token, nil)
	if err != nil {
		cs.s.opts.Reporter.Refused(netlimit.KindAMQPAuth, "put-token refused", "device_id", netlimit.Quote(aud.deviceID), "reason", netlimit.Reason(err))
		if errors.Is(err, core.ErrNotFound) {
			return 404, "Not Found: " + err.Error()
		}
		return 401, "Unauthorized: " + err.Error()
	}
	cs.grantToken(aud.deviceID, auth.Expiry)
	cs.mu.Lock()
	c := cs.conn
	cs.mu.Unlock()
	if c != nil {
		c.SetLoggedIn() // a valid token: the limits of a logged-in connection apply
	}
	cs.log.Debug("put-token accepted", "device_id", aud.deviceID, "expiry", auth.Expiry)
	return 200, "OK"
}

// quoteShort quotes s, cut to 64 bytes.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return `"` + s + `"`
}
