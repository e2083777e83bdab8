package eventhubs

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
)

// The selector filter of a receiver's source: a described string whose
// descriptor is the symbol apache.org:selector-filter:string or its code.
const (
	selectorName = "apache.org:selector-filter:string"
	selectorCode = uint64(0x0000468C00000004)
)

// start is where a receiver starts: after (or at, when inclusive) an
// offset, a sequence number or an enqueued time; or at the end (latest).
type start struct {
	kind      startKind
	inclusive bool
	offset    int64     // startOffset; -1 is before the first event
	seq       int64     // startSeq
	time      time.Time // startTime
}

type startKind int

const (
	startOffset startKind = iota // default: offset -1 (the earliest event)
	startSeq
	startTime
	startLatest
)

var selectorRE = regexp.MustCompile(`^\s*amqp\.annotation\.(x-opt-offset|x-opt-sequence-number|x-opt-enqueued-time)\s*(>=|>|=)\s*'([^']*)'\s*$`)

// parseSelector reads the filter the Event Hubs clients send:
// "amqp.annotation.x-opt-offset > '-1'" (or '@latest', or an offset),
// "amqp.annotation.x-opt-sequence-number >= '5'",
// "amqp.annotation.x-opt-enqueued-time > '1700000000000'" (Unix ms);
// '>' is exclusive, '>=' and '=' inclusive.
func parseSelector(s string) (start, error) {
	m := selectorRE.FindStringSubmatch(s)
	if m == nil {
		return start{}, fmt.Errorf("unsupported selector filter %q", cut(s))
	}
	st := start{inclusive: m[2] != ">"}
	v := m[3]
	switch m[1] {
	case "x-opt-offset":
		if v == "@latest" {
			st.kind = startLatest
			return st, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < -1 {
			return start{}, fmt.Errorf("offset %q is not a number", cut(v))
		}
		st.kind, st.offset = startOffset, n
	case "x-opt-sequence-number":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return start{}, fmt.Errorf("sequence number %q is not a number", cut(v))
		}
		st.kind, st.seq = startSeq, n
	default:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return start{}, fmt.Errorf("enqueued time %q is not Unix milliseconds", cut(v))
		}
		st.kind, st.time = startTime, time.UnixMilli(n).UTC()
	}
	return st, nil
}

// selectorOf returns the selector filter's text of a source, "" when it
// has none.
func selectorOf(src *amqp1.Source) (string, error) {
	if src == nil {
		return "", nil
	}
	for _, e := range src.Filter {
		d, ok := e.Value.(*amqp1.Described)
		if !ok {
			if dv, ok2 := e.Value.(amqp1.Described); ok2 {
				d, ok = &dv, true
			}
		}
		if !ok {
			continue
		}
		match := false
		switch desc := d.Descriptor.(type) {
		case amqp1.Symbol:
			match = desc == selectorName
		case uint64:
			match = desc == selectorCode
		}
		if !match {
			continue
		}
		s, ok := d.Value.(string)
		if !ok {
			return "", fmt.Errorf("selector filter is a %T, want a string", d.Value)
		}
		return s, nil
	}
	return "", nil
}

// firstSeq is the sequence number a receiver starting at st reads first,
// given the partition's events now (oldest first) and its next sequence
// number.
func firstSeq(st start, events []*event, next int64) int64 {
	idx := func(keep func(*event) bool) int64 {
		i := slices.IndexFunc(events, keep)
		if i < 0 {
			return next
		}
		return events[i].seq
	}
	switch st.kind {
	case startLatest:
		return next
	case startSeq:
		if st.inclusive {
			return max(st.seq, 0)
		}
		return st.seq + 1
	case startTime:
		return idx(func(ev *event) bool {
			if st.inclusive {
				return !ev.enqueued.Before(st.time)
			}
			return ev.enqueued.After(st.time)
		})
	default:
		return idx(func(ev *event) bool {
			if st.inclusive {
				return ev.offset >= st.offset
			}
			return ev.offset > st.offset
		})
	}
}

func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
