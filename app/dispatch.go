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

// dispatcher is the client's inbound side, one job: it takes the
// transport's events (it is every session's ports.EventHandler) and runs
// the user's handlers. It owns one bounded queue per kind of event (each
// drained by at most one goroutine, only while it holds work), the
// handlers and the writable-property ledger; each has its own lock. It
// reaches the rest of the client only through c: the session holder (twin
// reads), report (property acknowledgements), setStatus, goTracked, the
// options, the log and the run context.
type dispatcher struct {
	c        *Client
	handlers handlerSet     // the user's handlers (handlers.go)
	props    propertyLedger // the writable properties' state (ledger.go)
	propQ    queue[propEvent]
	cmdQ     queue[methodJob]
	msgQ     queue[cloudJob]
}

// init sets up d inside c (no allocation of its own); handlers run with
// c.runCtx and are recorded as callbacks in c.cb.
func (d *dispatcher) init(c *Client) {
	d.c = c
	d.propQ.init(c.runCtx, c.opts.QueueLimit, &c.cb, d.handleProperty)
	d.cmdQ.init(c.runCtx, c.opts.QueueLimit, &c.cb, d.handleMethod)
	d.msgQ.init(c.runCtx, c.opts.QueueLimit, &c.cb, d.handleCloud)
}

// stop refuses new events and waits for the handlers that run (Close,
// after the run context was cancelled: queued events are dropped).
func (d *dispatcher) stop() {
	d.propQ.stop()
	d.cmdQ.stop()
	d.msgQ.stop()
}

// OnDesiredPatch queues a desired patch for the property worker. When the
// queue is full the patch is dropped and the twin is synced again as soon
// as the worker has room, on the live session.
func (d *dispatcher) OnDesiredPatch(patch []byte) {
	if !d.propQ.push(propEvent{patch: patch}) {
		d.props.resync.Store(true)
		d.c.log.Warn("property queue full; the twin is synced again once the queue has room")
	}
}

// OnMethod queues a command; a full queue is answered 503.
func (d *dispatcher) OnMethod(req ports.MethodRequest, respond func(ctx context.Context, status int, payload []byte) error) {
	j := methodJob{req: req, respond: respond}
	if !d.cmdQ.push(j) {
		d.c.log.Warn("command queue full; answering 503", "command", req.Method)
		d.c.goTracked(func() {
			d.respond(j, domain.CommandResponse{Status: 503, Payload: errorBody("the device is busy")})
		})
	}
}

// OnCloudMessage queues a cloud-to-device message; a full queue leaves it
// unsettled for redelivery.
func (d *dispatcher) OnCloudMessage(msg domain.CloudMessage, settle func(domain.Outcome)) {
	if !d.msgQ.push(cloudJob{msg: msg, settle: settle}) {
		d.c.log.Warn("cloud message queue full; the message stays unsettled and is delivered again")
	}
}

func isTooLarge(err error) bool { return errors.Is(err, domain.ErrMessageTooLarge) }

func errorBody(msg string) map[string]string { return map[string]string{"error": msg} }

