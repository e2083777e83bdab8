package amqpcore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/adapters/internal/wsdial"
	"github.com/iotc-go/iotc/domain"
)

// IoT Hub's AMQP error conditions beyond the standard ones.
const (
	condServerBusy = "com.microsoft:server-busy"
	condThrottled  = "com.microsoft:device-container-throttled"
	condTimeout    = "com.microsoft:timeout"
	condArgument   = "com.microsoft:argument-error"
)

// maxDescription bounds the service description quoted in an error.
const maxDescription = 256

// dialError classifies a failed dial or TLS handshake: ctx's error when
// ctx (the connect context) ended, the class domain.DiagnoseNetwork finds
// (an untrusted certificate is not retryable), otherwise a retryable error
// naming no address.
func dialError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	if d := domain.DiagnoseNetwork(err); d != err {
		return fmt.Errorf("%s: %w", what, d)
	}
	return fmt.Errorf("%s: %w", what, wsdial.Sanitize(err))
}

// connectStepError adds to the error of a connect step why the connect
// context ended: the caller's ctx (its error stays matchable) or the
// connect time-out (domain.ErrTimeout).
func connectStepError(ctx, cctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil && !errors.Is(err, ctx.Err()):
		return fmt.Errorf("%w: %w", ctx.Err(), err)
	case ctx.Err() == nil && cctx.Err() != nil && !errors.Is(err, domain.ErrTimeout):
		return fmt.Errorf("%w: connect time-out: %w", domain.ErrTimeout, err)
	}
	return err
}

// openError classifies a failed AMQP open: SASL refusals are
// domain.ErrUnauthorized; the rest as dialError.
func openError(ctx context.Context, who string, err error) error {
	var ae *goamqp.Error
	var ce *goamqp.ConnError
	switch {
	case ctx.Err() != nil:
		return dialError(ctx, who+": open", err)
	case strings.Contains(err.Error(), "SASL") && strings.Contains(err.Error(), "auth failed"):
		return fmt.Errorf("%w (%s SASL)", domain.ErrUnauthorized, who)
	case errors.As(err, &ce) && ce.RemoteErr != nil:
		return conditionError(who+": open", ce.RemoteErr)
	case errors.As(err, &ae):
		return conditionError(who+": open", ae)
	}
	return fmt.Errorf("%s: open: %w", who, wsdial.Sanitize(err))
}

// conditionError maps an AMQP error condition sent by the service to the
// domain errors: unauthorized-access → ErrUnauthorized (401), not-found →
// ErrDeviceNotFound (404), resource-limit-exceeded and message size →
// ErrMessageTooLarge (413), server-busy and throttling → ErrThrottled
// (429), timeout → ErrTimeout (504), others as a *domain.HubError.
func conditionError(op string, e *goamqp.Error) error {
	he := &domain.HubError{Op: op, Message: description(e)}
	switch string(e.Condition) {
	case string(goamqp.ErrCondUnauthorizedAccess):
		he.Status = 401
	case string(goamqp.ErrCondNotFound):
		he.Status = 404
	case string(goamqp.ErrCondResourceLimitExceeded), string(goamqp.ErrCondMessageSizeExceeded):
		he.Status = 413
	case condServerBusy, condThrottled:
		he.Status = 429
	case condTimeout:
		he.Status = 504
	case string(goamqp.ErrCondInvalidField), string(goamqp.ErrCondDecodeError), condArgument, string(goamqp.ErrCondNotAllowed), string(goamqp.ErrCondNotImplemented):
		he.Status = 400
	case string(goamqp.ErrCondIllegalState), string(goamqp.ErrCondPreconditionFailed):
		he.Status = 412
	default:
		he.Status = 500
	}
	if he.Message == "" {
		he.Message = string(e.Condition)
	} else {
		he.Message = string(e.Condition) + ": " + he.Message
	}
	return he
}

// description is the service's description of e, shortened.
func description(e *goamqp.Error) string {
	d := strings.TrimSpace(e.Description)
	if len(d) > maxDescription {
		d = d[:maxDescription] + "…"
	}
	return d
}

// deadError is the error of a session whose connection, session or link
// ended: it wraps domain.ErrNotConnected and, when the service said why,
// the domain error of its condition (an expired token:
// domain.ErrUnauthorized and domain.ErrTokenExpired).
func deadError(err error, expired bool) error {
	var remote *goamqp.Error
	var le *goamqp.LinkError
	var se *goamqp.SessionError
	var ce *goamqp.ConnError
	switch {
	case errors.As(err, &le) && le.RemoteErr != nil:
		remote = le.RemoteErr
	case errors.As(err, &se) && se.RemoteErr != nil:
		remote = se.RemoteErr
	case errors.As(err, &ce) && ce.RemoteErr != nil:
		remote = ce.RemoteErr
	}
	if remote == nil {
		return fmt.Errorf("%w: amqp connection lost: %s", domain.ErrNotConnected, lostText(err))
	}
	if remote.Condition == goamqp.ErrCondUnauthorizedAccess && expired {
		return fmt.Errorf("%w: %w: %w: the hub ended the session after the SAS token expired", domain.ErrNotConnected, domain.ErrUnauthorized, domain.ErrTokenExpired)
	}
	return fmt.Errorf("%w: the hub ended the session: %w", domain.ErrNotConnected, conditionError("hub", remote))
}

// lostText describes a local connection failure without addresses.
func lostText(err error) string {
	var ce *goamqp.ConnError
	var se *goamqp.SessionError
	var le *goamqp.LinkError
	switch {
	case errors.As(err, &ce):
		// go-amqp keeps the local cause unexported; reword its text.
		return wsdial.Scrub(ce.Error())
	case errors.As(err, &se):
		return wsdial.Scrub(se.Error())
	case errors.As(err, &le):
		return wsdial.Scrub(le.Error())
	}
	return wsdial.Sanitize(err).Error()
}

// linkFailed reports whether err means the connection, session or link is
// gone (as opposed to one refused delivery).
func linkFailed(err error) bool {
	var le *goamqp.LinkError
	var se *goamqp.SessionError
	var ce *goamqp.ConnError
	return errors.As(err, &le) || errors.As(err, &se) || errors.As(err, &ce)
}
