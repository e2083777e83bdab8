package emulator

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator/internal/pki"
	"github.com/iotc-go/iotc/emulator/internal/wire"
)

// dpsClientPrefix keeps DPS sessions apart from hub sessions of the same
// id in mochi's client table ('/' cannot appear in a device id).
const dpsClientPrefix = "$dps/"

var (
	errDroppedByOperator = errors.New("emulator: connection dropped by operator")
	errForbidden         = errors.New("emulator: topic not allowed")
	errProtocol          = errors.New("emulator: protocol violation")
	errMalformedSAS      = errors.New("password is not a well-formed SAS token")
)

// hook plugs the emulator into mochi.
type hook struct {
	mqtt.HookBase
	e *Emulator
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
	if pk.ProtocolVersion != 4 {
		h.e.log.Warn("connection refused: only MQTT 3.1.1 is supported", "client_id", pk.Connect.ClientIdentifier, "protocol_version", pk.ProtocolVersion)
		_ = h.e.srv.SendConnack(cl, packets.ErrUnsupportedProtocolVersion, false, nil)
		return packets.ErrUnsupportedProtocolVersion
	}
	if pk.Connect.WillFlag {
		h.e.log.Info("ignoring Will message", "client_id", pk.Connect.ClientIdentifier)
		cl.Properties.Will = mqtt.Will{}
	}
	return nil
}

// OnConnectAuthenticate checks the user name, SAS token or certificate; a
// refusal makes mochi answer CONNACK 5 (not authorized).
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	e := h.e
	c, err := e.authenticate(cl, pk)
	if err != nil {
		e.log.Warn("connection refused", "client_id", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote, "reason", err.Error())
		return false
	}
	if c.role == wire.RoleDPS {
		cl.ID = dpsClientPrefix + c.id
	}
	e.mu.Lock()
	e.conns[cl] = c
	e.mu.Unlock()
	e.log.Info("connection accepted", "role", c.role.String(), "device_id", c.id, "remote", cl.Net.Remote, "x509", c.x509)
	return true
}

// OnSessionEstablish makes the connection the device's current one; mochi
// then drops an older connection with the same id.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.conns[cl]
	if c == nil || c.role != wire.RoleHub {
		return
	}
	d, ok := e.devices[c.id]
	if !ok {
		return
	}
	if d.conn != nil && d.conn != c {
		e.log.Info("new connection replaces the old one", "device_id", c.id)
	}
	if s := d.amqp; s != nil {
		e.log.Info("new MQTT connection replaces the AMQP one", "device_id", c.id)
		d.amqp = nil
		s.dc.Close(errors.New("the device connected again over MQTT")) // never blocks
	}
	d.conn = c
	d.lastActivity = e.now()
	e.notifyLocked(c.id)
	if !c.expiry.IsZero() {
		// IoT Hub closes a connection whose SAS token expires (MQTT 3.1.1
		// cannot re-authenticate); the SDKs reconnect before that.
		c.expire = time.AfterFunc(time.Until(c.expiry), func() {
			e.log.Info("dropping connection: SAS token expired", "device_id", c.id)
			cl.Stop(domain.ErrTokenExpired)
		})
	}
	if c.modelID != "" {
		d.modelID = c.modelID
	}
}

// OnSessionEstablished delivers queued cloud-to-device messages when a
// persistent session kept the C2D subscription.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if c := h.e.connOf(cl); c != nil && c.role == wire.RoleHub {
		h.e.mu.Lock()
		h.e.notifyLocked(c.id) // inherited subscriptions are now in place
		h.e.mu.Unlock()
		h.e.deliverC2D(c.id)
	}
}

