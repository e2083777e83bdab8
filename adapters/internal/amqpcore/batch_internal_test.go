package amqpcore

import (
	"testing"
)

// TestPack: batches keep the order, stay within 256 KiB and 500
// messages, and are as few as the greedy fill allows.
func TestPack(t *testing.T) {
	mk := func(n, size int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = make([]byte, size)
			out[i][0] = byte(i)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		in      [][]byte
		batches []int // messages per batch
	}{
		{"one", mk(1, 10), []int{1}},
		{"small many", mk(1200, 10), []int{500, 500, 200}},
		{"100 KiB each", mk(7, 100<<10), []int{2, 2, 2, 1}},
		{"exactly full", mk(2, MaxBatchBytes/2-batchOverhead), []int{2}},
		{"one byte over", mk(2, MaxBatchBytes/2-batchOverhead+1), []int{1, 1}},
	} {
		got := pack(tc.in)
		if len(got) != len(tc.batches) {
			t.Errorf("%s: %d batches, want %d", tc.name, len(got), len(tc.batches))
			continue
		}
		k := 0
		for i, b := range got {
			size := 0
			for _, m := range b {
				size += len(m) + batchOverhead
				if m[0] != byte(k) {
					t.Errorf("%s: message %d out of order", tc.name, k)
				}
				k++
			}
			if len(b) != tc.batches[i] || size > MaxBatchBytes {
				t.Errorf("%s: batch %d has %d messages, %d bytes", tc.name, i, len(b), size)
			}
		}
	}
}
