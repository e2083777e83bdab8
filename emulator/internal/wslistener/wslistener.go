// Package wslistener is the emulator's WebSocket endpoint: an http.Handler
// for IoT Hub's and DPS's path /$iothub/websocket that upgrades requests
// offering the subprotocol "mqtt" (any case, as the Azure IoT C SDK sends
// "MQTT") or "AMQPWSB10" and hands the upgraded byte stream, as a
// net.Conn, to the emulator's MQTT broker or AMQP server. Any other path
// goes to a fallback handler (the REST API) or gets 404.
//
// The package does not import the emulator: the emulator builds a Handler
// with its callbacks and serves it from its own TLS http.Server, whose
// read, write and idle timeouts bound the request before the upgrade
// (net/http clears the connection's deadlines when it is hijacked).
//
// nhooyr.io/websocket is imported by this file only, so moving to its
// successor github.com/coder/websocket is a one-line change.
package wslistener

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"nhooyr.io/websocket"

	"github.com/iotc-go/iotc/emulator/internal/netlimit"
)

// Path is the request path of MQTT and AMQP over WebSockets on IoT Hub and
// DPS.
const Path = "/$iothub/websocket"

// ServiceBusPath is the request path of AMQP over WebSockets of Event
// Hubs clients (azeventhubs, @azure/event-hubs); it is served as Path.
const ServiceBusPath = "/$servicebus/websocket"

// Subprotocols accepted on Path (matched case-insensitively; the response
// echoes the spelling the client offered).
const (
	// ProtocolMQTT carries MQTT 3.1.1 in binary messages.
	ProtocolMQTT = "mqtt"
	// ProtocolAMQP carries AMQP 1.0 in binary messages.
	ProtocolAMQP = "AMQPWSB10"
)

// ConnFunc serves one upgraded connection and returns when it has ended.
// conn is a *Conn; peerCerts is the TLS client certificate chain the
// client presented (nil when none, or when the server is not TLS). conn is
// closed after ConnFunc returns if it has not been already.
type ConnFunc func(conn net.Conn, peerCerts []*x509.Certificate)

// Handlers are the callbacks of a Handler. A nil MQTT or AMQP callback
// makes that subprotocol unsupported (the upgrade is refused with 400).
type Handlers struct {
	// MQTT serves connections that negotiated ProtocolMQTT.
	MQTT ConnFunc
	// AMQP serves connections that negotiated ProtocolAMQP.
	AMQP ConnFunc
	// Fallback serves every request whose path is not Path (the REST API);
	// nil answers 404.
	Fallback http.Handler
	// Logger receives one line per refused upgrade; nil discards. Request
	// headers (which may carry credentials) are never logged.
	Logger *slog.Logger
	// Reporter counts refused upgrades and summarises them in the log
	// (the one-by-one lines go to its logger at Info); nil logs them to
	// Logger at Info, uncounted.
	Reporter *netlimit.Reporter
}

// Handler is the http.Handler of the WebSocket endpoint. ServeHTTP blocks
// for as long as an upgraded connection lives. It is safe for concurrent
// use. Create it with New; stop it with Close.
type Handler struct {
	h   Handlers
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	conns  map[*Conn]struct{}
	wg     sync.WaitGroup
}

// New returns a Handler serving h.
func New(h Handlers) *Handler {
	log := h.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{h: h, log: log, conns: map[*Conn]struct{}{}}
}

// ServeHTTP implements http.Handler. On Path it answers 426 to a request
// that is not a WebSocket upgrade, 400 when the client offers no supported
// subprotocol, 503 once Close has been called; otherwise it upgrades and
// runs the protocol's callback until the connection ends.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path && r.URL.Path != ServiceBusPath {
		if h.h.Fallback != nil {
			h.h.Fallback.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
		return
	}
	if !isUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "this endpoint only accepts WebSocket upgrades", http.StatusUpgradeRequired)
		return
	}
	offered := headerTokens(r.Header, "Sec-WebSocket-Protocol")
	proto, serve := h.choose(offered)
	if serve == nil {
		h.refused("websocket upgrade refused: no supported subprotocol", "remote", r.RemoteAddr, "offered", netlimit.Quote(strings.Join(offered, ",")))
		http.Error(w, "unsupported WebSocket subprotocol: offer mqtt or AMQPWSB10", http.StatusBadRequest)
		return
	}
	if !h.enter() {
		http.Error(w, "the emulator is shutting down", http.StatusServiceUnavailable)
		return
	}
	handed := false // to the connection's goroutine, which calls h.wg.Done
	defer func() {
		if !handed {
			h.wg.Done()
		}
	}()

	ws, err := websocket.Accept(smallBuffers{w}, r, &websocket.AcceptOptions{
		Subprotocols: []string{proto},
		// Devices are not browsers and authenticate in the protocol
		// itself (SAS token or client certificate), not with cookies.
		InsecureSkipVerify: true,
	})
	if err != nil { // Accept has written the HTTP error
		h.refused("websocket upgrade failed", "remote", r.RemoteAddr, "error", err)
		return
	}
	// The connection outlives this request (see below), and the request's
	// context ends when ServeHTTP returns.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	c := &Conn{
		Conn:        websocket.NetConn(ctx, ws, websocket.MessageBinary),
		ws:          ws,
		cancel:      cancel,
		subprotocol: ws.Subprotocol(),
		remote:      parseAddr(r.RemoteAddr),
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		c.local = a
	}
	if r.TLS != nil {
		st := *r.TLS
		c.tls = &st
	}
	if !h.track(c) {
		cancel()
		_ = ws.CloseNow()
		return
	}
	var certs []*x509.Certificate
	if c.tls != nil && len(c.tls.PeerCertificates) > 0 {
		certs = c.tls.PeerCertificates
	}
	// The callback runs on a goroutine of its own and ServeHTTP returns,
	// so that net/http's goroutine for the connection ends and lets go of
	// what it holds for HTTP (its 4 KiB reader and writers).
	handed = true
	go func() {
		defer h.wg.Done()
		defer h.untrack(c)
		defer cancel()
		serve(c, certs)
		_ = c.Close()
	}()
}

