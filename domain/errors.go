package domain

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors, all of them declared here. Match them with errors.Is;
// adapters wrap them with detail. Their texts carry no "iotc:" prefix:
// package iotc adds it once to every error it returns.
var (
	// ErrNotConnected is returned by operations that need a live hub
	// session while the client is offline or reconnecting.
	ErrNotConnected = errors.New("not connected")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("client closed")
	// ErrMessageTooLarge is returned before sending a message over an IoT
	// Hub limit (256 KiB telemetry, 32 KiB twin sections, 128 KiB method
	// payloads).
	ErrMessageTooLarge = errors.New("message too large")
	// ErrUnauthorized reports refused credentials (MQTT CONNACK 4 or 5,
	// AMQP unauthorized-access, HTTP 401). It is never retried as is.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrDeviceNotFound reports a device identity the hub does not know.
	ErrDeviceNotFound = errors.New("device not found")
	// ErrThrottled reports IoT Hub or DPS throttling (status 429).
	ErrThrottled = errors.New("throttled")
	// ErrTimeout reports a request the hub did not answer in time.
	ErrTimeout = errors.New("timed out waiting for the service")
	// ErrNotSupported reports an operation the transport cannot do, such as
	// renewing a SAS token in place over MQTT.
	ErrNotSupported = errors.New("not supported by this transport")
	// ErrInvalidConfig reports a configuration that cannot work.
	ErrInvalidConfig = errors.New("invalid configuration")
	// ErrMalformed reports a service payload that cannot be parsed.
	ErrMalformed = errors.New("malformed payload")
	// Errors of the SAS functions.
	// ErrInvalidKey reports a symmetric key that is not valid base64 or is empty.
	ErrInvalidKey = errors.New("symmetric key is not valid base64")
	// ErrMalformedToken reports a SAS token that cannot be parsed.
	ErrMalformedToken = errors.New("malformed SAS token")
	// ErrTokenExpired reports a SAS token whose se lies in the past: the
	// transports join it to the end of a session the hub dropped after
	// the token expired.
	ErrTokenExpired = errors.New("SAS token expired")

	// Classes of connection failure: the transports wrap every failed
	// dial or TLS handshake with DiagnoseNetwork, so that these match with
	// errors.Is whatever the transport, and IsRetryable and the client's
	// status reasons decide on them in one place.

	// ErrUntrustedServer reports a server certificate that failed TLS
	// verification: signed by an unknown authority (Config.RootCAs does not
	// hold the server's CA), issued for another host name, expired or not
	// yet valid. It is never retried: a certificate does not mend itself.
	ErrUntrustedServer = errors.New("server certificate not trusted")
	// ErrConnectionRefused reports a host that refused the TCP connection
	// (nothing listens on the port). It is retried with the backoff.
	ErrConnectionRefused = errors.New("connection refused")
	// ErrHostNotFound reports a host name that DNS does not know. It is
	// retried with the backoff (DNS may catch up).
	ErrHostNotFound = errors.New("host not found")
	// ErrOutboxFull is returned by EnqueueTelemetry (and ports.Outbox.Append)
	// when storing the message would exceed the outbox's OutboxLimit. Nothing
	// already stored is dropped to make room; the message was not stored.
	ErrOutboxFull = errors.New("outbox full")

	// ErrOutboxDamaged is returned (wrapped, with the path) when a durable
	// outbox holds damaged records and cannot be opened safely: the damaged
	// bytes could not be moved aside to a quarantine file, so using the
	// outbox could destroy what it still holds. Damage that was moved aside
	// is not an error: it is reported by OutboxDamage.
	ErrOutboxDamaged = errors.New("outbox damaged")
	// ErrSuperseded is returned by Client.AckProperty (app) for a version older than one the
	// client has already handed to the property handler: the newer value's
	// acknowledgement stands and the stale one is not reported.
	ErrSuperseded = errors.New("a newer version of the property was received; acknowledgement not reported")
)

// HubError is a failed IoT Hub or DPS request that carries the service's
// status code (the "status" of a twin response topic, a DPS response, an
// AMQP status-code). The code is part of the API; the message is not.
type HubError struct {
	// Op names the request: "twin get", "reported patch", "register", ...
	Op string
	// Status is the service status (400, 401, 404, 429, 500, ...).
	Status int
	// Code is the service error code when one was given (401002, ...).
	Code int
	// Message is the service's own description, if any.
	Message string
}

func (e *HubError) Error() string {
	s := fmt.Sprintf("%s: status %d", e.Op, e.Status)
	if e.Code != 0 {
		s += fmt.Sprintf(" (code %d)", e.Code)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is lets errors.Is match a HubError against the sentinels that its
// status implies: 401/403 ErrUnauthorized, 404 ErrDeviceNotFound, 413
// ErrMessageTooLarge, 429 ErrThrottled, 408/504 ErrTimeout.
func (e *HubError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == 401 || e.Status == 403
	case ErrDeviceNotFound:
		return e.Status == 404
	case ErrMessageTooLarge:
		return e.Status == 413
	case ErrThrottled:
		return e.Status == 429
	case ErrTimeout:
		return e.Status == 408 || e.Status == 504
	}
	return false
}

// IsRetryable reports whether an operation that failed with err may
// succeed if tried again later on a new connection: network failures
// (refused connections and unknown hosts included), lost connections,
// timeouts, throttling and service errors (5xx) are; an untrusted server
// certificate, refused credentials, unknown devices, malformed or oversized
// requests, invalid configuration and cancellation are not. It is the one
// place where the client decides what to retry.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	switch {
	case errors.Is(err, context.Canceled),
		errors.Is(err, ErrClosed),
		errors.Is(err, ErrUntrustedServer),
		errors.Is(err, ErrUnauthorized),
		errors.Is(err, ErrDeviceNotFound),
		errors.Is(err, ErrMessageTooLarge),
		errors.Is(err, ErrInvalidConfig),
		errors.Is(err, ErrInvalidKey),
		errors.Is(err, ErrMalformed):
		return false
	}
	var he *HubError
	if errors.As(err, &he) {
		return he.Status == 408 || he.Status == 429 || he.Status >= 500
	}
	var pe *ProvisioningError
	// Network errors (net.Error) and everything else not named above are
	// retried.
	return !errors.As(err, &pe)
}
