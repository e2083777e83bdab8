package app

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
)

// callbacks records which goroutines run the user's code (handlers and the
// status callback), so that Close called from one of them does not wait
// for its own goroutine.
type callbacks struct {
	mu  sync.Mutex
	ids map[uint64]int
}

// enter marks the calling goroutine; the returned func unmarks it.
func (cb *callbacks) enter() func() {
	id := goroutineID()
	cb.mu.Lock()
	if cb.ids == nil {
		cb.ids = map[uint64]int{}
	}
	cb.ids[id]++
	cb.mu.Unlock()
	return func() {
		cb.mu.Lock()
		if cb.ids[id]--; cb.ids[id] <= 0 {
			delete(cb.ids, id)
		}
		cb.mu.Unlock()
	}
}

// inside reports whether the calling goroutine is a callback goroutine.
func (cb *callbacks) inside() bool {
	id := goroutineID()
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return cb.ids[id] > 0
}

// goroutineID reads the calling goroutine's id from its stack header
// ("goroutine 42 [running]:"). It is only used to recognise the client's
// own callback goroutines; 0 means unknown.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
