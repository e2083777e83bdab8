// Package dashboard is the emulator's web front-end: server-rendered HTML
// pages (devices, a device with live telemetry, properties and commands,
// enrollment groups) with a little hand-written JavaScript and CSS, all
// embedded, updated live through Server-Sent Events. It talks to the model
// only through Backend and imports no protocol library.
//
// Every page and endpoint but the login page and the static assets needs
// the emulator's API token: in the Authorization header (as the REST API
// takes it) or as the session cookie the login form sets. The cookie holds
// a random session id made at login (never the token), which expires
// after SessionIdle without a request (each request renews it) and at the
// latest SessionMaxAge after login, and which logout revokes. The token
// travels only in a POST body or a URL fragment (which browsers never
// send), so it never appears in a request line or a log. Every
// state-changing request, login and logout included, must come from the
// dashboard's own pages (see sameSite).
package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
)

//go:embed assets
var assets embed.FS

// CookieName is the session cookie the login form sets.
const CookieName = "iotc_dashboard"

// csrfHeader must be present on every state-changing request but the login
// form; a cross-site page cannot send it without a CORS preflight, which the
// dashboard never grants.
const csrfHeader = "X-IOTC-Dashboard"

// Limits of what the pages show, so that a busy device or a large fleet
// cannot make a page grow without bound.
const (
	// RawMessages is how many raw messages the device page lists.
	RawMessages = 20
	// ChartHistory is how many past messages seed the device page's charts.
	ChartHistory = 300
	// MaxRawBody is how much of a message body the pages show (2 KiB); the
	// rest is cut, so that 256 KiB messages do not flood the browser.
	MaxRawBody = 2 << 10
	// MaxBody is the largest request body accepted (64 KiB).
	MaxBody = 64 << 10
	// StatusInterval is how often the live streams send device status.
	StatusInterval = time.Second
)

// Device is one row of the devices page.
type Device struct {
	ID, DisplayName, ModelID string
	Provisioned, Connected   bool
	Enabled                  bool
	LastSeen                 time.Time
	Messages                 uint64
}

// Event is a connection or twin change of a device.
type Event struct {
	// Kind is "connected", "disconnected", "desired" or "reported".
	Kind     string
	Protocol string
	Replaced bool
	Version  int64
	Time     time.Time
}

// Telemetry is one device-to-cloud message.
type Telemetry struct {
	Component  string
	Body       []byte
	Properties map[string]string
	Received   time.Time
}

// Group is an enrollment group.
type Group struct {
	ID, DisplayName          string
	Enabled, X509            bool
	PrimaryKey, SecondaryKey string
}

// CommandResult is a device's answer to a command.
type CommandResult struct {
	Status int
	Body   json.RawMessage
}

// Backend is what the dashboard needs of the emulator. Errors should wrap
// ErrNotFound for an unknown device or group; other errors are shown to
// the user as they are.
type Backend interface {
	// IDScope is the DPS ID scope.
	IDScope() string
	// Devices lists the devices sorted by id.
	Devices() []Device
	// Device returns one device.
	Device(id string) (Device, error)
	// Events returns the device's recent connection and twin events, oldest first.
	Events(id string) []Event
	// WatchEvents streams events of device id ("" for all) until stop.
	WatchEvents(id string) (events <-chan Event, stop func())
	// Twin returns the desired and reported sections with $version and $metadata.
	Twin(id string) (desired, reported map[string]any, err error)
	// UpdateProperties patches desired properties of component ("" root).
	UpdateProperties(ctx context.Context, id, component string, patch map[string]any) error
	// InvokeCommand calls a direct method and waits up to timeout.
	InvokeCommand(ctx context.Context, id, component, name string, payload json.RawMessage, timeout time.Duration) (CommandResult, error)
	// QueueCommand queues a command for a device that may be offline.
	QueueCommand(ctx context.Context, id, component, name string, payload json.RawMessage) error
	// TelemetryHistory returns the newest limit messages, oldest first.
	TelemetryHistory(id string, limit int) ([]Telemetry, error)
	// WatchTelemetry streams the device's messages from now on until stop.
	WatchTelemetry(id string) (messages <-chan Telemetry, stop func())
	// Groups lists the enrollment groups.
	Groups() []Group
}

// Stats are the counts the stats page shows (see Handler.SetStats).
type Stats struct {
	// Connections are the open connections per listener.
	Connections map[string]int
	// Refusals and LimitHits count refusals and limit hits by kind.
	Refusals, LimitHits map[string]int64
	// MQTTPreLoginBytes is what MQTT connections not yet logged in buffer.
	MQTTPreLoginBytes int64
}

