package amqphub

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
	"github.com/iotc-go/iotc/emulator/internal/core"
)

// device is what one connection knows about one device identity: how it
// is authorized and its live session.
type device struct {
	id      string
	viaCert bool      // authorized by its TLS client certificate
	expiry  time.Time // SAS token expiry (CBS or SASL PLAIN); zero without a token
	timer   *time.Timer
	cur     *devConn // live session, nil when none
}

// authorizedLocked reports whether the device may use its links now; cs.mu held.
func (d *device) authorizedLocked() bool {
	return d.viaCert || now().Before(d.expiry)
}

// devConn is one device session on this connection (from the first
// authorized link to expiry, replacement or connection end). It is the
// device's core.Link while it is the device's connection.
type devConn struct {
	cs   *connState
	dev  *device
	sess *core.Session
	gone chan struct{} // closed when the session ends
	wake chan struct{} // one-slot NotifyC2D signal
	c2d  sync.WaitGroup

	// guarded by cs.mu
	ended   bool
	links   map[*amqp1.Link]*linkState
	desired bool   // PUT /notifications/twin/properties/desired received
	desCh   string // channel of the twin link that subscribed
	pending map[amqp.UUID]chan methodResult

	modelID string // com.microsoft:model-id; set before Connect
}

var _ core.Link = (*devConn)(nil)

type methodResult struct {
	status int
	body   []byte
}

// grantToken records a valid SAS token for deviceID (CBS put-token or SASL
// PLAIN) and (re)arms its expiry timer.
func (cs *connState) grantToken(deviceID string, expiry time.Time) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	d := cs.devices[deviceID]
	if d == nil {
		d = &device{id: deviceID}
		cs.devices[deviceID] = d
	}
	d.expiry = expiry
	if d.timer != nil {
		d.timer.Stop()
	}
	if cs.closing {
		return
	}
	d.timer = time.AfterFunc(time.Until(expiry), func() { cs.expire(d) })
}

// expire ends the device's session when its token expired without renewal.
func (cs *connState) expire(d *device) {
	cs.mu.Lock()
	if cs.closing || d.authorizedLocked() {
		cs.mu.Unlock()
		return
	}
	dc := d.cur
	cs.mu.Unlock()
	if dc != nil {
		cs.log.Info("SAS token expired without renewal: detaching the device's links", "device_id", d.id)
		cs.goSafe(func() {
			cs.endSession(dc, &amqp1.Error{Condition: amqp1.ErrCondUnauthorizedAccess, Description: "SAS token expired"}, false)
		})
	}
}

