package emulator

import (
	"time"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
	"github.com/iotc-go/iotc/emulator/internal/dashboard"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
)

// Defaults of Limits, applied to every zero field.
const (
	// DefaultAMQPLoginDeadline is how long an AMQP connection may stay
	// without a valid token (put-token on $cbs, SASL PLAIN or a client
	// certificate accepted at attach): 30 s, as IoT Hub waits for the
	// first token.
	DefaultAMQPLoginDeadline = amqp1.DefaultLoginDeadline
	// DefaultAMQPMaxSessions is the most sessions of one AMQP connection
	// (one per channel; IoT Hub multiplexes a device per session).
	DefaultAMQPMaxSessions = amqp1.DefaultMaxSessions
	// DefaultAMQPMaxLinks is the most links of one AMQP connection (eight
	// per session).
	DefaultAMQPMaxLinks = amqp1.DefaultMaxLinks
	// DefaultAMQPMaxUnsettledBytes bounds the bytes of messages one AMQP
	// connection has sent and the emulator has not settled (32 MiB).
	DefaultAMQPMaxUnsettledBytes = amqp1.DefaultMaxUnsettledBytes
	// DefaultAMQPLoginMaxSessions is the most sessions before a valid token.
	DefaultAMQPLoginMaxSessions = amqp1.DefaultLoginMaxSessions
	// DefaultAMQPLoginMaxLinks is the most links before a valid token (the
	// $cbs pair with room for a retry).
	DefaultAMQPLoginMaxLinks = amqp1.DefaultLoginMaxLinks
	// DefaultAMQPLoginMaxUnsettledBytes bounds unsettled bytes before a
	// valid token (64 KiB; a put-token request is under 5 KiB).
	DefaultAMQPLoginMaxUnsettledBytes = amqp1.DefaultLoginMaxUnsettledBytes
	// DefaultHTTPReadTimeout bounds the reading of one HTTP request,
	// headers and body, on the REST/dashboard and WebSocket listeners.
	DefaultHTTPReadTimeout = 30 * time.Second
	// DefaultHTTPWriteTimeout bounds one HTTP response from the end of
	// its request's headers: the longest command wait (MaxCommandTimeout)
	// plus a minute. Live dashboard streams and upgraded WebSockets are
	// exempt.
	DefaultHTTPWriteTimeout = MaxCommandTimeout + time.Minute
	// DefaultHTTPIdleTimeout is how long an HTTP keep-alive connection may
	// wait for its next request.
	DefaultHTTPIdleTimeout = 60 * time.Second
	// DefaultHTTPMaxHeaderBytes is the largest request header block
	// (32 KiB); a larger one is answered 431.
	DefaultHTTPMaxHeaderBytes = 32 << 10
	// DefaultRESTMaxConns is the most simultaneous connections of the
	// REST/dashboard listener.
	DefaultRESTMaxConns = 1024
	// DefaultWebSocketMaxConns is the most simultaneous connections of the
	// WebSocket listener (devices over MQTT or AMQP over WebSockets).
	DefaultWebSocketMaxConns = 16384
	// DefaultAMQPMaxConns is the most simultaneous connections of the
	// AMQP/TLS listener.
	DefaultAMQPMaxConns = 16384
	// DefaultAuthFailures is how many failed authentications one client
	// (IP address) may make on the REST/dashboard listener within
	// DefaultAuthFailureWindow before its requests get 429 until the
	// window ends.
	DefaultAuthFailures = 100
	// DefaultAuthFailureWindow is the window of DefaultAuthFailures.
	DefaultAuthFailureWindow = 10 * time.Second
	// DefaultMQTTMaxIdle is the longest an MQTT connection may stay
	// silent: IoT Hub's maximum, 1767 s, used for keep-alive 0 and for
	// keep-alives whose 1.5x would exceed it.
	DefaultMQTTMaxIdle = 1767 * time.Second
	// DefaultMQTTPreLoginBytes caps the bytes all MQTT connections that
	// have not logged in yet may make the emulator buffer (16 MiB: a
	// CONNECT may announce up to 320 KiB).
	DefaultMQTTPreLoginBytes = 16 << 20
	// DefaultDashboardSessionIdle is how long a dashboard session lasts
	// without a request; each request renews it, up to a day after login.
	DefaultDashboardSessionIdle = dashboard.DefaultSessionIdle
	// DefaultLogSummaryInterval is how often refusals and limit hits are
	// summarised in one Warn line.
	DefaultLogSummaryInterval = netlimit.DefaultSummaryInterval
)

