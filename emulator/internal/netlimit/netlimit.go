// Package netlimit holds the emulator's defences against hostile or
// broken clients that every front-end shares: a per-listener connection
// cap, a per-client limiter of failed authentications for HTTP, a global
// byte budget for connections that have not logged in yet, counters of
// refusals and limit hits, and a log summariser that turns a flood of
// refusals into one line per interval.
//
// Nothing here logs a string a client chose at the default level: the
// summary lines carry only counts under fixed names, and the one-by-one
// lines (Info, shown with the emulator's -v) quote and truncate client
// text with Quote.
package netlimit

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// MaxQuoted is how many bytes of a client-chosen string Quote keeps.
const MaxQuoted = 64

// Quote makes a client-chosen string safe to log: cut to MaxQuoted bytes
// at a rune boundary (with "…" after the cut), and Go-quoted (control
// characters, quotes, backslashes and invalid UTF-8 escaped) unless it
// is plain printable text, which is returned as it is so that ordinary
// ids read as they are. A client cannot forge or flood a log line with it.
func Quote(s string) string { return QuoteN(s, MaxQuoted) }

// MaxReason is how many bytes of an error text holding client input
// (e.g. a refusal reason quoting the client's id) Reason keeps.
const MaxReason = 256

// Reason is QuoteN(err.Error(), MaxReason): an error text safe to log.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	return QuoteN(err.Error(), MaxReason)
}

// QuoteN is Quote with a limit of max bytes.
func QuoteN(s string, max int) string {
	cut, more := s, ""
	if len(s) > max {
		n := max
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		cut, more = s[:n], "…"
	}
	plain := utf8.ValidString(cut)
	for _, r := range cut {
		if !plain || !strconv.IsPrint(r) || r == '"' || r == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return cut + more
	}
	return strconv.Quote(cut) + more
}

// Counters are named event counters, safe for concurrent use. Names are
// fixed by the emulator's code, never taken from a client. The zero value
// is ready; a nil *Counters ignores Add.
type Counters struct {
	mu sync.Mutex
	m  map[string]int64
}

// Add adds n to the counter name.
func (c *Counters) Add(name string, n int64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]int64{}
	}
	c.m[name] += n
	c.mu.Unlock()
}

// Snapshot returns a copy of every counter.
func (c *Counters) Snapshot() map[string]int64 {
	out := map[string]int64{}
	if c == nil {
		return out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// Listener is a net.Listener that serves at most a fixed number of
// connections at once: a connection accepted beyond the cap is closed at
// once (before any TLS handshake) and counted with the OnRefuse callback.
// A connection leaves the count when it is closed.
type Listener struct {
	net.Listener
	max      int
	open     atomic.Int64
	onRefuse func()
}

// NewListener caps ln at max simultaneous connections (max <= 0: no cap).
// onRefuse (may be nil) is called for each connection closed at the cap.
func NewListener(ln net.Listener, max int, onRefuse func()) *Listener {
	return &Listener{Listener: ln, max: max, onRefuse: onRefuse}
}

// Accept implements net.Listener; connections over the cap are closed and
// never returned.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := l.open.Add(1); l.max > 0 && n > int64(l.max) {
			l.open.Add(-1)
			_ = c.Close()
			if l.onRefuse != nil {
				l.onRefuse()
			}
			continue
		}
		return &countedConn{Conn: c, l: l}, nil
	}
}

// Open is the number of connections accepted and not yet closed.
func (l *Listener) Open() int { return int(l.open.Load()) }

type countedConn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// FailLimiter limits failed authentications per client (per IP address):
// a client that failed Max times within Window is refused until the
// window that began with its first failure ends. It remembers at most
// MaxClients clients; beyond that it forgets the ones whose window ended,
// then, if still full, all of them. Safe for concurrent use; a nil
// *FailLimiter never refuses.
type FailLimiter struct {
	Max        int
	Window     time.Duration
	MaxClients int

	mu sync.Mutex
	m  map[string]*failEntry
}

