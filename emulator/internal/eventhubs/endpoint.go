package eventhubs

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Defaults and limits of an Endpoint.
const (
	// DefaultPartitions is the partition count of every entity (IoT Hub's
	// built-in endpoint has 4 by default).
	DefaultPartitions = 4
	// MaxPartitions is the most partitions an entity may have (Event Hubs
	// standard tier: 32).
	MaxPartitions = 32
	// DefaultRetentionCount is how many events a partition keeps; the
	// oldest go first.
	DefaultRetentionCount = 10000
	// DefaultRetentionAge is how long an event is kept (IoT Hub's
	// built-in endpoint default: 1 day).
	DefaultRetentionAge = 24 * time.Hour
	// DefaultConsumerGroup is the consumer group every entity has.
	DefaultConsumerGroup = "$Default"
	// NamespacePolicy is the shared access policy of the plain event hubs
	// (Manage, Send, Listen), as an Event Hubs namespace has.
	NamespacePolicy = "RootManageSharedAccessKey"
	// maxNameLen bounds entity and consumer group names (Event Hubs: 256 and 50).
	maxNameLen = 256
)

// Errors of the Endpoint's API; they wrap the core's vocabulary so the
// emulator's callers match them with errors.Is.
var (
	// ErrNotFound: no such entity or consumer group (wraps core.ErrNotFound).
	ErrNotFound = fmt.Errorf("eventhubs: %w", core.ErrNotFound)
	// ErrInvalid: a bad entity or consumer group name (wraps core.ErrInvalid).
	ErrInvalid = fmt.Errorf("eventhubs: %w", core.ErrInvalid)
)

// Model is what the endpoint needs of the emulator's core: the hub's
// shared access policies (for the built-in entity) and the store of its
// events. *core.Core implements it.
type Model interface {
	Policies() []core.SharedAccessPolicy
	SetTelemetrySink(core.TelemetrySink)
	SetNotificationSink(core.NotificationSink)
	StageEvents(changes []core.Change) error
	StoredEvents() []core.Record
}

var _ Model = (*core.Core)(nil)

// Options configure an Endpoint. Host and HubName are required.
type Options struct {
	// Host is the host name audiences and connection strings name (the
	// hub host, e.g. "localhost").
	Host string
	// HubName is the name of the built-in entity, which carries every
	// device-to-cloud message (the EntityPath of the built-in endpoint's
	// connection string).
	HubName string
	// Entities are the plain event hubs producers send to (e.g. "logs").
	// Default none.
	Entities []string
	// Partitions is the partition count of every entity; 0 means
	// DefaultPartitions. At most MaxPartitions.
	Partitions int
	// ConsumerGroups are created on every entity besides $Default.
	ConsumerGroups []string
	// RetentionCount is how many events a partition keeps; 0 means
	// DefaultRetentionCount.
	RetentionCount int
	// RetentionAge is how long an event is kept; 0 means
	// DefaultRetentionAge.
	RetentionAge time.Duration
	// TwinChangeEvents adds IoT Hub's twin change events (every change of
	// desired or reported properties, iothub-message-source
	// twinChangeEvents) to the built-in entity. Default false, as on a hub
	// without that route.
	TwinChangeEvents bool
	// LifecycleEvents adds IoT Hub's device lifecycle events (a device
	// created or deleted, iothub-message-source deviceLifecycleEvents) to
	// the built-in entity. Default false.
	LifecycleEvents bool
	// Durable makes the endpoint write its events and settings through
	// Model.StageEvents (the emulator sets it with a data directory).
	Durable bool
	// Logger receives refusals; nil discards. Tokens are never logged.
	Logger *slog.Logger
	// now is the clock (tests).
	now func() time.Time
}

// Endpoint is the Event Hubs-compatible endpoint: entities with
// partitions, consumer groups and retention. Serve its AMQP side with
// NewConn. Its methods are safe for concurrent use.
type Endpoint struct {
	m    Model
	opts Options
	log  *slog.Logger
	now  func() time.Time

	stageMu sync.Mutex // orders producers' appends with their commits

	mu       sync.Mutex
	entities map[string]*entity // by lower-case name
	order    []string           // entity names, built-in first
	nsKey    string             // RootManageSharedAccessKey's primary key
	nsKey2   string             // and its secondary key
	rr       uint64             // round robin of events without a partition
	closed   bool
}

