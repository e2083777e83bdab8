// Package iotctest is an in-memory IoT Central for unit tests of device
// logic: a Hub implements the SDK's transport port with no network, so an
// iotc.Client built on it (Hub.Config) provisions, connects, sends and
// receives exactly as it does against IoT Central, in microseconds and
// with no TLS, ports or emulator to start.
//
// The test plays the operator: SetProperty writes a desired property and
// waits for the device's acknowledgement, InvokeCommand calls a command
// and returns the device's answer, QueueCommand and SendCloudToDevice
// reach an offline device on its next connection and say how it settled
// the message, Telemetry and Reported list what the device sent, Drop and
// RefuseConnect test how it copes with faults. Versions, $metadata and the
// acknowledgement shape are those of IoT Hub and of this module's
// emulator; a shared suite runs the same scenarios against both.
package iotctest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/ports"
)

// Defaults of a Hub.
const (
	// IDScope is the Hub's DPS ID scope.
	IDScope = "0ne00TEST0"
	// HubHost is the host name of the IoT hub DPS assigns.
	HubHost = "iotctest.azure-devices.net"
	// GroupKey is the enrollment group's primary key (base64); devices
	// derive their keys from it.
	GroupKey = "aW90Y3Rlc3QtZ3JvdXAta2V5LW5vdC1hLXNlY3JldC0wMTIzNDU2Nzg5MA=="
)

// ErrOffline is returned for an operation that needs the device connected.
var ErrOffline = errors.New("iotctest: device offline")

// ErrNotFound is returned for a device the Hub does not know.
var ErrNotFound = errors.New("iotctest: device not found")

// Telemetry is one message the device sent.
type Telemetry struct {
	// Component is the $.sub of the message, "" for the root.
	Component string
	// Body is the message as sent (JSON for iotc.Client's telemetry).
	Body json.RawMessage
	// Properties are the application properties.
	Properties map[string]string
	// MessageID is $.mid.
	MessageID string
	// Received is when the Hub got it.
	Received time.Time
}

// Unmarshal decodes the body into v.
func (t Telemetry) Unmarshal(v any) error { return json.Unmarshal(t.Body, v) }

// Ack is the acknowledgement a device reported for a writable property.
type Ack struct {
	Value       json.RawMessage `json:"value"`
	Status      int             `json:"ac"`
	Version     int64           `json:"av"`
	Description string          `json:"ad,omitempty"`
}

// CommandResult is a device's answer to a command.
type CommandResult struct {
	Status  int
	Payload json.RawMessage
}

// Hub is an in-memory IoT Central (DPS and one IoT hub) implementing
// ports.Transport. Its methods are safe for concurrent use. The zero value
// is not usable: call New.
type Hub struct {
	mu      sync.Mutex
	devices map[string]*device
	refuse  []error
	changed chan struct{} // closed and replaced on every change
	rid     int
}

type device struct {
	id, model string
	desired   *section
	reported  *section
	sess      *session
	telemetry []Telemetry
	patches   []json.RawMessage
	queue     []*c2d
	connects  int
	methods   map[string]chan CommandResult
}

type c2d struct {
	id      string
	body    []byte
	props   map[string]string
	sentOn  *session
	outcome chan domain.Outcome // receives the first settlement
}

var _ ports.Transport = (*Hub)(nil)

// New returns an empty Hub: devices are created when they provision.
func New() *Hub {
	return &Hub{devices: map[string]*device{}, changed: make(chan struct{})}
}

// Config returns an iotc.Config for device id on this Hub: a group-key
// device, the Hub as its transport. Set handlers and other fields as for
// IoT Central.
func (h *Hub) Config(id string) iotc.Config {
	return iotc.Config{DeviceID: id, IDScope: IDScope, Credential: iotc.GroupKey(GroupKey), Adapter: h}
}

// Name implements ports.Transport.
func (h *Hub) Name() string { return "iotctest" }

