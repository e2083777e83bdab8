package emulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
	"github.com/iotc-go/iotc/emulator/internal/amqphub"
	"github.com/iotc-go/iotc/emulator/internal/wire"
)

// amqpServer is the AMQP 1.0 side of the emulator: the TLS listener
// (default 5671) and the application layer shared with the AMQPWSB10
// WebSocket connections.
type amqpServer struct {
	hub    *amqphub.Server
	ln     net.Listener // nil when the TLS listener is disabled
	ctx    context.Context
	cancel context.CancelFunc
}

// startAMQP builds the AMQP application layer and, unless disabled, binds
// the AMQP/TLS listener.
func (e *Emulator) startAMQP() error {
	hub, err := amqphub.NewServer(amqpBackend{e}, amqphub.Options{
		HubHost:          e.cfg.hubHost,
		MaxTelemetryBody: MaxTelemetryBody,
		// The engine accepts messages up to 1 MiB so that telemetry over
		// MaxTelemetryBody is rejected with amqp:resource-limit-exceeded,
		// as IoT Hub does, rather than ending the link.
		Engine: amqp1.Config{ContainerID: "iotc-emulator"},
		Logger: e.log.With("component", "amqp"),
	})
	if err != nil {
		return fmt.Errorf("emulator: AMQP: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.amqp = &amqpServer{hub: hub, ctx: ctx, cancel: cancel}
	if e.cfg.amqpAddr == "-" {
		return nil
	}
	ln, err := net.Listen("tcp", e.cfg.amqpAddr)
	if err != nil {
		return fmt.Errorf("emulator: AMQP listener: %w", err)
	}
	e.amqp.ln = ln
	tln := tls.NewListener(ln, e.serverTLS())
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			nc, err := tln.Accept()
			if err != nil {
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				if err := hub.ServeConn(ctx, nc, nil); err != nil && !errors.Is(err, context.Canceled) {
					e.log.Debug("AMQP connection ended", "remote", nc.RemoteAddr().String(), "error", err)
				}
			}()
		}
	}()
	return nil
}

// serveAMQPWebSocket runs one AMQP connection that arrived over a
// WebSocket (subprotocol AMQPWSB10) until it ends.
func (e *Emulator) serveAMQPWebSocket(conn net.Conn, certs []*x509.Certificate) {
	if e.amqp == nil {
		_ = conn.Close()
		return
	}
	if err := e.amqp.hub.ServeConn(e.amqp.ctx, conn, certs); err != nil && !errors.Is(err, context.Canceled) {
		e.log.Debug("WebSocket AMQP connection ended", "remote", conn.RemoteAddr().String(), "error", err)
	}
}

// closeAMQP stops accepting and closes every AMQP connection (their
// goroutines are counted in e.wg).
func (e *Emulator) closeAMQP() error {
	if e.amqp == nil {
		return nil
	}
	e.amqp.cancel()
	if e.amqp.ln != nil {
		if err := e.amqp.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
	}
	return nil
}

// AMQPAddr is the bound host:port of the AMQP/TLS listener, or "" when it
// is disabled.
func (e *Emulator) AMQPAddr() string {
	if e.amqp == nil || e.amqp.ln == nil {
		return ""
	}
	return e.amqp.ln.Addr().String()
}

// amqpBackend is the emulator's state seen by the AMQP application layer.
type amqpBackend struct{ e *Emulator }

// authFailure maps an authentication error of authHub/authDPS.
func authFailure(err error) error {
	return fmt.Errorf("%w: %w", amqphub.ErrUnauthorized, err)
}

// AuthenticateDevice implements amqphub.Backend.
func (b amqpBackend) AuthenticateDevice(_ context.Context, deviceID, sasToken string) (time.Time, error) {
	e := b.e
	if err := b.known(deviceID); err != nil {
		return time.Time{}, err
	}
	c, err := e.authHub(nil, deviceID, sasToken, nil)
	if err != nil {
		e.log.Warn("AMQP authentication refused", "device_id", deviceID, "reason", err.Error())
		return time.Time{}, authFailure(err)
	}
	return c.expiry, nil
}

// AuthenticateDeviceX509 implements amqphub.Backend.
func (b amqpBackend) AuthenticateDeviceX509(_ context.Context, deviceID string, certs []*x509.Certificate) error {
	if err := b.known(deviceID); err != nil {
		return err
	}
	if len(certs) == 0 {
		return fmt.Errorf("%w: no client certificate", amqphub.ErrUnauthorized)
	}
	if _, err := b.e.authHub(nil, deviceID, "", certs); err != nil {
		b.e.log.Warn("AMQP authentication refused", "device_id", deviceID, "reason", err.Error())
		return authFailure(err)
	}
	return nil
}

