package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// methodNameProperty is the cloud-to-device property that marks a queued
// IoT Central command.
const methodNameProperty = "method-name"

type propEvent struct {
	patch     []byte
	sync      bool // get the twin and handle every pending property
	reconnect bool // the sync follows a reconnect
}

// methodJob is a direct-method request with its reply, which answers on
// the session the request came on.
type methodJob struct {
	req     ports.MethodRequest
	respond func(ctx context.Context, status int, payload []byte) error
}

type cloudJob struct {
	msg    domain.CloudMessage
	settle func(domain.Outcome)
}

// events is the client's ports.EventHandler: it only queues, one bounded
// queue per kind of event.
type events struct {
	c *Client
}

// OnDesiredPatch queues a desired patch for the property worker. When the
// queue is full the patch is dropped and the twin is synced again as soon
// as the worker has room, on the live session.
func (e *events) OnDesiredPatch(patch []byte) {
	if !e.c.propQ.push(propEvent{patch: patch}) {
		e.c.props.resync.Store(true)
		e.c.log.Warn("property queue full; the twin is synced again once the queue has room")
	}
}

// OnMethod queues a command; a full queue is answered 503.
func (e *events) OnMethod(req ports.MethodRequest, respond func(ctx context.Context, status int, payload []byte) error) {
	j := methodJob{req: req, respond: respond}
	if !e.c.cmdQ.push(j) {
		e.c.log.Warn("command queue full; answering 503", "command", req.Method)
		e.c.goTracked(func() {
			e.c.respond(j, domain.CommandResponse{Status: 503, Payload: errorBody("the device is busy")})
		})
	}
}

// OnCloudMessage queues a cloud-to-device message; a full queue leaves it
// unsettled for redelivery.
func (e *events) OnCloudMessage(msg domain.CloudMessage, settle func(domain.Outcome)) {
	if !e.c.msgQ.push(cloudJob{msg: msg, settle: settle}) {
		e.c.log.Warn("cloud message queue full; the message stays unsettled and is delivered again")
	}
}

func isTooLarge(err error) bool { return errors.Is(err, domain.ErrMessageTooLarge) }

func errorBody(msg string) map[string]string { return map[string]string{"error": msg} }

// recovered turns a handler panic into an error and logs it with its stack.
func (c *Client) recovered(what string, r any) error {
	err := fmt.Errorf("iotc: %s handler panicked: %v", what, r)
	c.log.Error("handler panicked", "handler", what, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return err
}

// requestSync asks the property worker for a twin sync; when the queue is
// full the worker does it once it has room.
func (c *Client) requestSync(reconnect bool) {
	c.props.resync.Store(false)
	if !c.propQ.push(propEvent{sync: true, reconnect: reconnect}) {
		c.props.resync.Store(true)
		c.log.Warn("property queue full; the twin is synced once the queue has room")
	}
}

// handleProperty runs on the property worker.
func (c *Client) handleProperty(ev propEvent) {
	c.propertyEvent(ev)
	if c.props.resync.Swap(false) {
		c.syncTwin(false)
	}
}

func (c *Client) propertyEvent(ev propEvent) {
	if ev.sync {
		c.syncTwin(ev.reconnect)
		return
	}
	version, props, err := domain.ParseDesiredPatch(ev.patch)
	if err != nil {
		c.log.Warn("ignoring a malformed desired patch", "err", err)
		return
	}
	switch {
	case !c.props.synced:
		// No twin read yet on this session: the twin says what is pending.
		c.syncTwin(false)
		return
	case version != 0 && version <= c.props.lastDesired:
		c.log.Debug("desired patch already handled", "version", version)
		return
	case version != 0 && version != c.props.lastDesired+1:
		// A gap (a patch was missed) or an absurd jump: the twin is
		// authoritative, and its version replaces the one seen.
		c.log.Warn("desired patch version gap; syncing the twin", "have", c.props.lastDesired, "got", version)
		c.syncTwin(false)
		return
	}
	c.props.lastDesired = version
	c.applyDesired(props, nil)
}

// syncTwin reads the twin on the live session and handles every desired
// property not yet acknowledged at its version. A failed read is retried
// with the backoff while the session lives; once it is gone, the next
// session's sync takes over.
func (c *Client) syncTwin(reconnect bool) {
	for attempt := 0; ; attempt++ {
		c.hold.mu.Lock()
		s := c.hold.sess
		if s != nil {
			s.ops.Add(1)
		}
		c.hold.mu.Unlock()
		if s == nil {
			c.props.synced = false
			return
		}
		b, err := s.GetTwin(c.runCtx)
		c.hold.release(s)
		if err == nil {
			var twin domain.Twin
			if twin, err = domain.ParseTwin(b); err == nil {
				c.applyTwin(s, twin, reconnect)
				return
			}
		}
		if c.runCtx.Err() != nil {
			return
		}
		d := c.opts.Backoff.Delay(attempt, randFloat())
		c.log.Warn("twin sync failed; retrying on the live session", "err", err, "retry_in", d)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.Done():
		case <-c.runCtx.Done():
		}
		t.Stop()
	}
}