type entity struct {
	name     string
	builtin  bool
	created  time.Time
	parts    []*partition
	groups   map[string]string // lower-case -> name
	receiver map[string]*receiverSet
}

type partition struct {
	id         int
	events     []*event // oldest first
	nextSeq    int64    // the next sequence number
	nextOffset int64    // the next offset
	lastSeq    int64    // the last sequence number given (-1: none)
	lastOffset int64
	lastTime   time.Time
	wake       chan struct{} // closed and replaced on append
	trimmedTo  int64         // the last sequence number dropped (-1: none)
	storedTrim int64         // the last trim given to the store (-1: none)
}

// event is one stored event: its AMQP message without the annotations the
// endpoint adds when it delivers it.
type event struct {
	seq      int64
	offset   int64
	enqueued time.Time
	partKey  string
	msg      *amqp.Message
	size     int
}

// New returns an Endpoint over m with its stored events and settings
// restored (Model.StoredEvents), and installs the built-in entity's sink
// (Model.SetTelemetrySink). It returns an error wrapping ErrInvalid for a
// bad Host, entity or consumer group name, or a partition count above
// MaxPartitions, and an error for stored records it cannot read.
func New(m Model, opts Options) (*Endpoint, error) {
	if m == nil {
		return nil, errors.New("eventhubs: nil Model")
	}
	if opts.Host == "" || strings.ContainsAny(opts.Host, "/?#@ ") {
		return nil, fmt.Errorf("%w: host %q", ErrInvalid, opts.Host)
	}
	if opts.Partitions == 0 {
		opts.Partitions = DefaultPartitions
	}
	if opts.Partitions < 1 || opts.Partitions > MaxPartitions {
		return nil, fmt.Errorf("%w: %d partitions, want 1 to %d", ErrInvalid, opts.Partitions, MaxPartitions)
	}
	if opts.RetentionCount <= 0 {
		opts.RetentionCount = DefaultRetentionCount
	}
	if opts.RetentionAge <= 0 {
		opts.RetentionAge = DefaultRetentionAge
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	e := &Endpoint{m: m, opts: opts, log: opts.Logger, now: opts.now, entities: map[string]*entity{}}
	if err := e.addEntity(opts.HubName, true); err != nil {
		return nil, err
	}
	for _, n := range opts.Entities {
		if err := e.addEntity(n, false); err != nil {
			return nil, err
		}
	}
	for _, g := range opts.ConsumerGroups {
		if err := validName(g, "consumer group"); err != nil {
			return nil, err
		}
		for _, en := range e.entities {
			en.groups[strings.ToLower(g)] = g
		}
	}
	if err := e.restore(m.StoredEvents()); err != nil {
		return nil, err
	}
	if e.nsKey == "" {
		e.nsKey, e.nsKey2 = newKey(), newKey()
		if err := e.saveSettings(); err != nil {
			return nil, err
		}
	}
	m.SetTelemetrySink(e.sinkTelemetry)
	if opts.TwinChangeEvents || opts.LifecycleEvents {
		m.SetNotificationSink(e.sinkNotification)
	}
	return e, nil
}

// Close ends every receiver's wait; connections end with their AMQP
// connection. The built-in entity stops taking telemetry.
func (e *Endpoint) Close() {
	e.m.SetTelemetrySink(nil)
	if e.opts.TwinChangeEvents || e.opts.LifecycleEvents {
		e.m.SetNotificationSink(nil)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for _, en := range e.entities {
		for _, p := range en.parts {
			close(p.wake)
			p.wake = make(chan struct{})
		}
	}
}

// validName checks an entity or consumer group name: 1 to 256 letters,
// digits, '.', '_', '-' (and '$' first for a consumer group), not
// starting with '.', '-' or '_'.
func validName(n, what string) error {
	if n == "" || len(n) > maxNameLen {
		return fmt.Errorf("%w: %s name %q must have 1 to %d characters", ErrInvalid, what, n, maxNameLen)
	}
	for i, r := range n {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			i > 0 && (r == '.' || r == '_' || r == '-') || i == 0 && r == '$' && what == "consumer group"
		if !ok {
			return fmt.Errorf("%w: %s name %q: letters, digits, '.', '_' and '-' only, starting with a letter or digit", ErrInvalid, what, n)
		}
	}
	return nil
}

// reserved are first path segments of IoT Hub's own AMQP nodes.
var reserved = []string{"devices", "messages", "$cbs", "$management", "modules", "twins"}

func (e *Endpoint) addEntity(name string, builtin bool) error {
	if err := validName(name, "event hub"); err != nil {
		return err
	}
	low := strings.ToLower(name)
	if slices.Contains(reserved, low) {
		return fmt.Errorf("%w: event hub name %q is an IoT Hub node", ErrInvalid, name)
	}
	if _, dup := e.entities[low]; dup {
		return fmt.Errorf("%w: event hub %q named twice", ErrInvalid, name)
	}
	en := &entity{name: name, builtin: builtin, created: e.now().UTC().Truncate(time.Millisecond),
		groups: map[string]string{strings.ToLower(DefaultConsumerGroup): DefaultConsumerGroup}, receiver: map[string]*receiverSet{}}
	for i := range e.opts.Partitions {
		en.parts = append(en.parts, &partition{id: i, lastSeq: -1, lastOffset: -1, trimmedTo: -1, storedTrim: -1, wake: make(chan struct{})})
	}
	e.entities[low] = en
	e.order = append(e.order, name)
	return nil
}

// BuiltinName is the name of the built-in entity (the hub name).
func (e *Endpoint) BuiltinName() string { return e.opts.HubName }

// Entities lists the entity names, the built-in one first.
func (e *Endpoint) Entities() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.order)
}

