package mqtthub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/wire"
)

// conn is one MQTT connection; a hub connection is the device's core.Link.
type conn struct {
	s       *Server
	cl      *mqtt.Client
	role    wire.Role
	id      string // device id (hub) or registration id (DPS)
	modelID string
	x509    bool
	dps     core.DPSAuth // DPS connections
	expiry  time.Time    // SAS expiry; zero for X.509
	wmu     sync.Mutex   // serialises writes to cl and keeps deliveries in queue order

	// established is set once the CONNACK was written (OnSessionEstablished):
	// before that nothing may be sent to the device, even on subscriptions
	// a persistent session inherited, or the device sees a PUBLISH before
	// its CONNACK and fails the connection.
	established atomic.Bool

	mu       sync.Mutex
	sess     *core.Session     // the hub session, once established; guarded by mu
	expire   *time.Timer       // drops the connection at expiry
	nextPID  uint16            // guarded by mu
	inflight map[uint16]string // packet id -> cloud-to-device message id, made by the first; guarded by mu
}

var _ core.Link = (*conn)(nil)

// session is the connection's hub session; nil before it is established
// (and for DPS connections).
func (c *conn) session() *core.Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

// Sample topics matching each feature's subscription.
const (
	topicMethods = "$iothub/methods/POST/"
	topicDesired = "$iothub/twin/PATCH/properties/desired/"
	topicTwin    = "$iothub/twin/res/"
)

// Protocol implements core.Link.
func (c *conn) Protocol() string { return "mqtt" }

// Subscribed implements core.Link: false until the CONNACK was written.
func (c *conn) Subscribed(f core.Feature) bool {
	if !c.established.Load() {
		return false
	}
	switch f {
	case core.FeatureMethods:
		return c.subscribed(topicMethods)
	case core.FeatureDesired:
		return c.subscribed(topicDesired)
	case core.FeatureTwin:
		return c.subscribed(topicTwin)
	case core.FeatureC2D:
		return c.subscribed(wire.C2DFilterPrefix(c.id))
	}
	return false
}

// subscribed reports whether the client holds a filter matching topic.
func (c *conn) subscribed(topic string) bool {
	for f := range c.cl.State.Subscriptions.GetAll() {
		if wire.MatchFilter(f, topic) {
			return true
		}
	}
	return false
}

// Drop implements core.Link.
func (c *conn) Drop(reason error) { c.cl.Stop(reason) }

// PushDesired implements core.Link.
func (c *conn) PushDesired(body []byte, version int64) error {
	topic := "$iothub/twin/PATCH/properties/desired/?$version=" + strconv.FormatInt(version, 10)
	if !c.established.Load() || !c.subscribed(topic) {
		return nil
	}
	return c.send(topic, body)
}

var errNotSubscribed = errors.New("not subscribed to $iothub/methods/POST/#")

func methodKey(deviceID, rid string) string { return deviceID + "\n" + rid }

// InvokeMethod implements core.Link.
func (c *conn) InvokeMethod(ctx context.Context, method string, payload []byte) (int, []byte, error) {
	s := c.s
	rid := strconv.FormatUint(s.seq.Add(1), 10)
	topic := "$iothub/methods/POST/" + method + "/?$rid=" + rid
	if !c.established.Load() || !c.subscribed(topic) {
		return 0, nil, errNotSubscribed
	}
	key := methodKey(c.id, rid)
	ch := make(chan methodAnswer, 1)
	s.mu.Lock()
	s.methods[key] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.methods, key)
		s.mu.Unlock()
	}()
	if err := c.send(topic, payload); err != nil {
		return 0, nil, err
	}
	select {
	case a := <-ch:
		return a.status, a.body, nil
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

// NotifyC2D implements core.Link: it sends the queued messages the core
// hands out, each at QoS 1 with a packet id of this connection, while the
// device is subscribed. A message leaves the queue only by its PUBACK.
func (c *conn) NotifyC2D() {
	sess := c.session()
	if c.role != wire.RoleHub || sess == nil || !c.established.Load() {
		return // OnSessionEstablished delivers once the CONNACK is out
	}
	c.wmu.Lock() // keeps deliveries on this connection in queue order
	defer c.wmu.Unlock()
	for !c.cl.Closed() && c.subscribed(wire.C2DFilterPrefix(c.id)) {
		c.mu.Lock()
		pid := c.allocPID()
		c.mu.Unlock()
		if pid == 0 {
			return // 65535 unacknowledged messages: wait for acks
		}
		msg, ok := sess.NextC2D()
		if !ok {
			return
		}
		topic := wire.C2DTopic(c.id, msg.MessageID, msg.Properties)
		if !c.subscribed(topic) {
			_ = sess.SettleC2D(msg.MessageID, core.Abandon)
			return
		}
		c.mu.Lock()
		if c.inflight == nil {
			c.inflight = map[uint16]string{}
		}
		c.inflight[pid] = msg.MessageID
		c.mu.Unlock()
		err := c.cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Dup: msg.Redelivered},
			TopicName:   topic,
			Payload:     msg.Body,
			PacketID:    pid,
		})
		if err != nil {
			c.s.log.Warn("cloud-to-device message not delivered", "device_id", c.id, "error", err)
			return
		}
	}
}

// allocPID returns a free packet id of the connection, 0 when none; c.mu held.
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

// acked completes the message a PUBACK acknowledges.
func (c *conn) acked(pid uint16) {
	if c.role != wire.RoleHub {
		return
	}
	c.mu.Lock()
	id, ok := c.inflight[pid]
	delete(c.inflight, pid)
	sess := c.sess
	c.mu.Unlock()
	if ok && sess != nil {
		if err := sess.SettleC2D(id, core.Complete); err != nil {
			c.s.log.Info("cloud-to-device acknowledgement not applied", "device_id", c.id, "message_id", id, "reason", err.Error())
			return
		}
		c.s.log.Info("cloud-to-device message acknowledged", "device_id", c.id, "message_id", id)
	}
}

