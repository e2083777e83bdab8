package amqphub

import (
	"strings"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
	"github.com/iotc-go/iotc/emulator/internal/core"
)

// ConnFault is a connection fault applied to a device's AMQP session.
type ConnFault int

// The connection faults of a device's session (see devConn.injectConnFault).
const (
	// FaultKillTCP drops the socket (graceful: a close frame first).
	FaultKillTCP ConnFault = iota + 1
	// FaultCloseConnection closes the AMQP connection (ungraceful: drops the socket).
	FaultCloseConnection
	// FaultEndSession ends the AMQP session(s) of the device's links.
	FaultEndSession
	// FaultDetachCBS detaches the connection's $cbs links.
	FaultDetachCBS
	// FaultDetachTelemetry detaches the device's telemetry link.
	FaultDetachTelemetry
	// FaultDetachC2D detaches the device's cloud-to-device link.
	FaultDetachC2D
	// FaultDetachTwin detaches the device's twin links.
	FaultDetachTwin
	// FaultDetachMethods detaches the device's direct-method links.
	FaultDetachMethods
	// FaultUnauthorized ends the session with amqp:unauthorized-access
	// (the connection closes when it carries no other device).
	FaultUnauthorized
	// FaultExpireToken treats the device's token as expired now: its links
	// detach with amqp:unauthorized-access unless a new one is put.
	FaultExpireToken
)

var _ core.FaultLink = (*devConn)(nil)

// InjectFault implements core.FaultLink: the core's connection faults as
// AMQP does them. MQTT's shutdown does not apply (false).
func (dc *devConn) InjectFault(k core.FaultKind, graceful bool, reason error) bool {
	var f ConnFault
	switch k {
	case core.FaultKillTCP:
		f = FaultKillTCP
	case core.FaultKillAMQPConnection, core.FaultShutDownAMQP:
		f = FaultCloseConnection
	case core.FaultKillAMQPSession:
		f = FaultEndSession
	case core.FaultKillAMQPCBSLinkReq, core.FaultKillAMQPCBSLinkResp:
		f = FaultDetachCBS
	case core.FaultKillAMQPD2CLink:
		f = FaultDetachTelemetry
	case core.FaultKillAMQPC2DLink:
		f = FaultDetachC2D
	case core.FaultKillAMQPTwinLinkReq, core.FaultKillAMQPTwinLinkResp:
		f = FaultDetachTwin
	case core.FaultKillAMQPMethodReqLink, core.FaultKillAMQPMethodRespLink:
		f = FaultDetachMethods
	case core.FaultAuthError, core.FaultRevokeKey:
		f = FaultUnauthorized
	case core.FaultExpireToken:
		f = FaultExpireToken
	default:
		return false
	}
	dc.injectConnFault(f, graceful, reason.Error())
	return true
}

// injectConnFault applies f to the session, gracefully (close, end and
// detach frames without error) or not; reason is the description sent. It
// never blocks.
func (dc *devConn) injectConnFault(f ConnFault, graceful bool, reason string) {
	cs := dc.cs
	var aerr *amqp1.Error
	if !graceful {
		aerr = &amqp1.Error{Condition: amqp1.ErrCondDetachForced, Description: reason}
	}
	links := func(kind nodeKind) []*amqp1.Link {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		var out []*amqp1.Link
		if kind == nodeCBS {
			for l, ls := range cs.links {
				if ls.addr.kind == nodeCBS {
					out = append(out, l)
				}
			}
			return out
		}
		for l, ls := range dc.links {
			if ls.addr.kind == kind {
				out = append(out, l)
			}
		}
		return out
	}
	detach := func(kind nodeKind) {
		for _, l := range links(kind) {
			_ = l.Detach(errOrNil(aerr))
		}
	}
	cs.goSafe(func() {
		cs.log.Info("injecting fault", "device_id", dc.dev.id, "fault", int(f), "graceful", graceful)
		cs.mu.Lock()
		conn := cs.conn
		cs.mu.Unlock()
		switch f {
		case FaultKillTCP, FaultCloseConnection:
			if conn == nil {
				return
			}
			if graceful {
				conn.Close(&amqp1.Error{Condition: amqp1.ErrCondConnectionForced, Description: reason})
			} else {
				conn.Abort()
			}
		case FaultEndSession:
			all := append(append(append(links(nodeTelemetry), links(nodeC2D)...), links(nodeTwin)...), links(nodeMethods)...)
			var e *amqp1.Error
			if !graceful {
				e = &amqp1.Error{Condition: amqp1.ErrCondInternalError, Description: reason}
			}
			// Sessions are ended once each: EndSession is a no-op the second time.
			for _, l := range all {
				_ = l.EndSession(errOrNil(e))
			}
		case FaultDetachCBS:
			detach(nodeCBS)
		case FaultDetachTelemetry:
			detach(nodeTelemetry)
		case FaultDetachC2D:
			detach(nodeC2D)
		case FaultDetachTwin:
			detach(nodeTwin)
		case FaultDetachMethods:
			detach(nodeMethods)
		case FaultUnauthorized:
			cs.endSession(dc, &amqp1.Error{Condition: amqp1.ErrCondUnauthorizedAccess, Description: reason}, true)
		case FaultExpireToken:
			cs.mu.Lock()
			dc.dev.expiry = now()
			dc.dev.viaCert = false
			cs.mu.Unlock()
			cs.expire(dc.dev)
		}
	})
}

// errOrNil keeps a nil *amqp1.Error a nil error.
func errOrNil(e *amqp1.Error) error {
	if e == nil {
		return nil
	}
	return e
}

// propModelID is the IoT Plug and Play model id a device announces on its
// links or its connection.
const propModelID = "com.microsoft:model-id"

// modelIDOf returns the model id in props ("" when none).
func modelIDOf(props map[string]any) string {
	for k, v := range props {
		if strings.EqualFold(k, propModelID) {
			if s, ok := textOf(v); ok {
				return s
			}
		}
	}
	return ""
}
