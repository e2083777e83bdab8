package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator/internal/twin"
	"github.com/iotc-go/iotc/emulator/internal/wire"
)

func (e *Emulator) handleHub(c *conn, t wire.Topic, pk packets.Packet) {
	switch t.Kind {
	case wire.KindTelemetry:
		e.telemetry(c, t, pk)
	case wire.KindTwinGet:
		e.twinGet(c, t.RID)
	case wire.KindTwinPatchReported:
		e.twinPatch(c, t.RID, pk.Payload)
	case wire.KindMethodResponse:
		e.methodResponse(c, t, pk.Payload)
	}
}

// splitBag separates system ("$."-prefixed) from application properties.
func splitBag(bag domain.PropertyBag) (system, app map[string]string) {
	system, app = map[string]string{}, map[string]string{}
	for _, p := range bag {
		if strings.HasPrefix(p.Key, "$.") {
			system[p.Key] = p.Value
		} else {
			app[p.Key] = p.Value
		}
	}
	return system, app
}

func (e *Emulator) telemetry(c *conn, t wire.Topic, pk packets.Packet) {
	bag, err := domain.DecodePropertyBag(t.PropertyBag)
	if err != nil {
		e.log.Warn("dropping connection: bad property bag", "device_id", c.id, "error", err)
		c.cl.Stop(fmt.Errorf("%w: %v", errProtocol, err))
		return
	}
	system, app := splitBag(bag)
	if pk.FixedHeader.Retain {
		app["mqtt-retain"] = "true"
	}
	msg := Telemetry{
		DeviceID: c.id, Component: system[domain.PropComponent], Body: append([]byte(nil), pk.Payload...),
		Properties: app, System: system, Received: e.now(),
	}
	e.storeTelemetry(msg)
}

// storeTelemetry records a device-to-cloud message (any protocol): the
// latest value of each field of a JSON object body, and a copy to every
// watcher.
func (e *Emulator) storeTelemetry(msg Telemetry) {
	var fields map[string]any
	if err := json.Unmarshal(msg.Body, &fields); err != nil {
		fields = nil // not a JSON object: stored as a message, no latest values
	}
	e.mu.Lock()
	if d, ok := e.devices[msg.DeviceID]; ok {
		vals := d.telemetry[msg.Component]
		if vals == nil && len(fields) > 0 {
			vals = map[string]TelemetryValue{}
			d.telemetry[msg.Component] = vals
		}
		for k, v := range fields {
			vals[k] = TelemetryValue{Value: v, Timestamp: msg.Received}
		}
	}
	for ch := range e.watchers[msg.DeviceID] {
		select {
		case ch <- cloneTelemetry(msg):
		default:
			e.log.Warn("telemetry watcher full, message dropped for it", "device_id", msg.DeviceID)
		}
	}
	e.mu.Unlock()
}

func cloneTelemetry(t Telemetry) Telemetry {
	out := t
	out.Body = append([]byte(nil), t.Body...)
	out.Properties, out.System = map[string]string{}, map[string]string{}
	for k, v := range t.Properties {
		out.Properties[k] = v
	}
	for k, v := range t.System {
		out.System[k] = v
	}
	return out
}

// twinAnswer writes $iothub/twin/res/{status}/?$rid={rid}[&$version=n] to
// the device alone.
func (e *Emulator) twinAnswer(c *conn, status int, rid string, version int64, body []byte) {
	topic := "$iothub/twin/res/" + strconv.Itoa(status) + "/?$rid=" + rid
	if version > 0 {
		topic += "&$version=" + strconv.FormatInt(version, 10)
	}
	if !c.subscribed(topic) {
		e.log.Warn("twin answer not delivered: not subscribed to $iothub/twin/res/#", "device_id", c.id, "status", status)
		return
	}
	if err := e.send(c, topic, body); err != nil {
		e.log.Warn("twin answer not delivered", "device_id", c.id, "error", err)
	}
}

func twinError(msg string) []byte {
	b, _ := json.Marshal(map[string]any{"message": msg})
	return b
}

func (e *Emulator) twinGet(c *conn, rid string) {
	status, body := e.twinDocument(c.id)
	e.twinAnswer(c, status, rid, 0, body)
}

