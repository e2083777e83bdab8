package emulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/amqphub"
	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
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
		Engine:   e.cfg.limits.amqpEngine(),
		Logger:   e.log.With("component", "amqp"),
		Reporter: e.reporter,
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
	e.amqpLn = netlimit.NewListener(ln, e.cfg.limits.AMQPMaxConns, e.connCapHit("amqp"))
	tln := tls.NewListener(e.amqpLn, e.serverTLS())
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

// amqpBackend is the emulator's core seen by the AMQP application layer.
type amqpBackend struct{ e *Emulator }

// amqpErr maps the core's sentinels onto amqphub's; the text (which a
// device sees) names the reason once.
func amqpErr(err error) error {
	target, sentinel := amqphub.ErrUnauthorized, core.ErrUnauthorized
	if errors.Is(err, core.ErrNotFound) {
		target, sentinel = amqphub.ErrNotFound, core.ErrNotFound
	}
	return fmt.Errorf("%w: %s", target, strings.TrimPrefix(err.Error(), sentinel.Error()+": "))
}

// AuthenticateDevice implements amqphub.Backend.
func (b amqpBackend) AuthenticateDevice(_ context.Context, deviceID, sasToken string) (time.Time, error) {
	e := b.e
	if _, err := e.core.Device(deviceID); err != nil {
		return time.Time{}, amqpErr(err)
	}
	a, err := e.core.AuthenticateHub(deviceID, sasToken, nil)
	if err != nil {
		e.log.Info("AMQP authentication refused", "device_id", netlimit.Quote(deviceID), "reason", netlimit.Reason(err))
		return time.Time{}, amqpErr(err)
	}
	return a.Expiry, nil
}

// AuthenticateDeviceX509 implements amqphub.Backend.
func (b amqpBackend) AuthenticateDeviceX509(_ context.Context, deviceID string, certs []*x509.Certificate) error {
	if _, err := b.e.core.Device(deviceID); err != nil {
		return amqpErr(err)
	}
	if len(certs) == 0 {
		return fmt.Errorf("%w: no client certificate", amqphub.ErrUnauthorized)
	}
	if _, err := b.e.core.AuthenticateHub(deviceID, "", certs); err != nil {
		b.e.log.Info("AMQP authentication refused", "device_id", netlimit.Quote(deviceID), "reason", netlimit.Reason(err))
		return amqpErr(err)
	}
	return nil
}

// ConnectDevice implements amqphub.Backend: the AMQP session becomes the
// device's one connection; an MQTT or older AMQP connection is dropped.
func (b amqpBackend) ConnectDevice(_ context.Context, deviceID string, dc amqphub.DeviceConn) (amqphub.DeviceSession, error) {
	e := b.e
	if err := e.core.AdmitConnection(deviceID); err != nil {
		e.log.Info("AMQP connection refused", "device_id", deviceID, "reason", err.Error())
		return nil, admitAMQP(err)
	}
	modelID := ""
	if m, ok := dc.(interface{ ModelID() string }); ok {
		modelID = m.ModelID()
	}
	s := &amqpSession{e: e, id: deviceID, dc: dc}
	prev, err := e.core.Attach(deviceID, s, modelID)
	if err != nil {
		return nil, amqpErr(err)
	}
	if prev != nil {
		if _, ok := prev.(*amqpSession); ok {
			prev.Drop(errors.New("the device connected again"))
		} else {
			prev.Drop(errReplacedByAMQP)
		}
	}
	e.log.Info("connection accepted", "role", wire.RoleHub.String(), "device_id", deviceID, "protocol", dc.Protocol())
	return s, nil
}

var errReplacedByAMQP = errors.New("emulator: the device connected again over AMQP")

// AuthenticateDPS implements amqphub.Backend.
func (b amqpBackend) AuthenticateDPS(_ context.Context, cred amqphub.DPSCredentials) (amqphub.DPSSession, error) {
	e := b.e
	a, err := e.core.AuthenticateDPS(cred.IDScope, cred.RegistrationID, cred.SASToken, cred.Certificates)
	if err != nil {
		e.log.Info("AMQP DPS authentication refused", "registration_id", netlimit.Quote(cred.RegistrationID), "reason", netlimit.Reason(err))
		return nil, amqpErr(err)
	}
	return amqpDPS{e: e, a: a}, nil
}

// amqpDPS registers one authenticated registration id.
type amqpDPS struct {
	e *Emulator
	a core.DPSAuth
}

// Register implements amqphub.DPSSession.
func (s amqpDPS) Register(_ context.Context, body []byte, _ bool) amqphub.DPSResponse {
	return amqphub.DPSResponse(s.e.core.Register(s.a, body))
}

