package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// methodNameProperty is the cloud-to-device property that marks a queued
// IoT Central command.
const methodNameProperty = "method-name"

// sessionRef is filled once the transport's Connect returned, so that a
// command that arrived during Connect is answered on its own session.
type sessionRef struct {
	ready chan struct{}
	s     ports.HubSession // nil when Connect failed
}

type propEvent struct {
	patch     []byte
	sync      bool // get the twin and handle every pending property
	reconnect bool // the sync follows a reconnect
}

type methodJob struct {
	req ports.MethodRequest
	ref *sessionRef
}

type cloudJob struct {
	msg    domain.CloudMessage
	settle func(domain.Outcome)
}

// events is the ports.EventHandler of one session: it only queues.
type events struct {
	c   *Client
	ref *sessionRef
}

// OnDesiredPatch queues a desired patch for the property worker.
func (e *events) OnDesiredPatch(patch []byte) {
	if !e.c.propQ.push(propEvent{patch: patch}) {
		e.c.log.Warn("property queue full; the patch is handled by the twin sync after the next reconnect")
	}
}

// OnMethod queues a command; a full queue is answered 503.
func (e *events) OnMethod(req ports.MethodRequest) {
	if !e.c.cmdQ.push(methodJob{req: req, ref: e.ref}) {
		e.c.log.Warn("command queue full; answering 503", "command", req.Method)
		e.c.goTracked(func() {
			e.c.respond(e.ref, req, domain.CommandResponse{Status: 503, Payload: errorBody("the device is busy")})
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

func errorBody(msg string) map[string]string { return map[string]string{"error": msg} }

// recovered turns a handler panic into an error and logs it with its stack.
func (c *Client) recovered(what string, r any) error {
	err := fmt.Errorf("iotc: %s handler panicked: %v", what, r)
	c.log.Error("handler panicked", "handler", what, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return err
}

// handleProperty runs on the property worker.
func (c *Client) handleProperty(ev propEvent) {
	if ev.sync {
		c.syncTwin(ev.reconnect)
		return
	}
	version, props, err := domain.ParseDesiredPatch(ev.patch)
	if err != nil {
		c.log.Warn("ignoring a malformed desired patch", "err", err)
		return
	}
	if version != 0 && version <= c.lastDesired {
		c.log.Debug("desired patch already handled", "version", version)
		return
	}
	c.lastDesired = version
	c.applyDesired(props)
}

// syncTwin reads the twin and handles every desired property not yet
// acknowledged at its version.
func (c *Client) syncTwin(reconnect bool) {
	s, err := c.current()
	if err != nil {
		return
	}
	b, err := s.GetTwin(c.runCtx)
	if err != nil {
		c.log.Warn("twin sync: cannot get the twin; retried after the next reconnect", "err", err)
		return
	}
	twin, err := domain.ParseTwin(b)
	if err != nil {
		c.log.Warn("twin sync: malformed twin", "err", err)
		return
	}
	pending := twin.PendingDesired()
	// The twin is authoritative: after a re-provisioning (a recreated or
	// moved device) its versions may start again from 1.
	c.lastDesired = twin.DesiredVersion
	c.log.Debug("twin synced", "desired_version", twin.DesiredVersion, "pending", len(pending))
	if reconnect && len(pending) > 0 {
		c.setStatus(domain.ConnectionStatus{State: domain.StateConnected, Reason: domain.ReasonDesiredChangedOffline, Transport: s.transport})
	}
	c.applyDesired(pending)
}

// propKey identifies a property for in-flight tracking.
func propKey(component, name string) string { return component + "\x00" + name }

// applyDesired calls the property handler for each property and reports
// the acknowledgements as one patch. While it runs, the properties are "in
// flight": a final acknowledgement given meanwhile with AckProperty (from
// inside the handler or from another goroutine) supersedes the handler's
// answer in that patch, or is reported right after it, never before.
func (c *Client) applyDesired(props []domain.DesiredProperty) {
	if len(props) == 0 {
		return
	}
	c.handlers.RLock()
	h := c.handlers.property
	c.handlers.RUnlock()
	if h == nil {
		c.log.Info("no property handler; desired properties left unacknowledged", "count", len(props))
		return
	}
	inflight := make(map[string]bool, len(props))
	for _, p := range props {
		inflight[propKey(p.Component, p.Name)] = true
	}
	c.ackMu.Lock()
	c.inflight, c.handling = inflight, true
	c.ackMu.Unlock()
	defer c.flushDeferredAcks()

	patch := map[string]any{}
	var acks []map[string]any
	for _, p := range props {
		if c.runCtx.Err() != nil {
			return
		}
		ack := c.callProperty(h, p)
		one := domain.AckPatch(p, ack)
		// MergePatch keeps references to one's maps; acks gets its own copy.
		acks = append(acks, domain.AckPatch(p, ack))
		domain.MergePatch(patch, one)
		c.log.Info("property handled", "component", p.Component, "name", p.Name, "version", p.Version, "status", ack.Status)
	}
	c.ackMu.Lock()
	final := c.deferred
	c.deferred, c.handling = nil, false
	c.ackMu.Unlock()
	for _, f := range final {
		domain.MergePatch(patch, f.merge)
		acks = append(acks, f.alone)
	}
	err := c.report(c.runCtx, patch)
	defer func() {
		for _, f := range final {
			f.done <- err
		}
	}()
	if errors.Is(err, domain.ErrMessageTooLarge) && len(acks) > 1 {
		// Too many acknowledgements for one patch: send them one by one.
		for _, a := range acks {
			if err = c.report(c.runCtx, a); err != nil {
				break
			}
		}
	}
	if err != nil {
		c.log.Warn("cannot report property acknowledgements; they are handled again after the next reconnect", "err", err)
	}
}

// deferredAck is a final acknowledgement given while its property was in
// flight, twice so that merging one copy leaves the other intact; done
// receives the result of reporting it.
type deferredAck struct {
	merge, alone map[string]any
	done         chan error
}

// flushDeferredAcks reports the acknowledgements given while the
// properties were in flight, then ends the in-flight period.
func (c *Client) flushDeferredAcks() {
	for {
		c.ackMu.Lock()
		final := c.deferred
		c.deferred, c.handling = nil, false
		if len(final) == 0 {
			c.inflight = nil
			c.ackMu.Unlock()
			return
		}
		c.ackMu.Unlock()
		for _, f := range final {
			err := c.report(c.runCtx, f.alone)
			if err != nil {
				c.log.Warn("cannot report a final property acknowledgement", "err", err)
			}
			f.done <- err
		}
	}
}

// deferAck hands the acknowledgement to the property worker when p is in
// flight and reports whether it did. done delivers the report's result; it
// is nil while handlers still run, because the caller may be the handler
// itself and must not wait for its own return.
func (c *Client) deferAck(p domain.DesiredProperty, ack domain.PropertyAck) (done <-chan error, deferred bool) {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	if !c.inflight[propKey(p.Component, p.Name)] {
		return nil, false
	}
	d := deferredAck{merge: domain.AckPatch(p, ack), alone: domain.AckPatch(p, ack), done: make(chan error, 1)}
	c.deferred = append(c.deferred, d)
	if c.handling {
		return nil, true
	}
	return d.done, true
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
	c.handlers.RLock()
	h := c.handlers.command
	c.handlers.RUnlock()
	var resp domain.CommandResponse
	if h == nil {
		c.log.Info("no command handler; answering 501", "command", j.req.Method)
		resp = domain.CommandResponse{Status: 501, Payload: errorBody("no command handler is registered on the device")}
	} else {
		resp = c.callCommand(h, req)
	}
	c.respond(j.ref, j.req, resp)
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

// respond sends resp on the session the request came on.
func (c *Client) respond(ref *sessionRef, req ports.MethodRequest, resp domain.CommandResponse) {
	status, body, err := resp.Encode()
	if err != nil {
		c.log.Warn("command response cannot be encoded; answering 500", "command", req.Method, "err", err)
		status, body, _ = domain.CommandResponse{Status: 500, Payload: errorBody(err.Error())}.Encode()
	}
	select {
	case <-ref.ready:
	case <-c.runCtx.Done():
		return
	}
	if ref.s == nil {
		return
	}
	if err := ref.s.RespondMethod(c.runCtx, req.RequestID, status, body); err != nil {
		c.log.Warn("cannot answer the command", "command", req.Method, "err", err)
		return
	}
	c.log.Info("command answered", "command", req.Method, "status", status)
}

// handleCloud runs on the cloud-message worker. The message is settled
// after its handler returned, even if it panicked, so that a poison
// message is not delivered forever.
func (c *Client) handleCloud(j cloudJob) {
	defer func() {
		if j.settle != nil {
			j.settle(domain.Complete)
		}
	}()
	c.handlers.RLock()
	queued, command, message := c.handlers.queued, c.handlers.command, c.handlers.message
	c.handlers.RUnlock()
	defer func() {
		if r := recover(); r != nil {
			_ = c.recovered("cloud message", r)
		}
	}()
	if methodName, ok := j.msg.Properties[methodNameProperty]; ok {
		component, name := domain.ParseQueuedCommandName(methodName)
		req := domain.CommandRequest{Name: name, Component: component, Queued: true}
		if len(j.msg.Body) > 0 {
			req.Payload = json.RawMessage(j.msg.Body)
		}
		switch {
		case name == "":
			c.log.Warn("queued command without a name; settled", "method_name", methodName)
		case queued != nil:
			queued(c.runCtx, req)
			c.log.Info("queued command handled", "component", component, "command", name)
		case command != nil:
			_ = command(c.runCtx, req)
			c.log.Info("queued command handled by the command handler", "component", component, "command", name)
		default:
			c.log.Info("no handler for a queued command; settled", "component", component, "command", name)
		}
		return
	}
	if message == nil {
		c.log.Info("no cloud message handler; settled", "message_id", j.msg.MessageID())
		return
	}
	message(c.runCtx, j.msg)
}