// authorize returns the device of a hub link address, authorized by a
// token of this connection or by the TLS client certificate.
func (cs *connState) authorize(ctx context.Context, a address) (*device, error) {
	// A module is known by its key "{deviceId}/{moduleId}": its tokens
	// (audience .../devices/{d}/modules/{m}) are granted under that key.
	key, what := a.deviceID, fmt.Sprintf("device %q", a.deviceID)
	if a.moduleID != "" {
		key, what = core.ModuleKey(a.deviceID, a.moduleID), fmt.Sprintf("module %q of device %q", a.moduleID, a.deviceID)
	}
	cs.mu.Lock()
	d := cs.devices[key]
	ok := d != nil && d.authorizedLocked()
	certs := cs.certs
	cs.mu.Unlock()
	if ok {
		return d, nil
	}
	if len(certs) == 0 {
		if d != nil && !d.expiry.IsZero() {
			return nil, unauthorized("the SAS token of %s expired; put a new one on $cbs", what)
		}
		return nil, unauthorized("no valid SAS token for %s: put one on $cbs first", what)
	}
	if _, err := cs.s.b.AuthenticateHub(key, "", certs); err != nil {
		cs.log.Info("X.509 authentication refused", "device_id", key, "reason", err.Error())
		e := amqpError(err)
		if e.Condition == amqp1.ErrCondInternalError || e.Condition == amqp1.ErrCondNotFound {
			return nil, e
		}
		return nil, unauthorized("%s: %v", what, err)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	d = cs.devices[key]
	if d == nil {
		d = &device{id: key}
		cs.devices[key] = d
	}
	d.viaCert = true
	return d, nil
}

// session returns the device's live session, connecting it to the backend
// when there is none.
func (cs *connState) session(ctx context.Context, d *device, modelID string) (*devConn, error) {
	cs.mu.Lock()
	if dc := d.cur; dc != nil {
		cs.mu.Unlock()
		return dc, nil
	}
	cs.mu.Unlock()
	dc := &devConn{
		cs: cs, dev: d, gone: make(chan struct{}), wake: make(chan struct{}, 1),
		links: map[*amqp1.Link]*linkState{}, pending: map[amqp.UUID]chan methodResult{},
		modelID: modelID,
	}
	cs.mu.Lock()
	auth := core.HubAuth{X509: d.viaCert, Expiry: d.expiry}
	cs.mu.Unlock()
	sess, prev, err := cs.s.b.Connect(d.id, auth, dc, modelID)
	if err != nil {
		cs.log.Info("device connection refused", "device_id", d.id, "reason", err.Error())
		return nil, err
	}
	if prev != nil {
		reason := errReplacedByAMQP
		if _, ok := prev.(*devConn); ok {
			reason = core.ErrReplaced
		}
		prev.Drop(reason)
	}
	dc.sess = sess
	cs.mu.Lock()
	if cs.closing || !d.authorizedLocked() || d.cur != nil {
		cs.mu.Unlock()
		sess.Close()
		return nil, unauthorized("device %q is no longer authorized", d.id)
	}
	d.cur = dc
	cs.mu.Unlock()
	cs.log.Info("device connected over AMQP", "device_id", d.id)
	return dc, nil
}

// endSession ends dc: detaches its links with reason (or closes the whole
// connection when closeConn and dc's device is the only one), waits for its
// cloud-to-device loops, fails pending method calls and closes the
// backend session. Only the first call does anything.
func (cs *connState) endSession(dc *devConn, reason *amqp1.Error, closeConn bool) {
	cs.mu.Lock()
	if dc.ended {
		cs.mu.Unlock()
		return
	}
	dc.ended = true
	if dc.dev.cur == dc {
		dc.dev.cur = nil
	}
	links := make([]*amqp1.Link, 0, len(dc.links))
	for l := range dc.links {
		links = append(links, l)
	}
	others := 0
	for _, d := range cs.devices {
		if d != dc.dev && d.cur != nil {
			others++
		}
	}
	conn := cs.conn
	cs.mu.Unlock()
	close(dc.gone)
	if closeConn && others == 0 && conn != nil {
		conn.Close(reason)
	} else {
		for _, l := range links {
			_ = l.Detach(reason)
		}
	}
	dc.c2d.Wait()
	dc.sess.Close()
	cs.log.Info("device session ended", "device_id", dc.dev.id, "reason", errText(reason))
}

func errText(e *amqp1.Error) string {
	if e == nil {
		return "connection closed"
	}
	return e.Error()
}

// hasLinkLocked reports whether dc has a link to node kind where the
// server has role; cs.mu held.
func (dc *devConn) hasLinkLocked(kind nodeKind, role amqp1.Role) bool {
	for _, ls := range dc.links {
		if ls.addr.kind == kind && ls.l.Role() == role {
			return true
		}
	}
	return false
}

// senderLocked returns the newest link of node kind where the server
// sends, preferring channel when not ""; cs.mu held.
func (dc *devConn) senderLocked(kind nodeKind, channel string) *linkState {
	var best *linkState
	for _, ls := range dc.links {
		if ls.addr.kind != kind || ls.out == nil {
			continue
		}
		if channel != "" && ls.channel == channel {
			return ls
		}
		if best == nil || ls.seq > best.seq {
			best = ls
		}
	}
	return best
}

// attachHub accepts a link to one of a device's nodes.
func (cs *connState) attachHub(ctx context.Context, ls *linkState) error {
	a, l := ls.addr, ls.l
	server := l.Role()
	switch a.kind {
	case nodeTelemetry:
		if server != amqp1.RoleReceiver {
			return &amqp1.Error{Condition: amqp1.ErrCondNotAllowed, Description: "the telemetry node only receives"}
		}
	case nodeC2D:
		if server != amqp1.RoleSender {
			return &amqp1.Error{Condition: amqp1.ErrCondNotAllowed, Description: "the cloud-to-device node only sends"}
		}
		if a.moduleID != "" {
			return &amqp1.Error{Condition: amqp1.ErrCondNotAllowed, Description: "IoT Hub has no cloud-to-device messages for modules"}
		}
	}
	d, err := cs.authorize(ctx, a)
	if err != nil {
		return err
	}
	modelID := modelIDOf(l.Properties())
	cs.mu.Lock()
	conn := cs.conn
	cs.mu.Unlock()
	if modelID == "" && conn != nil {
		modelID = modelIDOf(conn.OpenProperties())
	}
	dc, err := cs.session(ctx, d, modelID)
	if err != nil {
		var ae *amqp1.Error
		if errors.As(err, &ae) {
			return ae
		}
		return amqpError(err)
	}
	ls.dc = dc
	if server == amqp1.RoleSender && a.kind != nodeC2D {
		ls.out = newOutbox(l, cs.s.opts.OutboxSize, &cs.wg)
	}
	cs.mu.Lock()
	if dc.ended {
		cs.mu.Unlock()
		return unauthorized("the session of device %q ended", d.id)
	}
	dc.links[l] = ls
	cs.links[l] = ls
	if a.kind == nodeC2D {
		dc.c2d.Add(1)
		cs.wg.Add(1)
		go cs.c2dLoop(dc, l)
	}
	cs.mu.Unlock()
	dc.sess.SubscriptionsChanged()
	return nil
}

// telemetry handles one device-to-cloud delivery (a batch is split).
func (cs *connState) telemetry(ctx context.Context, ls *linkState, d *amqp1.Delivery) amqp1.Outcome {
	msgs := []*amqp.Message{d.Message}
	if d.Format == batchFormat {
		if len(d.Message.Data) > maxBatch {
			return rejected(amqp1.ErrCondResourceLimitExceeded, fmt.Sprintf("batch of %d messages exceeds %d", len(d.Message.Data), maxBatch))
		}
		msgs = msgs[:0]
		for _, raw := range d.Message.Data {
			m, err := decodeMessage(raw)
			if err != nil {
				return rejected(amqp1.ErrCondDecodeError, "batch: "+err.Error())
			}
			msgs = append(msgs, m)
		}
	}
	limit := cs.s.opts.MaxTelemetryBody
	for _, m := range msgs {
		if n := bodyLen(m); n > limit {
			cs.log.Info("telemetry refused: too large", "device_id", ls.dc.dev.id, "bytes", n, "limit", limit)
			return rejected(amqp1.ErrCondResourceLimitExceeded, fmt.Sprintf("message body of %d bytes exceeds %d", n, limit))
		}
	}
	if err := ls.dc.sess.Admit(ctx, core.OpTelemetry); err != nil {
		cs.log.Info("telemetry refused", "device_id", ls.dc.dev.id, "reason", err.Error())
		return &amqp1.Rejected{Error: amqpError(err)}
	}
	for _, m := range msgs {
		if err := ls.dc.sess.Telemetry(telemetryOf(m)); err != nil {
			cs.log.Info("telemetry refused", "device_id", ls.dc.dev.id, "reason", err.Error())
			return &amqp1.Rejected{Error: amqpError(err)}
		}
	}
	return &amqp1.Accepted{}
}

// decodeMessage decodes one encoded message of a batch, turning a panic of
// the third-party decoder on hostile input into an error.
func decodeMessage(b []byte) (m *amqp.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("message sections: %v", r)
		}
	}()
	m = new(amqp.Message)
	if err := m.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return m, nil
}