// Host is the host name the endpoint's audiences name.
func (e *Endpoint) Host() string { return e.opts.Host }

// NamespaceKey is the primary key of NamespacePolicy, which signs the
// plain event hubs' tokens. It is generated at the first start and kept
// with the events (Options.Durable).
func (e *Endpoint) NamespaceKey() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nsKey
}

// ConsumerGroups lists an entity's consumer groups, $Default first. It
// returns an error wrapping ErrNotFound for an unknown entity.
func (e *Endpoint) ConsumerGroups(entityName string) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en := e.entities[strings.ToLower(entityName)]
	if en == nil {
		return nil, fmt.Errorf("%w: event hub %q", ErrNotFound, entityName)
	}
	var out []string
	for _, g := range en.groups {
		if g != DefaultConsumerGroup {
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return append([]string{DefaultConsumerGroup}, out...), nil
}

// CreateConsumerGroup adds a consumer group to an entity (kept with the
// events when Options.Durable); creating one that exists is no error. It
// returns an error wrapping ErrNotFound for an unknown entity, ErrInvalid
// for a bad name, or the store's error.
func (e *Endpoint) CreateConsumerGroup(entityName, group string) error {
	if err := validName(group, "consumer group"); err != nil {
		return err
	}
	e.mu.Lock()
	en := e.entities[strings.ToLower(entityName)]
	if en == nil {
		e.mu.Unlock()
		return fmt.Errorf("%w: event hub %q", ErrNotFound, entityName)
	}
	if _, ok := en.groups[strings.ToLower(group)]; ok {
		e.mu.Unlock()
		return nil
	}
	en.groups[strings.ToLower(group)] = group
	e.mu.Unlock()
	return e.saveSettings()
}

// partitionOf is the partition of a device's messages or of a partition
// key: FNV-1a of the text, modulo the partition count, so the same device
// always lands in the same partition.
func partitionOf(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// ---- appending ----

// appendLocked adds msg to p and returns the store changes (nil when not
// durable); e.mu held.
func (e *Endpoint) appendLocked(en *entity, p *partition, msg *amqp.Message, partKey string, enqueued time.Time, raw []byte) []core.Change {
	size := len(raw)
	if !e.opts.Durable {
		size = eventSize(msg)
	}
	ev := &event{seq: p.nextSeq, offset: p.nextOffset, enqueued: enqueued, partKey: partKey, msg: msg, size: max(size, 1)}
	p.nextSeq++
	p.nextOffset += int64(ev.size)
	p.lastSeq, p.lastOffset, p.lastTime = ev.seq, ev.offset, enqueued
	p.events = append(p.events, ev)
	var changes []core.Change
	if e.opts.Durable {
		doc := appendStoredEvent(nil, ev.offset, enqueued.UnixNano(), partKey, raw)
		changes = append(changes, core.Change{Op: core.OpPut, Record: core.Record{Kind: core.KindEvent, Device: streamOf(en, p), Seq: ev.seq, Doc: doc}})
	}
	e.trimLocked(p, enqueued)
	changes = append(changes, e.trimChangesLocked(en, p)...)
	close(p.wake)
	p.wake = make(chan struct{})
	return changes
}

// trimLocked drops the events beyond the retention bounds; e.mu held. The
// store follows with the next trimChangesLocked.
func (e *Endpoint) trimLocked(p *partition, now time.Time) {
	drop := 0
	if over := len(p.events) - e.opts.RetentionCount; over > 0 {
		drop = over
	}
	limit := now.Add(-e.opts.RetentionAge)
	for drop < len(p.events) && p.events[drop].enqueued.Before(limit) {
		drop++
	}
	if drop == 0 {
		return
	}
	p.trimmedTo = p.events[drop-1].seq
	clear(p.events[:drop])
	p.events = p.events[drop:]
}

// trimChangesLocked returns the store's trim of what trimLocked dropped
// since the last call (nil when nothing or not durable); e.mu held. The
// store keeps the partition's last event even when it aged out, so that a
// restart goes on with its sequence number and offset (restore drops it
// again from memory).
func (e *Endpoint) trimChangesLocked(en *entity, p *partition) []core.Change {
	to := min(p.trimmedTo, p.lastSeq-1)
	if !e.opts.Durable || to <= p.storedTrim {
		return nil
	}
	p.storedTrim = to
	return []core.Change{{Op: core.OpTrim, Record: core.Record{Kind: core.KindEvent, Device: streamOf(en, p), Seq: to}}}
}

// sinkTelemetry is the built-in entity's core.TelemetrySink.
func (e *Endpoint) sinkTelemetry(t core.Telemetry, generationID string) []core.Change {
	msg := telemetryMessage(t, generationID)
	var raw []byte
	if e.opts.Durable {
		raw, _ = msg.MarshalBinary()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	en := e.entities[strings.ToLower(e.opts.HubName)]
	if en == nil || e.closed {
		return nil
	}
	p := en.parts[partitionOf(t.DeviceID, len(en.parts))]
	enq := t.Received
	if enq.IsZero() {
		enq = e.now()
	}
	return e.appendLocked(en, p, msg, "", enq.UTC().Truncate(time.Millisecond), raw)
}

// sinkNotification is the built-in entity's core.NotificationSink: twin
// change and device lifecycle events, as enabled.
func (e *Endpoint) sinkNotification(n core.DeviceNotification) []core.Change {
	if n.Op == core.OpUpdateTwin && !e.opts.TwinChangeEvents || n.Op != core.OpUpdateTwin && !e.opts.LifecycleEvents {
		return nil
	}
	msg := notificationMessage(n, e.opts.HubName)
	var raw []byte
	if e.opts.Durable {
		raw, _ = msg.MarshalBinary()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	en := e.entities[strings.ToLower(e.opts.HubName)]
	if en == nil || e.closed {
		return nil
	}
	p := en.parts[partitionOf(n.DeviceID, len(en.parts))]
	return e.appendLocked(en, p, msg, "", n.Time.UTC().Truncate(time.Millisecond), raw)
}

// Publish appends producers' messages to a plain entity: to partition
// part when it is >= 0, else by each message's partition key
// (x-opt-partition-key), else round robin. It returns once they are
// durable (Options.Durable). Errors wrap ErrNotFound (entity or
// partition), ErrInvalid (the built-in entity takes device messages
// only) or the store's error.
func (e *Endpoint) Publish(entityName string, part int, msgs []*amqp.Message) error {
	e.stageMu.Lock()
	defer e.stageMu.Unlock()
	e.mu.Lock()
	en := e.entities[strings.ToLower(entityName)]
	switch {
	case en == nil:
		e.mu.Unlock()
		return fmt.Errorf("%w: event hub %q", ErrNotFound, entityName)
	case en.builtin:
		e.mu.Unlock()
		return fmt.Errorf("%w: the built-in endpoint %q takes device-to-cloud messages only", ErrInvalid, entityName)
	case part >= len(en.parts):
		e.mu.Unlock()
		return fmt.Errorf("%w: partition %d of %q", ErrNotFound, part, entityName)
	}
	now := e.now().UTC().Truncate(time.Millisecond)
	var changes []core.Change
	for _, m := range msgs {
		key := partitionKeyOf(m)
		pi := part
		if pi < 0 {
			if key != "" {
				pi = partitionOf(key, len(en.parts))
			} else {
				pi = int(e.rr % uint64(len(en.parts)))
				e.rr++
			}
		}
		clean := withoutServerAnnotations(m)
		var raw []byte
		if e.opts.Durable {
			raw, _ = clean.MarshalBinary()
		}
		changes = append(changes, e.appendLocked(en, en.parts[pi], clean, key, now, raw)...)
	}
	e.mu.Unlock()
	if len(changes) == 0 {
		return nil
	}
	return e.m.StageEvents(changes)
}

// eventSize estimates an event's size (the offset step) without encoding it.
func eventSize(m *amqp.Message) int {
	n := 64
	for _, d := range m.Data {
		n += len(d)
	}
	return n
}

func partitionKeyOf(m *amqp.Message) string {
	if v, ok := m.Annotations["x-opt-partition-key"]; ok {
		if s, ok := v.(string); ok {
			return s
		}
	}
	return ""
}

// withoutServerAnnotations returns m without the annotations the endpoint
// sets when it delivers (a producer cannot choose them).
func withoutServerAnnotations(m *amqp.Message) *amqp.Message {
	out := *m
	out.DeliveryTag = nil
	if len(m.Annotations) > 0 {
		out.Annotations = amqp.Annotations{}
		for k, v := range m.Annotations {
			switch k {
			case annSeq, annOffset, annEnqueued:
				continue
			}
			out.Annotations[k] = v
		}
	}
	return &out
}

// ---- reading ----

// PartitionInfo is what $management's com.microsoft:partition READ answers.
type PartitionInfo struct {
	Entity, ID       string
	BeginSeq         int64 // first kept sequence number (LastSeq+1 when empty)
	LastSeq          int64 // -1 when nothing was ever enqueued
	LastOffset       string
	LastEnqueuedTime time.Time
	Empty            bool
}

// Partition returns a partition's state. Errors wrap ErrNotFound.
func (e *Endpoint) Partition(entityName, id string) (PartitionInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, p, err := e.lookupLocked(entityName, id)
	if err != nil {
		return PartitionInfo{}, err
	}
	e.trimLocked(p, e.now()) // the store follows with the next append
	pi := PartitionInfo{Entity: en.name, ID: strconv.Itoa(p.id), LastSeq: p.lastSeq, LastOffset: strconv.FormatInt(p.lastOffset, 10),
		LastEnqueuedTime: p.lastTime, Empty: len(p.events) == 0, BeginSeq: p.lastSeq + 1}
	if len(p.events) > 0 {
		pi.BeginSeq = p.events[0].seq
	}
	if p.lastSeq < 0 {
		pi.LastSeq, pi.BeginSeq, pi.LastOffset = -1, 0, "-1"
	}
	return pi, nil
}

func (e *Endpoint) lookupLocked(entityName, id string) (*entity, *partition, error) {
	en := e.entities[strings.ToLower(entityName)]
	if en == nil {
		return nil, nil, fmt.Errorf("%w: event hub %q", ErrNotFound, entityName)
	}
	n, err := strconv.Atoi(id)
	if err != nil || n < 0 || n >= len(en.parts) || strconv.Itoa(n) != id {
		return nil, nil, fmt.Errorf("%w: partition %q of %q (it has %d)", ErrNotFound, id, en.name, len(en.parts))
	}
	return en, en.parts[n], nil
}

// read returns up to max events of p from sequence number next on, the
// sequence number after them and the channel that is closed on the next
// append.
func (e *Endpoint) read(p *partition, next int64, max int) ([]*event, int64, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i, _ := slices.BinarySearchFunc(p.events, next, func(ev *event, s int64) int { return cmpInt(ev.seq, s) })
	limit := e.now().Add(-e.opts.RetentionAge)
	for i < len(p.events) && p.events[i].enqueued.Before(limit) {
		i++
	}
	end := min(len(p.events), i+max)
	out := slices.Clone(p.events[i:end])
	if len(out) > 0 {
		next = out[len(out)-1].seq + 1
	} else if len(p.events) > 0 && next < p.events[0].seq {
		next = p.events[0].seq
	}
	return out, next, p.wake
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ---- persistence ----

// storedEvent is the document of a KindEvent record of a partition.
type storedEvent struct {
	Offset int64  `json:"offset"`
	Time   int64  `json:"enqueuedNs"`
	Key    string `json:"partitionKey,omitempty"`
	Msg    []byte `json:"message"` // the AMQP message, encoded
}

// appendStoredEvent encodes a storedEvent by hand (one per message: the
// store's cost per message matters), as encoding/json would.
func appendStoredEvent(b []byte, offset, enqueuedNs int64, key string, msg []byte) []byte {
	b = append(b, `{"offset":`...)
	b = strconv.AppendInt(b, offset, 10)
	b = append(b, `,"enqueuedNs":`...)
	b = strconv.AppendInt(b, enqueuedNs, 10)
	if key != "" {
		k, _ := json.Marshal(key)
		b = append(b, `,"partitionKey":`...)
		b = append(b, k...)
	}
	b = append(b, `,"message":"`...)
	b = base64.StdEncoding.AppendEncode(b, msg)
	return append(b, `"}`...)
}

// settingsStream is the stream of the endpoint's own settings record.
const settingsStream = "$settings"

// settings is the document of the settings record.
type settings struct {
	PrimaryKey     string              `json:"primaryKey"`
	SecondaryKey   string              `json:"secondaryKey"`
	ConsumerGroups map[string][]string `json:"consumerGroups"` // entity -> groups created through the API
}

func streamOf(en *entity, p *partition) string { return en.name + "/" + strconv.Itoa(p.id) }

func (e *Endpoint) saveSettings() error {
	if !e.opts.Durable {
		return nil
	}
	e.mu.Lock()
	s := settings{PrimaryKey: e.nsKey, SecondaryKey: e.nsKey2, ConsumerGroups: map[string][]string{}}
	for _, en := range e.entities {
		for _, g := range en.groups {
			if g != DefaultConsumerGroup {
				s.ConsumerGroups[en.name] = append(s.ConsumerGroups[en.name], g)
			}
		}
		slices.Sort(s.ConsumerGroups[en.name])
	}
	e.mu.Unlock()
	doc, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("eventhubs: settings: %w", err)
	}
	return e.m.StageEvents([]core.Change{{Op: core.OpPut, Record: core.Record{Kind: core.KindEvent, Device: settingsStream, Seq: 1, Doc: doc}}})
}

// restore rebuilds the partitions and settings from stored records.
// Events of entities or partitions no longer configured are ignored.
func (e *Endpoint) restore(recs []core.Record) error {
	for _, r := range recs {
		if r.Kind != core.KindEvent {
			continue
		}
		if r.Device == settingsStream {
			var s settings
			if err := json.Unmarshal(r.Doc, &s); err != nil {
				return fmt.Errorf("eventhubs: stored settings: %w", err)
			}
			e.nsKey, e.nsKey2 = s.PrimaryKey, s.SecondaryKey
			for name, gs := range s.ConsumerGroups {
				if en := e.entities[strings.ToLower(name)]; en != nil {
					for _, g := range gs {
						en.groups[strings.ToLower(g)] = g
					}
				}
			}
			continue
		}
		name, id, ok := strings.Cut(r.Device, "/")
		if !ok {
			continue
		}
		_, p, err := e.lookupLocked(name, id)
		if err != nil {
			continue
		}
		var se storedEvent
		if err := json.Unmarshal(r.Doc, &se); err != nil {
			return fmt.Errorf("eventhubs: stored event %s/%d: %w", r.Device, r.Seq, err)
		}
		msg := new(amqp.Message)
		if err := msg.UnmarshalBinary(se.Msg); err != nil {
			return fmt.Errorf("eventhubs: stored event %s/%d: %w", r.Device, r.Seq, err)
		}
		ev := &event{seq: r.Seq, offset: se.Offset, enqueued: time.Unix(0, se.Time).UTC(), partKey: se.Key, msg: msg, size: max(len(se.Msg), 1)}
		if n := len(p.events); n > 0 && p.events[n-1].seq >= ev.seq {
			continue // the store gives each stream in order
		}
		p.events = append(p.events, ev)
		p.nextSeq, p.nextOffset = ev.seq+1, ev.offset+int64(ev.size)
		p.lastSeq, p.lastOffset, p.lastTime = ev.seq, ev.offset, ev.enqueued
		if len(p.events) == 1 {
			p.storedTrim = ev.seq - 1 // what precedes it is gone from the store
		}
	}
	// Events past the retention (the anchor of an aged-out partition
	// among them) leave memory; the store follows with the next append.
	for _, en := range e.entities {
		for _, p := range en.parts {
			e.trimLocked(p, e.now())
		}
	}
	return nil
}

func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}