// refused counts and logs a refused upgrade.
func (h *Handler) refused(msg string, attrs ...any) {
	if h.h.Reporter != nil {
		h.h.Reporter.Refused(netlimit.KindWebSocketUpgrade, msg, attrs...)
		return
	}
	h.log.Info(msg, attrs...)
}

// Buffer sizes of an upgraded connection, instead of net/http's 4 KiB
// reader and 4 KiB writer that it hands over on Hijack and that would stay
// for the connection's life. MQTT and AMQP packets of devices are a few
// hundred bytes; longer reads and writes bypass the buffers.
const (
	wsReadBuffer  = 512
	wsWriteBuffer = 1024
)

// smallBuffers is the ResponseWriter given to websocket.Accept: its
// Hijack swaps net/http's buffers for small ones (keeping the read buffer
// when it already holds bytes of the client, which must not be lost).
type smallBuffers struct{ http.ResponseWriter }

// Hijack implements http.Hijacker.
func (w smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("wslistener: the http.ResponseWriter cannot be hijacked")
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	r := brw.Reader
	if r.Buffered() == 0 {
		r = bufio.NewReaderSize(c, wsReadBuffer)
	}
	// net/http flushed the 101 response before Hijack; its writer is empty.
	return c, bufio.NewReadWriter(r, bufio.NewWriterSize(c, wsWriteBuffer)), nil
}

// choose picks the first offered subprotocol this handler serves.
func (h *Handler) choose(offered []string) (string, ConnFunc) {
	for _, p := range offered {
		switch {
		case strings.EqualFold(p, ProtocolMQTT) && h.h.MQTT != nil:
			return ProtocolMQTT, h.h.MQTT
		case strings.EqualFold(p, ProtocolAMQP) && h.h.AMQP != nil:
			return ProtocolAMQP, h.h.AMQP
		}
	}
	return "", nil
}

func (h *Handler) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	return true
}

func (h *Handler) track(c *Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.conns[c] = struct{}{}
	return true
}

func (h *Handler) untrack(c *Conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
}

// Close refuses new upgrades (503), closes every upgraded connection
// without a closing handshake, and waits until every callback has
// returned. The callbacks must return once their connection is closed.
// Close does not stop the http.Server; call it after the server stopped
// accepting (or before, to refuse late upgrades). It always returns nil;
// later calls only wait.
func (h *Handler) Close() error {
	h.mu.Lock()
	h.closed = true
	conns := h.conns
	h.conns = map[*Conn]struct{}{}
	h.mu.Unlock()
	for c := range conns {
		c.abort()
	}
	h.wg.Wait()
	return nil
}

// Conn is one upgraded WebSocket connection seen as a byte stream: each
// Write is one binary message and Read returns the bytes of consecutive
// binary messages (a packet may span messages). A text message closes the
// connection. Hitting a read or write deadline while that operation is in
// progress closes the whole connection (unlike TCP). There is no message
// size limit. Close sends the WebSocket close frame 1000.
type Conn struct {
	net.Conn
	ws          *websocket.Conn
	cancel      context.CancelFunc
	subprotocol string
	tls         *tls.ConnectionState
	remote      net.Addr
	local       net.Addr
}

// Subprotocol is the negotiated subprotocol, as the client spelt it.
func (c *Conn) Subprotocol() string { return c.subprotocol }

// ConnectionState returns the TLS state of the underlying connection (the
// zero value when it is not TLS), so code that reads client certificates
// from a *tls.Conn through this interface works unchanged.
func (c *Conn) ConnectionState() tls.ConnectionState {
	if c.tls == nil {
		return tls.ConnectionState{}
	}
	return *c.tls
}

// RemoteAddr is the client's TCP address.
func (c *Conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// LocalAddr is the server's TCP address.
func (c *Conn) LocalAddr() net.Addr {
	if c.local != nil {
		return c.local
	}
	return c.Conn.LocalAddr()
}

// Close closes the connection with the close status 1000 (normal closure).
// It waits at most a few seconds for the client's close frame. Errors
// about an already closed connection are not reported.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.cancel()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// abort closes the connection at once, without a closing handshake.
func (c *Conn) abort() {
	c.cancel()
	_ = c.ws.CloseNow()
}

// isUpgrade reports whether r asks for a WebSocket upgrade.
func isUpgrade(r *http.Request) bool {
	up := false
	for _, t := range headerTokens(r.Header, "Connection") {
		if strings.EqualFold(t, "upgrade") {
			up = true
		}
	}
	if !up {
		return false
	}
	for _, t := range headerTokens(r.Header, "Upgrade") {
		if strings.EqualFold(t, "websocket") {
			return true
		}
	}
	return false
}

// headerTokens returns the comma-separated tokens of every value of key.
func headerTokens(h http.Header, key string) []string {
	var out []string
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// parseAddr turns "ip:port" into a *net.TCPAddr (nil when it cannot).
func parseAddr(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}
