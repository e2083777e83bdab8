package core

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FaultKind names a fault, with the values of IoT Hub's
// AzIoTHub_FaultOperationType application property.
type FaultKind string

// The Azure fault types (the official SDKs' e2e tests send them) and the
// emulator's own, which only the Go method and the REST API inject.
const (
	// FaultKillTCP closes the device's connection (socket) at once.
	FaultKillTCP FaultKind = "KillTcp"
	// FaultKillAMQPConnection closes the AMQP connection (close frame).
	FaultKillAMQPConnection FaultKind = "KillAmqpConnection"
	// FaultKillAMQPSession ends the AMQP session of the device's links.
	FaultKillAMQPSession FaultKind = "KillAmqpSession"
	// FaultKillAMQPCBSLinkReq detaches the $cbs links.
	FaultKillAMQPCBSLinkReq FaultKind = "KillAmqpCBSLinkReq"
	// FaultKillAMQPCBSLinkResp detaches the $cbs links (as Req: one pair).
	FaultKillAMQPCBSLinkResp FaultKind = "KillAmqpCBSLinkResp"
	// FaultKillAMQPD2CLink detaches the telemetry link.
	FaultKillAMQPD2CLink FaultKind = "KillAmqpD2CLink"
	// FaultKillAMQPC2DLink detaches the cloud-to-device link.
	FaultKillAMQPC2DLink FaultKind = "KillAmqpC2DLink"
	// FaultKillAMQPTwinLinkReq detaches the twin links.
	FaultKillAMQPTwinLinkReq FaultKind = "KillAmqpTwinLinkReq"
	// FaultKillAMQPTwinLinkResp detaches the twin links (as Req).
	FaultKillAMQPTwinLinkResp FaultKind = "KillAmqpTwinLinkResp"
	// FaultKillAMQPMethodReqLink detaches the direct-method links.
	FaultKillAMQPMethodReqLink FaultKind = "KillAmqpMethodReqLink"
	// FaultKillAMQPMethodRespLink detaches the direct-method links (as Req).
	FaultKillAMQPMethodRespLink FaultKind = "KillAmqpMethodRespLink"
	// FaultShutDownMQTT closes an MQTT connection and refuses the device's
	// new connections for the fault's duration.
	FaultShutDownMQTT FaultKind = "ShutDownMqtt"
	// FaultShutDownAMQP closes an AMQP connection and refuses the device's
	// new connections for the fault's duration.
	FaultShutDownAMQP FaultKind = "ShutDownAmqp"
	// FaultThrottling throttles the device for the fault's duration:
	// traffic shaping (growing latency) for the first half, then refusals
	// (MQTT: twin 429, telemetry ends the connection, CONNACK 3; AMQP:
	// com.microsoft:device-container-throttled).
	FaultThrottling FaultKind = "InvokeThrottling"
	// FaultMaxMessageQuota refuses the device's telemetry as over the
	// daily quota for the fault's duration (AMQP amqp:resource-limit-exceeded;
	// MQTT ends the connection and refuses new ones with CONNACK 3).
	FaultMaxMessageQuota FaultKind = "InvokeMaxMessageQuota"
	// FaultAuthError drops the device's connection as unauthorized and
	// refuses its credentials (401, CONNACK 5) for the fault's duration.
	FaultAuthError FaultKind = "InvokeAuthError"

	// FaultRefuseConnections refuses new connections for the duration
	// (CONNACK 3 server unavailable; AMQP com.microsoft:server-busy)
	// without touching live ones. Emulator extension.
	FaultRefuseConnections FaultKind = "RefuseConnections"
	// FaultExpireToken treats the device's current SAS token (and any
	// expiring no later) as expired now and drops what it authorized.
	// Emulator extension.
	FaultExpireToken FaultKind = "ExpireToken"
	// FaultRevokeKey revokes the device's current symmetric keys: its
	// connection drops and later connects with them get 401 until
	// ClearFaults. Emulator extension.
	FaultRevokeKey FaultKind = "RevokeKey"
)

// Names of the application properties that ask for a fault.
const (
	// PropFaultType holds the FaultKind.
	PropFaultType = "AzIoTHub_FaultOperationType"
	// PropFaultReason is "boom" (ungraceful) or "byebye" (graceful).
	PropFaultReason = "AzIoTHub_FaultOperationCloseReason"
	// PropFaultDelay is the delay in seconds (default 0).
	PropFaultDelay = "AzIoTHub_FaultOperationDelayInSecs"
	// PropFaultDuration is the duration in seconds (default DefaultFaultDuration).
	PropFaultDuration = "AzIoTHub_FaultOperationDurationInSecs"
)

