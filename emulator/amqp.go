package emulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/iotc-go/iotc/emulator/internal/amqphub"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
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
	hub, err := amqphub.NewServer(e.core, amqphub.Options{
		HubHost:          e.cfg.hubHost,
		MaxTelemetryBody: MaxTelemetryBody,
		// The engine accepts messages up to 1 MiB so that telemetry over
		// MaxTelemetryBody is rejected with amqp:resource-limit-exceeded,
		// as IoT Hub does, rather than ending the link.
		Engine:    e.cfg.limits.amqpEngine(),
		Logger:    e.log.With("component", "amqp"),
		Reporter:  e.reporter,
		EventHubs: e.eventHubsConn,
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
