package contract

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// shortTokenTTL is the lifetime of the first token in the renewal cases:
// long enough to connect, short enough to keep the suite quick.
const shortTokenTTL = 5 * time.Second

// RunRenewInPlace checks, for transports whose RenewToken renews a SAS
// token on the open connection (AMQP's CBS put-token), what the app
// relies on: sends running during the renewal all succeed, the session
// outlives its first token without reconnecting, a refused token leaves
// the session as it was, and without a renewal the hub ends the session
// with an error wrapping domain.ErrUnauthorized and ErrNotConnected.
// Transports that answer domain.ErrNotSupported (MQTT) do not run it.
func RunRenewInPlace(t *testing.T, newTransport NewTransport) {
	s := Start(t, newTransport)
	t.Run("WhileSending", s.testRenewWhileSending)
	t.Run("RefusedToken", s.testRenewRefused)
	t.Run("ExpiresWithoutRenewal", s.testExpiresWithoutRenewal)
}

// connectShort opens a session for id whose token expires after
// shortTokenTTL; it returns the session and the token's expiry.
func (s *Suite) connectShort(t *testing.T, ctx context.Context, id, key string) (ports.HubSession, time.Time) {
	t.Helper()
	expiry := time.Now().Add(shortTokenTTL).Truncate(time.Second)
	tok, err := domain.BuildSAS(key, domain.HubResource(s.E.HubHost(), id), expiry, "")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := s.Tr.Connect(ctx, ports.HubConnection{Host: s.E.HubHost(), DeviceID: id, Auth: ports.Auth{SASToken: tok}}, NewRecorder())
	if err != nil {
		t.Fatalf("Connect(%s): %v", id, err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	return sess, expiry
}

// sleepUntil waits until deadline or fails the test when ctx ends first.
func sleepUntil(t *testing.T, ctx context.Context, deadline time.Time) {
	t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		t.Fatalf("waiting until %s: %v", deadline.Format(time.RFC3339), ctx.Err())
	}
}

func (s *Suite) testRenewWhileSending(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, expiry := s.connectShort(t, ctx, id, key)

	var (
		wg        sync.WaitGroup
		stop      = make(chan struct{})
		sent      atomic.Int64
		afterExp  atomic.Int64
		mu        sync.Mutex
		sendError error
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := sess.SendTelemetry(ctx, domain.Message{Body: []byte(`{"renew":1}`)}); err != nil {
					mu.Lock()
					if sendError == nil {
						sendError = err
					}
					mu.Unlock()
					return
				}
				sent.Add(1)
				if time.Now().After(expiry) {
					afterExp.Add(1)
				}
			}
		}()
	}
	renewErr := sess.RenewToken(ctx, s.HubSAS(t, id, key))
	if renewErr == nil {
		// Keep sending past the first token's expiry (and the hub's check).
		sleepUntil(t, ctx, expiry.Add(1500*time.Millisecond))
	}
	close(stop)
	wg.Wait()
	if renewErr != nil {
		t.Fatalf("RenewToken = %v, want nil", renewErr)
	}
	if sendError != nil {
		t.Fatalf("a send failed around the renewal: %v", sendError)
	}
	if sent.Load() == 0 || afterExp.Load() == 0 {
		t.Fatalf("sent %d messages, %d after the first token expired: want some of each", sent.Load(), afterExp.Load())
	}
	select {
	case <-sess.Done():
		t.Fatalf("the session ended after an in-place renewal: %v", sess.Err())
	default:
	}
	if _, err := sess.GetTwin(ctx); err != nil {
		t.Fatalf("GetTwin after the first token expired: %v", err)
	}
}

func (s *Suite) testRenewRefused(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.Connect(t, ctx, id, key)
	wrong := s.HubSAS(t, id, "d3JvbmcgZGV2aWNlIGtleSB3cm9uZyBkZXZpY2Uga2V5")
	if err := sess.RenewToken(ctx, wrong); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("RenewToken with a wrong key = %v, want ErrUnauthorized", err)
	}
	if err := sess.RenewToken(ctx, "not a token"); !errors.Is(err, domain.ErrInvalidConfig) {
		t.Fatalf("RenewToken with a malformed token = %v, want ErrInvalidConfig", err)
	}
	if err := sess.SendTelemetry(ctx, domain.Message{Body: []byte(`{"still":"alive"}`)}); err != nil {
		t.Fatalf("session unusable after a refused renewal: %v", err)
	}
	if err := sess.RenewToken(ctx, s.HubSAS(t, id, key)); err != nil {
		t.Fatalf("RenewToken after a refused one: %v", err)
	}
}

func (s *Suite) testExpiresWithoutRenewal(t *testing.T) {
	t.Parallel()
	ctx := stepContext(t)
	id, key := s.NewDevice(t)
	sess, _ := s.connectShort(t, ctx, id, key)
	recv(t, ctx, sess.Done(), "end of a session whose token expired")
	err := sess.Err()
	if !errors.Is(err, domain.ErrUnauthorized) || !errors.Is(err, domain.ErrNotConnected) {
		t.Fatalf("Err after the token expired = %v, want ErrUnauthorized and ErrNotConnected", err)
	}
	if err := sess.SendTelemetry(ctx, domain.Message{Body: []byte(`{}`)}); !errors.Is(err, domain.ErrNotConnected) {
		t.Fatalf("SendTelemetry after expiry = %v, want ErrNotConnected", err)
	}
	if err := sess.RenewToken(ctx, s.HubSAS(t, id, key)); !errors.Is(err, domain.ErrNotConnected) {
		t.Fatalf("RenewToken on a dead session = %v, want ErrNotConnected", err)
	}
}