// OnDisconnect forgets the connection; the device goes offline unless a
// newer connection already replaced this one.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	e := h.e
	e.mu.Lock()
	c := e.conns[cl]
	delete(e.conns, cl)
	if c != nil && c.expire != nil {
		c.expire.Stop()
	}
	if c != nil && c.role == wire.RoleHub {
		if d, ok := e.devices[c.id]; ok && d.conn == c {
			d.conn = nil
			e.notifyLocked(c.id)
		}
	}
	e.mu.Unlock()
	if c != nil {
		e.log.Info("connection closed", "role", c.role.String(), "device_id", c.id, "cause", errString(err))
	}
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
	c := h.e.connOf(cl)
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
	e := h.e
	switch pk.FixedHeader.Type {
	case packets.Publish, packets.Subscribe, packets.Puback:
	default:
		return pk, nil
	}
	c := e.connOf(cl)
	if c == nil {
		return pk, nil
	}
	var err error
	switch pk.FixedHeader.Type {
	case packets.Puback:
		e.c2dAcked(c, pk.PacketID)
		return pk, nil
	case packets.Subscribe:
		for _, f := range pk.Filters {
			if !wire.SubscribeAllowed(c.role, c.id, f.Filter) {
				err = fmt.Errorf("%w: subscribe to %q", errForbidden, f.Filter)
				break
			}
		}
	case packets.Publish:
		err = checkPublish(c, pk)
	}
	if err != nil {
		e.log.Warn("dropping connection", "role", c.role.String(), "device_id", c.id, "reason", err.Error())
		return pk, fmt.Errorf("%w: %w", packets.ErrRejectPacket, err)
	}
	return pk, nil
}

func checkPublish(c *conn, pk packets.Packet) error {
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
	if t.Kind == wire.KindTelemetry && len(pk.Payload) > MaxTelemetryBody {
		return fmt.Errorf("%w: telemetry body of %d bytes exceeds %d", errProtocol, len(pk.Payload), MaxTelemetryBody)
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

// OnPacketProcessed delivers queued cloud-to-device messages once the
// SUBACK of a subscription has been written.
func (h *hook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, err error) {
	if pk.FixedHeader.Type != packets.Subscribe || err != nil {
		return
	}
	if c := h.e.connOf(cl); c != nil && c.role == wire.RoleHub {
		h.e.mu.Lock()
		h.e.notifyLocked(c.id)
		h.e.mu.Unlock()
		h.e.deliverC2D(c.id)
	}
}

// OnPublish acknowledges device requests without routing them: the
// emulator answers them itself in OnPublished, after the PUBACK.
func (h *hook) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	return pk, packets.CodeSuccessIgnore
}

// OnPublished handles a device request after mochi acknowledged it.
func (h *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	e := h.e
	c := e.connOf(cl)
	if c == nil {
		return
	}
	t, err := wire.ParseTopic(pk.TopicName)
	if err != nil {
		return // checked in OnPacketRead
	}
	switch c.role {
	case wire.RoleDPS:
		e.handleDPS(c, t, pk.Payload)
	case wire.RoleHub:
		e.touch(c.id)
		e.handleHub(c, t, pk)
	}
}

func (e *Emulator) connOf(cl *mqtt.Client) *conn {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.conns[cl]
}

func (e *Emulator) touch(id string) {
	e.mu.Lock()
	if d, ok := e.devices[id]; ok {
		d.lastActivity = e.now()
	}
	e.mu.Unlock()
}

// send writes a QoS 0 PUBLISH straight to one client. $iothub and $dps
// topics are shared by every device, so they are never routed through the
// broker: only the connection concerned sees its responses.
func (e *Emulator) send(c *conn, topic string, body []byte) error {
	return e.write(c, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     body,
	})
}

func (e *Emulator) write(c *conn, pk packets.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.cl.Closed() {
		return mqtt.ErrConnectionClosed
	}
	return c.cl.WritePacket(pk)
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
func (e *Emulator) authenticate(cl *mqtt.Client, pk packets.Packet) (*conn, error) {
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
		if u.IDScope != e.cfg.idScope {
			return nil, fmt.Errorf("unknown ID scope %q", u.IDScope)
		}
		if err := validID(clientID); err != nil {
			return nil, err
		}
		return e.authDPS(cl, clientID, password, certs)
	case wire.RoleHub:
		if u.DeviceID != clientID {
			return nil, fmt.Errorf("device id %q in the user name differs from client id %q", u.DeviceID, clientID)
		}
		if u.ModuleID != "" {
			return nil, fmt.Errorf("modules are not supported (module %q)", u.ModuleID)
		}
		c, err := e.authHub(cl, clientID, password, certs)
		if err != nil {
			return nil, err
		}
		c.modelID = u.ModelID
		return c, nil
	}
	return nil, errors.New("unknown user name form")
}

