package export

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Defaults of Options.
const (
	// DefaultRetryInitial is the first wait after a failed delivery.
	DefaultRetryInitial = time.Second
	// DefaultRetryMax caps the wait between attempts.
	DefaultRetryMax = time.Minute
	// DefaultMaxQueue is how many messages a destination holds while it
	// fails; beyond, the oldest are dropped (and counted in its errors).
	DefaultMaxQueue = 10000
	// DefaultMaxPending is how many model events wait to be exported;
	// beyond, the oldest are dropped (and logged).
	DefaultMaxPending = 100000
	// DefaultSendTimeout bounds one delivery attempt.
	DefaultSendTimeout = 30 * time.Second
)

// The core collections that keep the definitions (application documents).
const (
	destinationsCollection = "dataExportDestinations"
	exportsCollection      = "dataExports"
)

// Options configure a Manager.
type Options struct {
	// ApplicationID is the applicationId of exported messages; "" derives
	// a stable UUID from the core's ID scope.
	ApplicationID string
	// HTTPClient posts to webhooks; nil uses a client with SendTimeout.
	HTTPClient *http.Client
	// TLSConfig is used for Event Hubs connections (set RootCAs to trust
	// the emulator's own CA); nil uses the system roots.
	TLSConfig *tls.Config
	// RetryInitial is the first wait after a failed delivery (default
	// DefaultRetryInitial); each failure doubles it, up to RetryMax
	// (default DefaultRetryMax), with ±20% jitter.
	RetryInitial, RetryMax time.Duration
	// MaxQueue bounds each destination's queue (default DefaultMaxQueue).
	MaxQueue int
	// MaxPending bounds the events waiting to be exported (default
	// DefaultMaxPending).
	MaxPending int
	// SendTimeout bounds one delivery attempt (default DefaultSendTimeout).
	SendTimeout time.Duration
	// Logger receives the export's logs; nil discards. Secrets (keys,
	// connection strings, secret headers) are never logged.
	Logger *slog.Logger
}