// asyncSender is the optional capability of an amqp1 link to return once a
// transfer is written and report its outcome later, so that several
// cloud-to-device messages can wait for the device's settlement at once,
// as IoT Hub allows up to the link credit. Without it one message at a time
// is in flight.
type asyncSender interface {
	SendAsync(ctx context.Context, msg *amqp1.Message) (wait func(context.Context) (amqp1.Outcome, error), err error)
}

// c2dLoop delivers the device's cloud-to-device messages on l in queue
// order and reports each outcome to the backend.
func (cs *connState) c2dLoop(dc *devConn, l *amqp1.Link) {
	defer cs.wg.Done()
	defer dc.c2d.Done()
	var inflight sync.WaitGroup
	defer inflight.Wait()
	async, _ := any(l).(asyncSender)
	ctx := l.Context()
	for ctx.Err() == nil {
		msg, ok := dc.sess.NextC2D()
		if !ok {
			select {
			case <-dc.wake:
			case <-ctx.Done():
			}
			continue
		}
		m := c2dMessageOf(dc.dev.id, msg)
		if async == nil {
			out, err := l.Send(ctx, m)
			cs.settleC2D(dc, msg, out, err)
			continue
		}
		wait, err := async.SendAsync(ctx, m)
		if err != nil {
			cs.settleC2D(dc, msg, nil, err)
			continue
		}
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			out, err := wait(ctx)
			cs.settleC2D(dc, msg, out, err)
		}()
	}
}

