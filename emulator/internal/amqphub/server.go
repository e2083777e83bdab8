package amqphub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
	"github.com/iotc-go/iotc/emulator/internal/core"
	"github.com/iotc-go/iotc/emulator/internal/netlimit"
)

// Service limits and defaults of the AMQP application layer.
const (
	// DefaultMaxTelemetryBody is IoT Hub's device-to-cloud limit (256 KiB of
	// body); larger messages are rejected with amqp:resource-limit-exceeded.
	DefaultMaxTelemetryBody = 256 << 10
	// DefaultOutboxSize is how many replies, desired patches and method
	// requests may wait on one link before new ones fail with ErrBusy.
	DefaultOutboxSize = 64
	// Protocol is what DeviceConn.Protocol returns.
	Protocol = "amqp"
)

// Options configure a Server. HubHost is required; everything else has a default.
type Options struct {
	// HubHost is the hub host name (e.g. "localhost"): CBS audiences must
	// name it and SASL PLAIN user names "{deviceId}@sas.{hubName}" must name
	// it or its first label. Required.
	HubHost string
	// Engine is the template of every connection's amqp1.Config (frame size,
	// idle timeout, credit, ...). Its SASL checks, Handler, Logger and
	// PeerCertificates are set by the Server; a nil SASL.Mechanisms offers
	// MSSBCBS, ANONYMOUS, PLAIN and EXTERNAL.
	Engine amqp1.Config
	// MaxTelemetryBody is the largest device-to-cloud body accepted;
	// default DefaultMaxTelemetryBody.
	MaxTelemetryBody int
	// OutboxSize is the per-link queue of messages to the device; default
	// DefaultOutboxSize.
	OutboxSize int
	// Logger receives connection, refusal and protocol-error records; nil
	// discards. SAS tokens and payloads are never logged.
	Logger *slog.Logger
	// Reporter counts refusals and limit hits and summarises them in the
	// log; nil counts nothing.
	Reporter *netlimit.Reporter
	// EventHubs, when set, makes the Event Hubs side of each new
	// connection (see EventHubsConn); nil serves no Event Hubs node.
	EventHubs func() EventHubsConn
}

// Server is the IoT Hub and DPS application layer over AMQP 1.0: it serves
// connections with the amqp1 engine and maps CBS, telemetry,
// cloud-to-device, direct methods, twin and DPS links onto a Backend.
// It is safe for concurrent use; one Server serves any number of connections.
type Server struct {
	b    Model
	opts Options
	log  *slog.Logger
}