// OperationStatus implements amqphub.DPSSession.
func (s amqpDPS) OperationStatus(_ context.Context, operationID string) amqphub.DPSResponse {
	return amqphub.DPSResponse(s.e.core.PollOperation(s.a, operationID))
}

// amqpSession is a device's hub session over AMQP; it is the device's
// core.Link while it is the device's connection.
type amqpSession struct {
	e  *Emulator
	id string
	dc amqphub.DeviceConn
}

var _ core.Link = (*amqpSession)(nil)

// Protocol implements core.Link.
func (s *amqpSession) Protocol() string { return amqphub.Protocol }

// Subscribed implements core.Link.
func (s *amqpSession) Subscribed(f core.Feature) bool {
	switch f {
	case core.FeatureMethods:
		return s.dc.Subscribed(amqphub.FeatureMethods)
	case core.FeatureDesired:
		return s.dc.Subscribed(amqphub.FeatureDesired)
	case core.FeatureTwin:
		return s.dc.Subscribed(amqphub.FeatureTwin)
	case core.FeatureC2D:
		return s.dc.Subscribed(amqphub.FeatureC2D)
	}
	return false
}

// PushDesired implements core.Link.
func (s *amqpSession) PushDesired(body []byte, _ int64) error {
	if err := s.dc.PushDesired(body); err != nil && !errors.Is(err, amqphub.ErrNotSubscribed) {
		return err
	}
	return nil
}

// InvokeMethod implements core.Link.
func (s *amqpSession) InvokeMethod(ctx context.Context, method string, payload []byte) (int, []byte, error) {
	return s.dc.InvokeMethod(ctx, method, payload)
}

// NotifyC2D implements core.Link.
func (s *amqpSession) NotifyC2D() { s.dc.NotifyC2D() }

// Drop implements core.Link.
func (s *amqpSession) Drop(reason error) { s.dc.Close(reason) }

// Telemetry implements amqphub.DeviceSession.
func (s *amqpSession) Telemetry(ctx context.Context, t amqphub.Telemetry) error {
	if err := s.e.core.Admit(ctx, s.id, core.OpTelemetry); err != nil {
		return admitAMQP(err)
	}
	if len(t.Body) > MaxTelemetryBody {
		return fmt.Errorf("%w: telemetry body of %d bytes exceeds %d", amqphub.ErrTooLarge, len(t.Body), MaxTelemetryBody)
	}
	s.e.core.StoreTelemetry(Telemetry{
		// The body may share the connection's frame buffer: the store keeps its own copy.
		DeviceID: s.id, Component: t.Component, Body: slices.Clone(t.Body), Properties: t.Properties, System: t.System, Received: time.Now().UTC(),
	})
	return nil
}

// Twin implements amqphub.DeviceSession.
func (s *amqpSession) Twin(ctx context.Context) (int, []byte) {
	if err := s.e.core.Admit(ctx, s.id, core.OpTwin); err != nil {
		return twinRefusal(err)
	}
	return s.e.core.TwinDocument(s.id)
}

// PatchReported implements amqphub.DeviceSession.
func (s *amqpSession) PatchReported(ctx context.Context, patch []byte) (int, int64, []byte) {
	if err := s.e.core.Admit(ctx, s.id, core.OpTwin); err != nil {
		status, body := twinRefusal(err)
		return status, 0, body
	}
	return s.e.core.PatchReported(s.id, patch)
}

// NextC2D implements amqphub.DeviceSession: the oldest queued message not
// in flight.
func (s *amqpSession) NextC2D(context.Context) (amqphub.C2DMessage, bool) {
	m, ok := s.e.core.NextC2D(s.id, s)
	if !ok {
		return amqphub.C2DMessage{}, false
	}
	return amqphub.C2DMessage{LockToken: m.MessageID, MessageID: m.MessageID, Body: m.Body, Properties: m.Properties}, true
}

// SettleC2D implements amqphub.DeviceSession.
func (s *amqpSession) SettleC2D(_ context.Context, lockToken string, outcome amqphub.C2DOutcome) error {
	o := core.Complete
	switch outcome {
	case amqphub.C2DAbandon:
		o = core.Abandon
	case amqphub.C2DReject:
		o = core.Reject
	}
	s.e.core.SettleC2D(s.id, s, lockToken, o)
	return nil
}

// SubscriptionsChanged implements amqphub.DeviceSession.
func (s *amqpSession) SubscriptionsChanged() { s.e.core.SubscriptionsChanged(s.id) }

// Close implements amqphub.DeviceSession: messages it held go to a newer
// connection.
func (s *amqpSession) Close() {
	s.e.core.Detach(s.id, s)
	s.e.log.Info("connection closed", "role", wire.RoleHub.String(), "device_id", s.id, "protocol", amqphub.Protocol)
}