func (b amqpBackend) known(deviceID string) error {
	b.e.mu.Lock()
	defer b.e.mu.Unlock()
	if _, ok := b.e.devices[deviceID]; !ok {
		return fmt.Errorf("%w: device %q", amqphub.ErrNotFound, deviceID)
	}
	return nil
}

// ConnectDevice implements amqphub.Backend: the AMQP session becomes the
// device's one connection; an MQTT or older AMQP connection is dropped.
func (b amqpBackend) ConnectDevice(_ context.Context, deviceID string, dc amqphub.DeviceConn) (amqphub.DeviceSession, error) {
	e := b.e
	e.mu.Lock()
	d, err := e.lookup(deviceID)
	if err != nil {
		e.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", amqphub.ErrNotFound, err)
	}
	if !d.enabled {
		e.mu.Unlock()
		return nil, fmt.Errorf("%w: device %q is disabled", amqphub.ErrUnauthorized, deviceID)
	}
	oldMQTT, oldAMQP := d.conn, d.amqp
	s := &amqpSession{e: e, id: deviceID, dc: dc}
	d.amqp, d.conn = s, nil
	d.lastActivity = e.now()
	e.notifyLocked(deviceID)
	e.mu.Unlock()
	if oldAMQP != nil {
		oldAMQP.dc.Close(errors.New("the device connected again"))
	}
	if oldMQTT != nil {
		oldMQTT.cl.Stop(errReplacedByAMQP)
	}
	e.log.Info("connection accepted", "role", wire.RoleHub.String(), "device_id", deviceID, "protocol", dc.Protocol())
	return s, nil
}

var errReplacedByAMQP = errors.New("emulator: the device connected again over AMQP")

// AuthenticateDPS implements amqphub.Backend.
func (b amqpBackend) AuthenticateDPS(_ context.Context, cred amqphub.DPSCredentials) (amqphub.DPSSession, error) {
	e := b.e
	if cred.IDScope != e.cfg.idScope {
		return nil, fmt.Errorf("%w: unknown ID scope %q", amqphub.ErrNotFound, cred.IDScope)
	}
	if err := validID(cred.RegistrationID); err != nil {
		return nil, fmt.Errorf("%w: %w", amqphub.ErrUnauthorized, err)
	}
	c, err := e.authDPS(nil, cred.RegistrationID, cred.SASToken, cred.Certificates)
	if err != nil {
		e.log.Warn("AMQP DPS authentication refused", "registration_id", cred.RegistrationID, "reason", err.Error())
		return nil, authFailure(err)
	}
	return amqpDPS{e: e, c: c}, nil
}

// amqpDPS registers one authenticated registration id.
type amqpDPS struct {
	e *Emulator
	c *conn
}

// Register implements amqphub.DPSSession.
func (s amqpDPS) Register(_ context.Context, body []byte, _ bool) amqphub.DPSResponse {
	status, retryAfter, v := s.e.dpsRegisterResult(s.c, body)
	return s.e.dpsResponse(status, retryAfter, v)
}

// OperationStatus implements amqphub.DPSSession.
func (s amqpDPS) OperationStatus(_ context.Context, operationID string) amqphub.DPSResponse {
	status, retryAfter, v := s.e.dpsPollResult(s.c, operationID)
	return s.e.dpsResponse(status, retryAfter, v)
}

func (e *Emulator) dpsResponse(status, retryAfter int, v any) amqphub.DPSResponse {
	body, err := json.Marshal(v)
	if err != nil {
		return amqphub.DPSResponse{Status: 500, RetryAfter: -1, Body: []byte(`{"errorCode":500000,"message":"encode answer"}`)}
	}
	return amqphub.DPSResponse{Status: status, RetryAfter: retryAfter, Body: body}
}

// amqpSession is a device's hub session over AMQP.
type amqpSession struct {
	e  *Emulator
	id string
	dc amqphub.DeviceConn
}

// Telemetry implements amqphub.DeviceSession.
func (s *amqpSession) Telemetry(_ context.Context, t amqphub.Telemetry) error {
	if len(t.Body) > MaxTelemetryBody {
		return fmt.Errorf("%w: telemetry body of %d bytes exceeds %d", amqphub.ErrTooLarge, len(t.Body), MaxTelemetryBody)
	}
	s.e.touch(s.id)
	s.e.storeTelemetry(Telemetry{
		DeviceID: s.id, Component: t.Component, Body: t.Body, Properties: t.Properties, System: t.System, Received: s.e.now(),
	})
	return nil
}

