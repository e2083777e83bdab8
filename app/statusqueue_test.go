package app

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/iotc-go/iotc/domain"
)

// TestSlowStatusCallbackQueueIsBounded: while OnStatus is stuck, at most
// statusQueueLimit changes wait; the oldest are dropped, the newest (and
// the final Closed) are delivered, in order.
func TestSlowStatusCallbackQueueIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		release := make(chan struct{})
		var got []domain.Status
		o := e.options()
		o.OnStatus = func(s domain.Status) {
			if len(got) == 0 {
				<-release
			}
			got = append(got, s)
		}
		c := e.client(o)
		first := domain.Status{State: domain.StateConnecting}
		c.setStatus(first)
		synctest.Wait() // the callback holds the first change
		n := 3 * statusQueueLimit
		for i := range n {
			c.setStatus(domain.Status{State: domain.StateReconnecting, Reason: domain.Reason(i % 5)})
		}
		c.statusQ.mu.Lock()
		waiting := len(c.statusQ.items)
		c.statusQ.mu.Unlock()
		if waiting != statusQueueLimit {
			t.Fatalf("%d status changes waiting, want the limit %d", waiting, statusQueueLimit)
		}
		close(release)
		synctest.Wait() // every waiting change delivered
		if err := c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1+statusQueueLimit+1 {
			t.Fatalf("%d statuses delivered, want %d", len(got), 1+statusQueueLimit+1)
		}
		if got[0] != first || got[len(got)-1].State != domain.StateClosed {
			t.Errorf("delivered %v first and %v last, want the first change and Closed", got[0], got[len(got)-1])
		}
		// The survivors are the newest changes, in order.
		for i, s := range got[1 : len(got)-1] {
			want := domain.Reason((n - statusQueueLimit + i) % 5)
			if s.Reason != want {
				t.Fatalf("status %d reason %v, want %v (the newest, in order)", i+1, s.Reason, want)
			}
		}
	})
}