// settleC2D maps the device's outcome of a cloud-to-device message (or the
// send error) to complete, abandon or reject and reports it.
func (cs *connState) settleC2D(dc *devConn, msg core.C2DMessage, out amqp1.Outcome, err error) {
	outcome := core.Complete
	switch o := out.(type) {
	case *amqp1.Rejected:
		outcome = core.Reject
	case *amqp1.Released, *amqp1.Modified:
		outcome = core.Abandon
	case nil, *amqp1.Accepted:
	default:
		cs.log.Warn("unexpected cloud-to-device outcome", "device_id", dc.dev.id, "outcome", fmt.Sprintf("%T", o))
		outcome = core.Abandon
	}
	if err != nil {
		outcome = core.Abandon
		if errors.Is(err, amqp1.ErrMessageTooLarge) {
			outcome = core.Reject // would never fit this link
		}
		cs.log.Info("cloud-to-device message not delivered", "device_id", dc.dev.id, "message_id", msg.MessageID, "reason", err.Error())
	}
	if serr := dc.sess.SettleC2D(msg.MessageID, outcome); serr != nil {
		cs.log.Info("cloud-to-device settlement not applied", "device_id", dc.dev.id, "message_id", msg.MessageID, "reason", serr.Error())
		return
	}
	cs.log.Debug("cloud-to-device message settled", "device_id", dc.dev.id, "message_id", msg.MessageID, "outcome", outcome.String())
	if outcome == core.Abandon {
		dc.NotifyC2D() // available again: the loop may be waiting
	}
}

// ---- methods ----

const (
	propMethodName   = "IoThub-methodname"
	propMethodStatus = "IoThub-status"
)