func (e *Emulator) authDPS(cl *mqtt.Client, regID, password string, certs []*x509.Certificate) (*conn, error) {
	c := &conn{cl: cl, role: wire.RoleDPS, id: regID}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if password != "" {
		tok, err := domain.ParseSAS(password)
		if err != nil {
			return nil, errMalformedSAS // details could echo parts of the secret
		}
		if !tok.MatchesResource(domain.DPSResource(e.cfg.idScope, regID)) {
			return nil, fmt.Errorf("SAS audience %q is not %q", tok.Resource, domain.DPSResource(e.cfg.idScope, regID))
		}
		verr := domain.ErrBadSignature
		note := func(err error) {
			if errors.Is(err, domain.ErrTokenExpired) {
				verr = err
			}
		}
		if d, ok := e.devices[regID]; ok {
			for _, k := range d.indivKeys {
				if k == "" {
					continue
				}
				err := tok.Verify(k, now)
				if err == nil {
					return c, nil
				}
				note(err)
			}
		}
		for _, g := range e.groups {
			if g.IsX509() {
				continue
			}
			for _, gk := range []string{g.PrimaryKey, g.SecondaryKey} {
				dk, err := domain.DeriveDeviceKey(gk, regID)
				if err != nil {
					continue
				}
				err = tok.Verify(dk, now)
				if err == nil {
					c.groupID = g.ID
					return c, nil
				}
				note(err)
			}
		}
		return nil, fmt.Errorf("registration %q: %w", regID, verr)
	}
	if len(certs) == 0 {
		return nil, errors.New("no SAS token and no client certificate")
	}
	if certs[0].Subject.CommonName != regID {
		return nil, fmt.Errorf("certificate CN %q is not the registration id %q", certs[0].Subject.CommonName, regID)
	}
	var lastErr error = errors.New("no X.509 enrollment group")
	for _, g := range e.groups {
		if !g.IsX509() {
			continue
		}
		if lastErr = verifyChain(g, certs, now); lastErr == nil {
			c.groupID, c.x509 = g.ID, true
			return c, nil
		}
	}
	return nil, fmt.Errorf("certificate chain: %w", lastErr)
}

func verifyChain(g EnrollmentGroup, certs []*x509.Certificate, now time.Time) error {
	cas, err := pki.ParseCertificates(g.CACertPEM)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

func (e *Emulator) authHub(cl *mqtt.Client, id, password string, certs []*x509.Certificate) (*conn, error) {
	c := &conn{cl: cl, role: wire.RoleHub, id: id, inflight: map[uint16]*c2dMsg{}}
	e.mu.Lock()
	defer e.mu.Unlock()
	d, ok := e.devices[id]
	if !ok {
		return nil, fmt.Errorf("device %q not found", id)
	}
	if !d.enabled {
		return nil, fmt.Errorf("device %q is disabled", id)
	}
	now := time.Now()
	if password != "" {
		tok, err := domain.ParseSAS(password)
		if err != nil {
			return nil, errMalformedSAS // details could echo parts of the secret
		}
		if !tok.MatchesResource(domain.HubResource(e.cfg.hubHost, id)) {
			return nil, fmt.Errorf("SAS audience %q is not %q", tok.Resource, domain.HubResource(e.cfg.hubHost, id))
		}
		verr := domain.ErrBadSignature
		for _, k := range d.keys() {
			err := tok.Verify(k, now)
			if err == nil {
				c.expiry = tok.Expiry
				return c, nil
			}
			if errors.Is(err, domain.ErrTokenExpired) {
				verr = err
			}
		}
		return nil, fmt.Errorf("device %q: %w", id, verr)
	}
	if len(certs) == 0 {
		return nil, errors.New("no SAS token and no client certificate")
	}
	if !d.x509 {
		return nil, fmt.Errorf("device %q does not use X.509", id)
	}
	if certs[0].Subject.CommonName != id {
		return nil, fmt.Errorf("certificate CN %q is not the device id %q", certs[0].Subject.CommonName, id)
	}
	g, ok := e.group(d.groupID)
	if !ok || !g.IsX509() || !g.Enabled {
		return nil, fmt.Errorf("device %q: enrollment group %q is missing or disabled", id, d.groupID)
	}
	if err := verifyChain(g, certs, now); err != nil {
		return nil, fmt.Errorf("certificate chain: %w", err)
	}
	c.x509 = true
	return c, nil
}
