package amqpcore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/adapters/internal/wsdial"
	"github.com/iotc-go/iotc/domain"
)

// CBS (claims-based security) vocabulary of IoT Hub.
const (
	cbsNode      = "$cbs"
	cbsReplyTo   = "cbs"
	cbsTokenType = "servicebus.windows.net:sastoken"
	cbsStatus    = "status-code"
	cbsDesc      = "status-description"
)

// cbs authenticates a session's connection with put-tokens. Its two
// links are attached for each put-token and detached after it, as the
// Azure SDK for Go does: go-amqp gives every link a goroutine and a
// 5000-slot queue (40 KiB, twice that for a receiver), too much to keep
// for a request made once an hour.
type cbs struct {
	sess *goamqp.Session
	seq  atomic.Uint64
}

// putToken presents token for audience on new $cbs links and waits for
// the answer (at most timeout). Callers serialize put-tokens. Errors:
// ErrUnauthorized (401, 403), ErrDeviceNotFound (404), *domain.HubError
// for other statuses, ErrNotConnected when the session is gone,
// ErrTimeout, ctx's error.
func (c *cbs) putToken(ctx context.Context, timeout time.Duration, audience, token string) error {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	snd, err := c.sess.NewSender(rctx, cbsNode, nil)
	if err != nil {
		return cbsError(ctx, rctx, timeout, err)
	}
	defer closeLink(ctx, snd.Close)
	rcv, err := c.sess.NewReceiver(rctx, cbsNode, &goamqp.ReceiverOptions{TargetAddress: cbsReplyTo, Credit: 1})
	if err != nil {
		return cbsError(ctx, rctx, timeout, err)
	}
	defer closeLink(ctx, rcv.Close)
	id := "put-token-" + strconv.FormatUint(c.seq.Add(1), 10)
	to, replyTo := cbsNode, cbsReplyTo
	err = snd.Send(rctx, &goamqp.Message{
		Properties: &goamqp.MessageProperties{MessageID: id, To: &to, ReplyTo: &replyTo},
		ApplicationProperties: map[string]any{
			"operation": "put-token",
			"type":      cbsTokenType,
			"name":      audience,
		},
		Value: token,
	}, nil)
	if err != nil {
		return cbsError(ctx, rctx, timeout, err)
	}
	for {
		m, err := rcv.Receive(rctx, nil)
		if err != nil {
			return cbsError(ctx, rctx, timeout, err)
		}
		_ = rcv.AcceptMessage(rctx, m)
		if correlationOf(m) != id {
			continue // the late answer of an abandoned put-token
		}
		status := 0
		if v, ok := appProp(m.ApplicationProperties, cbsStatus); ok {
			if n, ok := intOf(v); ok {
				status = int(n)
			}
		}
		desc := ""
		if v, ok := appProp(m.ApplicationProperties, cbsDesc); ok {
			desc, _ = textOf(v)
		}
		if len(desc) > maxDescription {
			desc = desc[:maxDescription]
		}
		switch {
		case status == 200 || status == 202:
			return nil
		case status == 401 || status == 403:
			return fmt.Errorf("%w: the hub refused the SAS token (CBS %d)", domain.ErrUnauthorized, status)
		case status == 404:
			return fmt.Errorf("%w: CBS 404: %s", domain.ErrDeviceNotFound, desc)
		}
		return &domain.HubError{Op: "put-token", Status: status, Message: desc}
	}
}

// closeLink detaches a CBS link, waiting for the hub's detach at most
// linkCloseTimeout and not after ctx ended (go-amqp then finishes the
// detach in the background).
func closeLink(ctx context.Context, closeFn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(ctx, linkCloseTimeout)
	defer cancel()
	_ = closeFn(ctx)
}

// linkCloseTimeout bounds the wait for the hub's detach of a CBS link.
const linkCloseTimeout = 5 * time.Second

// cbsError classifies a failed put-token send or receive.
func cbsError(ctx, rctx context.Context, timeout time.Duration, err error) error {
	var ae *goamqp.Error
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("put-token: %w", ctx.Err())
	case rctx.Err() != nil:
		return fmt.Errorf("put-token: %w: no answer within %s", domain.ErrTimeout, timeout)
	case linkFailed(err):
		return fmt.Errorf("put-token: %w", deadError(err, false))
	case errors.As(err, &ae):
		return fmt.Errorf("put-token: %w", conditionError("put-token", ae))
	}
	return fmt.Errorf("put-token: %w", wsdial.Sanitize(err))
}
