package amqpcore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/adapters/internal/wsdial"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// DPS request vocabulary over AMQP.
const (
	dpsOpType     = "iotdps-operation-type"
	dpsOpID       = "iotdps-operation-id"
	dpsOpRegister = "iotdps-register"
	dpsOpStatus   = "iotdps-get-operationstatus"
	dpsRetryAfter = "retry-after"
	dpsStatusCode = "status-code"
	// maxDPSPolls bounds the requests of one registration.
	maxDPSPolls = 100
)

// dpsLinks is one registration's request and response links.
type dpsLinks struct {
	t   *Transport
	snd *goamqp.Sender
	rcv *goamqp.Receiver
}

// dpsAnswer is one DPS answer: a 2xx response or a refused request.
type dpsAnswer struct {
	status     int
	retryAfter time.Duration
	hasRetry   bool
	body       []byte
}

// Provision implements ports.Provisioner over AMQP: it authenticates with
// SASL PLAIN ("{idScope}/registrations/{registrationId}" and the DPS SAS
// token) or with the TLS client certificate, attaches a sender and a
// receiver to {idScope}/registrations/{registrationId}, registers (body
// {"registrationId":...,"payload":{"modelId":...,custom...}}), polls the
// operation status honouring retry-after (clamped by
// domain.ClampPollInterval; at most 100 requests), re-sends after a 429
// or 5xx refusal once its retry-after has passed, and returns the
// assignment with DPS's custom payload.
//
// Errors: domain.ErrInvalidConfig for an incomplete request or bad
// options; an error wrapping domain.ErrUnauthorized when DPS refuses the
// credentials; *domain.HubError for a DPS error status;
// *domain.ProvisioningError for a failed or disabled registration;
// domain.ErrTimeout when DPS does not answer a request within
// Options.RequestTimeout or the polls run out; ctx's error when ctx ends;
// otherwise a retryable network error naming no address.
func (t *Transport) Provision(ctx context.Context, req ports.ProvisioningRequest) (domain.Assignment, error) {
	reg := req.Registration.RegistrationID
	if req.Host == "" || req.IDScope == "" || reg == "" {
		return domain.Assignment{}, fmt.Errorf("%w: provisioning needs a host, an ID scope and a registration id", domain.ErrInvalidConfig)
	}
	if req.Auth.SASToken == "" && req.Auth.Certificate == nil {
		return domain.Assignment{}, fmt.Errorf("%w: provisioning needs a SAS token or a certificate", domain.ErrInvalidConfig)
	}
	body, err := req.Registration.Body()
	if err != nil {
		return domain.Assignment{}, fmt.Errorf("%w: %w", domain.ErrInvalidConfig, err)
	}
	if err := ctx.Err(); err != nil {
		return domain.Assignment{}, fmt.Errorf("dps: %w", err)
	}
	node := req.IDScope + "/registrations/" + reg
	var sasl goamqp.SASLType
	if req.Auth.SASToken != "" {
		sasl = goamqp.SASLTypePlain(node, req.Auth.SASToken)
	}
	log := t.log.With("registration_id", reg, "host", req.Host)
	log.Debug("dps: connecting")
	cctx, cancel := context.WithTimeout(ctx, t.connTimeout)
	defer cancel()
	conn, err := t.open(cctx, req.Host, req.Auth.Certificate, sasl)
	if err != nil {
		return domain.Assignment{}, fmt.Errorf("dps: %w", connectStepError(ctx, cctx, err))
	}
	defer conn.Close()
	d := &dpsLinks{t: t}
	if err := d.attach(cctx, conn, node); err != nil {
		return domain.Assignment{}, fmt.Errorf("dps: %w", connectStepError(ctx, cctx, err))
	}
	a, err := d.run(ctx, body, log)
	if err != nil {
		return domain.Assignment{}, err
	}
	log.Debug("dps: assigned", "hub", a.Hub, "device_id", a.DeviceID, "substatus", a.Substatus)
	return a, nil
}

// attach opens the session and the registration's two links.
func (d *dpsLinks) attach(ctx context.Context, conn *goamqp.Conn, node string) error {
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		return attachError(ctx, "session", err)
	}
	props := map[string]any{propAPIVersion: dpsAPIVersion, propClientVersion: d.t.version}
	if d.snd, err = sess.NewSender(ctx, node, &goamqp.SenderOptions{Properties: props}); err != nil {
		return attachError(ctx, "attach the request link", err)
	}
	if d.rcv, err = sess.NewReceiver(ctx, node, &goamqp.ReceiverOptions{Properties: props, Credit: 4}); err != nil {
		return attachError(ctx, "attach the response link", err)
	}
	return nil
}

// attachError classifies a failed session begin or link attach.
func attachError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return dialError(ctx, what, err)
	}
	var le *goamqp.LinkError
	var se *goamqp.SessionError
	var ae *goamqp.Error
	switch {
	case errors.As(err, &le) && le.RemoteErr != nil:
		return conditionError(what, le.RemoteErr)
	case errors.As(err, &se) && se.RemoteErr != nil:
		return conditionError(what, se.RemoteErr)
	case errors.As(err, &ae):
		return conditionError(what, ae)
	case linkFailed(err):
		return fmt.Errorf("%s: %w", what, deadError(err, false))
	}
	return fmt.Errorf("%s: %w", what, wsdial.Sanitize(err))
}

