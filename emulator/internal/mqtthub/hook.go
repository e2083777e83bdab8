package mqtthub

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
	"github.com/iotc-go/iotc/emulator/internal/wire"
)

// dpsClientPrefix keeps DPS sessions apart from hub sessions of the same
// id in mochi's client table ('/' cannot appear in a device id).
const dpsClientPrefix = "$dps/"

var (
	errForbidden    = errors.New("emulator: topic not allowed")
	errProtocol     = errors.New("emulator: protocol violation")
	errTokenExpired = errors.New("emulator: SAS token expired")
)

// hook plugs the front-end into mochi.
type hook struct {
	mqtt.HookBase
	s *Server
}

// ID names the hook for mochi.
func (h *hook) ID() string { return "iotc-emulator" }

// Provides lists the mochi events the hook handles.
func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished,
		mqtt.OnDisconnect, mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnSubscribe, mqtt.OnPacketProcessed,
		mqtt.OnPublish, mqtt.OnPublished,
	}, []byte{b})
}

// OnConnect refuses anything but MQTT 3.1.1 and drops Will messages (a
// Will would otherwise be routed to other clients).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if m, ok := cl.Net.Conn.(interface{ loggedIn() }); ok {
		m.loggedIn() // the CONNECT has been read: its pre-login reservation ends
	}
	// IoT Hub applies its own maximum idle time to keep-alive 0 and to
	// keep-alives above it; mochi sets the read deadline from this value.
	cl.State.Keepalive = h.s.keepaliveFor(pk.Connect.Keepalive)
	if pk.ProtocolVersion != 4 {
		h.s.cfg.Reporter.Refused(netlimit.KindMQTTAuth, "connection refused: only MQTT 3.1.1 is supported",
			"client_id", netlimit.Quote(pk.Connect.ClientIdentifier), "protocol_version", pk.ProtocolVersion)
		_ = h.s.srv.SendConnack(cl, packets.ErrUnsupportedProtocolVersion, false, nil)
		return packets.ErrUnsupportedProtocolVersion
	}
	if pk.Connect.WillFlag {
		h.s.log.Info("ignoring Will message", "client_id", netlimit.Quote(pk.Connect.ClientIdentifier))
		cl.Properties.Will = mqtt.Will{}
	}
	return h.admitConnect(cl, pk)
}

// OnConnectAuthenticate checks the user name, SAS token or certificate; a
// refusal makes mochi answer CONNACK 5 (not authorized).
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	s := h.s
	c, err := s.authenticate(cl, pk)
	if err != nil {
		s.cfg.Reporter.Refused(netlimit.KindMQTTAuth, "connection refused",
			"client_id", netlimit.Quote(pk.Connect.ClientIdentifier), "remote", cl.Net.Remote, "reason", netlimit.Reason(err))
		return false
	}
	if c.role == wire.RoleDPS {
		cl.ID = dpsClientPrefix + c.id
	}
	s.mu.Lock()
	s.conns[cl] = c
	s.mu.Unlock()
	s.log.Info("connection accepted", "role", c.role.String(), "device_id", c.id, "remote", cl.Net.Remote, "x509", c.x509)
	return true
}

// OnSessionEstablish makes the connection the device's current one; mochi
// then drops an older MQTT connection with the same id.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	s := h.s
	c := s.connOf(cl)
	if c == nil || c.role != wire.RoleHub {
		return
	}
	sess, prev, err := s.cfg.Model.Connect(c.id, core.HubAuth{X509: c.x509, Expiry: c.expiry}, c, c.modelID)
	if err != nil {
		s.log.Warn("dropping connection", "role", c.role.String(), "device_id", c.id, "reason", err.Error())
		cl.Stop(err)
		return
	}
	c.mu.Lock()
	c.sess = sess
	c.mu.Unlock()
	switch p := prev.(type) {
	case nil:
	case *conn:
		if p != c {
			s.log.Info("new connection replaces the old one", "device_id", c.id)
		}
	default:
		s.log.Info("new MQTT connection replaces the "+prev.Protocol()+" one", "device_id", c.id)
		prev.Drop(errReplaced) // never blocks
	}
	if !c.expiry.IsZero() {
		// IoT Hub closes a connection whose SAS token expires (MQTT 3.1.1
		// cannot re-authenticate); the SDKs reconnect before that.
		c.mu.Lock()
		c.expire = time.AfterFunc(time.Until(c.expiry), func() {
			s.log.Info("dropping connection: SAS token expired", "device_id", c.id)
			cl.Stop(errTokenExpired)
		})
		c.mu.Unlock()
	}
}

