package amqp1

import (
	"context"
	"crypto/x509"
	"log/slog"
	"time"

	"github.com/Azure/go-amqp"
)

// Message is an AMQP message (Part 3 §3.2): the go-amqp client's message
// type, whose public MarshalBinary/UnmarshalBinary this package uses for the
// message sections (header, annotations, properties, application-properties,
// data/amqp-value/amqp-sequence, footer).
type Message = amqp.Message

// SASL mechanism names this package implements (Part 5 §5.3, and the
// Microsoft MSSBCBS mechanism used by the Azure IoT C SDK).
const (
	// SASLMSSBCBS accepts without credentials; authentication follows through CBS ($cbs put-token).
	SASLMSSBCBS Symbol = "MSSBCBS"
	// SASLAnonymous accepts without credentials (RFC 4505).
	SASLAnonymous Symbol = "ANONYMOUS"
	// SASLPlain checks user name and password with SASLPolicy.CheckPlain (RFC 4616).
	SASLPlain Symbol = "PLAIN"
	// SASLExternal accepts the identity of the TLS client certificate (RFC 4422 appendix A).
	SASLExternal Symbol = "EXTERNAL"
)

// DefaultMechanisms is the mechanism list offered when SASLPolicy.Mechanisms
// is nil, in the order the IoT Hub emulator offers them.
var DefaultMechanisms = []Symbol{SASLMSSBCBS, SASLAnonymous, SASLPlain, SASLExternal}

// PlainCredentials is the decoded initial response of SASL PLAIN plus the
// hostname of sasl-init. Password is a secret (for IoT Hub a SAS token): it
// must never be logged.
type PlainCredentials struct {
	// AuthzID is the optional authorization identity ("" when absent).
	AuthzID string
	// Username is the authentication identity, e.g. "{deviceId}@sas.{hub}".
	Username string
	// Password is the secret; never log it.
	Password string
	// Hostname is the hostname field of sasl-init ("" when absent).
	Hostname string
}

// LogValue keeps the password out of any log line that includes the credentials.
func (p PlainCredentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("authzid", p.AuthzID), slog.String("username", p.Username),
		slog.String("password", "REDACTED"))
}

// SASLPolicy says how a connection may authenticate at the SASL layer.
type SASLPolicy struct {
	// Mechanisms is the offered list, in order; nil offers DefaultMechanisms.
	// Only the four SASL* mechanisms of this package can succeed.
	Mechanisms []Symbol
	// Required refuses connections that skip SASL (protocol id 0); default
	// false, because the Node IoT SDK and X.509 clients never send SASL.
	Required bool
	// CheckPlain verifies PLAIN credentials; a non-nil error fails the
	// exchange with sasl-outcome code auth. Nil rejects every PLAIN attempt.
	CheckPlain func(ctx context.Context, cred PlainCredentials) error
	// CheckExternal verifies the TLS client certificates for EXTERNAL; nil
	// accepts when at least one certificate is present.
	CheckExternal func(ctx context.Context, certs []*x509.Certificate) error
}

