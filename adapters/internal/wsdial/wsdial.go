// Package wsdial opens the secure WebSocket connections of the WebSocket
// transports (adapters/mqttws with subprotocol "mqtt", adapters/amqp with
// "AMQPWSB10") on wss://{host}/$iothub/websocket, directly or through an
// HTTP CONNECT proxy, and hands them over as byte streams (net.Conn).
//
// This is the only package of the SDK that imports the WebSocket library,
// so that moving from nhooyr.io/websocket to its successor
// github.com/coder/websocket is a one-line change.
package wsdial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"nhooyr.io/websocket"

	"github.com/iotc-go/iotc/domain"
)

// Path is the request path of MQTT and AMQP over WebSockets on IoT Hub
// and DPS.
const Path = "/$iothub/websocket"

// DefaultPort is the HTTPS port IoT Hub and DPS serve WebSockets on.
const DefaultPort = 443

// DialFunc opens a TCP connection (to the proxy or to the server).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// ProxyFunc says which proxy, if any, a request goes through (the shape of
// http.Transport.Proxy).
type ProxyFunc func(*http.Request) (*url.URL, error)

// Proxy turns the proxy options of a WebSocket transport into a
// ProxyFunc and a description that is safe to log (the password is
// redacted). p names a fixed http://[user:password@]host:port proxy;
// none connects directly; with neither, the environment decides
// (HTTPS_PROXY, https_proxy, NO_PROXY, as net/http reads them once per
// process; loopback addresses are never proxied). who prefixes error
// texts ("mqttws", "amqpws"). Errors wrap domain.ErrInvalidConfig: p and
// none together, a proxy URL that is not http://host:port.
func Proxy(who string, p *url.URL, none bool) (ProxyFunc, string, error) {
	switch {
	case p != nil && none:
		return nil, "", fmt.Errorf("%w: %s: Proxy and NoProxy are both set", domain.ErrInvalidConfig, who)
	case none:
		return nil, "none", nil
	case p == nil:
		return func(r *http.Request) (*url.URL, error) {
			u, err := http.ProxyFromEnvironment(r)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: proxy from the environment: %w", domain.ErrInvalidConfig, who, err)
			}
			if err := checkProxy(who, u); err != nil {
				return nil, fmt.Errorf("proxy from the environment: %w", err)
			}
			return u, nil
		}, "environment", nil
	}
	if err := checkProxy(who, p); err != nil {
		return nil, "", err
	}
	fixed := *p
	if p.User != nil {
		user := *p.User
		fixed.User = &user
	}
	return func(*http.Request) (*url.URL, error) { return &fixed, nil }, fixed.Redacted(), nil
}

// checkProxy accepts nil and http://host:port URLs.
func checkProxy(who string, u *url.URL) error {
	if u == nil {
		return nil
	}
	if u.Scheme != "http" || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%w: %s: proxy %q: want http://[user:password@]host:port", domain.ErrInvalidConfig, who, u.Redacted())
	}
	return nil
}

// Options are one WebSocket dial.
type Options struct {
	// Who prefixes error texts ("mqttws", "amqpws").
	Who string
	// URL is the wss:// URL to open.
	URL string
	// Subprotocol is offered to the server and must be the one it picks
	// (compared ignoring case).
	Subprotocol string
	// TLS configures TLS with the server (end to end through a proxy).
	TLS *tls.Config
	// Proxy picks the proxy; nil connects directly.
	Proxy ProxyFunc
	// Dial opens TCP connections; nil means a net.Dialer.
	Dial DialFunc
}