// send writes a QoS 0 PUBLISH straight to this client. $iothub and $dps
// topics are shared by every device, so they are never routed through the
// broker: only the connection concerned sees its responses.
func (c *conn) send(topic string, body []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.cl.Closed() {
		return mqtt.ErrConnectionClosed
	}
	return c.cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     body,
	})
}

func (s *Server) handleHub(c *conn, t wire.Topic, pk packets.Packet) {
	sess := c.session()
	if sess == nil {
		return
	}
	sess.Touch()
	switch t.Kind {
	case wire.KindTwinGet:
		status, body := sess.Twin(context.Background())
		s.twinAnswer(c, status, t.RID, 0, body)
	case wire.KindTwinPatchReported:
		status, v, body := sess.PatchReported(context.Background(), pk.Payload)
		s.twinAnswer(c, status, t.RID, v, body)
	case wire.KindMethodResponse:
		s.methodResponse(c, t, pk.Payload)
	}
}

// telemetry stores a telemetry message; a property bag that does not
// decode drops the connection and returns the error.
func (s *Server) telemetry(c *conn, t wire.Topic, pk packets.Packet) error {
	bag, err := wire.DecodeBag(t.PropertyBag)
	if err != nil {
		s.log.Warn("dropping connection: bad property bag", "device_id", c.id, "error", err)
		err = fmt.Errorf("%w: %v", errProtocol, err)
		c.cl.Stop(err)
		return err
	}
	system, app := wire.SplitBag(bag)
	if pk.FixedHeader.Retain {
		app["mqtt-retain"] = "true"
	}
	sess := c.session()
	if sess == nil {
		return fmt.Errorf("%w: telemetry before the session was established", errProtocol)
	}
	msg := core.Telemetry{Body: append([]byte(nil), pk.Payload...), Properties: app, Received: time.Now().UTC()}
	bagToTelemetry(&msg, system)
	if err := sess.Telemetry(msg); err != nil {
		// No PUBACK: the device sends it again on its next connection.
		s.log.Error("telemetry not stored, dropping the connection", "device_id", c.id, "error", err)
		c.cl.Stop(err)
		return err
	}
	return nil
}

// bagSystem names the property bag's system properties by their IoT Hub
// names (see core.Telemetry.System).
var bagSystem = map[string]string{
	"$.uid": core.PropUserID, "$.to": core.PropTo, "$.exp": core.PropExpiry,
	"$.ctime": core.PropCreationTime, "$.ifid": core.PropInterfaceID, "$.schema": core.PropDataSchema,
}

// bagToTelemetry sets t's system properties from the property bag's
// "$."-prefixed ones.
func bagToTelemetry(t *core.Telemetry, system map[string]string) {
	for k, v := range system {
		switch k {
		case "$.mid":
			t.MessageID = v
		case "$.cid":
			t.CorrelationID = v
		case "$.ct":
			t.ContentType = v
		case "$.ce":
			t.ContentEncoding = v
		case "$.sub":
			t.Component = v
		default:
			if t.System == nil {
				t.System = map[string]string{}
			}
			if name, ok := bagSystem[k]; ok {
				k = name
			}
			t.System[k] = v
		}
	}
}

// twinAnswer writes $iothub/twin/res/{status}/?$rid={rid}[&$version=n] to
// the device alone.
func (s *Server) twinAnswer(c *conn, status int, rid string, version int64, body []byte) {
	topic := "$iothub/twin/res/" + strconv.Itoa(status) + "/?$rid=" + rid
	if version > 0 {
		topic += "&$version=" + strconv.FormatInt(version, 10)
	}
	if !c.subscribed(topic) {
		s.log.Warn("twin answer not delivered: not subscribed to $iothub/twin/res/#", "device_id", c.id, "status", status)
		return
	}
	if err := c.send(topic, body); err != nil {
		s.log.Warn("twin answer not delivered", "device_id", c.id, "error", err)
	}
}

func (s *Server) methodResponse(c *conn, t wire.Topic, body []byte) {
	key := methodKey(c.id, t.RID)
	s.mu.Lock()
	ch, ok := s.methods[key]
	delete(s.methods, key)
	s.mu.Unlock()
	if !ok {
		s.log.Warn("method response for no pending request (late or unknown $rid)", "device_id", c.id, "rid", t.RID)
		return
	}
	ch <- methodAnswer{status: t.Status, body: append([]byte(nil), body...)} // buffered, one sender: the map entry was removed above
}

func (s *Server) handleDPS(c *conn, t wire.Topic, body []byte) {
	m := s.cfg.Model
	var r core.DPSResponse
	switch t.Kind {
	case wire.KindDPSRegister:
		r = m.Register(c.dps, body)
	case wire.KindDPSPoll:
		r = m.PollOperation(c.dps, t.OperationID)
	default:
		return
	}
	topic := "$dps/registrations/res/" + strconv.Itoa(r.Status) + "/?$rid=" + t.RID
	if r.RetryAfter >= 0 {
		topic += "&retry-after=" + strconv.Itoa(r.RetryAfter)
	}
	if !c.subscribed(topic) {
		s.log.Warn("DPS answer not delivered: not subscribed to $dps/registrations/res/#", "registration_id", c.id)
		return
	}
	if err := c.send(topic, r.Body); err != nil {
		s.log.Warn("DPS answer not delivered", "registration_id", c.id, "error", err)
	}
}
