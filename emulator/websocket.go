package emulator

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/iotc-go/iotc/emulator/internal/dpsapi"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
	"github.com/iotc-go/iotc/emulator/internal/wslistener"
)

// wsServer is the TLS WebSocket listener at /$iothub/websocket.
type wsServer struct {
	ln      net.Listener
	srv     *http.Server
	handler *wslistener.Handler
}

// startWebSocket serves MQTT over WebSockets (subprotocol "mqtt", any
// case) on the WebSocket address, for DPS and the hub alike, and IoT Hub's
// service REST API on every other path (see internal/hubapi): each
// upgraded connection goes to the same mochi broker as the MQTT/TLS
// listener, with its TLS client certificates visible to the CONNECT hook.
func (e *Emulator) startWebSocket() error {
	if e.cfg.wsAddr == "-" {
		return nil
	}
	ln, err := net.Listen("tcp", e.cfg.wsAddr)
	if err != nil {
		return fmt.Errorf("emulator: WebSocket listener: %w", err)
	}
	log := e.log.With("component", "websocket")
	h := wslistener.New(wslistener.Handlers{
		MQTT: e.mqtt.ServeConn,
		AMQP: e.serveAMQPWebSocket,
		// Every other path of the hub host: IoT Hub's device HTTPS API,
		// DPS's HTTPS paths (the provisioning host is the hub host), else
		// IoT Hub's service API (see hubHTTPS).
		Fallback: e.hubHTTPS(),
		Logger:   log,
		Reporter: e.reporter,
	})
	// The server's timeouts bound the request before the upgrade; the
	// upgraded connection drops them (see httpServer).
	ws := &wsServer{ln: ln, handler: h, srv: e.httpServer(h, log)}
	e.ws = ws
	e.wsLn = netlimit.NewListener(ln, e.cfg.limits.WebSocketMaxConns, e.connCapHit("websocket"))
	tln := tls.NewListener(e.wsLn, e.serverTLS())
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := ws.srv.Serve(tln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("WebSocket server stopped", "error", err)
		}
	}()
	return nil
}

// closeWebSocket stops accepting, then ends every WebSocket connection
// and waits for their handlers. It must run before mochi's Close, which
// waits for every client it serves.
func (e *Emulator) closeWebSocket() error {
	if e.ws == nil {
		return nil
	}
	err := e.ws.srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, e.ws.handler.Close())
}

// WebSocketAddr is the bound host:port of the WebSocket/TLS listener
// (path /$iothub/websocket), or "" when it is disabled.
func (e *Emulator) WebSocketAddr() string {
	if e.ws == nil {
		return ""
	}
	return e.ws.ln.Addr().String()
}

// hostRoutes sends the DPS paths (dpsapi.Handles) to dps, the rest to hub.
func hostRoutes(dps, hub http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if dpsapi.Handles(r.URL.Path) {
			dps.ServeHTTP(w, r)
			return
		}
		hub.ServeHTTP(w, r)
	})
}
