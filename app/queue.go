package app

import (
	"context"
	"math"
	"sync"
)

// queue is a bounded FIFO served by at most one goroutine at a time, which
// runs only while the queue holds work: an idle client costs no goroutine
// here, and a failed Connect leaves none behind. push never blocks.
type queue[T any] struct {
	done  <-chan struct{} // the drainer stops (dropping what is left) when it is closed; ctx.Done() of init's ctx
	fn    func(T)
	hooks *callbacks // records the drainer as a callback goroutine; may be nil

	mu         sync.Mutex
	items      []T
	limit      int32 // at most this many items (0 = unbounded); beside the flags, so that a queue fits 80 bytes
	closed     bool
	running    bool
	dropOldest bool // when full, push drops the oldest item instead of the new one
	wg         sync.WaitGroup
}

// init sets up a zero queue in place (a queue lives inside its Client,
// with no allocation of its own).
func (q *queue[T]) init(ctx context.Context, limit int, hooks *callbacks, fn func(T)) {
	q.done, q.fn, q.hooks, q.limit = ctx.Done(), fn, hooks, int32(min(limit, math.MaxInt32))
}

// push appends v and starts the drainer if none runs; it reports false
// when the queue is stopped, or full: then v is dropped, or with
// dropOldest the oldest waiting item is dropped and v appended.
func (q *queue[T]) push(v T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	ok := true
	if q.limit > 0 && len(q.items) >= int(q.limit) {
		if !q.dropOldest {
			return false
		}
		var zero T
		q.items[0] = zero
		q.items = q.items[1:]
		ok = false
	}
	q.items = append(q.items, v)
	if !q.running {
		q.running = true
		q.wg.Add(1)
		go q.drain()
	}
	return ok
}

// stop refuses new items and waits for the drainer, which finishes the
// items already queued unless init's ctx has ended.
func (q *queue[T]) stop() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.wg.Wait()
}

func (q *queue[T]) drain() {
	defer q.wg.Done()
	if q.hooks != nil {
		leave := q.hooks.enter()
		defer leave()
	}
	for {
		q.mu.Lock()
		if len(q.items) == 0 || q.ended() {
			q.items = nil
			q.running = false
			q.mu.Unlock()
			return
		}
		v := q.items[0]
		var zero T
		q.items[0] = zero
		q.items = q.items[1:]
		q.mu.Unlock()
		q.fn(v)
	}
}

// ended reports whether init's ctx has ended (a nil done, as
// context.Background's, never does).
func (q *queue[T]) ended() bool {
	select {
	case <-q.done:
		return true
	default:
		return false
	}
}