// ErrNotFound is what Backend errors wrap for an unknown device or group:
// the core's.
var ErrNotFound = core.ErrNotFound

// Session limits.
const (
	// DefaultSessionIdle is how long a session lasts without a request
	// when New is given no other; every authorized request renews it.
	DefaultSessionIdle = time.Hour
	// SessionMaxAge is the longest a session lasts, renewed or not.
	SessionMaxAge = 24 * time.Hour
	// MaxSessions is how many sessions are kept at once; a login beyond it
	// ends the session closest to expiry.
	MaxSessions = 1000
)

// Handler serves the dashboard.
type Handler struct {
	b      Backend
	token  bool // the token is not empty
	digest [sha256.Size]byte
	log    *slog.Logger
	mux    *http.ServeMux
	tmpl   *template.Template
	done   <-chan struct{}
	idle   time.Duration
	stats  func() Stats // nil: the stats page shows no counts

	mu       sync.Mutex
	sessions map[[sha256.Size]byte]*session // by SHA-256 of the session id
}

// session is one login.
type session struct {
	created, expires time.Time
}

// New returns the dashboard over b, guarded by token (an empty token
// refuses every request). Live streams end when done is closed (nil: with
// their request only). A nil logger discards. It never logs the token,
// the cookie or keys.
func New(b Backend, token string, done <-chan struct{}, logger *slog.Logger) (*Handler, error) {
	if b == nil {
		return nil, errors.New("dashboard: nil backend")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t, err := template.New("").Funcs(funcs).ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard: templates: %w", err)
	}
	h := &Handler{b: b, token: token != "", digest: sha256.Sum256([]byte(token)), log: logger, mux: http.NewServeMux(), tmpl: t, done: done,
		idle: DefaultSessionIdle, sessions: map[[sha256.Size]byte]*session{}}
	static, _ := fs.Sub(assets, "assets/static")
	h.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	h.mux.HandleFunc("GET /login", h.loginPage)
	h.mux.HandleFunc("POST /login", h.login)
	h.mux.HandleFunc("POST /logout", h.logout)
	h.mux.HandleFunc("GET /{$}", h.auth(h.devicesPage))
	h.mux.HandleFunc("GET /live", h.auth(h.devicesStream))
	h.mux.HandleFunc("GET /devices/{id}", h.auth(h.devicePage))
	h.mux.HandleFunc("GET /devices/{id}/properties", h.auth(h.propertiesFragment))
	h.mux.HandleFunc("GET /devices/{id}/live", h.auth(h.deviceStream))
	h.mux.HandleFunc("POST /devices/{id}/properties", h.auth(h.writeProperty))
	h.mux.HandleFunc("POST /devices/{id}/commands", h.auth(h.runCommand))
	h.mux.HandleFunc("GET /groups", h.auth(h.groupsPage))
	h.mux.HandleFunc("GET /groups/{id}/keys", h.auth(h.groupKeys))
	h.mux.HandleFunc("GET /stats", h.auth(h.statsPage))
	return h, nil
}

// SetStats sets where the stats page (/stats) gets its counts; nil shows
// none. Call it before serving.
func (h *Handler) SetStats(f func() Stats) { h.stats = f }

// SetSessionIdle sets how long a session lasts without a request (d <= 0:
// DefaultSessionIdle). Call it before serving.
func (h *Handler) SetSessionIdle(d time.Duration) {
	if d <= 0 {
		d = DefaultSessionIdle
	}
	h.idle = d
}

// newSession makes a session and returns its id (32 random bytes, hex).
func (h *Handler) newSession() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	id := hex.EncodeToString(b[:])
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, s := range h.sessions {
		if now.After(s.expires) {
			delete(h.sessions, k)
		}
	}
	for len(h.sessions) >= MaxSessions {
		var oldest [sha256.Size]byte
		var first *session
		for k, s := range h.sessions {
			if first == nil || s.expires.Before(first.expires) {
				oldest, first = k, s
			}
		}
		delete(h.sessions, oldest)
	}
	h.sessions[sha256.Sum256([]byte(id))] = &session{created: now, expires: now.Add(h.idle)}
	return id
}

// validSession reports whether id names a live session, and renews it.
func (h *Handler) validSession(id string) bool {
	key := sha256.Sum256([]byte(id))
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sessions[key]
	if s == nil {
		return false
	}
	if now.After(s.expires) {
		delete(h.sessions, key)
		return false
	}
	s.expires = now.Add(h.idle)
	if end := s.created.Add(SessionMaxAge); s.expires.After(end) {
		s.expires = end
	}
	return true
}

