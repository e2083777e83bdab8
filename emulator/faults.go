package emulator

import (
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// FaultKind names a fault: the values of IoT Hub's
// AzIoTHub_FaultOperationType application property, plus the emulator's
// own (FaultRefuseConnections, FaultExpireToken, FaultRevokeKey).
type FaultKind = core.FaultKind

// Fault is one fault to inject: its kind, whether the close is graceful
// ("byebye") or not ("boom"), the delay before it starts (default 0) and,
// for windowed faults, how long it lasts (default DefaultFaultDuration).
type Fault = core.Fault

// The fault kinds. A device asks for one with a telemetry message whose
// application properties are AzIoTHub_FaultOperationType (the kind),
// AzIoTHub_FaultOperationCloseReason ("boom" or "byebye"),
// AzIoTHub_FaultOperationDelayInSecs and
// AzIoTHub_FaultOperationDurationInSecs, as the official SDKs' e2e tests
// do against IoT Hub; tests call InjectFault and operators POST
// /api/emulator/devices/{id}/faults.
const (
	// FaultKillTCP closes the device's connection (socket).
	FaultKillTCP = core.FaultKillTCP
	// FaultKillAMQPConnection closes the AMQP connection.
	FaultKillAMQPConnection = core.FaultKillAMQPConnection
	// FaultKillAMQPSession ends the AMQP session of the device's links.
	FaultKillAMQPSession = core.FaultKillAMQPSession
	// FaultKillAMQPCBSLinkReq detaches the $cbs links.
	FaultKillAMQPCBSLinkReq = core.FaultKillAMQPCBSLinkReq
	// FaultKillAMQPCBSLinkResp detaches the $cbs links.
	FaultKillAMQPCBSLinkResp = core.FaultKillAMQPCBSLinkResp
	// FaultKillAMQPD2CLink detaches the telemetry link.
	FaultKillAMQPD2CLink = core.FaultKillAMQPD2CLink
	// FaultKillAMQPC2DLink detaches the cloud-to-device link.
	FaultKillAMQPC2DLink = core.FaultKillAMQPC2DLink
	// FaultKillAMQPTwinLinkReq detaches the twin links.
	FaultKillAMQPTwinLinkReq = core.FaultKillAMQPTwinLinkReq
	// FaultKillAMQPTwinLinkResp detaches the twin links.
	FaultKillAMQPTwinLinkResp = core.FaultKillAMQPTwinLinkResp
	// FaultKillAMQPMethodReqLink detaches the direct-method links.
	FaultKillAMQPMethodReqLink = core.FaultKillAMQPMethodReqLink
	// FaultKillAMQPMethodRespLink detaches the direct-method links.
	FaultKillAMQPMethodRespLink = core.FaultKillAMQPMethodRespLink
	// FaultShutDownMQTT closes an MQTT connection and refuses new ones for the duration.
	FaultShutDownMQTT = core.FaultShutDownMQTT
	// FaultShutDownAMQP closes an AMQP connection and refuses new ones for the duration.
	FaultShutDownAMQP = core.FaultShutDownAMQP
	// FaultThrottling throttles the device for the duration (see Throttle).
	FaultThrottling = core.FaultThrottling
	// FaultMaxMessageQuota refuses the device's telemetry as over quota for the duration.
	FaultMaxMessageQuota = core.FaultMaxMessageQuota
	// FaultAuthError drops the connection and refuses the device's credentials for the duration.
	FaultAuthError = core.FaultAuthError
	// FaultRefuseConnections refuses new connections for the duration (see RefuseConnections).
	FaultRefuseConnections = core.FaultRefuseConnections
	// FaultExpireToken expires the device's token now (see ExpireToken).
	FaultExpireToken = core.FaultExpireToken
	// FaultRevokeKey revokes the device's keys (see RevokeDeviceKey).
	FaultRevokeKey = core.FaultRevokeKey
)

// Fault limits and defaults.
const (
	// DefaultFaultDuration is the duration of a windowed fault that gives
	// none (5 s, the C# SDK e2e default).
	DefaultFaultDuration = core.DefaultFaultDuration
	// MaxFaultDuration caps fault delays and durations (1 h).
	MaxFaultDuration = core.MaxFaultDuration
	// MaxShapingDelay is the latency throttling adds at the end of its
	// shaping phase (growing linearly from 0 over the first half).
	MaxShapingDelay = core.MaxShapingDelay
)

// InjectFault schedules fault f on device id and returns at once; the
// fault starts after f.Delay. Connection kills hit the device's live
// connection (AMQP link and session kills do nothing over MQTT); windowed
// faults (throttling, quota, auth error, shutdown, refusal) last
// f.Duration. It returns ErrNotFound for an unknown device, ErrInvalid for
// an unknown kind or a delay or duration outside 0..MaxFaultDuration, and
// ErrClosed after Close.
func (e *Emulator) InjectFault(id string, f Fault) error { return e.core.InjectFault(id, f) }

// RefuseConnections refuses new hub connections of device id, or of every
// device when id is "", for d (MQTT CONNACK 3 server unavailable; AMQP
// com.microsoft:server-busy); live connections stay. It returns ErrInvalid
// for d outside (0, MaxFaultDuration].
func (e *Emulator) RefuseConnections(id string, d time.Duration) error {
	return e.core.RefuseConnections(id, d)
}

// Throttle throttles device id, or every device when id is "", for d, as
// IoT Hub does: for the first half its operations are delayed (traffic
// shaping, latency growing up to MaxShapingDelay), then refused: MQTT twin
// requests get 429, an MQTT telemetry PUBLISH ends the connection without
// PUBACK and new connections get CONNACK 3; AMQP telemetry and twin
// requests are refused with com.microsoft:server-busy / status 429. It
// returns ErrInvalid for d outside (0, MaxFaultDuration].
func (e *Emulator) Throttle(id string, d time.Duration) error { return e.core.Throttle(id, d) }

// ExpireToken treats the SAS token device id last connected with (and any
// expiring no later) as expired now: the connection it authorized drops
// (AMQP: its links detach unless a new token is put on $cbs) and later
// connects with it are refused (401); a fresh token works. It returns
// ErrNotFound and ErrClosed.
func (e *Emulator) ExpireToken(id string) error {
	return e.core.InjectFault(id, Fault{Kind: FaultExpireToken})
}

// RevokeDeviceKey revokes device id's current symmetric keys: its
// connection drops and every later connect signed with them is refused
// (401, CONNACK 5) until ClearFaults. It returns ErrNotFound and ErrClosed.
func (e *Emulator) RevokeDeviceKey(id string) error {
	return e.core.InjectFault(id, Fault{Kind: FaultRevokeKey})
}

// ClearFaults ends the fault windows of device id (the ones set for every
// device when id is "") and restores its revoked keys and expired tokens.
// Faults still waiting for their delay fire later.
func (e *Emulator) ClearFaults(id string) { e.core.ClearFaults(id) }
