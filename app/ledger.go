package app

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/iotc-go/iotc/domain"
)

// propertyLedger is the writable properties' state: the desired version
// seen, which properties the property worker is handling and at which
// version, the newest version handed to a handler, and the final
// acknowledgements given meanwhile (with AckProperty) that must not land
// before the handler's own answer.
type propertyLedger struct {
	// Only the property worker (the property queue's drainer) touches
	// lastDesired and synced.
	lastDesired int64
	synced      bool        // a twin sync succeeded on the current session
	handling    bool        // handlers of the in-flight properties are running; guarded by mu
	resync      atomic.Bool // an event was dropped: sync the twin again

	// mu guards handling and the rest.
	mu       sync.Mutex
	inflight map[string]int64 // property key -> version being handled; nil until the first property
	deferred []deferredAck
	latest   map[string]int64 // property key -> newest version handed to the handler
}

// deferredAck is a final acknowledgement given while its property was in
// flight, twice so that merging one copy leaves the other intact; done
// receives the result of reporting it.
type deferredAck struct {
	merge, alone map[string]any
	done         chan error
}

// begin marks props in flight at their versions while their handlers run.
func (l *propertyLedger) begin(props []domain.Property) {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.inflight)
	if l.inflight == nil { // made on first use: a client without writable properties holds none
		l.inflight, l.latest = map[string]int64{}, map[string]int64{}
	}
	for _, p := range props {
		k := propKey(p.Component, p.Name)
		l.inflight[k] = p.Version
		l.latest[k] = p.Version // the twin may restart versions: not a max
	}
	l.handling = true
}

// handled returns the acknowledgements deferred while the handlers ran
// and marks the handlers done; the properties stay in flight (an
// acknowledgement given now waits for the report) until finish.
func (l *propertyLedger) handled() []deferredAck {
	l.mu.Lock()
	defer l.mu.Unlock()
	final := l.deferred
	l.deferred, l.handling = nil, false
	return final
}

// finish returns the acknowledgements deferred since handled to be
// reported; when there are none, ended is true and the in-flight period
// is over.
func (l *propertyLedger) finish() (final []deferredAck, ended bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	final = l.deferred
	l.deferred, l.handling = nil, false
	if len(final) == 0 {
		clear(l.inflight)
		return nil, true
	}
	return final, false
}

// deferAck hands the acknowledgement to the property worker when p is in
// flight at its version and reports whether it did. done delivers the
// report's result; it is nil while handlers still run, because the caller
// may be the handler itself and must not wait for its own return. An
// acknowledgement older than the newest version handed to the handler
// gives domain.ErrSuperseded.
func (l *propertyLedger) deferAck(p domain.Property, ack domain.PropertyAck) (done <-chan error, deferred bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := propKey(p.Component, p.Name)
	if v, ok := l.latest[k]; ok && p.Version < v {
		return nil, false, fmt.Errorf("%w (%s version %d, newest %d)", domain.ErrSuperseded, p.Name, p.Version, v)
	}
	if v, ok := l.inflight[k]; !ok || v != p.Version {
		return nil, false, nil
	}
	d := deferredAck{merge: domain.AckPatch(p, ack), alone: domain.AckPatch(p, ack), done: make(chan error, 1)}
	l.deferred = append(l.deferred, d)
	if l.handling {
		return nil, true, nil
	}
	return d.done, true, nil
}
