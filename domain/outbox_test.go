package domain

import (
	"errors"
	"testing"
)

func TestOutboxLimit(t *testing.T) {
	d := OutboxLimit{}.WithDefaults()
	if d.Messages != DefaultOutboxMessages || d.Bytes != DefaultOutboxBytes {
		t.Fatalf("defaults = %+v", d)
	}
	if l := (OutboxLimit{Messages: 5}).WithDefaults(); l.Messages != 5 || l.Bytes != DefaultOutboxBytes {
		t.Fatalf("partial defaults = %+v", l)
	}
	for _, bad := range []OutboxLimit{{Messages: -1}, {Bytes: -1}} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("Validate(%+v) = %v", bad, err)
		}
	}
	if err := (OutboxLimit{}).Validate(); err != nil {
		t.Fatal(err)
	}
	l := OutboxLimit{Messages: 3, Bytes: 100}
	cases := []struct {
		msgs  int
		bytes int64
		size  int
		full  bool
	}{
		{0, 0, 100, false},
		{0, 0, 101, true}, // one message larger than the whole budget
		{2, 50, 50, false},
		{3, 0, 1, true},
		{2, 99, 2, true},
	}
	for _, c := range cases {
		err := l.Admit(c.msgs, c.bytes, c.size)
		if got := errors.Is(err, ErrOutboxFull); got != c.full || (err != nil && !got) {
			t.Errorf("Admit(%d, %d, %d) = %v, full want %v", c.msgs, c.bytes, c.size, err, c.full)
		}
	}
}