// twinDocument returns the status and body of a twin GET (any protocol).
func (e *Emulator) twinDocument(id string) (int, []byte) {
	e.mu.Lock()
	d, err := e.lookup(id)
	var doc map[string]any
	if err == nil {
		doc = map[string]any{"desired": d.desired.Document(), "reported": d.reported.Document()}
	}
	e.mu.Unlock()
	if err != nil {
		return 404, twinError(err.Error())
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return 500, twinError("encode twin")
	}
	return 200, body
}

func (e *Emulator) twinPatch(c *conn, rid string, body []byte) {
	status, v, resp := e.patchReported(c.id, body)
	e.twinAnswer(c, status, rid, v, resp)
}

// patchReported applies a reported patch (any protocol) and returns the
// status, the new reported version (0 on error) and the error body.
func (e *Emulator) patchReported(id string, body []byte) (int, int64, []byte) {
	patch, err := wire.ParseTwinPatch(body)
	if err != nil {
		e.log.Warn("reported patch refused", "device_id", id, "error", err)
		return 400, 0, twinError(err.Error())
	}
	e.mu.Lock()
	d, err := e.lookup(id)
	var v int64
	if err == nil {
		v, err = d.reported.Apply(patch, e.now())
	}
	e.mu.Unlock()
	switch {
	case errors.Is(err, ErrNotFound):
		return 404, 0, twinError(err.Error())
	case errors.Is(err, twin.ErrTooLarge):
		e.log.Warn("reported patch refused", "device_id", id, "error", err)
		return 400, 0, twinError(err.Error())
	case err != nil:
		return 500, 0, twinError(err.Error())
	}
	return 204, v, nil
}

func methodKey(deviceID, rid string) string { return deviceID + "\n" + rid }

func (e *Emulator) methodResponse(c *conn, t wire.Topic, body []byte) {
	e.mu.Lock()
	ch, ok := e.methods[methodKey(c.id, t.RID)]
	delete(e.methods, methodKey(c.id, t.RID))
	e.mu.Unlock()
	if !ok {
		e.log.Warn("method response for no pending request (late or unknown $rid)", "device_id", c.id, "rid", t.RID)
		return
	}
	ch <- commandResult(t.Status, body) // buffered, one sender: the map entry was removed above
}

// commandResult is a device's method answer (any protocol): a JSON body
// as it is, another body as a JSON string, an empty one as nil.
func commandResult(status int, body []byte) CommandResult {
	res := CommandResult{Status: status}
	switch {
	case len(strings.TrimSpace(string(body))) == 0:
	case json.Valid(body):
		res.Payload = append(json.RawMessage(nil), body...)
	default:
		res.Payload, _ = json.Marshal(string(body))
	}
	return res
}

// InvokeCommand calls a direct method on a connected device: it publishes
// $iothub/methods/POST/{component*name|name}/?$rid={rid} with the JSON
// payload (nil sends "null") and waits for the device's answer. timeout
// <= 0 means DefaultCommandTimeout; it is capped at MaxCommandTimeout. It
// returns ErrNotFound for an unknown device, ErrInvalid for a bad name or
// payload, ErrDeviceOffline when the device is not connected or not
// subscribed to $iothub/methods/POST/#, ErrTimeout when no answer comes in
// time, ctx.Err() or ErrClosed.
func (e *Emulator) InvokeCommand(ctx context.Context, id, component, name string, payload any, timeout time.Duration) (CommandResult, error) {
	return e.invoke(ctx, id, component, name, payload, 0, timeout)
}

