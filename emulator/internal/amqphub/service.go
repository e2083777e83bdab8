package amqphub

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
)

// The service side of IoT Hub's AMQP endpoint: a put-token on $cbs whose
// audience is the hub itself, signed with a shared access policy that has
// ServiceConnect, opens /messages/devicebound (the service sends
// cloud-to-device messages) and /messages/serviceBound/feedback (the
// service receives feedback records) on that connection.

const (
	// propAck is the application property asking for feedback.
	propAck = "iothub-ack"
	// feedbackContentType is the content type of a feedback message.
	feedbackContentType = "application/vnd.microsoft.iothub.feedback.json"
	// maxFeedbackBatch is how many records one feedback message carries.
	maxFeedbackBatch = 100
)

// putServiceToken checks a hub-level put-token (a service policy's SAS).
func (cs *connState) putServiceToken(m *amqp.Message) (int, string) {
	token := string(bodyOf(m))
	if token == "" || len(token) > maxCBSTokenBytes {
		return 400, "the token must be a non-empty amqp-value string"
	}
	auth, err := cs.s.b.AuthenticateService(token, core.RightServiceConnect)
	if err != nil {
		cs.s.opts.Reporter.Refused(netlimit.KindAMQPAuth, "service put-token refused", "reason", netlimit.Reason(err))
		return 401, "Unauthorized: " + err.Error()
	}
	cs.mu.Lock()
	cs.service = auth.Expiry
	if cs.serviceTimer != nil {
		cs.serviceTimer.Stop()
	}
	if !cs.closing {
		cs.serviceTimer = time.AfterFunc(time.Until(auth.Expiry), cs.expireService)
	}
	c := cs.conn
	cs.mu.Unlock()
	if c != nil {
		c.SetLoggedIn()
	}
	cs.log.Debug("service put-token accepted", "policy", auth.Policy, "expiry", auth.Expiry)
	return 200, "OK"
}

// expireService detaches the service's links when its token expired
// without renewal, as IoT Hub does.
func (cs *connState) expireService() {
	cs.mu.Lock()
	if cs.closing || now().Before(cs.service) {
		cs.mu.Unlock()
		return
	}
	var links []*amqp1.Link
	for l, ls := range cs.links {
		if ls.addr.kind == nodeServiceC2D || ls.addr.kind == nodeFeedback || ls.addr.kind == nodeFileNotifications {
			links = append(links, l)
		}
	}
	cs.mu.Unlock()
	if len(links) > 0 {
		cs.log.Info("service SAS token expired without renewal: detaching the service links", "links", len(links))
	}
	for _, l := range links {
		_ = l.Detach(&amqp1.Error{Condition: amqp1.ErrCondUnauthorizedAccess, Description: "SAS token expired"})
	}
}

// attachService accepts the service's links once its token is valid.
func (cs *connState) attachService(ls *linkState) error {
	cs.mu.Lock()
	ok := now().Before(cs.service)
	cs.mu.Unlock()
	if !ok {
		return unauthorized("%s needs a put-token of a shared access policy with ServiceConnect", ls.addr.kind)
	}
	server := ls.l.Role()
	switch ls.addr.kind {
	case nodeServiceC2D:
		if server != amqp1.RoleReceiver {
			return &amqp1.Error{Condition: amqp1.ErrCondNotAllowed, Description: "/messages/devicebound only receives"}
		}
	case nodeFeedback:
		if server != amqp1.RoleSender {
			return &amqp1.Error{Condition: amqp1.ErrCondNotAllowed, Description: "/messages/serviceBound/feedback only sends"}
		}
	case nodeFileNotifications:
		if server != amqp1.RoleSender {
			return &amqp1.Error{Condition: amqp1.ErrCondNotAllowed, Description: "/messages/serviceBound/filenotifications only sends"}
		}
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.links[ls.l] = ls
	switch ls.addr.kind {
	case nodeFeedback:
		cs.wg.Add(1)
		go cs.feedbackLoop(ls.l)
	case nodeFileNotifications:
		cs.wg.Add(1)
		go cs.fileNotificationLoop(ls.l)
	}
	return nil
}

// serviceC2D queues one message of the service for the device its "to"
// names; accepted once the core has queued it (durably).
func (cs *connState) serviceC2D(ctx context.Context, m *amqp.Message) amqp1.Outcome {
	cs.mu.Lock()
	ok := now().Before(cs.service)
	cs.mu.Unlock()
	if !ok {
		return rejected(amqp1.ErrCondUnauthorizedAccess, "the service token expired")
	}
	var to, msgID string
	if p := m.Properties; p != nil {
		if p.To != nil {
			to = *p.To
		}
		if p.MessageID != nil {
			msgID, _ = textOf(p.MessageID)
		}
	}
	var expiry time.Time
	if p := m.Properties; p != nil && p.AbsoluteExpiryTime != nil {
		expiry = *p.AbsoluteExpiryTime
	}
	a, err := parseAddress(to)
	if err != nil || a.kind != nodeC2D || a.moduleID != "" {
		return rejected(amqp1.ErrCondInvalidField, "to must be /devices/{id}/messages/devicebound")
	}
	sm := core.ServiceC2D{MessageID: msgID, Body: bodyOf(m), Properties: map[string]string{}, Expiry: expiry}
	if p := m.Properties; p != nil {
		sm.CorrelationID, _ = textOf(p.CorrelationID)
		sm.UserID = string(p.UserID)
	}
	for k, v := range m.ApplicationProperties {
		if strings.EqualFold(k, propAck) {
			sm.Ack, _ = textOf(v)
			continue
		}
		if s, ok := textOf(v); ok {
			sm.Properties[k] = s
		}
	}
	id, err := cs.s.b.SendServiceC2D(ctx, a.deviceID, sm)
	if err != nil {
		cs.log.Info("service cloud-to-device message refused", "device_id", a.deviceID, "reason", err.Error())
		return &amqp1.Rejected{Error: amqpError(err)}
	}
	cs.log.Debug("service cloud-to-device message queued", "device_id", a.deviceID, "message_id", id)
	return &amqp1.Accepted{}
}

// feedbackLoop sends waiting feedback records on l, one batch per message,
// until the link ends; a batch the service does not accept waits again.
func (cs *connState) feedbackLoop(l *amqp1.Link) {
	defer cs.wg.Done()
	ctx := l.Context()
	for ctx.Err() == nil {
		recs := cs.s.b.TakeFeedback(maxFeedbackBatch)
		if len(recs) == 0 {
			select {
			case <-cs.s.b.FeedbackReady():
			case <-ctx.Done():
			}
			continue
		}
		body, err := json.Marshal(recs)
		if err != nil { // records are strings and times
			cs.log.Error("feedback not encoded", "error", err)
			_ = cs.s.b.SettleFeedback(recs, false)
			return
		}
		ct := feedbackContentType
		m := &amqp.Message{
			Properties: &amqp.MessageProperties{MessageID: newUUID(), ContentType: &ct},
			Data:       [][]byte{body},
		}
		out, err := l.Send(ctx, m)
		_, accepted := out.(*amqp1.Accepted)
		done := err == nil && (accepted || out == nil)
		if serr := cs.s.b.SettleFeedback(recs, done); serr != nil {
			cs.log.Warn("feedback settlement not stored", "error", serr)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			cs.log.Info("feedback not delivered", "reason", err.Error())
		}
	}
}
