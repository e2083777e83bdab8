package netlimit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Kinds of refusals and limit hits the front-ends report. They are the
// keys of the counters and of the summary lines.
const (
	// KindMQTTAuth is an MQTT CONNECT refused (bad credentials, unknown
	// device, bad user name, protocol version).
	KindMQTTAuth = "mqtt_auth"
	// KindAMQPAuth is an AMQP SASL, put-token or link authorization refused.
	KindAMQPAuth = "amqp_auth"
	// KindRESTAuth is a REST request answered 401.
	KindRESTAuth = "rest_auth"
	// KindServiceAuth is an IoT Hub service API request answered 401.
	KindServiceAuth = "service_auth"
	// KindDeviceHTTPAuth is an IoT Hub device HTTPS API request answered 401.
	KindDeviceHTTPAuth = "device_http_auth"
	// KindDashboardAuth is a dashboard login or request refused.
	KindDashboardAuth = "dashboard_auth"
	// KindWebSocketUpgrade is a WebSocket upgrade refused.
	KindWebSocketUpgrade = "websocket_upgrade"

	// KindAuthRateLimited is an HTTP request refused 429 because its
	// client failed authentication too often.
	KindAuthRateLimited = "auth_rate_limited"
	// KindConnCap is a connection closed because its listener was at its
	// connection cap (the listener's name follows, e.g. "conn_cap_rest").
	KindConnCap = "conn_cap_"
	// KindAMQPLoginDeadline is an AMQP connection closed without a valid
	// token in time.
	KindAMQPLoginDeadline = "amqp_login_deadline"
	// KindAMQPSessions is an AMQP connection closed for beginning too many sessions.
	KindAMQPSessions = "amqp_session_cap"
	// KindAMQPLinks is an AMQP connection closed for attaching too many links.
	KindAMQPLinks = "amqp_link_cap"
	// KindAMQPUnsettled is an AMQP connection closed for holding too many unsettled bytes.
	KindAMQPUnsettled = "amqp_unsettled_cap"
	// KindAMQPPreLoginLink is an AMQP link refused because the connection
	// has no valid token yet.
	KindAMQPPreLoginLink = "amqp_prelogin_link"
	// KindMQTTIdle is an MQTT connection closed for silence past 1.5 x its
	// keep-alive (or the maximum idle time).
	KindMQTTIdle = "mqtt_idle_timeout"
	// KindAMQPIdle is an AMQP connection closed for silence past twice the
	// idle-time-out the emulator announced.
	KindAMQPIdle = "amqp_idle_timeout"
	// KindMQTTPreLoginBytes is an MQTT connection closed because the bytes
	// buffered by connections not yet logged in reached their cap.
	KindMQTTPreLoginBytes = "mqtt_prelogin_bytes"
)

// DefaultSummaryInterval is the Reporter interval when zero: at most one
// summary line per interval.
const DefaultSummaryInterval = 10 * time.Second

// Reporter counts refusals and limit hits and logs them: each one at Info
// (the emulator shows Info only with -v), and at most one Warn line per
// interval with the counts of the interval, under fixed names. Safe for
// concurrent use; a nil *Reporter does nothing.
type Reporter struct {
	log      *slog.Logger
	interval time.Duration

	// Refusals and LimitHits count every event since the start.
	Refusals, LimitHits Counters

	mu      sync.Mutex
	pending map[string]int64
	timer   *time.Timer
	closed  bool
}

// NewReporter returns a Reporter logging to log (nil discards) with a
// summary at most every interval (0: DefaultSummaryInterval).
func NewReporter(log *slog.Logger, interval time.Duration) *Reporter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = DefaultSummaryInterval
	}
	return &Reporter{log: log, interval: interval, pending: map[string]int64{}}
}

// Refused records a refused connection or failed authentication of kind;
// msg and attrs make the one-by-one Info line (quote client text with
// Quote; never pass a secret).
func (r *Reporter) Refused(kind, msg string, attrs ...any) {
	if r == nil {
		return
	}
	r.Refusals.Add(kind, 1)
	r.event(kind, msg, attrs)
}

// LimitHit records a connection or request stopped by a limit of kind.
func (r *Reporter) LimitHit(kind, msg string, attrs ...any) {
	if r == nil {
		return
	}
	r.LimitHits.Add(kind, 1)
	r.event(kind, msg, attrs)
}

func (r *Reporter) event(kind, msg string, attrs []any) {
	if r.log.Enabled(context.Background(), slog.LevelInfo) {
		r.log.Info(msg, append([]any{"kind", kind}, attrs...)...)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.pending[kind]++
	if r.timer == nil {
		r.timer = time.AfterFunc(r.interval, r.flush)
	}
}

// flush writes the summary of the interval that just ended.
func (r *Reporter) flush() {
	r.mu.Lock()
	pending := r.pending
	r.pending = map[string]int64{}
	r.timer = nil
	r.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	attrs := []any{"interval", r.interval.String()}
	var total int64
	for _, k := range sortedKeys(pending) {
		attrs = append(attrs, k, pending[k])
		total += pending[k]
	}
	attrs = append(attrs, "total", total)
	r.log.Warn("refused connections, failed authentications and limit hits (details with -v)", attrs...)
}

// Close writes the summary of what is pending and stops the timer.
func (r *Reporter) Close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
	r.flush()
}