// methodResponse handles a device's answer on the responses link.
func (cs *connState) methodResponse(ls *linkState, m *amqp.Message) amqp1.Outcome {
	var id amqp.UUID
	ok := false
	if m.Properties != nil {
		switch v := m.Properties.CorrelationID.(type) {
		case amqp.UUID:
			id, ok = v, true
		case string:
			id, ok = parseUUID(v)
		case []byte:
			if len(v) == 16 {
				copy(id[:], v)
				ok = true
			}
		}
	}
	if !ok {
		return rejected(amqp1.ErrCondInvalidField, "method response without a uuid correlation-id")
	}
	sv, _ := appProp(m, propMethodStatus)
	status, ok := intOf(sv)
	if !ok || status < 0 || status > 1<<31-1 {
		return rejected(amqp1.ErrCondInvalidField, "method response without an integer "+propMethodStatus)
	}
	cs.mu.Lock()
	ch := ls.dc.pending[id]
	delete(ls.dc.pending, id)
	cs.mu.Unlock()
	if ch == nil {
		cs.log.Info("method response for no pending request (late or unknown correlation-id)", "device_id", ls.dc.dev.id, "correlation_id", formatUUID(id))
		return &amqp1.Accepted{}
	}
	ch <- methodResult{status: int(status), body: append([]byte(nil), bodyOf(m)...)}
	return &amqp1.Accepted{}
}

