package eventhubs

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// fakeModel records what the endpoint stages and hands back stored records.
type fakeModel struct {
	mu      sync.Mutex
	staged  []core.Change
	stored  []core.Record
	sink    core.TelemetrySink
	notify  core.NotificationSink
	failErr error
}

func (m *fakeModel) Policies() []core.SharedAccessPolicy { return nil }
func (m *fakeModel) SetTelemetrySink(s core.TelemetrySink) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sink = s
}
func (m *fakeModel) SetNotificationSink(s core.NotificationSink) { m.notify = s }
func (m *fakeModel) StageEvents(changes []core.Change) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr != nil {
		return m.failErr
	}
	m.staged = append(m.staged, changes...)
	return nil
}
func (m *fakeModel) StoredEvents() []core.Record { return m.stored }

// records applies the staged changes like a store and returns what it keeps.
func (m *fakeModel) records() []core.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []core.Record
	for _, ch := range m.staged {
		r := ch.Record
		switch ch.Op {
		case core.OpPut:
			kept := out[:0]
			for _, o := range out {
				if o.Device != r.Device || o.Seq != r.Seq {
					kept = append(kept, o)
				}
			}
			out = append(kept, r)
		case core.OpTrim:
			kept := out[:0]
			for _, o := range out {
				if o.Device != r.Device || o.Seq > r.Seq {
					kept = append(kept, o)
				}
			}
			out = kept
		}
	}
	return out
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want start
	}{
		{"amqp.annotation.x-opt-offset > '-1'", start{kind: startOffset, offset: -1}},
		{"amqp.annotation.x-opt-offset >= '120'", start{kind: startOffset, offset: 120, inclusive: true}},
		{"amqp.annotation.x-opt-offset > '@latest'", start{kind: startLatest}},
		{"amqp.annotation.x-opt-sequence-number > '5'", start{kind: startSeq, seq: 5}},
		{"amqp.annotation.x-opt-sequence-number = '5'", start{kind: startSeq, seq: 5, inclusive: true}},
		{"amqp.annotation.x-opt-enqueued-time > '1700000000000'", start{kind: startTime, time: time.UnixMilli(1700000000000).UTC()}},
	} {
		got, err := parseSelector(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "x-opt-offset > '1'", "amqp.annotation.x-opt-offset > 'abc'", "amqp.annotation.x-opt-offset < '1'",
		"amqp.annotation.x-opt-sequence-number > ''", "amqp.annotation.x-opt-enqueued-time > 'yesterday'", "amqp.annotation.x-opt-offset > '-2'"} {
		if _, err := parseSelector(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestFirstSeq(t *testing.T) {
	t0 := time.Unix(1000, 0)
	evs := []*event{{seq: 3, offset: 300, enqueued: t0}, {seq: 4, offset: 400, enqueued: t0.Add(time.Second)}, {seq: 5, offset: 500, enqueued: t0.Add(2 * time.Second)}}
	for _, tc := range []struct {
		st   start
		want int64
	}{
		{start{kind: startOffset, offset: -1}, 3},
		{start{kind: startOffset, offset: 400}, 5},
		{start{kind: startOffset, offset: 400, inclusive: true}, 4},
		{start{kind: startOffset, offset: 999}, 6},
		{start{kind: startLatest}, 6},
		{start{kind: startSeq, seq: 4}, 5},
		{start{kind: startSeq, seq: 4, inclusive: true}, 4},
		{start{kind: startTime, time: t0}, 4},
		{start{kind: startTime, time: t0, inclusive: true}, 3},
		{start{kind: startTime, time: t0.Add(time.Hour)}, 6},
	} {
		if got := firstSeq(tc.st, evs, 6); got != tc.want {
			t.Errorf("%+v: %d, want %d", tc.st, got, tc.want)
		}
	}
}

// TestRetention: a partition keeps RetentionCount events and none older
// than RetentionAge; the store gets the trims; a restart restores what is
// kept with its sequence numbers and offsets.
func TestRetention(t *testing.T) {
	m := &fakeModel{}
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	e, err := New(m, Options{Host: "localhost", HubName: "hub", Partitions: 1, RetentionCount: 3, RetentionAge: time.Minute, Durable: true, now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	send := func(n int) {
		for range n {
			// The core stages what the sink returns with the message.
			changes := m.sink(core.Telemetry{DeviceID: "d", Body: []byte("{}"), Received: clk.t}, "1")
			m.staged = append(m.staged, changes...)
		}
	}
	send(5)
	pi, err := e.Partition("hub", "0")
	if err != nil || pi.BeginSeq != 2 || pi.LastSeq != 4 || pi.Empty {
		t.Fatalf("after 5 events with retention 3: %+v, %v", pi, err)
	}
	clk.t = clk.t.Add(2 * time.Minute)
	pi, _ = e.Partition("hub", "0")
	if !pi.Empty || pi.BeginSeq != 5 || pi.LastSeq != 4 {
		t.Fatalf("after the retention age: %+v", pi)
	}
	send(1) // the trim of the aged events reaches the store with this append
	recs := m.records()
	var seqs []int64
	for _, r := range recs {
		if r.Device == "hub/0" {
			seqs = append(seqs, r.Seq)
		}
	}
	if len(seqs) != 1 || seqs[0] != 5 {
		t.Fatalf("stored events %v, want [5]", seqs)
	}
	e.Close()

	m2 := &fakeModel{stored: recs}
	e2, err := New(m2, Options{Host: "localhost", HubName: "hub", Partitions: 1, Durable: true, now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if e2.NamespaceKey() != e.NamespaceKey() {
		t.Fatal("the namespace key changed across a restore")
	}
	pi2, _ := e2.Partition("hub", "0")
	if pi2.BeginSeq != 5 || pi2.LastSeq != 5 || pi2.LastOffset != pi.LastOffset && pi2.LastOffset == "-1" {
		t.Fatalf("restored %+v", pi2)
	}
	m2.sink(core.Telemetry{DeviceID: "d", Body: []byte("{}"), Received: clk.t}, "1")
	if pi3, _ := e2.Partition("hub", "0"); pi3.LastSeq != 6 {
		t.Fatalf("sequence numbers after a restore: %+v", pi3)
	}

	// Every event aged out: the store keeps the last one as an anchor, so
	// a restart goes on with the sequence numbers.
	m3 := &fakeModel{}
	e3, err := New(m3, Options{Host: "localhost", HubName: "hub", Partitions: 1, RetentionAge: time.Minute, Durable: true, now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		m3.staged = append(m3.staged, m3.sink(core.Telemetry{DeviceID: "d", Body: []byte("{}"), Received: clk.t}, "1")...)
	}
	clk.t = clk.t.Add(time.Hour)
	if pi, _ := e3.Partition("hub", "0"); !pi.Empty || pi.LastSeq != 2 {
		t.Fatalf("aged out: %+v", pi)
	}
	e3.Close()
	m4 := &fakeModel{stored: m3.records()}
	e4, err := New(m4, Options{Host: "localhost", HubName: "hub", Partitions: 1, RetentionAge: time.Minute, Durable: true, now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if pi, _ := e4.Partition("hub", "0"); !pi.Empty || pi.LastSeq != 2 || pi.BeginSeq != 3 {
		t.Fatalf("restored aged-out partition: %+v", pi)
	}
	m4.sink(core.Telemetry{DeviceID: "d", Body: []byte("{}"), Received: clk.t}, "1")
	if pi, _ := e4.Partition("hub", "0"); pi.LastSeq != 3 || pi.BeginSeq != 3 {
		t.Fatalf("after a restart of an aged-out partition: %+v", pi)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"no host":       {HubName: "hub"},
		"bad hub name":  {Host: "h", HubName: "a/b"},
		"reserved name": {Host: "h", HubName: "hub", Entities: []string{"devices"}},
		"twice":         {Host: "h", HubName: "hub", Entities: []string{"HUB"}},
		"partitions":    {Host: "h", HubName: "hub", Partitions: 33},
		"bad group":     {Host: "h", HubName: "hub", ConsumerGroups: []string{"-x"}},
	} {
		if _, err := New(&fakeModel{}, o); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	e, err := New(&fakeModel{}, Options{Host: "h", HubName: "hub", Entities: []string{"logs"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.CreateConsumerGroup("nope", "g"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("consumer group of an unknown entity: %v", err)
	}
	if err := e.Publish("hub", -1, nil); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("publish to the built-in entity: %v", err)
	}
	if err := e.Publish("logs", 9, nil); !errors.Is(err, core.ErrNotFound) || !strings.Contains(err.Error(), "partition 9") {
		t.Fatalf("publish to partition 9: %v", err)
	}
}

// TestClaims: the Event Hubs side claims its entities' audiences and
// addresses, never a device's, even when the built-in entity is named
// like the hub host.
func TestClaims(t *testing.T) {
	e, err := New(&fakeModel{}, Options{Host: "localhost", HubName: "localhost", Entities: []string{"logs"}})
	if err != nil {
		t.Fatal(err)
	}
	c := e.NewConn()
	for aud, want := range map[string]bool{
		"sb://localhost/localhost/ConsumerGroups/$Default/Partitions/0": true,
		"amqps://localhost:5671/logs":                                   true,
		"amqps%3A%2F%2Flocalhost%2Flogs%2F%24management":                true,
		"localhost/devices/dev1":                                        false,
		"localhost%2Fdevices%2Fdev1":                                    false,
		"amqps://localhost/devices/dev1":                                false,
		"sb://localhost/other":                                          false,
		"localhost":                                                     false,
	} {
		if got := c.ClaimsAudience(aud); got != want {
			t.Errorf("ClaimsAudience(%q) = %v, want %v", aud, got, want)
		}
	}
	for addr, want := range map[string]bool{
		"$management": true,
		"localhost/ConsumerGroups/$Default/Partitions/1": true,
		"logs/Partitions/0":                   true,
		"amqps://localhost/logs":              true,
		"/devices/dev1/messages/events":       false,
		"amqps://localhost/devices/dev1/twin": false,
		"$cbs":                                false,
		"/messages/devicebound":               false,
	} {
		if got := c.ClaimsAddress(addr); got != want {
			t.Errorf("ClaimsAddress(%q) = %v, want %v", addr, got, want)
		}
	}
	c.Close()
}