func (c *Client) applyTwin(s *session, twin domain.Twin, reconnect bool) {
	pending := twin.PendingDesired()
	// The twin is authoritative: after a re-provisioning (a recreated or
	// moved device) its versions may start again from 1.
	first := !c.props.synced
	c.props.lastDesired = twin.DesiredVersion
	c.props.synced = true
	c.log.Debug("twin synced", "desired_version", twin.DesiredVersion, "pending", len(pending))
	if reconnect && len(pending) > 0 {
		c.setStatus(domain.ConnectionStatus{State: domain.StateConnected, Reason: domain.ReasonDesiredChangedOffline, Transport: s.transport})
	}
	if c.opts.SyncAllDesired && first {
		// The whole desired document goes to the handler; only the
		// pending values are acknowledged.
		all := twin.AllDesired()
		isPending := make(map[string]bool, len(pending))
		for _, p := range pending {
			isPending[propKey(p.Component, p.Name)] = true
		}
		c.applyDesired(all, isPending)
		return
	}
	c.applyDesired(pending, nil)
}

// propKey identifies a property for in-flight tracking.
func propKey(component, name string) string { return component + "\x00" + name }

// applyDesired calls the property handler for each property and reports
// the acknowledgements as one patch (when report is not nil, only for the
// properties it marks). While it runs, the properties are "in flight" at
// their version: a final acknowledgement for that version given meanwhile
// with AckProperty supersedes the handler's answer in that patch, or is
// reported right after it, never before.
func (c *Client) applyDesired(props []domain.DesiredProperty, report map[string]bool) {
	var handled []domain.DesiredProperty
	for _, p := range props {
		if c.handlers.propertyHandler(p) != nil {
			handled = append(handled, p)
		}
	}
	if n := len(props) - len(handled); n > 0 {
		c.log.Info("no property handler; desired properties left unacknowledged", "count", n)
	}
	props = handled
	if len(props) == 0 {
		return
	}
	c.props.begin(props)
	defer c.flushDeferredAcks()

	patch := map[string]any{}
	var acks []map[string]any
	for _, p := range props {
		if c.runCtx.Err() != nil {
			return
		}
		ack := c.callProperty(c.handlers.propertyHandler(p), p)
		c.log.Info("property handled", "component", p.Component, "name", p.Name, "version", p.Version, "status", ack.Status)
		if report != nil && !report[propKey(p.Component, p.Name)] {
			continue
		}
		// MergePatch keeps references to its source's maps; acks gets its
		// own copy.
		acks = append(acks, domain.AckPatch(p, ack))
		domain.MergePatch(patch, domain.AckPatch(p, ack))
	}
	final := c.props.handled()
	for _, f := range final {
		domain.MergePatch(patch, f.merge)
		acks = append(acks, f.alone)
	}
	var err error
	if len(patch) > 0 {
		err = c.report(c.runCtx, patch)
	}
	defer func() {
		for _, f := range final {
			f.done <- err
		}
	}()
	if isTooLarge(err) && len(acks) > 1 {
		// Too many acknowledgements for one patch: send them one by one.
		for _, a := range acks {
			if err = c.report(c.runCtx, a); err != nil {
				break
			}
		}
	}
	if err != nil && c.runCtx.Err() == nil {
		c.log.Warn("cannot report property acknowledgements; they are handled again at the next twin sync", "err", err)
	}
}

// flushDeferredAcks reports the acknowledgements given while the
// properties were in flight, then ends the in-flight period.
func (c *Client) flushDeferredAcks() {
	for {
		final, ended := c.props.finish()
		if ended {
			return
		}
		for _, f := range final {
			err := c.report(c.runCtx, f.alone)
			if err != nil {
				c.log.Warn("cannot report a final property acknowledgement", "err", err)
			}
			f.done <- err
		}
	}
}