// recovered turns a handler panic into an error and logs it with its stack.
func (d *dispatcher) recovered(what string, r any) error {
	err := fmt.Errorf("iotc: %s handler panicked: %v", what, r)
	d.c.log.Error("handler panicked", "handler", what, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return err
}

// requestSync asks the property worker for a twin sync; when the queue is
// full the worker does it once it has room.
func (d *dispatcher) requestSync(reconnect bool) {
	d.props.resync.Store(false)
	if !d.propQ.push(propEvent{sync: true, reconnect: reconnect}) {
		d.props.resync.Store(true)
		d.c.log.Warn("property queue full; the twin is synced once the queue has room")
	}
}

// handleProperty runs on the property worker.
func (d *dispatcher) handleProperty(ev propEvent) {
	d.propertyEvent(ev)
	if d.props.resync.Swap(false) {
		d.syncTwin(false)
	}
}

func (d *dispatcher) propertyEvent(ev propEvent) {
	if ev.sync {
		d.syncTwin(ev.reconnect)
		return
	}
	version, props, err := domain.ParseDesiredPatch(ev.patch)
	if err != nil {
		d.c.log.Warn("ignoring a malformed desired patch", "err", err)
		return
	}
	switch {
	case !d.props.synced:
		// No twin read yet on this session: the twin says what is pending.
		d.syncTwin(false)
		return
	case version != 0 && version <= d.props.lastDesired:
		d.c.log.Debug("desired patch already handled", "version", version)
		return
	case version != 0 && version != d.props.lastDesired+1:
		// A gap (a patch was missed) or an absurd jump: the twin is
		// authoritative, and its version replaces the one seen.
		d.c.log.Warn("desired patch version gap; syncing the twin", "have", d.props.lastDesired, "got", version)
		d.syncTwin(false)
		return
	}
	d.props.lastDesired = version
	d.applyDesired(props, nil)
}

// syncTwin reads the twin on the live session and handles every desired
// property not yet acknowledged at its version. A failed read is retried
// with the backoff while the session lives; once it is gone, the next
// session's sync takes over.
func (d *dispatcher) syncTwin(reconnect bool) {
	for attempt := 0; ; attempt++ {
		d.c.hold.mu.Lock()
		s := d.c.hold.sess
		if s != nil {
			s.ops.Add(1)
		}
		d.c.hold.mu.Unlock()
		if s == nil {
			d.props.synced = false
			return
		}
		b, err := s.GetTwin(d.c.runCtx)
		d.c.hold.release(s)
		if err == nil {
			var twin domain.Twin
			if twin, err = domain.ParseTwin(b); err == nil {
				d.applyTwin(s, twin, reconnect)
				return
			}
		}
		if d.c.runCtx.Err() != nil {
			return
		}
		delay := d.c.opts.Backoff.Delay(attempt, randFloat())
		d.c.log.Warn("twin sync failed; retrying on the live session", "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.Done():
		case <-d.c.runCtx.Done():
		}
		t.Stop()
	}
}

func (d *dispatcher) applyTwin(s *session, twin domain.Twin, reconnect bool) {
	pending := twin.PendingDesired()
	// The twin is authoritative: after a re-provisioning (a recreated or
	// moved device) its versions may start again from 1.
	first := !d.props.synced
	d.props.lastDesired = twin.DesiredVersion
	d.props.synced = true
	d.c.log.Debug("twin synced", "desired_version", twin.DesiredVersion, "pending", len(pending))
	if reconnect && len(pending) > 0 {
		d.c.setStatus(domain.Status{State: domain.StateConnected, Reason: domain.ReasonDesiredChangedOffline, Transport: s.transport})
	}
	if d.c.opts.SyncAllDesired && first {
		// The whole desired document goes to the handler; only the
		// pending values are acknowledged.
		all := twin.AllDesired()
		isPending := make(map[string]bool, len(pending))
		for _, p := range pending {
			isPending[propKey(p.Component, p.Name)] = true
		}
		d.applyDesired(all, isPending)
		return
	}
	d.applyDesired(pending, nil)
}

// propKey identifies a property for in-flight tracking.
func propKey(component, name string) string { return component + "\x00" + name }

// applyDesired calls the property handler for each property and reports
// the acknowledgements as one patch (when report is not nil, only for the
// properties it marks). While it runs, the properties are "in flight" at
// their version: a final acknowledgement for that version given meanwhile
// with AckProperty supersedes the handler's answer in that patch, or is
// reported right after it, never before.
func (d *dispatcher) applyDesired(props []domain.Property, report map[string]bool) {
	var handled []domain.Property
	for _, p := range props {
		if d.handlers.propertyHandler(p) != nil {
			handled = append(handled, p)
		}
	}
	if n := len(props) - len(handled); n > 0 {
		d.c.log.Info("no property handler; desired properties left unacknowledged", "count", n)
	}
	props = handled
	if len(props) == 0 {
		return
	}
	d.props.begin(props)
	defer d.flushDeferredAcks()

	patch := map[string]any{}
	var acks []map[string]any
	for _, p := range props {
		if d.c.runCtx.Err() != nil {
			return
		}
		ack := d.callProperty(d.handlers.propertyHandler(p), p)
		d.c.log.Info("property handled", "component", p.Component, "name", p.Name, "version", p.Version, "status", ack.Status)
		if report != nil && !report[propKey(p.Component, p.Name)] {
			continue
		}
		// MergePatch keeps references to its source's maps; acks gets its
		// own copy.
		acks = append(acks, domain.AckPatch(p, ack))
		domain.MergePatch(patch, domain.AckPatch(p, ack))
	}
	final := d.props.handled()
	for _, f := range final {
		domain.MergePatch(patch, f.merge)
		acks = append(acks, f.alone)
	}
	var err error
	if len(patch) > 0 {
		err = d.c.report(d.c.runCtx, patch)
	}
	defer func() {
		for _, f := range final {
			f.done <- err
		}
	}()
	if isTooLarge(err) && len(acks) > 1 {
		// Too many acknowledgements for one patch: send them one by one.
		for _, a := range acks {
			if err = d.c.report(d.c.runCtx, a); err != nil {
				break
			}
		}
	}
	if err != nil && d.c.runCtx.Err() == nil {
		d.c.log.Warn("cannot report property acknowledgements; they are handled again at the next twin sync", "err", err)
	}
}

// flushDeferredAcks reports the acknowledgements given while the
// properties were in flight, then ends the in-flight period.
func (d *dispatcher) flushDeferredAcks() {
	for {
		final, ended := d.props.finish()
		if ended {
			return
		}
		for _, f := range final {
			err := d.c.report(d.c.runCtx, f.alone)
			if err != nil {
				d.c.log.Warn("cannot report a final property acknowledgement", "err", err)
			}
			f.done <- err
		}
	}
}

func (d *dispatcher) callProperty(h PropertyHandler, p domain.Property) (ack domain.PropertyAck) {
	defer func() {
		if r := recover(); r != nil {
			err := d.recovered("property", r)
			ack = domain.PropertyAck{Status: 500, Description: err.Error()}
		}
	}()
	ack = h(d.c.runCtx, p)
	if ack.Status == 0 {
		ack.Status = 200
	}
	return ack
}

// handleMethod runs on the command worker.
func (d *dispatcher) handleMethod(j methodJob) {
	component, name := domain.SplitMethodName(j.req.Method)
	req := domain.Command{Name: name, Component: component, RequestID: j.req.RequestID}
	if len(j.req.Payload) > 0 {
		req.Payload = json.RawMessage(j.req.Payload)
	}
	h := d.handlers.commandHandler(component, name)
	var resp domain.CommandResponse
	if h == nil {
		d.c.log.Info("no command handler; answering 501", "command", j.req.Method)
		resp = domain.CommandResponse{Status: 501, Payload: errorBody("no command handler is registered on the device")}
	} else {
		resp = d.callCommand(h, req)
	}
	d.respond(j, resp)
}

func (d *dispatcher) callCommand(h CommandHandler, req domain.Command) (resp domain.CommandResponse) {
	defer func() {
		if r := recover(); r != nil {
			err := d.recovered("command", r)
			resp = domain.CommandResponse{Status: 500, Payload: errorBody(err.Error())}
		}
	}()
	return h(d.c.runCtx, req)
}

// respond answers j on the session the request came on: a request id
// means nothing on another connection.
func (d *dispatcher) respond(j methodJob, resp domain.CommandResponse) {
	status, body, err := resp.Encode()
	if err != nil {
		d.c.log.Warn("command response cannot be encoded; answering 500", "command", j.req.Method, "err", err)
		status, body, _ = domain.CommandResponse{Status: 500, Payload: errorBody(err.Error())}.Encode()
	}
	if d.c.runCtx.Err() != nil {
		return
	}
	if err := j.respond(d.c.runCtx, status, body); err != nil {
		d.c.log.Warn("cannot answer the command", "command", j.req.Method, "err", err)
		return
	}
	d.c.log.Info("command answered", "command", j.req.Method, "status", status)
}

// handleCloud runs on the cloud-message worker. The message is settled
// with the handler's outcome once it returned normally; a panicking
// handler rejects it (a poison message must not come back forever); a
// handler cut off by Close leaves it unsettled, so it comes again.
func (d *dispatcher) handleCloud(j cloudJob) {
	outcome, settle := d.runCloud(j.msg)
	if !settle || d.c.runCtx.Err() != nil {
		d.c.log.Info("cloud-to-device message left unsettled; it is delivered again", "message_id", j.msg.MessageID())
		return
	}
	if j.settle != nil {
		j.settle(outcome)
	}
}

func (d *dispatcher) runCloud(msg domain.CloudMessage) (outcome domain.Outcome, settle bool) {
	queued, message := d.handlers.cloudHandlers()
	defer func() {
		if r := recover(); r != nil {
			_ = d.recovered("cloud message", r)
			outcome, settle = domain.Reject, true
		}
	}()
	if methodName, ok := msg.Properties[methodNameProperty]; ok {
		component, name := domain.ParseQueuedCommandName(methodName)
		req := domain.Command{Name: name, Component: component, Queued: true}
		if len(msg.Body) > 0 {
			req.Payload = json.RawMessage(msg.Body)
		}
		command := d.handlers.commandHandler(component, name)
		switch {
		case name == "":
			d.c.log.Warn("queued command without a name; rejected", "method_name", methodName)
			return domain.Reject, true
		case queued != nil:
			o := queued(d.c.runCtx, req)
			d.c.log.Info("queued command handled", "component", component, "command", name, "outcome", o.String())
			return o, true
		case command != nil:
			_ = command(d.c.runCtx, req)
			d.c.log.Info("queued command handled by the command handler", "component", component, "command", name)
			return domain.Complete, true
		default:
			d.c.log.Info("no handler for a queued command; completed", "component", component, "command", name)
			return domain.Complete, true
		}
	}
	if message == nil {
		d.c.log.Info("no cloud message handler; completed", "message_id", msg.MessageID())
		return domain.Complete, true
	}
	o := message(d.c.runCtx, msg)
	d.c.log.Debug("cloud message handled", "message_id", msg.MessageID(), "outcome", o.String())
	return o, true
}