// Twin implements amqphub.DeviceSession.
func (s *amqpSession) Twin(context.Context) (int, []byte) {
	s.e.touch(s.id)
	return s.e.twinDocument(s.id)
}

// PatchReported implements amqphub.DeviceSession.
func (s *amqpSession) PatchReported(_ context.Context, patch []byte) (int, int64, []byte) {
	s.e.touch(s.id)
	return s.e.patchReported(s.id, patch)
}

// NextC2D implements amqphub.DeviceSession: the oldest queued message not
// in flight on this session.
func (s *amqpSession) NextC2D(context.Context) (amqphub.C2DMessage, bool) {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	d, ok := e.devices[s.id]
	if !ok || d.amqp != s {
		return amqphub.C2DMessage{}, false
	}
	for _, m := range d.c2d {
		if m.amqpOn != nil {
			continue
		}
		m.amqpOn = s
		m.deliveries++
		props := make(map[string]string, len(m.props))
		for k, v := range m.props {
			props[k] = v
		}
		return amqphub.C2DMessage{LockToken: m.id, MessageID: m.id, Body: m.body, Properties: props}, true
	}
	return amqphub.C2DMessage{}, false
}

// SettleC2D implements amqphub.DeviceSession.
func (s *amqpSession) SettleC2D(_ context.Context, lockToken string, outcome amqphub.C2DOutcome) error {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	d, ok := e.devices[s.id]
	if !ok {
		return nil
	}
	for i, m := range d.c2d {
		if m.id != lockToken || m.amqpOn != s {
			continue
		}
		if outcome == amqphub.C2DAbandon {
			m.amqpOn = nil
		} else {
			d.c2d = append(d.c2d[:i], d.c2d[i+1:]...)
			d.lastActivity = e.now()
		}
		e.log.Info("cloud-to-device message settled", "device_id", s.id, "message_id", m.id, "outcome", outcome.String())
		return nil
	}
	return nil
}

// SubscriptionsChanged implements amqphub.DeviceSession.
func (s *amqpSession) SubscriptionsChanged() {
	s.e.mu.Lock()
	s.e.notifyLocked(s.id)
	s.e.mu.Unlock()
}

// Close implements amqphub.DeviceSession.
func (s *amqpSession) Close() {
	e := s.e
	e.mu.Lock()
	d, ok := e.devices[s.id]
	if ok {
		if d.amqp == s {
			d.amqp = nil
		}
		for _, m := range d.c2d {
			if m.amqpOn == s {
				m.amqpOn = nil
			}
		}
		e.notifyLocked(s.id)
	}
	e.mu.Unlock()
	e.log.Info("connection closed", "role", wire.RoleHub.String(), "device_id", s.id, "protocol", amqphub.Protocol)
	e.deliverC2D(s.id) // messages it held go to a newer connection
}

// amqpSubscribed reports whether an AMQP device holds the subscription
// matching an MQTT topic of WaitSubscribed.
func amqpSubscribed(s *amqpSession, id, topic string) bool {
	switch {
	case strings.HasPrefix(topic, TopicMethods):
		return s.dc.Subscribed(amqphub.FeatureMethods)
	case strings.HasPrefix(topic, TopicDesired):
		return s.dc.Subscribed(amqphub.FeatureDesired)
	case strings.HasPrefix(topic, TopicTwinResponses):
		return s.dc.Subscribed(amqphub.FeatureTwin)
	case strings.HasPrefix(topic, wire.C2DFilterPrefix(id)):
		return s.dc.Subscribed(amqphub.FeatureC2D)
	}
	return false
}

// invokeAMQP runs a direct method on an AMQP device.
func (e *Emulator) invokeAMQP(ctx context.Context, s *amqpSession, method string, body []byte, timeout time.Duration) (CommandResult, error) {
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	status, resp, err := s.dc.InvokeMethod(tctx, method, body)
	switch {
	case err == nil:
		return commandResult(status, resp), nil
	case ctx.Err() != nil:
		return CommandResult{}, ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		e.log.Warn("direct method timed out", "device_id", s.id, "method", method, "timeout", timeout)
		return CommandResult{}, fmt.Errorf("%w: device %q, method %s, after %s", ErrTimeout, s.id, method, timeout)
	default:
		return CommandResult{}, fmt.Errorf("%w: device %q (method %s): %v", ErrDeviceOffline, s.id, method, err)
	}
}