func (c *Client) callProperty(h PropertyHandler, p domain.DesiredProperty) (ack domain.PropertyAck) {
	defer func() {
		if r := recover(); r != nil {
			err := c.recovered("property", r)
			ack = domain.PropertyAck{Status: 500, Description: err.Error()}
		}
	}()
	ack = h(c.runCtx, p)
	if ack.Status == 0 {
		ack.Status = 200
	}
	return ack
}

// handleMethod runs on the command worker.
func (c *Client) handleMethod(j methodJob) {
	component, name := domain.SplitMethodName(j.req.Method)
	req := domain.CommandRequest{Name: name, Component: component, RequestID: j.req.RequestID}
	if len(j.req.Payload) > 0 {
		req.Payload = json.RawMessage(j.req.Payload)
	}
	h := c.handlers.commandHandler(component, name)
	var resp domain.CommandResponse
	if h == nil {
		c.log.Info("no command handler; answering 501", "command", j.req.Method)
		resp = domain.CommandResponse{Status: 501, Payload: errorBody("no command handler is registered on the device")}
	} else {
		resp = c.callCommand(h, req)
	}
	c.respond(j, resp)
}

func (c *Client) callCommand(h CommandHandler, req domain.CommandRequest) (resp domain.CommandResponse) {
	defer func() {
		if r := recover(); r != nil {
			err := c.recovered("command", r)
			resp = domain.CommandResponse{Status: 500, Payload: errorBody(err.Error())}
		}
	}()
	return h(c.runCtx, req)
}

// respond answers j on the session the request came on: a request id
// means nothing on another connection.
func (c *Client) respond(j methodJob, resp domain.CommandResponse) {
	status, body, err := resp.Encode()
	if err != nil {
		c.log.Warn("command response cannot be encoded; answering 500", "command", j.req.Method, "err", err)
		status, body, _ = domain.CommandResponse{Status: 500, Payload: errorBody(err.Error())}.Encode()
	}
	if c.runCtx.Err() != nil {
		return
	}
	if err := j.respond(c.runCtx, status, body); err != nil {
		c.log.Warn("cannot answer the command", "command", j.req.Method, "err", err)
		return
	}
	c.log.Info("command answered", "command", j.req.Method, "status", status)
}

// handleCloud runs on the cloud-message worker. The message is settled
// with the handler's outcome once it returned normally; a panicking
// handler rejects it (a poison message must not come back forever); a
// handler cut off by Close leaves it unsettled, so it comes again.
func (c *Client) handleCloud(j cloudJob) {
	outcome, settle := c.runCloud(j.msg)
	if !settle || c.runCtx.Err() != nil {
		c.log.Info("cloud-to-device message left unsettled; it is delivered again", "message_id", j.msg.MessageID())
		return
	}
	if j.settle != nil {
		j.settle(outcome)
	}
}

func (c *Client) runCloud(msg domain.CloudMessage) (outcome domain.Outcome, settle bool) {
	queued, message := c.handlers.cloudHandlers()
	defer func() {
		if r := recover(); r != nil {
			_ = c.recovered("cloud message", r)
			outcome, settle = domain.Reject, true
		}
	}()
	if methodName, ok := msg.Properties[methodNameProperty]; ok {
		component, name := domain.ParseQueuedCommandName(methodName)
		req := domain.CommandRequest{Name: name, Component: component, Queued: true}
		if len(msg.Body) > 0 {
			req.Payload = json.RawMessage(msg.Body)
		}
		command := c.handlers.commandHandler(component, name)
		switch {
		case name == "":
			c.log.Warn("queued command without a name; rejected", "method_name", methodName)
			return domain.Reject, true
		case queued != nil:
			o := queued(c.runCtx, req)
			c.log.Info("queued command handled", "component", component, "command", name, "outcome", o.String())
			return o, true
		case command != nil:
			_ = command(c.runCtx, req)
			c.log.Info("queued command handled by the command handler", "component", component, "command", name)
			return domain.Complete, true
		default:
			c.log.Info("no handler for a queued command; completed", "component", component, "command", name)
			return domain.Complete, true
		}
	}
	if message == nil {
		c.log.Info("no cloud message handler; completed", "message_id", msg.MessageID())
		return domain.Complete, true
	}
	o := message(c.runCtx, msg)
	c.log.Debug("cloud message handled", "message_id", msg.MessageID(), "outcome", o.String())
	return o, true
}
