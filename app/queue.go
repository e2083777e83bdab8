package app

import (
	"context"
	"sync"
)

// queue is a bounded FIFO served by one goroutine. push never blocks.
type queue[T any] struct {
	mu     sync.Mutex
	items  []T
	limit  int // 0 = unbounded
	closed bool
	wake   chan struct{}
}

func newQueue[T any](limit int) *queue[T] {
	return &queue[T]{limit: limit, wake: make(chan struct{}, 1)}
}

// push appends v; it reports false when the queue is full or closed.
func (q *queue[T]) push(v T) bool {
	q.mu.Lock()
	if q.closed || (q.limit > 0 && len(q.items) >= q.limit) {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// close stops accepting items; run returns once the queue is drained.
func (q *queue[T]) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run calls fn for each item in order until ctx ends (pending items are
// dropped) or the queue is closed and drained.
func (q *queue[T]) run(ctx context.Context, fn func(T)) {
	for {
		if ctx.Err() != nil {
			return
		}
		q.mu.Lock()
		if len(q.items) == 0 {
			closed := q.closed
			q.mu.Unlock()
			if closed {
				return
			}
			select {
			case <-q.wake:
			case <-ctx.Done():
				return
			}
			continue
		}
		v := q.items[0]
		var zero T
		q.items[0] = zero
		q.items = q.items[1:]
		if len(q.items) == 0 {
			q.items = nil
		}
		q.mu.Unlock()
		fn(v)
	}
}