// Config configures one server connection ([Serve]). The zero value works:
// every field has a default.
type Config struct {
	// ContainerID is the container-id of the server's open; default "iotc-emulator".
	ContainerID string
	// MaxFrameSize is the largest frame accepted from the peer (announced in
	// open, enforced on read); default 65536, values below 512 are raised to 512.
	MaxFrameSize uint32
	// ChannelMax is the highest channel (so at most ChannelMax+1 sessions); default 255.
	ChannelMax uint16
	// HandleMax is the highest link handle per session; default 255.
	HandleMax uint32
	// IdleTimeout is the server's idle-time-out announced in open; a peer
	// silent for twice this long is closed with amqp:resource-limit-exceeded.
	// Default 240s (what IoT Hub uses); negative disables it.
	IdleTimeout time.Duration
	// MaxMessageSize is the largest message accepted on a link (announced in
	// attach; larger deliveries detach the link with
	// amqp:link:message-size-exceeded). Default 1 MiB (IoT Hub's own limits,
	// 256 KiB device-to-cloud, are for the application layer to enforce).
	MaxMessageSize uint64
	// LinkCredit is the credit granted to each peer sender and kept topped up
	// as deliveries are handled; default 100.
	LinkCredit uint32
	// SessionWindow is the incoming and outgoing window of every session, in
	// transfer frames; default 5000.
	SessionWindow uint32
	// WriteTimeout bounds one frame write; default 30s.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds protocol header, SASL and open; default 30s.
	HandshakeTimeout time.Duration
	// CloseTimeout bounds the wait for the peer's close after the server sent its own; default 2s.
	CloseTimeout time.Duration
	// MaxOutgoingQueue bounds the bytes queued for writing before the
	// connection is dropped as too slow; default 64 MiB.
	MaxOutgoingQueue int
	// SASL is the SASL policy.
	SASL SASLPolicy
	// Login says what a connection may do before the application layer
	// calls [Conn.SetLoggedIn]; the zero value does not restrict it.
	Login LoginPolicy
	// MaxSessions is the most sessions a logged-in connection may have at
	// once; beginning one more closes the connection with
	// amqp:resource-limit-exceeded. Default DefaultMaxSessions.
	MaxSessions int
	// MaxLinks is the most links a logged-in connection may have attached
	// at once over all its sessions; attaching one more closes the
	// connection with amqp:resource-limit-exceeded. Default DefaultMaxLinks.
	MaxLinks int
	// MaxUnsettledBytes bounds the bytes of messages a logged-in
	// connection has sent and the server has not settled yet (unfinished
	// multi-frame deliveries included); going over it closes the
	// connection with amqp:resource-limit-exceeded. Default
	// DefaultMaxUnsettledBytes.
	MaxUnsettledBytes int
	// PeerCertificates are the TLS client certificates when TLS is terminated
	// outside the net.Conn (e.g. WebSockets behind an HTTPS server). When nil
	// and the net.Conn is a *tls.Conn, its verified peer certificates are used.
	PeerCertificates []*x509.Certificate
	// Properties are the connection properties of the server's open; nil sends none.
	Properties map[string]any
	// Handler receives connections, links and messages; nil refuses every
	// link with amqp:not-found.
	Handler Handler
	// Logger receives debug and warning records; nil discards. Secrets are never logged.
	Logger *slog.Logger
}

// LoginPolicy bounds a connection until it has logged in (for IoT Hub:
// until it has put a valid token on $cbs, authenticated with SASL PLAIN or
// a client certificate). With Required false (the default) a connection
// is logged in from the start and only Config's own limits apply.
type LoginPolicy struct {
	// Required makes every connection start logged out: until
	// [Conn.SetLoggedIn] it may attach only the links Allow accepts, and
	// the Max* limits below apply instead of Config's.
	Required bool
	// Deadline is how long after open a logged-out connection is kept: it
	// is then closed with amqp:unauthorized-access. Default
	// DefaultLoginDeadline (what IoT Hub allows for the first token).
	Deadline time.Duration
	// Allow reports whether a logged-out connection may attach l; a link
	// it refuses is answered with a detach carrying
	// amqp:unauthorized-access. Nil refuses every link.
	Allow func(l *Link) bool
	// MaxSessions is the most sessions of a logged-out connection; default
	// DefaultLoginMaxSessions.
	MaxSessions int
	// MaxLinks is the most links of a logged-out connection; default
	// DefaultLoginMaxLinks.
	MaxLinks int
	// MaxUnsettledBytes bounds the unsettled bytes of a logged-out
	// connection; default DefaultLoginMaxUnsettledBytes.
	MaxUnsettledBytes int
	// MaxOutgoingQueue replaces Config.MaxOutgoingQueue while logged out;
	// default DefaultLoginMaxOutgoingQueue.
	MaxOutgoingQueue int
}

