package mqttcore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// dpsMsg is one DPS response as received.
type dpsMsg struct {
	DPSResponse
	body []byte
}

// dpsConn is one DPS registration connection.
type dpsConn struct {
	core      *Core
	cl        paho.Client
	responses chan dpsMsg
	lost      chan struct{}
	lostErr   error
	rid       atomic.Uint64
	pace      domain.DPSPacer // keeps requests within DPS's rate
}

// Provision implements ports.Provisioner: it connects to req.Host with
// client id = registration id and a clean session, registers, polls the
// operation status honouring retry-after (clamped by
// domain.ClampPollInterval; at most 100 requests), retries 429 and 5xx
// answers after their retry-after (at least domain.MinTransientRetry),
// never sends more than domain.DPSRequestLimit requests in
// domain.DPSRequestWindow, and returns the assignment.
//
// Errors: domain.ErrInvalidConfig for an incomplete request; an error
// wrapping domain.ErrUnauthorized for CONNACK 4/5 or a refused
// subscription; *domain.HubError for a 3xx/4xx DPS status (401 matches
// domain.ErrUnauthorized); *domain.ProvisioningError for a failed or
// disabled registration; domain.ErrTimeout when DPS does not answer a
// request within Config.RequestTimeout or the polls run out; ctx's error
// when ctx ends; a retryable network error when the connection drops.
func (c *Core) Provision(ctx context.Context, req ports.ProvisioningRequest) (domain.Assignment, error) {
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
	d := &dpsConn{core: c, responses: make(chan dpsMsg, 16), lost: make(chan struct{})}
	var lostOnce sync.Once
	log := c.log.With("registration_id", reg, "host", req.Host)
	log.Debug("dps: connecting")
	cl, raw, err := c.connect(ctx, connParams{
		host:     req.Host,
		clientID: reg,
		username: DPSUsername(req.IDScope, reg, c.cfg.ClientVersion),
		password: req.Auth.SASToken,
		cert:     req.Auth.Certificate,
		clean:    true,
		onLost: func(err error) {
			lostOnce.Do(func() {
				d.lostErr = err
				close(d.lost)
			})
		},
	})
	if err != nil {
		return domain.Assignment{}, fmt.Errorf("dps: %w", err)
	}
	d.cl = cl
	defer func() {
		cl.Disconnect(disconnectQuiesce)
		_ = raw.Close()
	}()
	tok := cl.Subscribe(TopicDPSResFilter, 1, d.onMessage)
	if err := wait(ctx, tok, d.lost, errConnLost); err != nil {
		return domain.Assignment{}, d.fail("subscribe", err)
	}
	if err := checkSubAck(tok, map[string]byte{TopicDPSResFilter: 1}); err != nil {
		return domain.Assignment{}, fmt.Errorf("dps: %w", err)
	}
	a, err := d.run(ctx, body)
	if err != nil {
		return domain.Assignment{}, err
	}
	log.Debug("dps: assigned", "hub", a.Hub, "device_id", a.DeviceID, "substatus", a.Substatus)
	return a, nil
}

// errConnLost stands for the dropped connection until its cause is known.
var errConnLost = errors.New("connection lost")

// fail wraps an error of step (a wait for a paho token, the connection's
// end or ctx), replacing errConnLost by the real cause. paho fails a
// subscribe or publish token only when the connection is gone ("connection
// lost before Subscribe completed", "not Connected"), often before the
// connection-lost handler has run, so a token error wraps
// domain.ErrNotConnected too: the caller may retry. No network address
// shows in the text (scrub).
func (d *dpsConn) fail(step string, err error) error {
	switch {
	case errors.Is(err, errConnLost):
		return fmt.Errorf("dps: %s: %w: connection lost: %w", step, domain.ErrNotConnected, scrub(d.lostErr))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("dps: %s: %w", step, err)
	}
	return fmt.Errorf("dps: %s: %w: %w", step, domain.ErrNotConnected, scrub(err))
}

// onMessage runs on paho's router: it acks, parses and hands off without
// blocking (a full buffer drops the response; its request then times out).
func (d *dpsConn) onMessage(_ paho.Client, m paho.Message) {
	m.Ack()
	r, err := ParseDPSResponseTopic(m.Topic())
	if err != nil {
		d.core.log.Warn("dps: ignoring message", "err", err)
		return
	}
	select {
	case d.responses <- dpsMsg{DPSResponse: r, body: m.Payload()}:
	default:
		d.core.log.Warn("dps: response buffer full; dropping", "rid", r.RID)
	}
}

// request publishes topic+rid (+suffix) and waits for the response with
// that rid.
func (d *dpsConn) request(ctx context.Context, topic, suffix string, body []byte) (dpsMsg, error) {
	rid := strconv.FormatUint(d.rid.Add(1), 10)
	d.pace.Sent(time.Now())
	tok := d.cl.Publish(topic+rid+suffix, 1, false, body)
	if err := wait(ctx, tok, d.lost, errConnLost); err != nil {
		return dpsMsg{}, d.fail("publish", err)
	}
	timer := time.NewTimer(d.core.cfg.RequestTimeout)
	defer timer.Stop()
	for {
		select {
		case r := <-d.responses:
			if r.RID == rid {
				return r, nil
			}
		case <-timer.C:
			return dpsMsg{}, fmt.Errorf("dps: %w: no response to request %s within %s", domain.ErrTimeout, rid, d.core.cfg.RequestTimeout)
		case <-ctx.Done():
			return dpsMsg{}, fmt.Errorf("dps: %w", ctx.Err())
		case <-d.lost:
			return dpsMsg{}, d.fail("wait for response", errConnLost)
		}
	}
}

// sleep waits d, ctx or the connection's end.
func (d *dpsConn) sleep(ctx context.Context, dur time.Duration) error {
	if dur <= 0 {
		return nil
	}
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("dps: %w", ctx.Err())
	case <-d.lost:
		return d.fail("wait to poll", errConnLost)
	}
}

// run registers and polls to a final answer.
func (d *dpsConn) run(ctx context.Context, registerBody []byte) (domain.Assignment, error) {
	topic, suffix, body, op := topicDPSRegister, "", registerBody, "register"
	for range maxDPSPolls {
		r, err := d.request(ctx, topic, suffix, body)
		if err != nil {
			return domain.Assignment{}, err
		}
		switch {
		case r.Status == 200 || r.Status == 202:
			st, err := domain.ParseOperationStatus(r.body)
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
			topic, suffix, body, op = topicDPSPoll, "&operationId="+domain.EscapeComponent(st.OperationID), []byte(" "), "operation status"
		case r.Status == 429 || r.Status >= 500:
			d.core.log.Debug("dps: transient status; retrying", "status", r.Status, "retryAfter", r.RetryAfter)
		default:
			return domain.Assignment{}, hubError(op, r.Status, r.body)
		}
		if err := d.sleep(ctx, d.pace.Wait(time.Now(), domain.DPSRetryWait(r.Status, r.RetryAfter))); err != nil {
			return domain.Assignment{}, err
		}
	}
	return domain.Assignment{}, fmt.Errorf("dps: %w: no final answer after %d requests", domain.ErrTimeout, maxDPSPolls)
}