// Dial opens a WebSocket as o says and returns it as a byte stream (each
// Write is one binary message). ctx bounds the dial only: the connection
// lives until it is closed. Errors: domain.ErrInvalidConfig (wrapped) for
// a proxy that refuses or requires credentials (407, or 401 from proxies
// that answer so) or forbids the tunnel (403); domain.ErrUnauthorized
// (wrapped) when the server refuses the upgrade with 401 or 403; ctx's error when
// ctx ended; otherwise a retryable error whose text names no network
// address (proxy unreachable, upgrade refused, TLS failure).
func Dial(ctx context.Context, o Options) (net.Conn, error) {
	dial := o.Dial
	if dial == nil {
		d := &net.Dialer{}
		dial = d.DialContext
	}
	tr := &http.Transport{
		Proxy:               o.Proxy,
		DialContext:         dial,
		TLSClientConfig:     o.TLS,
		TLSHandshakeTimeout: 0, // ctx bounds the whole dial
		DisableCompression:  true,
		MaxIdleConns:        1,
		// A proxy answering CONNECT with anything but 200 becomes an error
		// saying so; 407 is a configuration error, not worth retrying.
		OnProxyConnectResponse: func(_ context.Context, p *url.URL, _ *http.Request, resp *http.Response) error {
			switch {
			case resp.StatusCode == http.StatusProxyAuthRequired && p.User != nil:
				return &proxyError{fmt.Errorf("%w: %s: the proxy refused the credentials of the proxy URL (407)", domain.ErrInvalidConfig, o.Who)}
			case resp.StatusCode == http.StatusProxyAuthRequired:
				return &proxyError{fmt.Errorf("%w: %s: the proxy requires authentication (407): put user:password in the proxy URL", domain.ErrInvalidConfig, o.Who)}
			case resp.StatusCode == http.StatusUnauthorized:
				// Some proxies answer 401 instead of 407: the same mistake,
				// which no retry can mend.
				return &proxyError{fmt.Errorf("%w: %s: the proxy requires authentication (%s): check user:password in the proxy URL", domain.ErrInvalidConfig, o.Who, resp.Status)}
			case resp.StatusCode == http.StatusForbidden:
				return &proxyError{fmt.Errorf("%w: %s: the proxy forbids the tunnel (%s): ask its administrator to allow CONNECT to port 443", domain.ErrInvalidConfig, o.Who, resp.Status)}
			case resp.StatusCode != http.StatusOK:
				return &proxyError{fmt.Errorf("%s: the proxy refused the tunnel: %s", o.Who, resp.Status)}
			}
			return nil
		},
	}
	// The upgraded connection leaves the pool; nothing idle remains.
	defer tr.CloseIdleConnections()
	ws, resp, err := websocket.Dial(ctx, o.URL, &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: tr},
		Subprotocols: []string{o.Subprotocol},
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: websocket dial: %w", o.Who, ctx.Err())
		}
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			return nil, fmt.Errorf("%w: %s: websocket upgrade refused by the server: %s", domain.ErrUnauthorized, o.Who, resp.Status)
		}
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("%s: websocket upgrade refused by the server: %s", o.Who, resp.Status)
		}
		return nil, fmt.Errorf("%s: websocket dial: %w", o.Who, Sanitize(err))
	}
	if !strings.EqualFold(ws.Subprotocol(), o.Subprotocol) {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("%s: server negotiated subprotocol %q, want %q", o.Who, ws.Subprotocol(), o.Subprotocol)
	}
	// NetConn's ctx bounds the connection's whole life, so it must not be
	// the dial ctx: the connection gets its own, cancelled by Close.
	life, cancel := context.WithCancel(context.Background())
	return &conn{Conn: websocket.NetConn(life, ws, websocket.MessageBinary), cancel: cancel}, nil
}

// proxyError is an answer of the proxy, already worded for the user.
type proxyError struct{ err error }

func (e *proxyError) Error() string { return e.err.Error() }
func (e *proxyError) Unwrap() error { return e.err }

// Sanitize returns err reworded so that its text names no network address
// (IP, host:port, URL), keeping what matters: a proxy's answer, a TLS
// verification failure, the system call that failed ("connection
// refused"), a DNS failure. A failure domain.DiagnoseNetwork classifies
// comes back as it words it (its class matches errors.Is); otherwise only
// the domain sentinels and context errors err wraps stay matchable with
// errors.Is; nil stays nil.
func Sanitize(err error) error {
	if err == nil {
		return nil
	}
	var pe *proxyError
	if errors.As(err, &pe) {
		return pe.err
	}
	// A failure DiagnoseNetwork classifies is worded by it, naming what to
	// check and no address.
	if d := domain.DiagnoseNetwork(err); d != err {
		return d
	}
	var keep error
	for _, s := range []error{context.Canceled, context.DeadlineExceeded, domain.ErrInvalidConfig, domain.ErrUnauthorized, domain.ErrTimeout} {
		if errors.Is(err, s) {
			keep = s
			break
		}
	}
	text := describe(err)
	if keep != nil {
		return fmt.Errorf("%w: %s", keep, text)
	}
	return errors.New(text)
}

// describe is the text of err without addresses.
func describe(err error) string {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		if dns.IsNotFound {
			return "host name not found"
		}
		if dns.IsTimeout {
			return "host name lookup timed out"
		}
		return "host name lookup failed"
	}
	var op *net.OpError
	if errors.As(err, &op) {
		inner := "failed"
		if op.Err != nil {
			inner = describe(op.Err)
		}
		return op.Op + ": " + inner
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return describe(ue.Err)
	}
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return "tls: server certificate not trusted: " + cv.Err.Error()
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return "tls: the server does not speak TLS"
	}
	if errors.Is(err, net.ErrClosed) {
		return "use of closed network connection"
	}
	return Scrub(err.Error())
}

// addressPatterns match what Scrub removes: URLs, IPv4 and bracketed IPv6
// literals with an optional port, host:port.
var addressPatterns = []*regexp.Regexp{
	regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"']+`),
	regexp.MustCompile(`\[[0-9a-fA-F:.%]+\](:\d+)?`),
	regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b`),
	regexp.MustCompile(`\b[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*:\d{1,5}\b`),
}

// Scrub replaces the network addresses in a library's error text by
// "<address>".
func Scrub(s string) string {
	for _, re := range addressPatterns {
		s = re.ReplaceAllString(s, "<address>")
	}
	return s
}

// conn is a WebSocket seen as a net.Conn. Hitting a deadline while a read
// or write is in progress closes the whole connection; there is no read
// limit.
type conn struct {
	net.Conn
	cancel context.CancelFunc
}

// Close sends the close frame 1000 and releases the connection. While a
// reader is blocked in Read the library closes the socket without waiting
// for the server's close frame; otherwise it waits for it at most a few
// seconds.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.cancel()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