// Defaults of the connection limits.
const (
	// DefaultMaxSessions is Config.MaxSessions when zero: one per channel
	// (channel-max 255), IoT Hub multiplexing one device per session.
	DefaultMaxSessions = 256
	// DefaultMaxLinks is Config.MaxLinks when zero: eight links for each
	// of DefaultMaxSessions device sessions ($cbs, telemetry,
	// cloud-to-device, a method pair and a twin pair).
	DefaultMaxLinks = 8 * DefaultMaxSessions
	// DefaultMaxUnsettledBytes is Config.MaxUnsettledBytes when zero
	// (32 MiB: a hundred 256 KiB telemetry messages in flight, the link
	// credit the server grants).
	DefaultMaxUnsettledBytes = 32 << 20
	// DefaultLoginDeadline is LoginPolicy.Deadline when zero (30 s, as
	// IoT Hub waits for the first token).
	DefaultLoginDeadline = 30 * time.Second
	// DefaultLoginMaxSessions is LoginPolicy.MaxSessions when zero.
	DefaultLoginMaxSessions = 4
	// DefaultLoginMaxLinks is LoginPolicy.MaxLinks when zero: the $cbs
	// pair with room for a retry.
	DefaultLoginMaxLinks = 8
	// DefaultLoginMaxUnsettledBytes is LoginPolicy.MaxUnsettledBytes when
	// zero (64 KiB: a put-token request is under 5 KiB).
	DefaultLoginMaxUnsettledBytes = 64 << 10
	// DefaultLoginMaxOutgoingQueue is LoginPolicy.MaxOutgoingQueue when
	// zero (1 MiB), so that a peer that never reads cannot make a
	// logged-out connection queue Config.MaxOutgoingQueue of answers.
	DefaultLoginMaxOutgoingQueue = 1 << 20
)

const (
	defaultContainerID      = "iotc-emulator"
	defaultMaxFrameSize     = 65536
	defaultChannelMax       = 255
	defaultHandleMax        = 255
	defaultIdleTimeout      = 240 * time.Second
	defaultMaxMessageSize   = 1 << 20
	defaultLinkCredit       = 100
	defaultSessionWindow    = 5000
	defaultWriteTimeout     = 30 * time.Second
	defaultHandshakeTimeout = 30 * time.Second
	defaultCloseTimeout     = 2 * time.Second
	defaultMaxOutgoingQueue = 64 << 20
)