// Manager runs IoT Central data export over a core: it keeps the
// destinations and exports as application documents of the core (so a
// data directory keeps them), follows the core's changes through its
// observer port, and delivers each matching message, filtered and
// enriched, to the export's destinations, in the order the core made the
// changes, retrying failed deliveries with exponential backoff.
type Manager struct {
	c      *core.Core
	o      Options
	log    *slog.Logger
	appID  string
	remove func()

	mu      sync.Mutex
	dests   map[string]*destState
	exports map[string]*exportState
	pending []pendingEvent
	seq     uint64 // events observed so far
	dropped uint64
	devices map[string]deviceInfo // last known, for deleted devices
	wake    chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type exportState struct {
	cfg    Export
	filter *Filter
	last   time.Time
	since  uint64 // exports the events observed after this many
}

type pendingEvent struct {
	seq uint64
	ev  core.FeedEvent
}

type queued struct {
	id     uint64 // grows along the queue
	export string
	msg    Message
}

// errs are the destination's current errors; m.mu held.
func (st *destState) errs() []DataExportError {
	var out []DataExportError
	for _, e := range []*DataExportError{st.sendErr, st.dropErr} {
		if e != nil {
			out = append(out, *e)
		}
	}
	return out
}

type destState struct {
	cfg     Destination
	gen     int // bumped by every change of cfg
	queue   []queued
	dropped int              // since the last delivery
	nextID  uint64           // of the next queued message
	sendErr *DataExportError // the last failed delivery, until one succeeds
	dropErr *DataExportError // messages dropped since the last delivery
	last    time.Time
	wake    chan struct{}
	stop    chan struct{}
}

// New starts the data export of core c: it loads the stored definitions,
// starts a worker per destination and observes the core. Close stops it.
// Errors: a stored definition that cannot be read.
func New(c *core.Core, o Options) (*Manager, error) {
	if o.RetryInitial <= 0 {
		o.RetryInitial = DefaultRetryInitial
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.RetryMax < o.RetryInitial {
		o.RetryMax = o.RetryInitial
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = DefaultMaxQueue
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = DefaultSendTimeout
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: o.SendTimeout}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	appID := o.ApplicationID
	if appID == "" {
		appID = uuidFrom("iotc-emulator application " + c.IDScope())
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{c: c, o: o, log: log, appID: appID, dests: map[string]*destState{}, exports: map[string]*exportState{},
		devices: map[string]deviceInfo{}, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
	for _, doc := range c.AppDocs(destinationsCollection) {
		var d Destination
		if err := json.Unmarshal(doc, &d); err != nil {
			cancel()
			return nil, fmt.Errorf("export: stored destination: %w", err)
		}
		m.startDest(d)
	}
	for _, doc := range c.AppDocs(exportsCollection) {
		var e Export
		if err := json.Unmarshal(doc, &e); err != nil {
			m.Close()
			return nil, fmt.Errorf("export: stored export: %w", err)
		}
		f, _ := ParseFilter(e.Filter, e.Source) // checked when stored
		m.exports[e.ID] = &exportState{cfg: e, filter: f}
	}
	m.remove = c.AddObserver(m)
	m.wg.Add(1)
	go m.dispatch()
	return m, nil
}

// ApplicationID is the applicationId of the exported messages.
func (m *Manager) ApplicationID() string { return m.appID }

// Close stops observing the core and every worker; queued messages are
// dropped. It is idempotent.
func (m *Manager) Close() {
	if m.remove != nil {
		m.remove()
	}
	m.cancel()
	m.wg.Wait()
}

// uuidFrom derives a UUID-shaped id from s.
func uuidFrom(s string) string {
	b := sha256.Sum256([]byte(s))
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Observe implements core.Observer: it queues ev (never blocking).
// Events of a source no enabled export takes are not queued.
func (m *Manager) Observe(ev core.FeedEvent) {
	m.mu.Lock()
	m.seq++
	if !m.wantsLocked(ev.Kind) {
		m.mu.Unlock()
		return
	}
	if len(m.pending) >= m.o.MaxPending {
		m.pending = m.pending[1:]
		m.dropped++
		if m.dropped == 1 || m.dropped%1000 == 0 {
			m.log.Warn("data export: events arrive faster than they are exported; oldest dropped", "dropped", m.dropped)
		}
	}
	m.pending = append(m.pending, pendingEvent{m.seq, ev})
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// wantsLocked reports whether an enabled export takes events of kind k;
// m.mu held.
func (m *Manager) wantsLocked(k core.FeedKind) bool {
	source, _, ok := sourceOf(k)
	if !ok {
		return false
	}
	for _, e := range m.exports {
		if e.cfg.Enabled && e.cfg.Source == source {
			return true
		}
	}
	return false
}

// dispatch turns queued events into messages for the destinations.
func (m *Manager) dispatch() {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		evs := m.pending
		m.pending = nil
		m.mu.Unlock()
		for _, p := range evs {
			m.handle(p.seq, p.ev)
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-m.ctx.Done():
			return
		case <-m.wake:
		}
	}
}

// handle exports one event through every enabled export of its source.
func (m *Manager) handle(seq uint64, ev core.FeedEvent) {
	source, _, ok := sourceOf(ev.Kind)
	if !ok {
		return
	}
	m.mu.Lock()
	var exps []*exportState
	for _, id := range slices.Sorted(maps.Keys(m.exports)) {
		if e := m.exports[id]; e.cfg.Enabled && e.cfg.Source == source && seq > e.since {
			exps = append(exps, e)
		}
	}
	m.mu.Unlock()
	if len(exps) == 0 {
		return
	}
	var dev deviceInfo
	if ev.DeviceID != "" {
		dev = m.device(ev.DeviceID)
	}
	var fields env
	switch source {
	case SourceTelemetry:
		body, _ := telemetryBody(ev.Telemetry)
		fields = func(name string) (any, bool) {
			if strings.HasPrefix(name, "$") {
				return dev.field(name)
			}
			return lookupPath(body, name)
		}
	case SourceProperties:
		changed := map[string]any{}
		for _, p := range propertyChanges(ev.Patch, "") {
			if p.Component != "" {
				changed[p.Component+"."+p.Name] = p.Value
			} else {
				changed[p.Name] = p.Value
			}
		}
		fields = func(name string) (any, bool) {
			if strings.HasPrefix(name, "$") {
				return dev.field(name)
			}
			v, ok := changed[name]
			return v, ok
		}
	default:
		fields = dev.field
	}
	for _, e := range exps {
		if f := e.filter; f != nil && f.From != "" {
			from := dev.TemplateID == f.From || (dev.ModelID != "" && dev.ModelID == f.From) ||
				(dev.TemplateModelID != "" && dev.TemplateModelID == f.From)
			if source == SourceDeviceTemplateLifecycle {
				from = ev.TemplateID == f.From
			}
			if !from {
				continue
			}
		}
		if !e.filter.Match(fields) {
			continue
		}
		msg, ok := buildMessage(m.appID, ev, dev, m.enrichments(e.cfg.Enrichments, dev))
		if !ok {
			continue
		}
		m.enqueue(e.cfg, msg)
	}
}

// field resolves a device system field of a filter.
func (d deviceInfo) field(name string) (any, bool) {
	switch name {
	case "$id":
		return d.ID, d.ID != ""
	case "$displayName":
		return d.DisplayName, d.known
	case "$template":
		return d.TemplateID, d.known
	case "$enabled":
		return d.Enabled, d.known
	case "$provisioned":
		return d.Provisioned, d.known
	case "$simulated":
		return d.Simulated, d.known
	}
	return nil, false
}

// device returns what the export needs of device id, from the core, or
// as last seen when the device is gone.
func (m *Manager) device(id string) deviceInfo {
	dd, err := m.c.DeviceDetails(id)
	if err != nil {
		m.mu.Lock()
		info, ok := m.devices[id]
		m.mu.Unlock()
		if !ok {
			info = deviceInfo{ID: id}
		}
		return info
	}
	info := deviceInfo{ID: id, DisplayName: dd.DisplayName, TemplateID: dd.Template, ModelID: dd.ModelID,
		Enabled: dd.Enabled, Provisioned: dd.Provisioned, Simulated: dd.Simulated,
		Organizations: slices.Clone(dd.Organizations), known: true}
	if mdl, ok := m.c.DeviceModel(id); ok {
		info.TemplateID, info.TemplateModelID = mdl.ID, mdl.ModelID
		if doc, err := m.c.Template(mdl.ID); err == nil {
			info.TemplateDisplayName, _ = doc["displayName"].(string)
		}
	}
	m.mu.Lock()
	m.devices[id] = info
	m.mu.Unlock()
	return info
}

// enrichments computes an export's enrichments for a device: a static
// value as is; a system property from the device; a property from the
// device's twin (reported value, else desired), left out when the device
// has none.
func (m *Manager) enrichments(defs map[string]Enrichment, dev deviceInfo) map[string]any {
	out := map[string]any{}
	var reported, desired map[string]any
	twinRead := false
	for name, en := range defs {
		switch {
		case en.Value != nil:
			out[name] = en.Value
		case en.Target == "":
			if !dev.known {
				continue
			}
			switch en.Path {
			case "$enabled":
				out[name] = dev.Enabled
			case "$displayName":
				out[name] = dev.DisplayName
			case "$templateDisplayName":
				out[name] = dev.TemplateDisplayName
			case "$organizations":
				out[name] = append([]string{}, dev.Organizations...)
			case "$provisioned":
				out[name] = dev.Provisioned
			case "$simulated":
				out[name] = dev.Simulated
			}
		default:
			if !dev.known {
				continue
			}
			if !twinRead {
				twinRead = true
				desired, reported, _ = m.c.Twin(dev.ID)
			}
			comp := m.componentOf(dev, en.Target)
			for _, sec := range []map[string]any{reported, desired} {
				if v, ok := propertyIn(sec, comp, en.Path); ok {
					out[name] = v
					break
				}
			}
		}
	}
	return out
}

// componentOf finds the component of the device's template whose
// interface is target ("" for the root: the template or its model).
func (m *Manager) componentOf(dev deviceInfo, target string) string {
	if target == dev.TemplateID || target == dev.ModelID || dev.TemplateID == "" {
		return ""
	}
	doc, err := m.c.Template(dev.TemplateID)
	if err != nil {
		return ""
	}
	cm, _ := doc["capabilityModel"].(map[string]any)
	if id, _ := cm["@id"].(string); id == target {
		return ""
	}
	contents, _ := cm["contents"].([]any)
	for _, c := range contents {
		e, _ := c.(map[string]any)
		name, _ := e["name"].(string)
		switch s := e["schema"].(type) {
		case string:
			if s == target {
				return name
			}
		case map[string]any:
			if id, _ := s["@id"].(string); id == target {
				return name
			}
		}
	}
	return ""
}

// propertyIn reads a property of a twin section (in a component's
// section when comp is set), unwrapping an acknowledgement.
func propertyIn(sec map[string]any, comp, name string) (any, bool) {
	if sec == nil {
		return nil, false
	}
	if comp != "" {
		c, ok := sec[comp].(map[string]any)
		if !ok {
			return nil, false
		}
		sec = c
	}
	v, ok := sec[name]
	if !ok || v == nil {
		return nil, false
	}
	return ackValue(v), true
}

// enqueue hands msg to every destination of export e.
func (m *Manager) enqueue(e Export, msg Message) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range e.Destinations {
		d := m.dests[r.ID]
		if d == nil {
			continue
		}
		if len(d.queue) >= m.o.MaxQueue {
			d.queue = d.queue[1:]
			d.dropped++
			d.dropErr = &DataExportError{Code: "messagesDropped",
				Message: fmt.Sprintf("%d messages dropped: the destination's queue of %d was full", d.dropped, m.o.MaxQueue)}
		}
		d.nextID++
		d.queue = append(d.queue, queued{id: d.nextID, export: e.ID, msg: msg})
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// startDest records d and starts its worker; m.mu held or not shared yet.
func (m *Manager) startDest(d Destination) {
	st := &destState{cfg: d, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	m.dests[d.ID] = st
	m.wg.Add(1)
	go m.work(st)
}

// work delivers a destination's queue in order, retrying with backoff.
func (m *Manager) work(st *destState) {
	defer m.wg.Done()
	var s sender
	gen := -1
	defer func() {
		if s != nil {
			s.close()
		}
	}()
	wait := m.o.RetryInitial
	for {
		m.mu.Lock()
		n := len(st.queue)
		cfg, cur := st.cfg, st.gen
		m.mu.Unlock()
		if n == 0 {
			select {
			case <-m.ctx.Done():
				return
			case <-st.stop:
				return
			case <-st.wake:
				continue
			}
		}
		if s == nil || gen != cur {
			if s != nil {
				s.close()
				s = nil
			}
			var err error
			s, err = m.newSender(cfg)
			gen = cur
			if err != nil {
				s = nil
				m.failed(st, err)
				if !m.sleep(st, &wait) {
					return
				}
				continue
			}
		}
		m.mu.Lock()
		batch := m.takeBatch(st, s.batch())
		m.mu.Unlock()
		msgs := make([]Message, len(batch))
		for i, q := range batch {
			msgs[i] = q.msg
		}
		ctx, cancel := context.WithTimeout(m.ctx, m.o.SendTimeout)
		done, err := s.send(ctx, msgs)
		cancel()
		m.delivered(st, batch[:done])
		if err != nil {
			if m.ctx.Err() != nil {
				return
			}
			m.failed(st, err)
			if !m.sleep(st, &wait) {
				return
			}
			continue
		}
		wait = m.o.RetryInitial
	}
}

// takeBatch returns the head of the queue: up to max messages of the
// first message's device; m.mu held.
func (m *Manager) takeBatch(st *destState, max int) []queued {
	var out []queued
	for _, q := range st.queue {
		if len(out) == max || (len(out) > 0 && q.msg.DeviceID != out[0].msg.DeviceID) {
			break
		}
		out = append(out, q)
	}
	return out
}

// delivered pops the delivered messages (those of the queue's head up to
// the last one delivered; some may have been dropped meanwhile) and
// records success.
func (m *Manager) delivered(st *destState, done []queued) {
	if len(done) == 0 {
		return
	}
	now := time.Now().UTC()
	last := done[len(done)-1].id
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, q := range done {
		if e := m.exports[q.export]; e != nil {
			e.last = now
		}
	}
	n := 0
	for n < len(st.queue) && st.queue[n].id <= last {
		n++
	}
	st.queue = st.queue[n:]
	st.last = now
	st.dropped = 0
	st.sendErr, st.dropErr = nil, nil
}

// failed records a delivery error in the destination's status.
func (m *Manager) failed(st *destState, err error) {
	var se *sendError
	e := DataExportError{Code: "exportFailed", Message: err.Error()}
	if errors.As(err, &se) {
		e = DataExportError{Code: se.code, Message: se.msg}
	}
	m.mu.Lock()
	st.sendErr = &e
	id := st.cfg.ID
	m.mu.Unlock()
	m.log.Warn("data export: delivery failed, will retry", "destination", id, "code", e.Code, "error", e.Message)
}

// sleep waits *wait (with jitter) and doubles it up to RetryMax; false
// when the worker must stop.
func (m *Manager) sleep(st *destState, wait *time.Duration) bool {
	d := time.Duration(float64(*wait) * (0.8 + 0.4*rand.Float64()))
	*wait = min(*wait*2, m.o.RetryMax)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.ctx.Done():
		return false
	case <-st.stop:
		return false
	case <-t.C:
		return true
	}
}

func (m *Manager) newSender(d Destination) (sender, error) {
	switch d.Type {
	case TypeWebhook:
		return newWebhookSender(d, m.o.HTTPClient)
	case TypeEventHubs:
		return newEventHubsSender(d, m.o.TLSConfig)
	}
	return nil, &sendError{"unsupportedDestination", "destination type " + d.Type + " is not served"}
}
