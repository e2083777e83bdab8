package amqp1

// Abort drops the connection's socket at once, without a close frame, as
// a network failure would (fault injection). The connection then ends as
// on a read error. Aborting twice, or after the end, is a no-op.
func (c *Conn) Abort() { _ = c.nc.Close() }

// EndSession ends the session that carries l with err (nil for a clean
// end; a non-*Error becomes amqp:internal-error): the server sends end and
// every link of the session ends. It returns ErrConnClosed once the
// connection ended; ending a session twice is a no-op.
func (l *Link) EndSession(err error) error {
	c := l.c
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return ErrConnClosed
	}
	notify := l.s.endLocked(asError(err))
	c.mu.Unlock()
	c.notifyDetached(notify)
	return nil
}