func (c Config) withDefaults() Config {
	if c.ContainerID == "" {
		c.ContainerID = defaultContainerID
	}
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = defaultMaxFrameSize
	}
	c.MaxFrameSize = max(c.MaxFrameSize, MinMaxFrameSize)
	if c.ChannelMax == 0 {
		c.ChannelMax = defaultChannelMax
	}
	if c.HandleMax == 0 {
		c.HandleMax = defaultHandleMax
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.IdleTimeout < 0 {
		c.IdleTimeout = 0
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = defaultMaxMessageSize
	}
	if c.LinkCredit == 0 {
		c.LinkCredit = defaultLinkCredit
	}
	if c.SessionWindow == 0 {
		c.SessionWindow = defaultSessionWindow
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = defaultWriteTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = defaultHandshakeTimeout
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = defaultCloseTimeout
	}
	if c.MaxOutgoingQueue <= 0 {
		c.MaxOutgoingQueue = defaultMaxOutgoingQueue
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.MaxLinks <= 0 {
		c.MaxLinks = DefaultMaxLinks
	}
	if c.MaxUnsettledBytes <= 0 {
		c.MaxUnsettledBytes = DefaultMaxUnsettledBytes
	}
	if c.Login.Deadline <= 0 {
		c.Login.Deadline = DefaultLoginDeadline
	}
	if c.Login.MaxSessions <= 0 {
		c.Login.MaxSessions = DefaultLoginMaxSessions
	}
	if c.Login.MaxLinks <= 0 {
		c.Login.MaxLinks = DefaultLoginMaxLinks
	}
	if c.Login.MaxOutgoingQueue <= 0 {
		c.Login.MaxOutgoingQueue = DefaultLoginMaxOutgoingQueue
	}
	if c.Login.MaxUnsettledBytes <= 0 {
		c.Login.MaxUnsettledBytes = DefaultLoginMaxUnsettledBytes
	}
	if c.SASL.Mechanisms == nil {
		c.SASL.Mechanisms = DefaultMechanisms
	}
	if c.Handler == nil {
		c.Handler = HandlerFuncs{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Handler is the application layer plugged into [Serve]. Its methods are
// called by the connection's goroutines; OnOpen and OnAttach are called on
// the frame-reading goroutine and must return promptly (start goroutines for
// long work; never call [Link.Send] and wait inside them).
type Handler interface {
	// OnOpen is called once the peer's open has been read and before the
	// server answers it. A non-nil error refuses the connection: the server
	// answers open and then closes with the error (a *Error keeps its
	// condition; any other error becomes amqp:internal-error).
	OnOpen(ctx context.Context, c *Conn) error
	// OnAttach is called for every link the peer attaches. A nil return
	// accepts the link; an error refuses it with a null terminus followed by
	// a closing detach carrying the error (a *Error keeps its condition, e.g.
	// amqp:unauthorized-access; any other error becomes amqp:internal-error).
	// The handler may call [Link.SetProperties] before returning.
	OnAttach(ctx context.Context, l *Link) error
	// OnMessage is called, one delivery at a time per link and in order, for
	// each message received on a link where the server is the receiver. Its
	// outcome settles the delivery (nil means Accepted). ctx ends when the
	// link or the connection does. It runs on a goroutine per link, so it
	// may block, e.g. on [Link.Send] of another link.
	OnMessage(ctx context.Context, l *Link, d *Delivery) Outcome
	// OnDetach is called exactly once per accepted link when it ends: peer
	// detach (err is the peer's *Error or nil), server detach (the error
	// given to [Link.Detach]), session end or connection loss.
	OnDetach(l *Link, err error)
}

// HandlerFuncs implements [Handler] with optional functions: a nil OnOpen
// accepts, a nil OnAttach refuses with amqp:not-found, a nil OnMessage
// accepts every message, a nil OnDetach does nothing.
type HandlerFuncs struct {
	// Open implements OnOpen; nil accepts.
	Open func(ctx context.Context, c *Conn) error
	// Attach implements OnAttach; nil refuses with amqp:not-found.
	Attach func(ctx context.Context, l *Link) error
	// Message implements OnMessage; nil accepts every message.
	Message func(ctx context.Context, l *Link, d *Delivery) Outcome
	// Detach implements OnDetach; nil does nothing.
	Detach func(l *Link, err error)
}

// OnOpen implements [Handler].
func (h HandlerFuncs) OnOpen(ctx context.Context, c *Conn) error {
	if h.Open == nil {
		return nil
	}
	return h.Open(ctx, c)
}

// OnAttach implements [Handler].
func (h HandlerFuncs) OnAttach(ctx context.Context, l *Link) error {
	if h.Attach == nil {
		return &Error{Condition: ErrCondNotFound, Description: "no such node: " + l.Address()}
	}
	return h.Attach(ctx, l)
}

// OnMessage implements [Handler].
func (h HandlerFuncs) OnMessage(ctx context.Context, l *Link, d *Delivery) Outcome {
	if h.Message == nil {
		return &Accepted{}
	}
	return h.Message(ctx, l, d)
}

// OnDetach implements [Handler].
func (h HandlerFuncs) OnDetach(l *Link, err error) {
	if h.Detach != nil {
		h.Detach(l, err)
	}
}