// Limits bound what clients, hostile or broken, can make the emulator
// hold. Every zero field takes its Default* value; a negative value turns
// a cap off where the field says so. Hitting a limit is counted in Stats
// (and GET /api/emulator/stats, and the dashboard's stats page).
type Limits struct {
	// AMQPLoginDeadline: an AMQP connection without a valid token this
	// long after open is closed with amqp:unauthorized-access. Until it
	// has one it may only attach $cbs links (any link with a client
	// certificate). Default DefaultAMQPLoginDeadline.
	AMQPLoginDeadline time.Duration
	// AMQPMaxSessions, AMQPMaxLinks and AMQPMaxUnsettledBytes bound a
	// logged-in AMQP connection; going over closes it with
	// amqp:resource-limit-exceeded. Defaults DefaultAMQPMaxSessions,
	// DefaultAMQPMaxLinks, DefaultAMQPMaxUnsettledBytes.
	AMQPMaxSessions, AMQPMaxLinks, AMQPMaxUnsettledBytes int
	// AMQPLoginMaxSessions, AMQPLoginMaxLinks and
	// AMQPLoginMaxUnsettledBytes are the same before a valid token.
	// Defaults DefaultAMQPLoginMaxSessions, DefaultAMQPLoginMaxLinks,
	// DefaultAMQPLoginMaxUnsettledBytes.
	AMQPLoginMaxSessions, AMQPLoginMaxLinks, AMQPLoginMaxUnsettledBytes int
	// HTTPReadTimeout, HTTPWriteTimeout and HTTPIdleTimeout are the
	// http.Server timeouts of the REST/dashboard listener and of the
	// WebSocket listener before the upgrade; negative: none (request
	// headers still have 10 s). Defaults DefaultHTTPReadTimeout,
	// DefaultHTTPWriteTimeout, DefaultHTTPIdleTimeout.
	HTTPReadTimeout, HTTPWriteTimeout, HTTPIdleTimeout time.Duration
	// HTTPMaxHeaderBytes is the largest request header block of both HTTP
	// listeners. Default DefaultHTTPMaxHeaderBytes.
	HTTPMaxHeaderBytes int
	// RESTMaxConns, WebSocketMaxConns and AMQPMaxConns cap the
	// simultaneous connections of each listener: one more is closed at
	// once. Negative: no cap. Defaults DefaultRESTMaxConns,
	// DefaultWebSocketMaxConns, DefaultAMQPMaxConns.
	RESTMaxConns, WebSocketMaxConns, AMQPMaxConns int
	// AuthFailures is how many failed authentications (REST 401,
	// dashboard login refused) one IP address may make within
	// AuthFailureWindow before its requests on the REST/dashboard listener
	// are answered 429 until the window ends. Negative: no limit.
	// Defaults DefaultAuthFailures, DefaultAuthFailureWindow.
	AuthFailures      int
	AuthFailureWindow time.Duration
	// MQTTMaxIdle is the longest an MQTT connection may stay silent: used
	// for keep-alive 0, and as the cap of 1.5 x keep-alive. Default
	// DefaultMQTTMaxIdle.
	MQTTMaxIdle time.Duration
	// MQTTPreLoginBytes caps the bytes of the CONNECT packets all MQTT
	// connections that have not logged in yet are sending; a connection
	// whose CONNECT does not fit is closed. Negative: no cap. Default
	// DefaultMQTTPreLoginBytes.
	MQTTPreLoginBytes int64
	// DashboardSessionIdle is how long a dashboard login lasts without a
	// request (each request renews it; logout revokes it; a day after login
	// it ends regardless). Default DefaultDashboardSessionIdle.
	DashboardSessionIdle time.Duration
	// LogSummaryInterval is how often refused connections, failed
	// authentications and limit hits are summarised in one Warn line of
	// counts; each one is also logged at Info with its details. Default
	// DefaultLogSummaryInterval.
	LogSummaryInterval time.Duration
}