// OnSessionEstablished delivers queued cloud-to-device messages when a
// persistent session kept the C2D subscription.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.s.untrack(cl) // the inherited subscriptions were put back in mochi's index
	if c := h.s.connOf(cl); c != nil && c.role == wire.RoleHub {
		c.established.Store(true) // the CONNACK is out: the device may be reached
		if sess := c.session(); sess != nil {
			sess.SubscriptionsChanged() // inherited subscriptions are now in place
		}
		c.NotifyC2D()
	}
}

// OnDisconnect forgets the connection; the device goes offline unless a
// newer connection already replaced this one.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	s := h.s
	s.mu.Lock()
	c := s.conns[cl]
	delete(s.conns, cl)
	s.mu.Unlock()
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		s.cfg.Reporter.LimitHit(netlimit.KindMQTTIdle, "MQTT connection closed: silent past its keep-alive", "remote", cl.Net.Remote)
	}
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.expire != nil {
		c.expire.Stop()
	}
	c.mu.Unlock()
	if sess := c.session(); sess != nil {
		sess.Close()
	}
	s.log.Info("connection closed", "role", c.role.String(), "device_id", c.id, "cause", errString(err))
}

func errString(err error) string {
	if err == nil {
		return "client disconnect"
	}
	return err.Error()
}

// OnACLCheck repeats the permission checks of OnPacketRead, which already
// dropped any offender; it also keeps mochi from routing anything to a
// device.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	c := h.s.connOf(cl)
	if c == nil {
		return false
	}
	if !write {
		return wire.SubscribeAllowed(c.role, c.id, topic)
	}
	t, err := wire.ParseTopic(topic)
	return err == nil && wire.PublishAllowed(c.role, c.id, t)
}

// OnPacketRead checks every PUBLISH and SUBSCRIBE before mochi acts on it:
// QoS 2, a topic or filter the device may not use, or an oversized
// telemetry body ends the connection, as IoT Hub does (MQTT 3.1.1 has no
// error replies). It also records PUBACKs of cloud-to-device messages.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	s := h.s
	switch pk.FixedHeader.Type {
	case packets.Publish, packets.Subscribe, packets.Puback:
	default:
		return pk, nil
	}
	c := s.connOf(cl)
	if c == nil {
		return pk, nil
	}
	var err error
	switch pk.FixedHeader.Type {
	case packets.Puback:
		c.acked(pk.PacketID)
		return pk, nil
	case packets.Subscribe:
		for _, f := range pk.Filters {
			if !wire.SubscribeAllowed(c.role, c.id, f.Filter) {
				err = fmt.Errorf("%w: subscribe to %q", errForbidden, f.Filter)
				break
			}
		}
	case packets.Publish:
		err = s.checkPublish(c, pk)
	}
	if err != nil {
		s.log.Warn("dropping connection", "role", c.role.String(), "device_id", c.id, "reason", err.Error())
		return pk, fmt.Errorf("%w: %w", packets.ErrRejectPacket, err)
	}
	return pk, nil
}

func (s *Server) checkPublish(c *conn, pk packets.Packet) error {
	if pk.FixedHeader.Qos > 1 {
		return fmt.Errorf("%w: QoS %d publish", errProtocol, pk.FixedHeader.Qos)
	}
	t, err := wire.ParseTopic(pk.TopicName)
	if err != nil {
		return fmt.Errorf("%w: %v", errForbidden, err)
	}
	if !wire.PublishAllowed(c.role, c.id, t) {
		return fmt.Errorf("%w: publish to %q", errForbidden, pk.TopicName)
	}
	if t.Kind == wire.KindTelemetry && len(pk.Payload) > s.cfg.MaxTelemetryBody {
		return fmt.Errorf("%w: telemetry body of %d bytes exceeds %d", errProtocol, len(pk.Payload), s.cfg.MaxTelemetryBody)
	}
	if t.Kind == wire.KindTelemetry && c.role == wire.RoleHub {
		return s.admitTelemetry(c)
	}
	return nil
}

// OnSubscribe grants at most QoS 1.
func (h *hook) OnSubscribe(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	for i := range pk.Filters {
		pk.Filters[i].Qos = min(pk.Filters[i].Qos, 1)
	}
	return pk
}

// untrack removes cl's subscriptions from mochi's topic index, keeping
// them in the client's own state (which says what the device subscribed
// to). The front-end writes every packet to its connection itself and
// never routes through mochi, so the index would only hold, per device,
// a branch for its cloud-to-device filter and an entry under each shared
// filter: about 4 KiB of the emulator's memory per connected device.
func (s *Server) untrack(cl *mqtt.Client) {
	for f := range cl.State.Subscriptions.GetAll() {
		s.srv.Topics.Unsubscribe(f, cl.ID)
	}
}