// NewServer returns a Server over the emulator's core m. It returns an
// error when m is nil or Options.HubHost is empty or holds '/', '?', '#',
// '@' or a space.
func NewServer(m Model, opts Options) (*Server, error) {
	if m == nil {
		return nil, errors.New("amqphub: nil Model")
	}
	if opts.HubHost == "" || strings.ContainsAny(opts.HubHost, "/?#@ ") {
		return nil, fmt.Errorf("amqphub: bad hub host %q", opts.HubHost)
	}
	if opts.MaxTelemetryBody <= 0 {
		opts.MaxTelemetryBody = DefaultMaxTelemetryBody
	}
	if opts.OutboxSize <= 0 {
		opts.OutboxSize = DefaultOutboxSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{b: m, opts: opts, log: opts.Logger}, nil
}

// ServeConn serves one AMQP connection on nc (already TLS-terminated, or a
// *tls.Conn whose handshake amqp1 completes) until it ends, then closes
// nc. peerCerts are the TLS client certificates when TLS was terminated
// outside nc (WebSockets); nil otherwise. Every goroutine ServeConn starts
// has ended when it returns, and every device session it opened is closed.
// It returns the amqp1.Serve error (nil for a clean close by the peer;
// ctx.Err() when ctx ends).
func (s *Server) ServeConn(ctx context.Context, nc net.Conn, peerCerts []*x509.Certificate) error {
	cs := &connState{
		s:       s,
		log:     s.log.With(slog.String("remote", addrString(nc.RemoteAddr()))),
		devices: map[string]*device{},
		dps:     map[string]*dpsReg{},
		links:   map[*amqp1.Link]*linkState{},
		ehLinks: map[*amqp1.Link]struct{}{},
	}
	if s.opts.EventHubs != nil {
		cs.eh = s.opts.EventHubs()
	}
	cfg := s.opts.Engine
	cfg.Handler = cs
	cfg.Logger = s.log
	cfg.PeerCertificates = peerCerts
	cfg.SASL.CheckPlain = cs.checkPlain
	cfg.SASL.CheckExternal = nil
	// Before a valid token (put-token, SASL PLAIN or a client certificate
	// accepted at attach) a connection may only reach $cbs, within the
	// engine's lower limits and deadline. With client certificates every
	// link may be attached: its attach is what authenticates the device.
	cfg.Login.Required = true
	cfg.Login.Allow = func(l *amqp1.Link) bool {
		if len(l.Conn().PeerCertificates()) > 0 {
			return true
		}
		a, err := parseAddress(l.Address())
		return err == nil && a.kind == nodeCBS
	}
	err := amqp1.Serve(ctx, nc, cfg)
	cs.shutdown()
	if cs.eh != nil {
		cs.eh.Close()
	}
	s.reportEnd(err, nc)
	return err
}

// reportEnd counts a connection that ended on a limit.
func (s *Server) reportEnd(err error, nc net.Conn) {
	kind := ""
	switch {
	case err == nil:
		return
	case errors.Is(err, amqp1.ErrLoginTimeout):
		kind = netlimit.KindAMQPLoginDeadline
	case errors.Is(err, amqp1.ErrTooManySessions):
		kind = netlimit.KindAMQPSessions
	case errors.Is(err, amqp1.ErrTooManyLinks):
		kind = netlimit.KindAMQPLinks
	case errors.Is(err, amqp1.ErrTooManyUnsettledBytes):
		kind = netlimit.KindAMQPUnsettled
	case errors.Is(err, amqp1.ErrIdleTimeout):
		kind = netlimit.KindAMQPIdle
	case errors.Is(err, amqp1.ErrSASLFailed):
		s.opts.Reporter.Refused(netlimit.KindAMQPAuth, "AMQP connection refused: SASL failed", "remote", addrString(nc.RemoteAddr()))
		return
	default:
		return
	}
	s.opts.Reporter.LimitHit(kind, "AMQP connection closed: "+err.Error(), "remote", addrString(nc.RemoteAddr()))
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// connState is the application state of one AMQP connection; it
// implements amqp1.Handler.
type connState struct {
	s   *Server
	log *slog.Logger

	conn  *amqp1.Conn // set in OnOpen
	certs []*x509.Certificate

	wg sync.WaitGroup

	mu           sync.Mutex
	closing      bool
	devices      map[string]*device // key: lower-case device id
	dps          map[string]*dpsReg // key: lower-case "scope/registrations/reg"
	links        map[*amqp1.Link]*linkState
	cbsOut       []*linkState // $cbs links where the server sends
	nextSeq      uint64
	service      time.Time   // expiry of the service's token (hub-level put-token); zero: none
	serviceTimer *time.Timer // detaches the service links at that expiry

	eh      EventHubsConn            // nil without Options.EventHubs
	ehLinks map[*amqp1.Link]struct{} // links eh accepted
}

// linkState is the application state of one accepted link.
type linkState struct {
	l       *amqp1.Link
	addr    address
	dc      *devConn // hub links
	reg     *dpsReg  // DPS links
	out     *outbox  // links where the server sends
	channel string   // com.microsoft:channel-correlation-id
	seq     uint64   // attach order, newest wins
}

// goSafe runs fn on a goroutine counted in cs.wg unless the connection is
// shutting down; it reports whether fn was started.
func (cs *connState) goSafe(fn func()) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closing {
		return false
	}
	cs.wg.Add(1)
	go func() {
		defer cs.wg.Done()
		fn()
	}()
	return true
}

// OnOpen implements amqp1.Handler.
func (cs *connState) OnOpen(_ context.Context, c *amqp1.Conn) error {
	cs.mu.Lock()
	cs.conn = c
	cs.certs = c.PeerCertificates()
	plainOK := len(cs.devices) > 0 || len(cs.dps) > 0 // SASL PLAIN succeeded
	cs.mu.Unlock()
	if plainOK {
		c.SetLoggedIn()
	}
	cs.log.Debug("amqp connection open", "container_id", c.ContainerID(), "hostname", c.Hostname(),
		"sasl", string(c.SASLMechanism()), "client_cert", len(c.PeerCertificates()) > 0)
	return nil
}

// checkPlain authenticates SASL PLAIN: a hub device ({id}@sas.{hub} + SAS)
// or a DPS registration ({scope}/registrations/{reg} + SAS).
func (cs *connState) checkPlain(ctx context.Context, cred amqp1.PlainCredentials) error {
	u, err := parsePlainUser(cred.Username)
	if err != nil {
		cs.log.Info("SASL PLAIN refused", "username", netlimit.Quote(cred.Username), "reason", "bad user name")
		return err
	}
	if u.isDPS() {
		auth, err := cs.s.b.AuthenticateDPS(u.scope, u.regID, cred.Password, nil)
		if err != nil {
			cs.log.Info("SASL PLAIN refused", "registration_id", netlimit.Quote(u.regID), "reason", netlimit.Reason(err))
			return err
		}
		cs.mu.Lock()
		cs.dps[dpsKey(u.scope, u.regID)] = &dpsReg{scope: u.scope, regID: u.regID, auth: auth}
		cs.mu.Unlock()
		return nil
	}
	if !hubNameMatches(u.hubName, cs.s.opts.HubHost) {
		err := fmt.Errorf("%w: user name names hub %q, this is %q", core.ErrUnauthorized, u.hubName, cs.s.opts.HubHost)
		cs.log.Info("SASL PLAIN refused", "device_id", netlimit.Quote(u.deviceID), "reason", "user name names another hub")
		return err
	}
	auth, err := cs.s.b.AuthenticateHub(u.deviceID, cred.Password, nil)
	if err != nil {
		cs.log.Info("SASL PLAIN refused", "device_id", netlimit.Quote(u.deviceID), "reason", netlimit.Reason(err))
		return err
	}
	cs.grantToken(u.deviceID, auth.Expiry)
	return nil
}

// OnAttach implements amqp1.Handler.
func (cs *connState) OnAttach(ctx context.Context, l *amqp1.Link) error {
	if cs.eh != nil && cs.eh.ClaimsAddress(l.Address()) {
		if err := cs.eh.Attach(ctx, l); err != nil {
			cs.s.opts.Reporter.Refused(netlimit.KindAMQPAuth, "AMQP Event Hubs link refused", "link", netlimit.Quote(l.Name()), "address", netlimit.Quote(l.Address()), "reason", netlimit.Reason(err))
			return err
		}
		cs.mu.Lock()
		cs.ehLinks[l] = struct{}{}
		cs.mu.Unlock()
		return nil
	}
	a, err := parseAddress(l.Address())
	if err == nil && a.kind != nodeDPS && a.host != "" && !hostIsHub(a.host, cs.s.opts.HubHost) {
		// DPS addresses name the provisioning endpoint the device was given
		// (global.azure-devices-provisioning.net and the like), not the hub.
		err = fmt.Errorf("%w: host %s is not this hub (%s)", ErrBadAddress, netlimit.Quote(a.host), cs.s.opts.HubHost)
	}
	if err != nil {
		cs.log.Info("link refused", "link", netlimit.Quote(l.Name()), "address", netlimit.Quote(l.Address()), "reason", "bad address")
		return &amqp1.Error{Condition: amqp1.ErrCondNotFound, Description: err.Error()}
	}
	ls := &linkState{l: l, addr: a, channel: channelOf(l)}
	cs.mu.Lock()
	cs.nextSeq++
	ls.seq = cs.nextSeq
	cs.mu.Unlock()
	switch a.kind {
	case nodeCBS:
		err = cs.attachCBS(ls)
	case nodeDPS:
		err = cs.attachDPS(ctx, ls)
	case nodeServiceC2D, nodeFeedback, nodeFileNotifications:
		err = cs.attachService(ls)
	default:
		err = cs.attachHub(ctx, ls)
	}
	if err != nil {
		cs.s.opts.Reporter.Refused(netlimit.KindAMQPAuth, "AMQP link refused", "link", netlimit.Quote(l.Name()), "address", netlimit.Quote(l.Address()), "reason", netlimit.Reason(err))
		return err
	}
	if a.kind != nodeCBS {
		// A hub or DPS link is accepted only for an authenticated device
		// or registration (token or client certificate).
		l.Conn().SetLoggedIn()
	}
	if ls.channel != "" {
		l.SetProperties(map[string]any{propChannelCorrelationID: ls.channel})
	}
	cs.log.Debug("link attached", "link", l.Name(), "node", a.kind.String(), "device_id", a.deviceID, "registration_id", a.regID)
	return nil
}

// propChannelCorrelationID pairs the two links of a method or twin channel.
const propChannelCorrelationID = "com.microsoft:channel-correlation-id"

func channelOf(l *amqp1.Link) string {
	for k, v := range l.Properties() {
		if strings.EqualFold(k, propChannelCorrelationID) {
			if s, ok := textOf(v); ok {
				return s
			}
		}
	}
	return ""
}

// OnMessage implements amqp1.Handler.
func (cs *connState) OnMessage(ctx context.Context, l *amqp1.Link, d *amqp1.Delivery) amqp1.Outcome {
	cs.mu.Lock()
	ls := cs.links[l]
	cs.mu.Unlock()
	if ls == nil {
		if cs.eh != nil && cs.ehLink(l) {
			return cs.eh.Message(ctx, l, d)
		}
		return rejected(amqp1.ErrCondIllegalState, "link is not attached")
	}
	switch ls.addr.kind {
	case nodeCBS:
		return cs.cbsRequest(ctx, d.Message)
	case nodeDPS:
		return cs.dpsRequest(ctx, ls, d.Message)
	case nodeTelemetry:
		return cs.telemetry(ctx, ls, d)
	case nodeMethods:
		return cs.methodResponse(ls, d.Message)
	case nodeTwin:
		return cs.twinRequest(ctx, ls, d.Message)
	case nodeServiceC2D:
		return cs.serviceC2D(ctx, d.Message)
	}
	return rejected(amqp1.ErrCondNotAllowed, "this node takes no messages")
}

// OnDetach implements amqp1.Handler.
func (cs *connState) OnDetach(l *amqp1.Link, _ error) {
	cs.mu.Lock()
	ls := cs.links[l]
	delete(cs.links, l)
	if _, ok := cs.ehLinks[l]; ok {
		delete(cs.ehLinks, l)
		cs.mu.Unlock()
		cs.eh.Detach(l)
		return
	}
	var changed *core.Session
	if ls != nil {
		cs.cbsOut = removeLink(cs.cbsOut, ls)
		if dc := ls.dc; dc != nil {
			delete(dc.links, l)
			if ls.addr.kind == nodeTwin && !dc.hasLinkLocked(nodeTwin, amqp1.RoleSender) {
				dc.desired = false
			}
			if !dc.ended {
				changed = dc.sess
			}
		}
	}
	cs.mu.Unlock()
	if changed != nil {
		changed.SubscriptionsChanged()
	}
}

func removeLink(list []*linkState, ls *linkState) []*linkState {
	for i, x := range list {
		if x == ls {
			return append(list[:i:i], list[i+1:]...)
		}
	}
	return list
}

// shutdown ends every device session of the connection and waits for the
// goroutines it started; called once amqp1.Serve has returned.
func (cs *connState) shutdown() {
	cs.mu.Lock()
	cs.closing = true
	if cs.serviceTimer != nil {
		cs.serviceTimer.Stop()
	}
	var sessions []*devConn
	for _, d := range cs.devices {
		if d.timer != nil {
			d.timer.Stop()
		}
		if d.cur != nil {
			sessions = append(sessions, d.cur)
		}
	}
	cs.mu.Unlock()
	for _, dc := range sessions {
		cs.endSession(dc, nil, false)
	}
	cs.wg.Wait()
}

// rejected is a rejected outcome with cond.
func rejected(cond amqp1.Symbol, desc string) amqp1.Outcome {
	return &amqp1.Rejected{Error: &amqp1.Error{Condition: cond, Description: desc}}
}

// amqpError maps a core error to the AMQP error sent to the device: the
// one place the core's error vocabulary meets AMQP's conditions.
func amqpError(err error) *amqp1.Error {
	cond := amqp1.ErrCondInternalError
	switch {
	case errors.Is(err, core.ErrUnauthorized):
		cond = amqp1.ErrCondUnauthorizedAccess
	case errors.Is(err, core.ErrNotFound):
		cond = amqp1.ErrCondNotFound
	case errors.Is(err, core.ErrTooLarge), errors.Is(err, core.ErrQuotaExceeded):
		cond = amqp1.ErrCondResourceLimitExceeded
	case errors.Is(err, core.ErrThrottled), errors.Is(err, core.ErrUnavailable):
		cond = amqp1.ErrCondServerBusy
	case errors.Is(err, core.ErrInvalid):
		cond = amqp1.ErrCondInvalidField
	case errors.Is(err, core.ErrQueueFull), errors.Is(err, core.ErrConflict):
		cond = amqp1.ErrCondResourceLimitExceeded
	}
	return &amqp1.Error{Condition: cond, Description: err.Error()}
}

// unauthorized is the attach refusal for a device without a valid token.
func unauthorized(format string, args ...any) error {
	return &amqp1.Error{Condition: amqp1.ErrCondUnauthorizedAccess, Description: fmt.Sprintf(format, args...)}
}

// now is the clock of token expiry checks.
func now() time.Time { return time.Now() }