func (h *Hub) changedLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// wait blocks until cond (evaluated with h.mu held) is true or ctx ends.
func (h *Hub) wait(ctx context.Context, cond func() bool) error {
	for {
		h.mu.Lock()
		if cond() {
			h.mu.Unlock()
			return nil
		}
		ch := h.changed
		h.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (h *Hub) deviceLocked(id string) *device {
	d := h.devices[id]
	if d == nil {
		d = &device{id: id, desired: newSection(true), reported: newSection(false), methods: map[string]chan CommandResult{}}
		h.devices[id] = d
	}
	return d
}

// verify checks a SAS token for resource against the key derived for id.
func verify(token, resource, id string) error {
	if token == "" {
		return fmt.Errorf("%w: no SAS token (X.509 is not simulated)", domain.ErrUnauthorized)
	}
	t, err := domain.ParseSAS(token)
	if err != nil {
		return fmt.Errorf("%w: %w", domain.ErrUnauthorized, err)
	}
	if !t.MatchesResource(resource) {
		return fmt.Errorf("%w: token for %q, want %q", domain.ErrUnauthorized, t.Resource, resource)
	}
	key, err := domain.DeriveDeviceKey(GroupKey, id)
	if err != nil {
		return err
	}
	if err := t.Verify(key, time.Now()); err != nil {
		return fmt.Errorf("%w: %w", domain.ErrUnauthorized, err)
	}
	return nil
}

// Provision implements ports.Provisioner: a device of the Hub's group
// (its key derived from GroupKey) is assigned to HubHost; the modelId of
// the payload becomes its model. A wrong key gives domain.ErrUnauthorized.
func (h *Hub) Provision(ctx context.Context, req ports.ProvisioningRequest) (domain.Assignment, error) {
	if err := ctx.Err(); err != nil {
		return domain.Assignment{}, err
	}
	id := req.Registration.RegistrationID
	if req.IDScope != IDScope {
		return domain.Assignment{}, fmt.Errorf("%w: unknown ID scope %q", domain.ErrUnauthorized, req.IDScope)
	}
	if err := verify(req.Auth.SASToken, domain.DPSResource(req.IDScope, id), id); err != nil {
		return domain.Assignment{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.deviceLocked(id)
	if req.Registration.ModelID != "" {
		d.model = req.Registration.ModelID
	}
	h.changedLocked()
	return domain.Assignment{Hub: HubHost, DeviceID: id, Substatus: "initialAssignment"}, nil
}

// Connect implements ports.HubConnector: it opens a session for a
// provisioned device (a second one drops the first, as IoT Hub does),
// delivers queued cloud-to-device messages, or fails with the error given
// to RefuseConnect.
func (h *Hub) Connect(ctx context.Context, conn ports.HubConnection, events ports.EventHandler) (ports.HubSession, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if events == nil {
		return nil, fmt.Errorf("%w: no event handler", domain.ErrInvalidConfig)
	}
	h.mu.Lock()
	if len(h.refuse) > 0 {
		err := h.refuse[0]
		h.refuse = h.refuse[1:]
		h.changedLocked()
		h.mu.Unlock()
		return nil, err
	}
	h.mu.Unlock()
	if conn.Host != HubHost {
		return nil, fmt.Errorf("%w: unknown hub %q", domain.ErrDeviceNotFound, conn.Host)
	}
	if err := verify(conn.Auth.SASToken, domain.HubResource(conn.Host, conn.DeviceID), conn.DeviceID); err != nil {
		return nil, err
	}
	h.mu.Lock()
	d, ok := h.devices[conn.DeviceID]
	if !ok {
		h.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", domain.ErrDeviceNotFound, conn.DeviceID)
	}
	old := d.sess
	s := newSession(h, d, events)
	d.sess = s
	d.connects++
	if conn.ModelID != "" {
		d.model = conn.ModelID
	}
	h.changedLocked()
	h.mu.Unlock()
	if old != nil {
		old.end(fmt.Errorf("%w: the device connected again", domain.ErrNotConnected))
	}
	h.deliverC2D(d)
	return s, nil
}

// RefuseConnect makes the next len(errs) hub connections fail with errs
// in order (for example an error wrapping iotc.ErrUnauthorized, or a
// network error the client retries).
func (h *Hub) RefuseConnect(errs ...error) {
	h.mu.Lock()
	h.refuse = append(h.refuse, errs...)
	h.mu.Unlock()
}

// Drop ends the device's session as a lost connection does; the client
// reconnects by itself. It returns ErrOffline when there is none.
func (h *Hub) Drop(id string) error {
	h.mu.Lock()
	d := h.devices[id]
	var s *session
	if d != nil {
		s = d.sess
	}
	h.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%w: %s", ErrOffline, id)
	}
	s.end(fmt.Errorf("%w: connection dropped by the test", domain.ErrNotConnected))
	return nil
}

// Connected reports whether the device has an open session.
func (h *Hub) Connected(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.devices[id]
	return d != nil && d.sess != nil
}

// Connects counts the device's hub connections so far.
func (h *Hub) Connects(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.devices[id]; d != nil {
		return d.connects
	}
	return 0
}

// WaitConnected waits until the device has an open session, its
// connection number n or later (1 is the first), or ctx ends.
func (h *Hub) WaitConnected(ctx context.Context, id string, n int) error {
	return h.wait(ctx, func() bool {
		d := h.devices[id]
		return d != nil && d.sess != nil && d.connects >= n
	})
}

// ModelID returns the model the device announced.
func (h *Hub) ModelID(id string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.devices[id]; d != nil {
		return d.model
	}
	return ""
}

// Telemetry returns every message the device sent, in order.
func (h *Hub) Telemetry(id string) []Telemetry {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.devices[id]; d != nil {
		return append([]Telemetry(nil), d.telemetry...)
	}
	return nil
}

// WaitTelemetry waits until the device sent at least n messages and
// returns them all.
func (h *Hub) WaitTelemetry(ctx context.Context, id string, n int) ([]Telemetry, error) {
	err := h.wait(ctx, func() bool { d := h.devices[id]; return d != nil && len(d.telemetry) >= n })
	return h.Telemetry(id), err
}

// Reported returns the reported properties as the twin holds them
// (without $version and $metadata).
func (h *Hub) Reported(id string) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.devices[id]
	if d == nil {
		return nil
	}
	doc := d.reported.doc(false)
	delete(doc, "$version")
	return doc
}

// ReportedPatches returns every reported-properties patch the device
// sent, in order.
func (h *Hub) ReportedPatches(id string) []json.RawMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.devices[id]; d != nil {
		return append([]json.RawMessage(nil), d.patches...)
	}
	return nil
}

// WaitReported waits until the reported properties satisfy cond (called
// with the current reported properties, which it must not keep).
func (h *Hub) WaitReported(ctx context.Context, id string, cond func(reported map[string]any) bool) error {
	return h.wait(ctx, func() bool {
		d := h.devices[id]
		return d != nil && cond(d.reported.props)
	})
}

// Desired returns the desired properties with $version and $metadata.
func (h *Hub) Desired(id string) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.devices[id]; d != nil {
		return d.desired.doc(true)
	}
	return nil
}

