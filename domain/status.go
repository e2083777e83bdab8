package domain

import "fmt"

// State is the connection state of a device client.
type State int

// Connection states, in the order a client normally walks through them.
const (
	StateDisconnected State = iota // not connected; not trying (before Connect)
	StateConnecting                // provisioning or opening a hub session
	StateConnected                 // a hub session is open
	StateReconnecting              // the session died; waiting to retry
	StateClosed                    // Close was called or retries were given up
)

func (s State) String() string {
	switch s {
	case StateDisconnected:
		return "disconnected"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Reason says why the state changed. The numeric values of the reasons
// the Python iotc client declared are kept for parity.
type Reason int

// Reasons for a state change.
const (
	ReasonNone                  Reason = 0
	ReasonExpiredToken          Reason = 1  // the SAS token was renewed by reconnecting
	ReasonDeviceDisabled        Reason = 2  // the enrollment or device is disabled
	ReasonBadCredential         Reason = 4  // the hub or DPS refused the credentials
	ReasonRetryExpired          Reason = 8  // the retry budget ran out
	ReasonNoNetwork             Reason = 16 // the host could not be reached
	ReasonCommunicationError    Reason = 32 // the session died (dropped, protocol error)
	ReasonConnectionOK          Reason = 64 // connected
	ReasonClientClose           Reason = 128
	ReasonTransportFallback     Reason = 256 // a transport failed and the next one is tried
	ReasonReprovisioned         Reason = 512 // cached credentials were refused; provisioned again
	ReasonDesiredChangedOffline Reason = 1024
	ReasonUntrustedServer       Reason = 2048 // the server's certificate failed verification
)

func (r Reason) String() string {
	switch r {
	case ReasonNone:
		return "none"
	case ReasonExpiredToken:
		return "expired SAS token"
	case ReasonDeviceDisabled:
		return "device disabled"
	case ReasonBadCredential:
		return "bad credential"
	case ReasonRetryExpired:
		return "retry expired"
	case ReasonNoNetwork:
		return "no network"
	case ReasonCommunicationError:
		return "communication error"
	case ReasonConnectionOK:
		return "connection ok"
	case ReasonClientClose:
		return "client close"
	case ReasonTransportFallback:
		return "transport fallback"
	case ReasonReprovisioned:
		return "re-provisioned"
	case ReasonDesiredChangedOffline:
		return "desired properties changed while offline"
	case ReasonUntrustedServer:
		return "server certificate not trusted"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Status is one state change reported to the status callback.
type Status struct {
	State  State
	Reason Reason
	// Err is the error behind the change, nil for normal transitions.
	Err error
	// Transport names the transport in use ("mqtt", "mqttws", ...), if known.
	Transport string
}

func (s Status) String() string {
	out := s.State.String() + " (" + s.Reason.String() + ")"
	if s.Transport != "" {
		out += " over " + s.Transport
	}
	if s.Err != nil {
		out += ": " + s.Err.Error()
	}
	return out
}