// run registers and polls to a final answer.
func (d *dpsLinks) run(ctx context.Context, registerBody []byte, log interface {
	Debug(string, ...any)
}) (domain.Assignment, error) {
	props, body, op := map[string]any{dpsOpType: dpsOpRegister}, registerBody, "register"
	for range maxDPSPolls {
		ans, err := d.request(ctx, op, props, body)
		if err != nil {
			return domain.Assignment{}, err
		}
		switch {
		case ans.status >= 200 && ans.status < 300:
			st, err := domain.ParseOperationStatus(ans.body)
			if err != nil {
				return domain.Assignment{}, fmt.Errorf("dps: %s: %w", op, err)
			}
			switch st.Status {
			case domain.DPSAssigned, domain.DPSFailed, domain.DPSDisabled, domain.DPSBlacklisted:
				return st.Assignment()
			}
			if st.OperationID == "" {
				return domain.Assignment{}, fmt.Errorf("dps: %s: %w: status %q without an operationId", op, domain.ErrMalformed, st.Status)
			}
			props, body, op = map[string]any{dpsOpType: dpsOpStatus, dpsOpID: st.OperationID}, []byte(" "), "operation status"
		case ans.status == 429 || ans.status >= 500:
			log.Debug("dps: transient status; retrying", "status", ans.status, "retryAfter", ans.retryAfter)
		default:
			return domain.Assignment{}, dpsError(op, ans)
		}
		wait := domain.DefaultPollInterval
		if ans.hasRetry {
			wait = ans.retryAfter
		}
		if err := sleep(ctx, domain.ClampPollInterval(wait)); err != nil {
			return domain.Assignment{}, fmt.Errorf("dps: %w", err)
		}
	}
	return domain.Assignment{}, fmt.Errorf("dps: %w: no final answer after %d requests", domain.ErrTimeout, maxDPSPolls)
}

// dpsError is the error of a DPS refusal.
func dpsError(op string, ans dpsAnswer) error {
	he := &domain.HubError{Op: op, Status: ans.status}
	var se struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	if len(ans.body) > 0 && json.Unmarshal(ans.body, &se) == nil {
		he.Code = se.ErrorCode
		if len(se.Message) > maxDescription {
			se.Message = se.Message[:maxDescription]
		}
		he.Message = se.Message
	}
	if he.Status == 401 || he.Status == 403 {
		return fmt.Errorf("dps: %w: %w", domain.ErrUnauthorized, he)
	}
	return fmt.Errorf("dps: %w", he)
}

// request sends one DPS request and waits for its answer.
func (d *dpsLinks) request(ctx context.Context, op string, props map[string]any, body []byte) (dpsAnswer, error) {
	rctx, cancel := context.WithTimeout(ctx, d.t.reqTimeout)
	defer cancel()
	corr := newUUID().String()
	err := d.snd.Send(rctx, &goamqp.Message{
		Properties:            &goamqp.MessageProperties{MessageID: corr, CorrelationID: corr},
		ApplicationProperties: props,
		Data:                  [][]byte{body},
	}, nil)
	if err != nil {
		var ae *goamqp.Error
		switch {
		case ctx.Err() != nil:
			return dpsAnswer{}, fmt.Errorf("dps: %s: %w", op, ctx.Err())
		case rctx.Err() != nil:
			return dpsAnswer{}, fmt.Errorf("dps: %s: %w: no answer within %s", op, domain.ErrTimeout, d.t.reqTimeout)
		case errors.As(err, &ae) && !linkFailed(err):
			return refusal(ae), nil
		case linkFailed(err):
			return dpsAnswer{}, fmt.Errorf("dps: %s: %w", op, deadError(err, false))
		}
		return dpsAnswer{}, fmt.Errorf("dps: %s: %w", op, wsdial.Sanitize(err))
	}
	for {
		m, err := d.rcv.Receive(rctx, nil)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return dpsAnswer{}, fmt.Errorf("dps: %s: %w", op, ctx.Err())
			case rctx.Err() != nil:
				return dpsAnswer{}, fmt.Errorf("dps: %s: %w: no answer within %s", op, domain.ErrTimeout, d.t.reqTimeout)
			}
			return dpsAnswer{}, fmt.Errorf("dps: %s: %w", op, deadError(err, false))
		}
		_ = d.rcv.AcceptMessage(rctx, m)
		if correlationOf(m) != corr {
			continue // the late answer of an abandoned request
		}
		ans := dpsAnswer{status: 200, body: bodyOf(m)}
		if v, ok := appProp(m.ApplicationProperties, dpsStatusCode); ok {
			if n, ok := intOf(v); ok {
				ans.status = int(n)
			}
		}
		if v, ok := appProp(m.ApplicationProperties, dpsRetryAfter); ok {
			if n, ok := intOf(v); ok && n >= 0 {
				ans.retryAfter, ans.hasRetry = time.Duration(n)*time.Second, true
			}
		}
		if ans.status == 200 {
			// DPS answers 202 while assigning; the body's status says which.
			if st, err := domain.ParseOperationStatus(ans.body); err == nil && st.Status == domain.DPSAssigning {
				ans.status = 202
			}
		}
		return ans, nil
	}
}

// refusal turns a rejected DPS request into an answer: the status-code
// and retry-after of the error info, else the condition's status.
func refusal(ae *goamqp.Error) dpsAnswer {
	ans := dpsAnswer{body: []byte(ae.Description)}
	if v, ok := appProp(ae.Info, dpsStatusCode); ok {
		if n, ok := intOf(v); ok {
			ans.status = int(n)
		}
	}
	if v, ok := appProp(ae.Info, dpsRetryAfter); ok {
		if n, ok := intOf(v); ok && n >= 0 {
			ans.retryAfter, ans.hasRetry = time.Duration(n)*time.Second, true
		}
	}
	if ans.status == 0 {
		var he *domain.HubError
		if errors.As(conditionError("dps", ae), &he) {
			ans.status = he.Status
		}
	}
	return ans
}

// sleep waits d or ctx.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