// endSession revokes the session id.
func (h *Handler) endSession(id string) {
	h.mu.Lock()
	delete(h.sessions, sha256.Sum256([]byte(id)))
	h.mu.Unlock()
}

// sameSite reports whether a state-changing request comes from the
// dashboard's own pages: no Origin of another host ("null", which the
// pages' no-referrer policy makes browsers send for forms, is allowed), no
// Sec-Fetch-Site other than same-origin or none, and either the
// X-IOTC-Dashboard header (which a cross-site page cannot send without a
// CORS preflight the dashboard never grants) or Sec-Fetch-Site:
// same-origin (a form of the dashboard in a browser).
func sameSite(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		if u, err := url.Parse(o); err != nil || u.Host != r.Host {
			return false
		}
	}
	site := r.Header.Get("Sec-Fetch-Site")
	if site != "" && site != "same-origin" && site != "none" {
		return false
	}
	return r.Header.Get(csrfHeader) != "" || site == "same-origin"
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

// authorized reports whether r carries the token or a live session cookie.
func (h *Handler) authorized(r *http.Request) bool {
	if !h.token {
		return false
	}
	if a := r.Header.Get("Authorization"); a != "" {
		a = strings.TrimPrefix(a, "Bearer ")
		d := sha256.Sum256([]byte(a))
		return subtle.ConstantTimeCompare(d[:], h.digest[:]) == 1
	}
	c, err := r.Cookie(CookieName)
	return err == nil && h.validSession(c.Value)
}

func (h *Handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !h.authorized(r) {
			if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.Path), http.StatusSeeOther)
				return
			}
			http.Error(w, "unauthorized: log in at /login with the emulator's API token", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodGet && (r.Header.Get(csrfHeader) == "" || !sameSite(r)) {
			http.Error(w, "cross-site request refused (missing "+csrfHeader+" header or foreign origin)", http.StatusForbidden)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		next(w, r)
	}
}