// Fault limits and defaults.
const (
	// DefaultFaultDuration is the duration of a windowed fault (throttling,
	// quota, auth error, shutdown, refusal) that gives none: 5 s, the
	// default of the C# SDK's fault-injection tests.
	DefaultFaultDuration = 5 * time.Second
	// MaxFaultDelay caps a fault's delay (1 h).
	MaxFaultDelay = time.Hour
	// MaxFaultDuration caps a fault's duration (1 h).
	MaxFaultDuration = time.Hour
	// MaxShapingDelay is the latency traffic shaping adds at the end of
	// its phase (it grows linearly from 0).
	MaxShapingDelay = 500 * time.Millisecond
	// TelemetryFaultMinDelay is the least delay of a fault asked for by a
	// telemetry message, so that the message is acknowledged before it.
	TelemetryFaultMinDelay = 200 * time.Millisecond
)

// Errors of the fault switches, matched with errors.Is; front-ends map
// them to their protocol.
var (
	// ErrThrottled: the device is throttled (429; AMQP
	// com.microsoft:device-container-throttled).
	ErrThrottled = errors.New("emulator: throttled (fault injection)")
	// ErrQuotaExceeded: the device's telemetry is over quota (IoT Hub
	// 403002; AMQP amqp:resource-limit-exceeded).
	ErrQuotaExceeded = errors.New("emulator: message quota exceeded (fault injection)")
	// ErrUnavailable: new connections are refused for now (MQTT CONNACK 3;
	// AMQP com.microsoft:server-busy).
	ErrUnavailable = errors.New("emulator: connections refused (fault injection)")
)

// Fault is one fault to inject.
type Fault struct {
	// Kind is the fault type.
	Kind FaultKind
	// Graceful is the close reason "byebye" (a clean close: AMQP close or
	// detach frames); false is "boom" (ungraceful). MQTT 3.1.1 has no
	// server-side disconnect, so both close the socket there.
	Graceful bool
	// Delay is how long after the request the fault starts (default 0).
	Delay time.Duration
	// Duration is how long a windowed fault lasts (default
	// DefaultFaultDuration); one-shot kills ignore it.
	Duration time.Duration
}

// KnownFault reports whether k is a fault kind the emulator injects.
func KnownFault(k FaultKind) bool {
	switch k {
	case FaultKillTCP, FaultKillAMQPConnection, FaultKillAMQPSession, FaultKillAMQPCBSLinkReq,
		FaultKillAMQPCBSLinkResp, FaultKillAMQPD2CLink, FaultKillAMQPC2DLink, FaultKillAMQPTwinLinkReq,
		FaultKillAMQPTwinLinkResp, FaultKillAMQPMethodReqLink, FaultKillAMQPMethodRespLink,
		FaultShutDownMQTT, FaultShutDownAMQP, FaultThrottling, FaultMaxMessageQuota, FaultAuthError,
		FaultRefuseConnections, FaultExpireToken, FaultRevokeKey:
		return true
	}
	return false
}

// Validate checks the kind and bounds and fills the default duration. It
// returns an error wrapping ErrInvalid.
func (f Fault) Validate() (Fault, error) {
	if !KnownFault(f.Kind) {
		return f, fmt.Errorf("%w: unknown fault type %q", ErrInvalid, f.Kind)
	}
	if f.Delay < 0 || f.Delay > MaxFaultDelay {
		return f, fmt.Errorf("%w: fault delay %v outside 0..%v", ErrInvalid, f.Delay, MaxFaultDelay)
	}
	if f.Duration < 0 || f.Duration > MaxFaultDuration {
		return f, fmt.Errorf("%w: fault duration %v outside 0..%v", ErrInvalid, f.Duration, MaxFaultDuration)
	}
	if f.Duration == 0 {
		f.Duration = DefaultFaultDuration
	}
	return f, nil
}

