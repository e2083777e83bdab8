// Package notify holds what the adapters' hub sessions share to implement
// ports.DoneNotifier: functions registered to run when the session ends.
package notify

import "sync"

// OnEnd is a set of functions to start when a session ends. The zero
// value is ready to use; it is safe for concurrent use.
type OnEnd struct {
	mu    sync.Mutex
	ended bool
	fns   []*func()
}

// Add arranges for f to run on a goroutine of its own when Fire is
// called, or at once when it already was. stop removes f; it reports
// false when f was already started or removed.
func (o *OnEnd) Add(f func()) (stop func() bool) {
	p := &f
	o.mu.Lock()
	if o.ended {
		o.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	o.fns = append(o.fns, p)
	o.mu.Unlock()
	return func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		for i, q := range o.fns {
			if q == p {
				o.fns = append(o.fns[:i], o.fns[i+1:]...)
				if len(o.fns) == 0 {
					o.fns = nil // an idle session keeps no slice
				}
				return true
			}
		}
		return false
	}
}

// Fire starts every function added, each on a goroutine of its own, and
// makes later Adds start theirs at once. Calls after the first do nothing.
func (o *OnEnd) Fire() {
	o.mu.Lock()
	if o.ended {
		o.mu.Unlock()
		return
	}
	o.ended = true
	fns := o.fns
	o.fns = nil
	o.mu.Unlock()
	for _, f := range fns {
		go (*f)()
	}
}