// safeNext keeps only a same-site absolute path.
func safeNext(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.Contains(s, "\\") {
		return "/"
	}
	return s
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	h.render(w, "login.html", map[string]any{"Next": safeNext(r.URL.Query().Get("next")), "Failed": r.URL.Query().Has("failed")})
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad login form", http.StatusBadRequest)
		return
	}
	if !sameSite(r) {
		http.Error(w, "cross-site login refused", http.StatusForbidden)
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	d := sha256.Sum256([]byte(r.PostForm.Get("token")))
	if !h.token || subtle.ConstantTimeCompare(d[:], h.digest[:]) != 1 {
		netlimit.MarkAuthFailed(r)
		h.log.Info("dashboard login refused", "remote", r.RemoteAddr)
		http.Redirect(w, r, "/login?failed=1&next="+url.QueryEscape(next), http.StatusSeeOther)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: h.newSession(), Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if !sameSite(r) {
		http.Error(w, "cross-site logout refused", http.StatusForbidden)
		return
	}
	if c, err := r.Cookie(CookieName); err == nil {
		h.endSession(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (h *Handler) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := h.tmpl.ExecuteTemplate(w, name, data); err != nil {
		h.log.Warn("dashboard page not rendered", "page", name, "error", err)
	}
}

func (h *Handler) notFound(w http.ResponseWriter, err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotFound) {
		http.Error(w, err.Error(), http.StatusNotFound)
	} else {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
	return true
}

func (h *Handler) devicesPage(w http.ResponseWriter, r *http.Request) {
	ds := h.b.Devices()
	online := 0
	for _, d := range ds {
		if d.Connected {
			online++
		}
	}
	h.render(w, "devices.html", map[string]any{"Devices": ds, "Online": online, "IDScope": h.b.IDScope()})
}

func (h *Handler) groupsPage(w http.ResponseWriter, r *http.Request) {
	h.render(w, "groups.html", map[string]any{"Groups": h.b.Groups(), "IDScope": h.b.IDScope()})
}

func (h *Handler) statsPage(w http.ResponseWriter, r *http.Request) {
	var st Stats
	if h.stats != nil {
		st = h.stats()
	}
	h.render(w, "stats.html", map[string]any{"Stats": st})
}

func (h *Handler) groupKeys(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for _, g := range h.b.Groups() {
		if g.ID == id {
			writeJSON(w, http.StatusOK, map[string]string{"primaryKey": g.PrimaryKey, "secondaryKey": g.SecondaryKey})
			return
		}
	}
	http.Error(w, "no enrollment group "+id, http.StatusNotFound)
}

type devicePageData struct {
	Device    Device
	Events    []Event
	Raw       []rawMessage
	ChartInit string
	Props     propsView
	Uploads   []Upload // newest first; see uploads.go
}

type rawMessage struct {
	Time      string `json:"t"`
	Component string `json:"c"`
	Body      string `json:"b"`
	// Fields are the numeric fields of a JSON object body ("component/name" for a component).
	Fields map[string]float64 `json:"f,omitempty"`
}

func toRaw(m Telemetry) rawMessage {
	rm := rawMessage{Time: m.Received.UTC().Format(time.RFC3339Nano), Component: m.Component, Body: string(m.Body)}
	if len(m.Body) > MaxRawBody {
		rm.Body = strings.ToValidUTF8(string(m.Body[:MaxRawBody]), "") + fmt.Sprintf("… (%d bytes)", len(m.Body))
	}
	var obj map[string]any
	if json.Unmarshal(m.Body, &obj) == nil {
		for k, v := range obj {
			if f, ok := v.(float64); ok {
				if rm.Fields == nil {
					rm.Fields = map[string]float64{}
				}
				name := k
				if m.Component != "" {
					name = m.Component + "/" + k
				}
				rm.Fields[name] = f
			}
		}
	}
	return rm
}

func (h *Handler) devicePage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := h.b.Device(id)
	if h.notFound(w, err) {
		return
	}
	hist, err := h.b.TelemetryHistory(id, ChartHistory)
	if h.notFound(w, err) {
		return
	}
	props, err := h.props(id)
	if h.notFound(w, err) {
		return
	}
	raws := make([]rawMessage, len(hist))
	points := make([]rawMessage, 0, len(hist)) // the charts need no bodies
	for i, m := range hist {
		raws[i] = toRaw(m)
		if raws[i].Fields != nil {
			points = append(points, rawMessage{Time: raws[i].Time, Fields: raws[i].Fields})
		}
	}
	init, _ := json.Marshal(points)
	last := raws[max(0, len(raws)-RawMessages):]
	shown := make([]rawMessage, len(last)) // newest first
	for i := range last {
		shown[i] = last[len(last)-1-i]
	}
	evs := h.b.Events(id)
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	h.render(w, "device.html", devicePageData{Device: d, Events: evs, Raw: shown, ChartInit: string(init), Props: props, Uploads: h.uploadsOf(id)})
}

func (h *Handler) propertiesFragment(w http.ResponseWriter, r *http.Request) {
	props, err := h.props(r.PathValue("id"))
	if h.notFound(w, err) {
		return
	}
	h.render(w, "props", props)
}

type writeRequest struct {
	Component string          `json:"component"`
	Name      string          `json:"name"`
	Value     json.RawMessage `json:"value"`
}

func (h *Handler) writeProperty(w http.ResponseWriter, r *http.Request) {
	var req writeRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Name == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "a property name is required"})
		return
	}
	var v any
	if err := json.Unmarshal(req.Value, &v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the value is not JSON: " + err.Error()})
		return
	}
	if err := h.b.UpdateProperties(r.Context(), r.PathValue("id"), req.Component, map[string]any{req.Name: v}); err != nil {
		writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": "desired value sent"})
}

type commandRequest struct {
	Component string `json:"component"`
	Name      string `json:"name"`
	Payload   string `json:"payload"` // JSON text; empty sends null
	Timeout   int    `json:"timeout"` // seconds; 0 is the emulator's default
	Queue     bool   `json:"queue"`
}

func (h *Handler) runCommand(w http.ResponseWriter, r *http.Request) {
	var req commandRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Name == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "a command name is required"})
		return
	}
	var payload json.RawMessage
	if p := strings.TrimSpace(req.Payload); p != "" {
		if !json.Valid([]byte(p)) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the payload is not JSON"})
			return
		}
		payload = json.RawMessage(p)
	}
	id := r.PathValue("id")
	if req.Queue {
		if err := h.b.QueueCommand(r.Context(), id, req.Component, req.Name, payload); err != nil {
			writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"queued": true})
		return
	}
	res, err := h.b.InvokeCommand(r.Context(), id, req.Component, req.Name, payload, time.Duration(req.Timeout)*time.Second)
	if err != nil {
		writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
		return
	}
	body := res.Body
	if len(body) == 0 {
		body = json.RawMessage("null")
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": res.Status, "body": body})
}

func statusOf(err error) int {
	if errors.Is(err, ErrNotFound) {
		return http.StatusNotFound
	}
	return http.StatusUnprocessableEntity
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad request body: " + err.Error()})
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
