package notify

import (
	"testing"
	"time"
)

// Add runs its function once Fire is called, not before; a
// stopped one never runs; one added after Fire runs at once.
func TestOnEnd(t *testing.T) {
	var s OnEnd
	ran := make(chan string, 3)
	s.Add(func() { ran <- "first" })
	stop := s.Add(func() { ran <- "stopped" })
	if !stop() {
		t.Fatal("stop before the end reported false")
	}
	if stop() {
		t.Fatal("a second stop reported true")
	}
	select {
	case f := <-ran:
		t.Fatalf("%q ran before the session ended", f)
	default:
	}
	s.Fire()
	s.Fire() // a second Fire starts nothing again
	if got := <-ran; got != "first" {
		t.Fatalf("ran %q", got)
	}
	if stopLate := s.Add(func() { ran <- "late" }); stopLate() {
		t.Fatal("stop after the end reported true")
	}
	if got := <-ran; got != "late" {
		t.Fatalf("ran %q", got)
	}
	select {
	case f := <-ran:
		t.Fatalf("%q ran too", f)
	case <-time.After(50 * time.Millisecond): // nothing more may come (not a timing assertion on speed)
	}
}