// OnPacketProcessed delivers queued cloud-to-device messages once the
// SUBACK of a subscription has been written.
func (h *hook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, err error) {
	if pk.FixedHeader.Type != packets.Subscribe || err != nil {
		return
	}
	h.s.untrack(cl)
	if c := h.s.connOf(cl); c != nil && c.role == wire.RoleHub {
		if sess := c.session(); sess != nil {
			sess.SubscriptionsChanged()
		}
		c.NotifyC2D()
	}
}

// OnPublish stores telemetry before mochi acknowledges it, as IoT Hub
// acknowledges a message once it accepted it: a PUBACK written before the
// message was stored could reach the device while the store never
// happened (the connection killed in between), and the message would be
// lost. A message whose property bag does not decode is refused without a
// PUBACK and its connection dropped. Device requests (twin, methods, DPS:
// topics starting with '$') are answered in OnPublished, after the
// PUBACK. Nothing is routed to subscribers.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if strings.HasPrefix(pk.TopicName, "$") {
		return pk, packets.CodeSuccessIgnore
	}
	s := h.s
	c := s.connOf(cl)
	if c == nil || c.role != wire.RoleHub {
		return pk, packets.CodeSuccessIgnore
	}
	t, err := wire.ParseTopic(pk.TopicName)
	if err != nil || t.Kind != wire.KindTelemetry {
		return pk, packets.CodeSuccessIgnore // checked in OnPacketRead
	}
	if err := s.telemetry(c, t, pk); err != nil {
		return pk, fmt.Errorf("%w: %w", packets.ErrRejectPacket, err)
	}
	return pk, packets.CodeSuccessIgnore
}

// OnPublished answers a device request after mochi acknowledged it.
func (h *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if !strings.HasPrefix(pk.TopicName, "$") {
		return // telemetry: stored in OnPublish
	}
	s := h.s
	c := s.connOf(cl)
	if c == nil {
		return
	}
	t, err := wire.ParseTopic(pk.TopicName)
	if err != nil {
		return // checked in OnPacketRead
	}
	switch c.role {
	case wire.RoleDPS:
		s.handleDPS(c, t, pk.Payload)
	case wire.RoleHub:
		s.handleHub(c, t, pk)
	}
}

func (s *Server) connOf(cl *mqtt.Client) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[cl]
}

// peerCerts returns the TLS client certificate chain, if any.
func peerCerts(cl *mqtt.Client) []*x509.Certificate {
	cs, ok := cl.Net.Conn.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil
	}
	return cs.ConnectionState().PeerCertificates
}

// authenticate checks a CONNECT and returns the connection it opens.
func (s *Server) authenticate(cl *mqtt.Client, pk packets.Packet) (*conn, error) {
	u, err := wire.ParseUsername(string(pk.Connect.Username))
	if err != nil {
		return nil, err
	}
	clientID := pk.Connect.ClientIdentifier
	password := string(pk.Connect.Password)
	certs := peerCerts(cl)
	switch u.Role {
	case wire.RoleDPS:
		if u.RegistrationID != clientID {
			return nil, fmt.Errorf("registration id %q in the user name differs from client id %q", u.RegistrationID, clientID)
		}
		a, err := s.cfg.Model.AuthenticateDPS(u.IDScope, clientID, password, certs)
		if err != nil {
			return nil, err
		}
		return &conn{s: s, cl: cl, role: wire.RoleDPS, id: clientID, dps: a, x509: a.X509}, nil
	case wire.RoleHub:
		// A module connects with client id "{deviceId}/{moduleId}" and user
		// name "{host}/{deviceId}/{moduleId}/?...": the key the core knows it by.
		cdev, cmod, _ := strings.Cut(clientID, "/")
		switch {
		case u.DeviceID != cdev:
			return nil, fmt.Errorf("device id %q in the user name differs from client id %q", u.DeviceID, clientID)
		case u.ModuleID != cmod:
			return nil, fmt.Errorf("module id %q in the user name differs from client id %q", u.ModuleID, clientID)
		case strings.Contains(cmod, "/"):
			return nil, fmt.Errorf("client id %q is neither {deviceId} nor {deviceId}/{moduleId}", clientID)
		}
		a, err := s.cfg.Model.AuthenticateHub(clientID, password, certs)
		if err != nil {
			return nil, err
		}
		return &conn{s: s, cl: cl, role: wire.RoleHub, id: clientID, modelID: u.ModelID, x509: a.X509,
			expiry: a.Expiry}, nil
	}
	return nil, errors.New("unknown user name form")
}