// UpdateProperties writes desired properties (in component, "" for the
// root; a component's patch gets "__t": "c") as an operator does, pushes
// the patch to the device if it is connected, and returns the new desired
// $version. The device sees it at its next twin read if offline.
func (h *Hub) UpdateProperties(id, component string, props map[string]any) (int64, error) {
	patch := map[string]any{}
	for k, v := range props {
		patch[k] = v
	}
	if component != "" {
		patch["__t"] = "c"
		patch = map[string]any{component: patch}
	}
	h.mu.Lock()
	d := h.devices[id]
	if d == nil {
		h.mu.Unlock()
		return 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	v := d.desired.apply(patch, time.Now())
	s := d.sess
	h.changedLocked()
	h.mu.Unlock()
	if s != nil {
		push := deepCopy(patch).(map[string]any)
		push["$version"] = v
		b, err := json.Marshal(push)
		if err != nil {
			return v, err
		}
		s.deliver(func(e ports.EventHandler) { e.OnDesiredPatch(b) })
	}
	return v, nil
}

// SetProperty writes one writable property and waits until the device
// acknowledged it at that version (or later), returning the
// acknowledgement. A device that answers 202 first is waited for until
// its final answer (a status other than 202), or until ctx ends.
func (h *Hub) SetProperty(ctx context.Context, id, component, name string, value any) (Ack, error) {
	v, err := h.UpdateProperties(id, component, map[string]any{name: value})
	if err != nil {
		return Ack{}, err
	}
	var ack Ack
	err = h.wait(ctx, func() bool {
		a, ok := h.ackLocked(id, component, name)
		if ok && a.Version >= v && a.Status != 202 {
			ack = a
			return true
		}
		return false
	})
	return ack, err
}

// PropertyAck returns the acknowledgement the device reported for a
// writable property, if any.
func (h *Hub) PropertyAck(id, component, name string) (Ack, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ackLocked(id, component, name)
}

func (h *Hub) ackLocked(id, component, name string) (Ack, bool) {
	d := h.devices[id]
	if d == nil {
		return Ack{}, false
	}
	sec := d.reported.props
	if component != "" {
		sec, _ = sec[component].(map[string]any)
	}
	raw, ok := sec[name]
	if !ok {
		return Ack{}, false
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return Ack{}, false
	}
	var a Ack
	if json.Unmarshal(b, &a) != nil || a.Status == 0 {
		return Ack{}, false
	}
	return a, true
}

// InvokeCommand calls a command on the connected device and waits for its
// answer. It returns ErrOffline when the device is not connected.
func (h *Hub) InvokeCommand(ctx context.Context, id, component, name string, payload any) (CommandResult, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return CommandResult{}, err
	}
	method := name
	if component != "" {
		method = component + domain.ComponentSeparator + name
	}
	h.mu.Lock()
	d := h.devices[id]
	if d == nil || d.sess == nil {
		h.mu.Unlock()
		return CommandResult{}, fmt.Errorf("%w: %s", ErrOffline, id)
	}
	h.rid++
	rid := strconv.Itoa(h.rid)
	ch := make(chan CommandResult, 1)
	d.methods[rid] = ch
	s := d.sess
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(d.methods, rid)
		h.mu.Unlock()
	}()
	s.deliver(func(e ports.EventHandler) {
		e.OnMethod(ports.MethodRequest{Method: method, RequestID: rid, Payload: body})
	})
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return CommandResult{}, ctx.Err()
	}
}

