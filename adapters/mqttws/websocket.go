package mqttws

// This is the only file of the package that imports the WebSocket library,
// so that moving from nhooyr.io/websocket to its successor
// github.com/coder/websocket is a one-line change.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"nhooyr.io/websocket"

	"github.com/iotc-go/iotc/domain"
)

// dialWebSocket opens a WebSocket to rawURL (wss) offering Subprotocol,
// through proxy when it names one, with TLS configured by tc, and returns
// it as a byte stream. ctx bounds the dial only: the connection lives
// until it is closed.
func dialWebSocket(ctx context.Context, rawURL string, tc *tls.Config,
	proxy func(*http.Request) (*url.URL, error),
	dial func(ctx context.Context, network, address string) (net.Conn, error),
) (net.Conn, error) {
	tr := &http.Transport{
		Proxy:               proxy,
		DialContext:         dial,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 0, // ctx bounds the whole dial
		DisableCompression:  true,
		MaxIdleConns:        1,
		// A proxy answering CONNECT with anything but 200 becomes an error
		// saying so; 407 is a configuration error, not worth retrying.
		OnProxyConnectResponse: func(_ context.Context, p *url.URL, _ *http.Request, resp *http.Response) error {
			switch {
			case resp.StatusCode == http.StatusProxyAuthRequired && p.User != nil:
				return fmt.Errorf("%w: mqttws: proxy %s refused the credentials of the proxy URL (407)", domain.ErrInvalidConfig, p.Host)
			case resp.StatusCode == http.StatusProxyAuthRequired:
				return fmt.Errorf("%w: mqttws: proxy %s requires authentication (407): put user:password in the proxy URL", domain.ErrInvalidConfig, p.Host)
			case resp.StatusCode != http.StatusOK:
				return fmt.Errorf("mqttws: proxy %s refused the tunnel: %s", p.Host, resp.Status)
			}
			return nil
		},
	}
	// The upgraded connection leaves the pool; nothing idle remains.
	defer tr.CloseIdleConnections()
	ws, resp, err := websocket.Dial(ctx, rawURL, &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: tr},
		Subprotocols: []string{Subprotocol},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("mqttws: websocket upgrade refused by the server: %s", resp.Status)
		}
		return nil, err
	}
	if !strings.EqualFold(ws.Subprotocol(), Subprotocol) {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("mqttws: server negotiated subprotocol %q, want %q", ws.Subprotocol(), Subprotocol)
	}
	// NetConn's ctx bounds the connection's whole life, so it must not be
	// the dial ctx: the connection gets its own, cancelled by Close.
	life, cancel := context.WithCancel(context.Background())
	return &wsConn{Conn: websocket.NetConn(life, ws, websocket.MessageBinary), ws: ws, cancel: cancel}, nil
}

// wsConn is a WebSocket seen as a net.Conn. Note: hitting a deadline
// while a read or write is in progress closes the whole connection
// (paho only sets deadlines around CONNECT/CONNACK, where that is what
// is wanted). There is no read limit.
type wsConn struct {
	net.Conn
	ws     *websocket.Conn
	cancel context.CancelFunc
}

// Close sends the close frame 1000 and releases the connection. While
// paho's reader is blocked in Read (always, on a live session) the
// library closes the socket without waiting for the server's close frame;
// otherwise it waits for it at most a few seconds.
func (c *wsConn) Close() error {
	err := c.Conn.Close()
	c.cancel()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
