package mqtthub

import (
	"context"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/wire"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

var _ core.FaultLink = (*conn)(nil)

// InjectFault implements core.FaultLink. MQTT 3.1.1 has no server-side
// DISCONNECT, so graceful and ungraceful closes both end the socket; the
// AMQP link and session kills do not apply.
func (c *conn) InjectFault(k core.FaultKind, _ bool, reason error) bool {
	switch k {
	case core.FaultKillTCP, core.FaultShutDownMQTT, core.FaultAuthError, core.FaultRevokeKey:
		c.cl.Stop(reason)
	case core.FaultExpireToken:
		c.cl.Stop(errTokenExpired)
	default:
		return false
	}
	return true
}

// admitConnect refuses a hub CONNECT with CONNACK 3 (server unavailable)
// while the device's connections are refused; it reports whether it did.
func (h *hook) admitConnect(cl *mqtt.Client, pk packets.Packet) error {
	u, err := wire.ParseUsername(string(pk.Connect.Username))
	if err != nil || u.Role != wire.RoleHub {
		return nil // authentication refuses or accepts it
	}
	if err := h.s.cfg.Model.AdmitConnection(pk.Connect.ClientIdentifier); err != nil {
		h.s.log.Warn("connection refused", "client_id", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote, "reason", err.Error())
		_ = h.s.srv.SendConnack(cl, packets.ErrServerUnavailable, false, nil)
		return packets.ErrServerUnavailable
	}
	return nil
}

// admitTelemetry checks a telemetry PUBLISH against the fault switches:
// shaping delays it (and so its PUBACK); throttling or quota ends the
// connection without a PUBACK, MQTT 3.1.1 having no error reply.
func (s *Server) admitTelemetry(c *conn) error {
	sess := c.session()
	if sess == nil {
		return nil // refused in OnPublish
	}
	return sess.Admit(context.Background(), core.OpTelemetry)
}