func newUUID() amqp.UUID {
	var u amqp.UUID
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// ---- twin ----

const (
	resourceReported = "/properties/reported"
	resourceDesired  = "/notifications/twin/properties/desired"
)

// parseTwinRequest returns the operation and resource message annotations
// of a twin request ("" when absent; resource without a trailing '/') and
// its correlation-id (nil when absent).
func parseTwinRequest(m *amqp.Message) (op, resource string, corr any) {
	opv, _ := annotation(m, "operation")
	op, _ = textOf(opv)
	resv, _ := annotation(m, "resource")
	resource, _ = textOf(resv)
	resource = strings.TrimSuffix(resource, "/")
	if m.Properties != nil {
		corr = m.Properties.CorrelationID
	}
	return op, resource, corr
}

// twinRequest answers a twin request (E.7) on the paired receiver link.
func (cs *connState) twinRequest(ctx context.Context, ls *linkState, m *amqp.Message) amqp1.Outcome {
	dc := ls.dc
	op, res, corr := parseTwinRequest(m)
	status, version, body := 400, int64(-1), []byte(nil)
	switch {
	case strings.EqualFold(op, "GET"):
		status, body = dc.sess.Twin(ctx)
	case strings.EqualFold(op, "PATCH") && strings.EqualFold(res, resourceReported):
		status, version, body = dc.sess.PatchReported(ctx, bodyOf(m))
	case (strings.EqualFold(op, "PUT") || strings.EqualFold(op, "DELETE")) && strings.EqualFold(res, resourceDesired):
		cs.mu.Lock()
		dc.desired = strings.EqualFold(op, "PUT")
		dc.desCh = ls.channel
		cs.mu.Unlock()
		dc.sess.SubscriptionsChanged()
		status = 200
	default:
		body = []byte(`{"message":"unsupported twin operation"}`)
		cs.log.Info("twin request refused", "device_id", dc.dev.id, "operation", op, "resource", res)
	}
	ann := amqp.Annotations{amqp.Symbol("status"): int32(status)}
	if version >= 0 && status < 300 {
		ann[amqp.Symbol("version")] = version
	}
	reply := &amqp.Message{Annotations: ann, Data: [][]byte{body}}
	if corr != nil {
		reply.Properties = &amqp.MessageProperties{CorrelationID: corr}
	}
	cs.mu.Lock()
	out := dc.senderLocked(nodeTwin, ls.channel)
	cs.mu.Unlock()
	if out == nil {
		cs.log.Info("twin answer not delivered: no twin receiver link", "device_id", dc.dev.id, "operation", op)
		return &amqp1.Accepted{}
	}
	if err := out.out.post(reply, nil); err != nil {
		cs.log.Info("twin answer not delivered", "device_id", dc.dev.id, "error", err)
	}
	return &amqp1.Accepted{}
}

// ---- core.Link ----

// errReplacedByAMQP is the reason another protocol's connection of the
// device is dropped when the device connects over AMQP.
var errReplacedByAMQP = fmt.Errorf("%w over AMQP", core.ErrReplaced)

// Protocol implements core.Link.
func (dc *devConn) Protocol() string { return Protocol }

// Subscribed implements core.Link.
func (dc *devConn) Subscribed(f core.Feature) bool {
	dc.cs.mu.Lock()
	defer dc.cs.mu.Unlock()
	if dc.ended {
		return false
	}
	switch f {
	case core.FeatureMethods:
		return dc.hasLinkLocked(nodeMethods, amqp1.RoleSender)
	case core.FeatureDesired:
		return dc.desired && dc.hasLinkLocked(nodeTwin, amqp1.RoleSender)
	case core.FeatureTwin:
		return dc.hasLinkLocked(nodeTwin, amqp1.RoleSender)
	case core.FeatureC2D:
		return dc.hasLinkLocked(nodeC2D, amqp1.RoleSender)
	}
	return false
}

// PushDesired implements core.Link: nothing is sent (and nil returned)
// while the device has not subscribed to desired patches.
func (dc *devConn) PushDesired(patch []byte, _ int64) error {
	dc.cs.mu.Lock()
	if dc.ended {
		dc.cs.mu.Unlock()
		return ErrDeviceGone
	}
	if !dc.desired {
		dc.cs.mu.Unlock()
		return nil
	}
	out := dc.senderLocked(nodeTwin, dc.desCh)
	dc.cs.mu.Unlock()
	if out == nil {
		return fmt.Errorf("%w: no twin link of %q", ErrNotSubscribed, dc.dev.id)
	}
	return out.out.post(&amqp.Message{Data: [][]byte{append([]byte(nil), patch...)}}, nil)
}

// InvokeMethod implements core.Link.
func (dc *devConn) InvokeMethod(ctx context.Context, name string, payload []byte) (int, []byte, error) {
	cs := dc.cs
	id := newUUID()
	ch := make(chan methodResult, 1)
	cs.mu.Lock()
	if dc.ended {
		cs.mu.Unlock()
		return 0, nil, ErrDeviceGone
	}
	out := dc.senderLocked(nodeMethods, "")
	if out == nil {
		cs.mu.Unlock()
		return 0, nil, fmt.Errorf("%w: no method link of %q", ErrNotSubscribed, dc.dev.id)
	}
	dc.pending[id] = ch
	cs.mu.Unlock()
	defer func() {
		cs.mu.Lock()
		delete(dc.pending, id)
		cs.mu.Unlock()
	}()
	msg := &amqp.Message{
		Properties:            &amqp.MessageProperties{CorrelationID: id},
		ApplicationProperties: map[string]any{propMethodName: name},
		Data:                  [][]byte{append([]byte(nil), payload...)},
	}
	sendErr := make(chan error, 1)
	err := out.out.post(msg, func(o amqp1.Outcome, err error) {
		if err == nil {
			if r, ok := o.(*amqp1.Rejected); ok {
				err = fmt.Errorf("amqphub: device rejected the method request: %v", r.Error)
			}
		}
		if err != nil {
			sendErr <- err
		}
	})
	if err != nil {
		return 0, nil, err
	}
	select {
	case r := <-ch:
		return r.status, r.body, nil
	case err := <-sendErr:
		if errors.Is(err, amqp1.ErrLinkDetached) || errors.Is(err, amqp1.ErrConnClosed) {
			err = fmt.Errorf("%w: %w", ErrDeviceGone, err)
		}
		return 0, nil, err
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-dc.gone:
		return 0, nil, ErrDeviceGone
	case <-out.l.Context().Done():
		return 0, nil, fmt.Errorf("%w: method link detached", ErrDeviceGone)
	}
}

// NotifyC2D implements core.Link.
func (dc *devConn) NotifyC2D() {
	select {
	case dc.wake <- struct{}{}:
	default:
	}
}

// Drop implements core.Link.
func (dc *devConn) Drop(reason error) {
	desc := "the device connected again"
	if reason != nil {
		desc = reason.Error()
	}
	dc.cs.goSafe(func() {
		dc.cs.endSession(dc, &amqp1.Error{Condition: amqp1.ErrCondConnectionForced, Description: desc}, true)
	})
}