// withDefaults returns l with every zero field set to its default.
func (l Limits) withDefaults() Limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.AMQPLoginDeadline, DefaultAMQPLoginDeadline)
	defInt(&l.AMQPMaxSessions, DefaultAMQPMaxSessions)
	defInt(&l.AMQPMaxLinks, DefaultAMQPMaxLinks)
	defInt(&l.AMQPMaxUnsettledBytes, DefaultAMQPMaxUnsettledBytes)
	defInt(&l.AMQPLoginMaxSessions, DefaultAMQPLoginMaxSessions)
	defInt(&l.AMQPLoginMaxLinks, DefaultAMQPLoginMaxLinks)
	defInt(&l.AMQPLoginMaxUnsettledBytes, DefaultAMQPLoginMaxUnsettledBytes)
	def(&l.HTTPReadTimeout, DefaultHTTPReadTimeout)
	def(&l.HTTPWriteTimeout, DefaultHTTPWriteTimeout)
	def(&l.HTTPIdleTimeout, DefaultHTTPIdleTimeout)
	defInt(&l.HTTPMaxHeaderBytes, DefaultHTTPMaxHeaderBytes)
	defInt(&l.RESTMaxConns, DefaultRESTMaxConns)
	defInt(&l.WebSocketMaxConns, DefaultWebSocketMaxConns)
	defInt(&l.AMQPMaxConns, DefaultAMQPMaxConns)
	defInt(&l.AuthFailures, DefaultAuthFailures)
	def(&l.AuthFailureWindow, DefaultAuthFailureWindow)
	def(&l.MQTTMaxIdle, DefaultMQTTMaxIdle)
	if l.MQTTPreLoginBytes == 0 {
		l.MQTTPreLoginBytes = DefaultMQTTPreLoginBytes
	}
	def(&l.DashboardSessionIdle, DefaultDashboardSessionIdle)
	def(&l.LogSummaryInterval, DefaultLogSummaryInterval)
	return l
}

// amqpEngine is the amqp1 configuration of every AMQP connection.
func (l Limits) amqpEngine() amqp1.Config {
	return amqp1.Config{
		ContainerID:       "iotc-emulator",
		MaxSessions:       l.AMQPMaxSessions,
		MaxLinks:          l.AMQPMaxLinks,
		MaxUnsettledBytes: l.AMQPMaxUnsettledBytes,
		Login: amqp1.LoginPolicy{
			Deadline:          l.AMQPLoginDeadline,
			MaxSessions:       l.AMQPLoginMaxSessions,
			MaxLinks:          l.AMQPLoginMaxLinks,
			MaxUnsettledBytes: l.AMQPLoginMaxUnsettledBytes,
		},
	}
}

// Stats are the emulator's connection and refusal counters.
type Stats struct {
	// Connections are the open connections per listener ("mqtt",
	// "websocket", "amqp", "rest"), TLS handshakes in progress included.
	Connections map[string]int `json:"connections"`
	// Refusals count refused connections and failed authentications since
	// start, by kind ("mqtt_auth", "amqp_auth", "rest_auth",
	// "dashboard_auth", "websocket_upgrade").
	Refusals map[string]int64 `json:"refusals"`
	// LimitHits count connections and requests stopped by a limit of
	// Limits since start, by kind ("amqp_login_deadline",
	// "amqp_session_cap", "amqp_link_cap", "amqp_unsettled_cap",
	// "conn_cap_rest", "conn_cap_websocket", "conn_cap_amqp",
	// "auth_rate_limited", "mqtt_prelogin_bytes", "mqtt_idle_timeout",
	// "amqp_idle_timeout"). HTTP timeouts and the header cap are enforced
	// by net/http and not counted.
	LimitHits map[string]int64 `json:"limitHits"`
	// MQTTPreLoginBytes is what MQTT connections that have not logged in
	// yet are being allowed to buffer now (see Limits.MQTTPreLoginBytes).
	MQTTPreLoginBytes int64 `json:"mqttPreLoginBytes"`
}

// Stats returns the emulator's connection, refusal and limit-hit counts.
func (e *Emulator) Stats() Stats {
	st := Stats{
		Connections: map[string]int{},
		Refusals:    e.reporter.Refusals.Snapshot(),
		LimitHits:   e.reporter.LimitHits.Snapshot(),
	}
	if e.mqtt != nil {
		st.Connections["mqtt"] = e.mqtt.OpenConns()
		st.MQTTPreLoginBytes = e.mqtt.PreLoginBytes()
	}
	for name, ln := range map[string]*netlimit.Listener{"websocket": e.wsLn, "amqp": e.amqpLn, "rest": e.restLn} {
		if ln != nil {
			st.Connections[name] = ln.Open()
		}
	}
	return st
}

// connCapHit returns the callback of a listener's connection cap.
func (e *Emulator) connCapHit(listener string) func() {
	return func() {
		e.reporter.LimitHit(netlimit.KindConnCap+listener, "connection closed: listener at its connection cap", "listener", listener)
	}
}
