package faults

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator"
	"github.com/iotc-go/iotc/internal/longtest"
)

// The Azure fault-injection messages, sent by the SDK through the
// emulator on every transport, as the official SDKs' e2e tests do against
// IoT Hub: the client must see the fault (a status change with a reason
// within 10 s), be connected again within the fault's duration + 10 s,
// and lose no acknowledged message.

const recoveryBuffer = 10 * time.Second

// azureEnv is one emulator and one SDK client connected to it.
type azureEnv struct {
	t      *testing.T
	emu    *emulator.Emulator
	client *iotc.Client
	id     string

	mu       sync.Mutex
	statuses []iotc.Status
	changed  chan struct{} // closed and replaced at each status
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newAzureEnv(t *testing.T, tr iotc.Transport, id string) *azureEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emu, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", RetryAfter: -1, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	var port int
	switch tr {
	case iotc.MQTT:
		port = portOf(t, emu.MQTTAddr())
	case iotc.AMQP:
		port = portOf(t, emu.AMQPAddr())
	default:
		port = portOf(t, emu.WebSocketAddr())
	}
	env := &azureEnv{t: t, emu: emu, id: id, changed: make(chan struct{})}
	client, err := iotc.New(iotc.Config{
		DeviceID:         id,
		IDScope:          emu.IDScope(),
		Credential:       iotc.GroupKey(emu.GroupKey()),
		ProvisioningHost: "localhost",
		Transport:        tr,
		Port:             port,
		RootCAs:          emu.CAPool(),
		Backoff:          iotc.Backoff{Base: 200 * time.Millisecond, Cap: time.Second},
		OnStatus:         env.onStatus,
	})
	if err != nil {
		t.Fatal(err)
	}
	env.client = client
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if err := client.Connect(cctx, nil); err != nil {
		_ = client.Close(context.Background())
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = client.Close(context.Background()) })
	return env
}

func (e *azureEnv) onStatus(s iotc.Status) {
	e.mu.Lock()
	e.statuses = append(e.statuses, s)
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
}

// waitStatus waits until a status after index from matches ok and returns
// its index, failing the test after within.
func (e *azureEnv) waitStatus(from int, within time.Duration, what string, ok func(iotc.Status) bool) (int, iotc.Status) {
	e.t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		e.mu.Lock()
		for i := from; i < len(e.statuses); i++ {
			if ok(e.statuses[i]) {
				s := e.statuses[i]
				e.mu.Unlock()
				return i, s
			}
		}
		ch := e.changed
		seen := append([]iotc.Status(nil), e.statuses[from:]...)
		e.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			e.t.Fatalf("%s: not within %v; statuses since the fault: %+v", what, within, seen)
		}
	}
}

func (e *azureEnv) nStatuses() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.statuses)
}

// sendLoop sends numbered messages until stop is closed and returns the
// acknowledged sequence numbers and the errors.
type sendLoop struct {
	stop  chan struct{}
	done  chan struct{}
	acked []int
	errs  []error
}

func (e *azureEnv) startSending(every time.Duration) *sendLoop {
	l := &sendLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for n := 1; ; n++ {
			select {
			case <-l.stop:
				return
			case <-tk.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			err := e.client.SendTelemetry(ctx, map[string]any{"n": n}, &iotc.TelemetryOptions{Properties: map[string]string{"seq": strconv.Itoa(n)}})
			cancel()
			if err != nil {
				l.errs = append(l.errs, err)
			} else {
				l.acked = append(l.acked, n)
			}
		}
	}()
	return l
}

func (l *sendLoop) finish() {
	close(l.stop)
	<-l.done
}