type failEntry struct {
	start time.Time
	n     int
}

// DefaultMaxClients is FailLimiter.MaxClients when zero.
const DefaultMaxClients = 10000

// Blocked reports whether client may not try again yet, and until when.
func (f *FailLimiter) Blocked(client string) (bool, time.Time) {
	if f == nil || f.Max <= 0 {
		return false, time.Time{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.m[client]
	if e == nil {
		return false, time.Time{}
	}
	end := e.start.Add(f.Window)
	if time.Now().After(end) {
		delete(f.m, client)
		return false, time.Time{}
	}
	return e.n >= f.Max, end
}

// Failed records one failed authentication of client.
func (f *FailLimiter) Failed(client string) {
	if f == nil || f.Max <= 0 {
		return
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]*failEntry{}
	}
	e := f.m[client]
	if e != nil && now.Sub(e.start) > f.Window {
		e = nil
	}
	if e == nil {
		limit := f.MaxClients
		if limit <= 0 {
			limit = DefaultMaxClients
		}
		if len(f.m) >= limit {
			for k, v := range f.m {
				if now.Sub(v.start) > f.Window {
					delete(f.m, k)
				}
			}
			if len(f.m) >= limit {
				clear(f.m)
			}
		}
		e = &failEntry{start: now}
		f.m[client] = e
	}
	e.n++
}

// ClientOf is the client key of an HTTP request: the IP address of
// RemoteAddr (the whole RemoteAddr when it has no port).
func ClientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Budget is a byte budget shared by many connections (e.g. what clients
// that have not logged in may make the server buffer). Safe for
// concurrent use; a nil *Budget or one with Max <= 0 grants everything.
type Budget struct {
	Max  int64
	used atomic.Int64
}

// Reserve takes n bytes from the budget; it reports false (taking
// nothing) when that would exceed Max.
func (b *Budget) Reserve(n int64) bool {
	if b == nil || b.Max <= 0 {
		return true
	}
	if b.used.Add(n) > b.Max {
		b.used.Add(-n)
		return false
	}
	return true
}

// Release gives back n bytes taken by Reserve.
func (b *Budget) Release(n int64) {
	if b == nil || b.Max <= 0 {
		return
	}
	b.used.Add(-n)
}

// Used is the number of bytes currently reserved.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

type authFailedKey struct{}

// MarkAuthFailed tells the AuthGuard serving r that the request failed
// authentication although its status is not 401 (e.g. a login form that
// redirects). It does nothing outside an AuthGuard.
func MarkAuthFailed(r *http.Request) {
	if p, ok := r.Context().Value(authFailedKey{}).(*atomic.Bool); ok {
		p.Store(true)
	}
}

// AuthGuard wraps next: a client (ClientOf) that failed authentication
// too often (FailLimiter) gets 429 with Retry-After before next runs;
// each answer 401, or request marked with MarkAuthFailed, counts as a
// failure of its client and is reported to rep as kind.
func AuthGuard(next http.Handler, fl *FailLimiter, rep *Reporter, kind string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := ClientOf(r)
		if blocked, until := fl.Blocked(client); blocked {
			rep.LimitHit(KindAuthRateLimited, "request refused: too many failed authentications", "remote", client)
			secs := max(1, int(time.Until(until).Seconds()+0.999))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			http.Error(w, "too many failed authentications; retry later", http.StatusTooManyRequests)
			return
		}
		var failed atomic.Bool
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), authFailedKey{}, &failed)))
		if sw.status == http.StatusUnauthorized || failed.Load() {
			fl.Failed(client)
			rep.Refused(kind, "request refused: authentication failed", "remote", client, "method", r.Method, "path", Quote(r.URL.Path))
		}
	})
}

// statusWriter records the status of a response. It forwards Flush and
// Hijack, and Unwrap lets http.ResponseController reach the rest.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