// QueueCommand queues a command for the device as IoT Central does for an
// offline device: a cloud-to-device message with "method-name". It is
// delivered at once if the device is connected, else on its next
// connection.
func (h *Hub) QueueCommand(id, component, name string, payload any) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	method := name
	if component != "" {
		method = component + domain.ComponentSeparator + name
	}
	_, err = h.enqueue(id, body, map[string]string{domain.PropMethodName: method})
	return err
}

// SendCloudToDevice queues a cloud-to-device message and waits for the
// device's first settlement of it (Complete, Abandon or Reject), delivering
// it at once if the device is connected, else on its next connection. An
// abandoned message stays queued and comes again on the next connection.
func (h *Hub) SendCloudToDevice(ctx context.Context, id string, body []byte, props map[string]string) (iotc.Outcome, error) {
	m, err := h.enqueue(id, body, props)
	if err != nil {
		return 0, err
	}
	select {
	case o := <-m.outcome:
		return o, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (h *Hub) enqueue(id string, body []byte, props map[string]string) (*c2d, error) {
	h.mu.Lock()
	d := h.devices[id]
	if d == nil {
		h.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	h.rid++
	all := map[string]string{domain.PropMessageID: "c2d-" + strconv.Itoa(h.rid)}
	for k, v := range props {
		all[k] = v
	}
	m := &c2d{id: all[domain.PropMessageID], body: append([]byte(nil), body...), props: all, outcome: make(chan domain.Outcome, 1)}
	d.queue = append(d.queue, m)
	h.changedLocked()
	h.mu.Unlock()
	h.deliverC2D(d)
	return m, nil
}

// Queued counts the cloud-to-device messages waiting for the device.
func (h *Hub) Queued(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.devices[id]; d != nil {
		return len(d.queue)
	}
	return 0
}

// deliverC2D hands the queued messages not yet sent on the current
// session to it.
func (h *Hub) deliverC2D(d *device) {
	h.mu.Lock()
	s := d.sess
	var out []*c2d
	if s != nil {
		for _, m := range d.queue {
			if m.sentOn != s {
				m.sentOn = s
				out = append(out, m)
			}
		}
	}
	h.mu.Unlock()
	for _, m := range out {
		msg := domain.CloudMessage{Body: m.body, Properties: m.props}
		settle := h.settler(d, s, m)
		s.deliver(func(e ports.EventHandler) { e.OnCloudMessage(msg, settle) })
	}
}

func (h *Hub) settler(d *device, s *session, m *c2d) func(domain.Outcome) {
	var once sync.Once
	return func(o domain.Outcome) {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if d.sess != s {
				return // settled on a dead session: the hub never hears it
			}
			select {
			case m.outcome <- o:
			default:
			}
			if o != domain.Abandon {
				for i, x := range d.queue {
					if x == m {
						d.queue = append(d.queue[:i], d.queue[i+1:]...)
						break
					}
				}
			}
			h.changedLocked()
		})
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