// checkNothingLost asserts every acknowledged message reached the emulator.
func (e *azureEnv) checkNothingLost(acked []int) {
	e.t.Helper()
	hist, err := e.emu.TelemetryHistory(e.id, emulator.TelemetryFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	got := map[string]bool{}
	for _, m := range hist {
		got[m.Properties["seq"]] = true
	}
	for _, n := range acked {
		if !got[strconv.Itoa(n)] {
			e.t.Errorf("message %d acknowledged but never received", n)
		}
	}
	if len(acked) == 0 {
		e.t.Error("no message was acknowledged")
	}
}

// sendFault sends the fault-injection message through the SDK.
func (e *azureEnv) sendFault(kind, reason string, delay, duration int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := e.client.SendTelemetry(ctx, map[string]any{"fault": kind}, &iotc.TelemetryOptions{Properties: map[string]string{
		"AzIoTHub_FaultOperationType":           kind,
		"AzIoTHub_FaultOperationCloseReason":    reason,
		"AzIoTHub_FaultOperationDelayInSecs":    strconv.Itoa(delay),
		"AzIoTHub_FaultOperationDurationInSecs": strconv.Itoa(duration),
	}})
	if err != nil {
		e.t.Fatalf("fault message: %v", err)
	}
}

var transports = []struct {
	name string
	tr   iotc.Transport
	amqp bool
}{
	{"MQTT", iotc.MQTT, false},
	{"MQTTWS", iotc.MQTTWebSockets, false},
	{"AMQP", iotc.AMQP, true},
	{"AMQPWS", iotc.AMQPWebSockets, true},
}

// TestAzureDisconnectFaults: each connection-killing fault over each
// transport it applies to. The client reports the loss (Reconnecting or
// Disconnected, with a reason) within 10 s and is Connected again within
// duration + 10 s; nothing acknowledged is lost and no send fails.
func TestAzureDisconnectFaults(t *testing.T) {
	t.Parallel() // the top-level tests wait on faults together
	mqttFaults := []struct{ kind, reason string }{
		{"KillTcp", "boom"}, {"KillTcp", "byebye"}, {"ShutDownMqtt", "byebye"},
	}
	amqpFaults := []struct{ kind, reason string }{
		{"KillTcp", "boom"}, {"KillAmqpConnection", "byebye"}, {"KillAmqpSession", "boom"},
		{"KillAmqpD2CLink", "boom"}, {"KillAmqpC2DLink", "boom"},
		{"KillAmqpTwinLinkReq", "boom"}, {"KillAmqpMethodReqLink", "boom"}, {"ShutDownAmqp", "byebye"},
	}
	const duration = 2
	for _, tp := range transports {
		faults := mqttFaults
		if tp.amqp {
			faults = amqpFaults
		}
		for i, f := range faults {
			t.Run(tp.name+"/"+f.kind+"/"+f.reason, func(t *testing.T) {
				if i > 0 {
					longtest.Require(t) // the default run: one fault per transport
				}
				t.Parallel()
				env := newAzureEnv(t, tp.tr, "azure-fault")
				loop := env.startSending(100 * time.Millisecond)
				from := env.nStatuses()
				env.sendFault(f.kind, f.reason, 0, duration)
				i, lost := env.waitStatus(from, recoveryBuffer, "the fault reported", func(s iotc.Status) bool {
					return s.State != iotc.StateConnected
				})
				if lost.Reason == iotc.ReasonNone && lost.Err == nil {
					t.Errorf("loss reported without a reason: %+v", lost)
				}
				env.waitStatus(i, duration*time.Second+recoveryBuffer, "connected again", func(s iotc.Status) bool {
					return s.State == iotc.StateConnected
				})
				// A few messages on the new session, then stop.
				time.Sleep(500 * time.Millisecond)
				loop.finish()
				for _, err := range loop.errs {
					t.Errorf("send failed: %v", err)
				}
				env.checkNothingLost(loop.acked)
			})
		}
	}
}

// TestKillCBSLinkGoesUnnoticed: KillAmqpCBSLinkReq detaches the $cbs
// links. The SDK keeps its session (it only needs $cbs to renew the
// token, and reattaches it then): no status change, telemetry flows.
func TestKillCBSLinkGoesUnnoticed(t *testing.T) {
	t.Parallel() // the top-level tests wait on faults together
	for _, tp := range transports[2:] {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			env := newAzureEnv(t, tp.tr, "azure-cbs")
			from := env.nStatuses()
			env.sendFault("KillAmqpCBSLinkReq", "boom", 0, 2)
			time.Sleep(time.Second) // the fault fires 200 ms after its message
			loop := env.startSending(50 * time.Millisecond)
			time.Sleep(time.Second)
			loop.finish()
			for _, err := range loop.errs {
				t.Errorf("send failed: %v", err)
			}
			env.checkNothingLost(loop.acked)
			if n := env.nStatuses(); n != from {
				t.Logf("status changes after the CBS kill: %d", n-from)
			}
		})
	}
}

