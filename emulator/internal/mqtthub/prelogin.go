package mqtthub

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/iotc-go/iotc/emulator/internal/netlimit"
)

// errPreLoginBudget ends a connection whose CONNECT does not fit in what
// connections that have not logged in may make the broker buffer.
var errPreLoginBudget = errors.New("emulator: too many bytes buffered by connections that have not logged in")

// preLogin meters the first packet of a connection (its CONNECT, which
// mochi reads whole into a slice of the announced length) against the
// server's pre-login budget: the announced length is reserved as soon as
// the fixed header has gone by, and given back once the CONNECT has been
// handled (done) or the connection closes.
type preLogin struct {
	s *Server

	mu     sync.Mutex
	state  int         // 0: reading the fixed header; 1: reserved; 2: done
	passed atomic.Bool // state != 0: every later Read skips the lock
	hdr    [5]byte
	n      int   // bytes of hdr seen
	held   int64 // reserved bytes
}

func (s *Server) newPreLogin() *preLogin { return &preLogin{s: s} }

// seen follows the bytes a Read returned; it returns errPreLoginBudget
// when the CONNECT they announce does not fit.
func (p *preLogin) seen(b []byte) error {
	if p == nil || len(b) == 0 || p.passed.Load() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != 0 {
		return nil
	}
	for _, c := range b {
		p.hdr[p.n] = c
		p.n++
		if p.n == 1 || (c&0x80 != 0 && p.n < len(p.hdr)) {
			continue // type byte, or the remaining length goes on
		}
		var length, mul int64 = 0, 1
		for _, d := range p.hdr[1:p.n] {
			length += int64(d&0x7f) * mul
			mul *= 128
		}
		p.state = 1
		p.passed.Store(true)
		if !p.s.cfg.PreLogin.Reserve(length) {
			p.state = 2
			p.s.cfg.Reporter.LimitHit(netlimit.KindMQTTPreLoginBytes, "MQTT connection closed: pre-login buffer cap reached", "connect_bytes", length)
			return errPreLoginBudget
		}
		p.held = length
		return nil
	}
	return nil
}

// done gives the reservation back: the CONNECT has been handled or the
// connection is closing.
func (p *preLogin) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == 1 {
		p.s.cfg.PreLogin.Release(p.held)
		p.held = 0
	}
	p.state = 2
	p.passed.Store(true)
}

// meteredConn is a connection that arrived over a WebSocket, metered like
// the TLS listener's; ConnectionState reaches the client certificates.
type meteredConn struct {
	net.Conn
	pl   *preLogin
	once sync.Once
}

func (c *meteredConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if perr := c.pl.seen(b[:n]); perr != nil {
		_ = c.Close()
		return 0, perr
	}
	return n, err
}

func (c *meteredConn) loggedIn() { c.pl.done() }

func (c *meteredConn) Close() error {
	c.once.Do(c.pl.done)
	return c.Conn.Close()
}

// ConnectionState returns the TLS state of the underlying connection.
func (c *meteredConn) ConnectionState() tls.ConnectionState {
	if cs, ok := c.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return cs.ConnectionState()
	}
	return tls.ConnectionState{}
}