// invoke is InvokeCommand that first waits up to connectTimeout for the
// device to be connected and subscribed to methods.
func (e *Emulator) invoke(ctx context.Context, id, component, name string, payload any, connectTimeout, timeout time.Duration) (CommandResult, error) {
	method, err := methodName(component, name)
	if err != nil {
		return CommandResult{}, err
	}
	body, err := encodePayload(payload)
	if err != nil {
		return CommandResult{}, err
	}
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	timeout = min(timeout, MaxCommandTimeout)
	rid := strconv.FormatUint(e.seq.Add(1), 10)
	topic := "$iothub/methods/POST/" + method + "/?$rid=" + rid
	key := methodKey(id, rid)
	ch := make(chan CommandResult, 1)

	e.mu.Lock()
	if _, err := e.lookup(id); err != nil {
		e.mu.Unlock()
		return CommandResult{}, err
	}
	e.mu.Unlock()
	if connectTimeout > 0 {
		wctx, cancel := context.WithTimeout(ctx, min(connectTimeout, MaxCommandTimeout))
		err := e.WaitSubscribed(wctx, id, topic)
		cancel()
		if errors.Is(err, ErrClosed) || ctx.Err() != nil {
			return CommandResult{}, errors.Join(err, ctx.Err())
		}
	}
	e.mu.Lock()
	d, err := e.lookup(id)
	if err != nil {
		e.mu.Unlock()
		return CommandResult{}, err
	}
	if s := d.amqp; s != nil {
		e.mu.Unlock()
		return e.invokeAMQP(ctx, s, method, body, timeout)
	}
	c := d.conn
	if c == nil || !c.subscribed(topic) {
		e.mu.Unlock()
		return CommandResult{}, fmt.Errorf("%w: device %q (method %s)", ErrDeviceOffline, id, method)
	}
	e.methods[key] = ch
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.methods, key)
		e.mu.Unlock()
	}()

	if err := e.send(c, topic, body); err != nil {
		return CommandResult{}, fmt.Errorf("%w: device %q: %v", ErrDeviceOffline, id, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case res := <-ch:
		return res, nil
	case <-timer.C:
		e.log.Warn("direct method timed out", "device_id", id, "method", method, "timeout", timeout)
		return CommandResult{}, fmt.Errorf("%w: device %q, method %s, after %s", ErrTimeout, id, method, timeout)
	case <-ctx.Done():
		return CommandResult{}, ctx.Err()
	case <-e.done:
		return CommandResult{}, ErrClosed
	}
}

// deliverC2D sends the device's queued messages not yet sent on its
// current connection, when that connection is subscribed to them. Each goes
// out at QoS 1 with a packet id of this connection; a message is removed
// from the queue only by its PUBACK (c2dAcked).
func (e *Emulator) deliverC2D(id string) {
	e.mu.Lock()
	d, ok := e.devices[id]
	if ok && d.amqp != nil {
		s := d.amqp
		e.mu.Unlock()
		s.dc.NotifyC2D()
		return
	}
	if !ok || d.conn == nil {
		e.mu.Unlock()
		return
	}
	c := d.conn
	e.mu.Unlock()

	c.wmu.Lock() // keeps deliveries on this connection in queue order
	defer c.wmu.Unlock()
	var out []packets.Packet
	e.mu.Lock()
	for _, m := range d.c2d {
		if m.sentOn == c || m.amqpOn != nil || !c.subscribed(m.topic) {
			continue
		}
		pid := c.allocPID()
		if pid == 0 {
			break // 65535 unacknowledged messages: wait for acks
		}
		m.sentOn = c
		c.inflight[pid] = m
		out = append(out, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Dup: m.deliveries > 0},
			TopicName:   m.topic,
			Payload:     m.body,
			PacketID:    pid,
		})
		m.deliveries++
	}
	e.mu.Unlock()
	for _, pk := range out {
		if c.cl.Closed() {
			return
		}
		if err := c.cl.WritePacket(pk); err != nil {
			e.log.Warn("cloud-to-device message not delivered", "device_id", id, "error", err)
			return
		}
	}
}

// allocPID returns a free packet id of the connection, 0 when none; e.mu held.
func (c *conn) allocPID() uint16 {
	for range 65535 {
		c.nextPID++
		if c.nextPID == 0 {
			c.nextPID = 1
		}
		if _, used := c.inflight[c.nextPID]; !used {
			return c.nextPID
		}
	}
	return 0
}

// c2dAcked removes the message a PUBACK acknowledges.
func (e *Emulator) c2dAcked(c *conn, pid uint16) {
	if c.role != wire.RoleHub {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := c.inflight[pid]
	if !ok {
		return
	}
	delete(c.inflight, pid)
	if d, ok := e.devices[c.id]; ok {
		for i, x := range d.c2d {
			if x == m {
				d.c2d = append(d.c2d[:i], d.c2d[i+1:]...)
				break
			}
		}
		d.lastActivity = e.now()
	}
	e.log.Info("cloud-to-device message acknowledged", "device_id", c.id, "message_id", m.id)
}