// TestAzureThrottlingSurvived: InvokeThrottling (3 s) over each
// transport. Over MQTT the hub ends the connection on a throttled PUBLISH
// and refuses reconnects (CONNACK 3) until the window ends: the client
// reconnects and re-sends, so no send fails. Over AMQP the hub rejects
// throttled messages with com.microsoft:server-busy while the session
// survives: the client tries them again after its backoff, so no send
// fails there either (the sends have a 5 s context, longer than the 3 s
// window). Either way the client is connected after the window, sends
// succeed again and nothing acknowledged is lost.
func TestAzureThrottlingSurvived(t *testing.T) {
	t.Parallel() // the top-level tests wait on faults together
	for _, tp := range transports {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			env := newAzureEnv(t, tp.tr, "azure-throttle")
			loop := env.startSending(100 * time.Millisecond)
			env.sendFault("InvokeThrottling", "boom", 0, 3)
			time.Sleep(4 * time.Second) // the 3 s window, then a little more
			loop.finish()
			for _, err := range loop.errs {
				t.Errorf("send failed under throttling: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), recoveryBuffer)
			defer cancel()
			if err := env.client.SendTelemetry(ctx, map[string]any{"after": true}, nil); err != nil {
				t.Fatalf("send after the throttling window: %v", err)
			}
			if s := env.client.Status(); s.State != iotc.StateConnected {
				t.Fatalf("status after throttling: %+v", s)
			}
			env.checkNothingLost(loop.acked)
		})
	}
}

// TestAzureAuthErrorNotRetried: InvokeAuthError over each transport ends
// the client (Closed, ReasonBadCredential) instead of retrying it as a
// transient error, and a send then fails at once.
func TestAzureAuthErrorNotRetried(t *testing.T) {
	t.Parallel() // the top-level tests wait on faults together
	for _, tp := range transports {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			env := newAzureEnv(t, tp.tr, "azure-auth")
			from := env.nStatuses()
			env.sendFault("InvokeAuthError", "boom", 0, 60)
			_, s := env.waitStatus(from, recoveryBuffer+5*time.Second, "gave up on the auth error", func(s iotc.Status) bool {
				return s.State == iotc.StateClosed
			})
			if s.Reason != iotc.ReasonBadCredential || !errors.Is(s.Err, iotc.ErrUnauthorized) {
				t.Fatalf("final status %+v, want Closed with ReasonBadCredential and ErrUnauthorized", s)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := env.client.SendTelemetry(ctx, map[string]any{"after": true}, nil); err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("send after giving up: %v, want an immediate error", err)
			}
		})
	}
}

// TestAzureQuotaExceeded: InvokeMaxMessageQuota (2 s) over each
// transport. Over MQTT the hub closes the connection on telemetry and
// refuses reconnects until the window ends: the client re-sends and no
// send fails. Over AMQP the hub rejects telemetry with
// amqp:resource-limit-exceeded and the session stays: those sends fail
// fast with an error that is not retried (the C# e2e tests expect
// DeviceMaximumQueueDepthExceededException). Afterwards sends succeed
// and nothing acknowledged is lost.
func TestAzureQuotaExceeded(t *testing.T) {
	t.Parallel() // the top-level tests wait on faults together
	for _, tp := range transports {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			env := newAzureEnv(t, tp.tr, "azure-quota")
			loop := env.startSending(100 * time.Millisecond)
			env.sendFault("InvokeMaxMessageQuota", "boom", 0, 2)
			time.Sleep(3 * time.Second) // the 2 s window, then a little more
			loop.finish()
			for _, err := range loop.errs {
				if !tp.amqp {
					t.Errorf("send failed over quota: %v", err)
				} else if domain.IsRetryable(err) {
					t.Errorf("over-quota send failed with a retryable error: %v", err)
				}
			}
			if tp.amqp && len(loop.errs) == 0 {
				t.Error("no send was refused over quota on AMQP")
			}
			ctx, cancel := context.WithTimeout(context.Background(), recoveryBuffer)
			defer cancel()
			if err := env.client.SendTelemetry(ctx, map[string]any{"after": true}, nil); err != nil {
				t.Fatalf("send after the quota window: %v", err)
			}
			env.checkNothingLost(loop.acked)
		})
	}
}
