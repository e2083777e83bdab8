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
//
// Why a goroutine id: Close promises two things that only the calling
// goroutine's identity tells apart. Called from any callback (a property,
// command or cloud-message handler, or OnStatus, which has no ctx), with
// the handler's ctx or any other, it must not deadlock: it starts the
// shutdown and returns. Called from anywhere else it must wait for every
// handler still running. Both are the same client state (a callback runs,
// Close is called), and Go gives a goroutine no identity of its own: a
// context value reaches only the callers that pass the handler's ctx
// (TestCloseFromCallbacks calls Close(context.Background()) from a
// handler and from OnStatus), and not waiting for handlers would break
// "every goroutine the client started ends before Close returns". So the
// id is read from the goroutine's stack header (runtime.Stack), only on
// entering a callback goroutine (once per drainer run, not per event) and
// in Close.
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
		if len(cb.ids) == 0 {
			cb.ids = nil // an idle client keeps no map
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