// ParseFaultProperties reads the AzIoTHub_FaultOperation* application
// properties of a telemetry message. ok is false when the message asks for
// no fault; err (wrapping ErrInvalid) when it asks for one badly.
// Property names match ignoring case; a close reason other than "byebye"
// is ungraceful, as on IoT Hub ("boom").
func ParseFaultProperties(props map[string]string) (f Fault, ok bool, err error) {
	get := func(name string) (string, bool) {
		if v, ok := props[name]; ok {
			return v, true
		}
		for k, v := range props {
			if strings.EqualFold(k, name) {
				return v, true
			}
		}
		return "", false
	}
	typ, ok := get(PropFaultType)
	if !ok {
		return Fault{}, false, nil
	}
	for _, k := range []FaultKind{FaultKillTCP, FaultKillAMQPConnection, FaultKillAMQPSession, FaultKillAMQPCBSLinkReq,
		FaultKillAMQPCBSLinkResp, FaultKillAMQPD2CLink, FaultKillAMQPC2DLink, FaultKillAMQPTwinLinkReq,
		FaultKillAMQPTwinLinkResp, FaultKillAMQPMethodReqLink, FaultKillAMQPMethodRespLink,
		FaultShutDownMQTT, FaultShutDownAMQP, FaultThrottling, FaultMaxMessageQuota, FaultAuthError} {
		if strings.EqualFold(typ, string(k)) {
			f.Kind = k
		}
	}
	if f.Kind == "" {
		return Fault{}, true, fmt.Errorf("%w: unknown %s %q", ErrInvalid, PropFaultType, typ)
	}
	reason, _ := get(PropFaultReason)
	f.Graceful = strings.EqualFold(strings.TrimSpace(reason), "byebye")
	secs := func(name string) (time.Duration, error) {
		v, ok := get(name)
		if !ok || strings.TrimSpace(v) == "" {
			return 0, nil
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || n < 0 || math.IsNaN(n) || n > MaxFaultDuration.Seconds() {
			return 0, fmt.Errorf("%w: %s %q is not a number of seconds in 0..%d", ErrInvalid, name, v, int(MaxFaultDuration.Seconds()))
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	if f.Delay, err = secs(PropFaultDelay); err != nil {
		return Fault{}, true, err
	}
	if f.Duration, err = secs(PropFaultDuration); err != nil {
		return Fault{}, true, err
	}
	f, err = f.Validate()
	return f, true, err
}

// FaultLink is implemented by a Link that can inject faults beyond Drop
// (every front-end's does). The model calls it without its lock; it must
// not block.
type FaultLink interface {
	// InjectFault applies a connection fault of kind k to the live
	// connection, gracefully or not, with reason as the logged cause. It
	// returns false when k does not apply to the protocol (an AMQP link
	// kill on MQTT), in which case nothing happened.
	InjectFault(k FaultKind, graceful bool, reason error) bool
}

// Operation is what a device asks of the hub, for Admit.
type Operation int

// Operations checked by Admit.
const (
	// OpTelemetry is a device-to-cloud message.
	OpTelemetry Operation = iota
	// OpTwin is a twin GET or reported PATCH.
	OpTwin
)

// faultState holds the fault switches; the zero value has none. Its lock
// may be taken under c.mu, never the reverse, and is never held while a
// Link is called.
type faultState struct {
	mu  sync.Mutex
	dev map[string]*devFaults // "" is every device
	// lastExpiry is the expiry of each device's last accepted SAS token,
	// kept apart from devFaults so that a login costs a map entry, not a
	// record of every fault switch.
	lastExpiry map[string]time.Time
}

type devFaults struct {
	refuseUntil          time.Time // new connections refused (ErrUnavailable)
	authUntil            time.Time // credentials refused (ErrUnauthorized)
	shapeFrom, shapeTill time.Time // traffic shaping phase of a throttle
	throttleUntil        time.Time // refusal phase of a throttle, from shapeTill
	quotaUntil           time.Time // telemetry over quota
	expiredUpTo          time.Time // SAS tokens expiring at or before are expired
	revoked              map[string]bool
}

func (s *faultState) getLocked(id string) *devFaults {
	if s.dev == nil {
		s.dev = map[string]*devFaults{}
	}
	d := s.dev[id]
	if d == nil {
		d = &devFaults{}
		s.dev[id] = d
	}
	return d
}

// each calls fn with the device's switches and the global ones; s.mu held.
func (s *faultState) eachLocked(id string, fn func(*devFaults)) {
	if d := s.dev[id]; d != nil {
		fn(d)
	}
	if id != "" {
		if d := s.dev[""]; d != nil {
			fn(d)
		}
	}
}

// InjectFault schedules fault f on device id (after f.Delay) and returns at
// once. It returns ErrNotFound for an unknown device, ErrInvalid for a bad
// fault, ErrClosed after Close.
// A connection fault on a device that is offline when it fires does nothing.
func (c *Core) InjectFault(id string, f Fault) error {
	f, err := f.Validate()
	if err != nil {
		return err
	}
	if c.closed() {
		return ErrClosed
	}
	if _, err := c.Device(id); err != nil {
		return err
	}
	c.log.Info("fault requested", "device_id", id, "fault", string(f.Kind), "graceful", f.Graceful,
		"delay", f.Delay.String(), "duration", f.Duration.String())
	if f.Delay <= 0 {
		c.applyFault(id, f)
		return nil
	}
	// A timer, not a goroutine counted in c.wg: Close may be waiting on
	// c.wg already, and the callback does nothing once Close was called.
	time.AfterFunc(f.Delay, func() { c.applyFault(id, f) })
	return nil
}

// RefuseConnections refuses new hub connections of device id (every
// device when id is "") for d, leaving live ones alone. It returns
// ErrInvalid for d outside (0, MaxFaultDuration].
func (c *Core) RefuseConnections(id string, d time.Duration) error {
	if d <= 0 || d > MaxFaultDuration {
		return fmt.Errorf("%w: refusal duration %v outside (0, %v]", ErrInvalid, d, MaxFaultDuration)
	}
	c.faults.mu.Lock()
	df := c.faults.getLocked(id)
	df.refuseUntil = later(df.refuseUntil, time.Now().Add(d))
	c.faults.mu.Unlock()
	c.log.Info("refusing new connections", "device_id", id, "duration", d.String())
	return nil
}

// Throttle throttles device id (every device when id is "") for d: the
// first half shapes traffic, the rest refuses (see FaultThrottling). It
// returns ErrInvalid for d outside (0, MaxFaultDuration].
func (c *Core) Throttle(id string, d time.Duration) error {
	if d <= 0 || d > MaxFaultDuration {
		return fmt.Errorf("%w: throttle duration %v outside (0, %v]", ErrInvalid, d, MaxFaultDuration)
	}
	now := time.Now()
	c.faults.mu.Lock()
	df := c.faults.getLocked(id)
	df.shapeFrom, df.shapeTill = now, now.Add(d/2)
	df.throttleUntil = now.Add(d)
	c.faults.mu.Unlock()
	c.log.Info("throttling", "device_id", id, "duration", d.String())
	return nil
}

// ClearFaults ends every fault window of device id (the global ones when
// id is "") and restores its revoked keys and expired tokens. Scheduled
// faults still fire.
func (c *Core) ClearFaults(id string) {
	c.faults.mu.Lock()
	delete(c.faults.dev, id)
	c.faults.mu.Unlock()
	c.log.Info("faults cleared", "device_id", id)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// errFault is the reason a fault gives the connections it drops.
type errFault struct{ k FaultKind }

func (e errFault) Error() string { return "emulator: fault injected: " + string(e.k) }

// applyFault does what f asks, now.
func (c *Core) applyFault(id string, f Fault) {
	if c.closed() {
		return
	}
	now := time.Now()
	reason := errFault{f.Kind}
	drop := false // drop the connection whatever its protocol
	var keys []string
	c.mu.Lock()
	if d, ok := c.devices[id]; ok {
		keys = d.keys()
	}
	c.mu.Unlock()
	c.faults.mu.Lock()
	df := c.faults.getLocked(id)
	switch f.Kind {
	case FaultShutDownMQTT, FaultShutDownAMQP, FaultRefuseConnections:
		df.refuseUntil = later(df.refuseUntil, now.Add(f.Duration))
	case FaultThrottling:
		df.shapeFrom, df.shapeTill = now, now.Add(f.Duration/2)
		df.throttleUntil = now.Add(f.Duration)
	case FaultMaxMessageQuota:
		df.quotaUntil = later(df.quotaUntil, now.Add(f.Duration))
	case FaultAuthError:
		df.authUntil = later(df.authUntil, now.Add(f.Duration))
		drop = true
	case FaultExpireToken:
		df.expiredUpTo = later(df.expiredUpTo, later(c.faults.lastExpiry[id], now))
	case FaultRevokeKey:
		if df.revoked == nil {
			df.revoked = map[string]bool{}
		}
		for _, k := range keys {
			df.revoked[k] = true
		}
		drop = true
	}
	c.faults.mu.Unlock()

	switch f.Kind {
	case FaultThrottling, FaultMaxMessageQuota, FaultRefuseConnections:
		c.log.Info("fault active", "device_id", id, "fault", string(f.Kind), "duration", f.Duration.String())
		return // live connections stay; their traffic is refused
	}
	c.mu.Lock()
	var l Link
	if d, ok := c.devices[id]; ok {
		l = d.link
	}
	c.mu.Unlock()
	if l == nil {
		c.log.Info("fault finds the device offline", "device_id", id, "fault", string(f.Kind))
		return
	}
	if fl, ok := l.(FaultLink); ok && fl.InjectFault(f.Kind, f.Graceful, reason) {
		c.log.Info("fault injected", "device_id", id, "fault", string(f.Kind), "protocol", l.Protocol(), "graceful", f.Graceful)
		return
	}
	if drop || f.Kind == FaultKillTCP {
		c.log.Info("fault injected: connection dropped", "device_id", id, "fault", string(f.Kind), "protocol", l.Protocol())
		l.Drop(reason)
		return
	}
	c.log.Info("fault does not apply to the device's protocol; ignored", "device_id", id, "fault", string(f.Kind), "protocol", l.Protocol())
}

// telemetryFault injects the fault a telemetry message asks for, if any.
func (c *Core) telemetryFault(msg Telemetry) {
	f, ok, err := ParseFaultProperties(msg.Properties)
	if !ok {
		return
	}
	if err != nil {
		c.log.Warn("fault request ignored", "device_id", msg.DeviceID, "error", err)
		return
	}
	// The message that asks is acknowledged first: a fault that fired
	// before the ack would make the device send it, and ask, again.
	f.Delay = max(f.Delay, TelemetryFaultMinDelay)
	if err := c.InjectFault(msg.DeviceID, f); err != nil {
		c.log.Warn("fault request ignored", "device_id", msg.DeviceID, "error", err)
	}
}

// AdmitConnection reports whether device id may open a hub connection
// now: ErrUnavailable while connections are refused (refusal, shutdown),
// during a throttle's refusal phase and while over quota; nil otherwise.
func (c *Core) AdmitConnection(id string) error {
	now := time.Now()
	c.faults.mu.Lock()
	defer c.faults.mu.Unlock()
	var err error
	c.faults.eachLocked(id, func(df *devFaults) {
		switch {
		case now.Before(df.refuseUntil):
			err = fmt.Errorf("%w: device %q: retry in %v", ErrUnavailable, id, df.refuseUntil.Sub(now).Round(time.Second))
		case !now.Before(df.shapeTill) && now.Before(df.throttleUntil):
			err = fmt.Errorf("%w: %w: device %q", ErrUnavailable, ErrThrottled, id)
		case now.Before(df.quotaUntil):
			err = fmt.Errorf("%w: %w: device %q", ErrUnavailable, ErrQuotaExceeded, id)
		}
	})
	return err
}

// Admit checks one device operation against the fault switches: during a
// throttle's shaping phase it waits (up to MaxShapingDelay, growing over
// the phase; bounded by ctx and Close) and returns nil, in its refusal
// phase it returns ErrThrottled; telemetry over quota gets
// ErrQuotaExceeded. It returns nil when no fault applies.
func (c *Core) Admit(ctx context.Context, id string, op Operation) error {
	now := time.Now()
	var wait time.Duration
	var err error
	c.faults.mu.Lock()
	c.faults.eachLocked(id, func(df *devFaults) {
		switch {
		case !now.Before(df.shapeFrom) && now.Before(df.shapeTill):
			phase := df.shapeTill.Sub(df.shapeFrom)
			wait = max(wait, time.Duration(float64(MaxShapingDelay)*float64(now.Sub(df.shapeFrom))/float64(phase)))
		case !now.Before(df.shapeTill) && now.Before(df.throttleUntil):
			err = fmt.Errorf("%w: device %q", ErrThrottled, id)
		}
		if err == nil && op == OpTelemetry && now.Before(df.quotaUntil) {
			err = fmt.Errorf("%w: device %q", ErrQuotaExceeded, id)
		}
	})
	c.faults.mu.Unlock()
	if err != nil || wait <= 0 {
		return err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

// checkHubAuthFault refuses credentials during an auth-error fault, keys
// that were revoked and tokens that were expired early; on success it
// records the token's expiry (for ExpireToken). key is the key that
// verified the token ("" for X.509).
func (c *Core) checkHubAuthFault(id, key string, expiry time.Time) error {
	now := time.Now()
	c.faults.mu.Lock()
	defer c.faults.mu.Unlock()
	var err error
	c.faults.eachLocked(id, func(df *devFaults) {
		switch {
		case now.Before(df.authUntil):
			err = fmt.Errorf("%w: device %q: authentication error (fault injection)", ErrUnauthorized, id)
		case key != "" && df.revoked[key]:
			err = fmt.Errorf("%w: device %q: the key was revoked", ErrUnauthorized, id)
		case !expiry.IsZero() && !expiry.After(df.expiredUpTo):
			err = fmt.Errorf("%w: device %q: the SAS token was expired by the operator", ErrUnauthorized, id)
		}
	})
	if err == nil && !expiry.IsZero() {
		if c.faults.lastExpiry == nil {
			c.faults.lastExpiry = map[string]time.Time{}
		}
		c.faults.lastExpiry[id] = later(c.faults.lastExpiry[id], expiry)
	}
	return err
}
