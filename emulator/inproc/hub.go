// Package inproc is the emulator's in-process device front-end: the
// emulator's core (the same IoT Hub and DPS model the MQTT and AMQP
// front-ends serve, with the memory store) reached by function calls
// instead of a protocol. A device connection is a *Conn; the core reaches
// it through the same outbound port it uses for an MQTT or AMQP
// connection, so the checks are the emulator's own: SAS tokens for the
// hub and device (or registration) they name, one connection per device
// (a new one replaces the old one), settlements only on the connection a
// message was delivered on, IoT Hub's size limits and twin rules.
//
// It opens no socket, starts no listener and stores nothing on disk; it
// speaks the emulator's own terms (no SDK type), so that package iotctest
// adapts it to the SDK's ports and checks the SDK against an independent
// model. The Hub also has the operator side a test needs: desired
// properties, commands, cloud-to-device messages with their settlement,
// the twin, telemetry history, dropping a connection and fault injection.
package inproc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Errors of the hub, matched with errors.Is. They are the emulator core's
// own (package emulator exports the same values), plus ErrDisconnected.
var (
	// ErrNotFound reports an unknown device, hub host, ID scope or message.
	ErrNotFound = core.ErrNotFound
	// ErrUnauthorized reports refused credentials: a bad signature, an
	// expired token, a token for another resource, a disabled device.
	ErrUnauthorized = core.ErrUnauthorized
	// ErrInvalid reports a bad argument (a malformed id, name or patch).
	ErrInvalid = core.ErrInvalid
	// ErrDeviceOffline reports a command to a device that is not connected.
	ErrDeviceOffline = core.ErrDeviceOffline
	// ErrTimeout reports a command the device did not answer in time.
	ErrTimeout = core.ErrTimeout
	// ErrTooLarge reports a body over a service limit (MaxTelemetryBody,
	// MaxC2DBody, MaxTwinSection).
	ErrTooLarge = core.ErrTooLarge
	// ErrQueueFull reports a cloud-to-device message refused because
	// MaxC2DQueue messages already wait for the device.
	ErrQueueFull = core.ErrQueueFull
	// ErrThrottled reports an operation refused by a throttling fault.
	ErrThrottled = core.ErrThrottled
	// ErrQuotaExceeded reports telemetry refused by a quota fault.
	ErrQuotaExceeded = core.ErrQuotaExceeded
	// ErrUnavailable reports a connection refused by a fault.
	ErrUnavailable = core.ErrUnavailable
	// ErrReplaced is the reason a connection ends when its device opens a
	// newer one (IoT Hub keeps one connection per device).
	ErrReplaced = core.ErrReplaced
	// ErrClosed reports a call on a closed Hub.
	ErrClosed = core.ErrClosed
	// ErrDisconnected reports an operation on a Conn that has ended
	// (closed, dropped or replaced); Conn.Err says why.
	ErrDisconnected = errors.New("inproc: connection ended")
)

// Service limits, as the emulator enforces them.
const (
	// MaxTelemetryBody is the largest telemetry body (256 KiB).
	MaxTelemetryBody = core.MaxTelemetryBody
	// MaxC2DBody is the largest cloud-to-device body (64 KiB).
	MaxC2DBody = core.MaxC2DBody
	// MaxC2DQueue is how many cloud-to-device messages may wait for a device (50).
	MaxC2DQueue = core.MaxC2DQueue
	// MaxTwinSection is the largest desired or reported section (32 KiB).
	MaxTwinSection = core.MaxTwinSection
	// MaxCommandTimeout caps a command's timeout (300 s).
	MaxCommandTimeout = core.MaxCommandTimeout
)

// Options configure a Hub. The zero value is usable: a generated group
// key, the default ID scope and hub host, the emulator's history size.
type Options struct {
	// IDScope is the DPS ID scope; default "0ne00INPROC".
	IDScope string
	// HubHost is the hub host name DPS assigns and hub tokens name;
	// default "inproc.azure-devices.net".
	HubHost string
	// GroupKey is the primary key (base64) of the one symmetric-key
	// enrollment group, with auto-approval: any valid registration id
	// whose key is derived from it is assigned. Default: a random key.
	GroupKey string
	// TelemetryHistory is how many messages per device TelemetryHistory
	// keeps: 0 means the emulator's default (1000), negative keeps none.
	TelemetryHistory int
}

// Hub is an in-memory IoT Central (DPS and one IoT hub) run by the
// emulator's core. Its methods are safe for concurrent use. Create it with
// New; Close it when done.
type Hub struct {
	core *core.Core

	mu       sync.Mutex
	changed  chan struct{}                  // closed and replaced on every change a waiter may look for
	connects map[string]int                 // hub connections accepted so far, per device
	conns    map[*Conn]struct{}             // live connections, for Close
	settles  map[string]chan<- core.Outcome // message id -> its first settlement, for SendCloudToDevice
	closed   bool
}

// New returns an empty Hub: devices appear when they register with DPS.
// It returns an error wrapping ErrInvalid for a malformed GroupKey.
func New(opts Options) (*Hub, error) {
	if opts.IDScope == "" {
		opts.IDScope = "0ne00INPROC"
	}
	if opts.HubHost == "" {
		opts.HubHost = "inproc.azure-devices.net"
	}
	g, err := core.NormalizeGroup(core.EnrollmentGroup{ID: "inproc", Enabled: true, PrimaryKey: opts.GroupKey})
	if err != nil {
		return nil, fmt.Errorf("inproc: group key: %w", err)
	}
	c := core.New(core.Config{
		IDScope: opts.IDScope, HubHost: opts.HubHost, Groups: []core.EnrollmentGroup{g},
		AutoApprove: true, TelemetryHistory: opts.TelemetryHistory,
	})
	return &Hub{
		core: c, changed: make(chan struct{}), connects: map[string]int{},
		conns: map[*Conn]struct{}{}, settles: map[string]chan<- core.Outcome{},
	}, nil
}

// Close ends every connection (Conn.Err then wraps ErrClosed), waits for
// the goroutines that deliver to them, and fails pending waits with
// ErrClosed. It is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	conns := make([]*Conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.end(ErrClosed)
		c.wg.Wait()
	}
	h.core.Close()
}

// IDScope is the DPS ID scope.
func (h *Hub) IDScope() string { return h.core.IDScope() }

// HubHost is the hub host name DPS assigns.
func (h *Hub) HubHost() string { return h.core.HubHost() }

// GroupKey is the enrollment group's primary key; device keys are derived
// from it (HMAC-SHA256 of the registration id).
func (h *Hub) GroupKey() string { return h.core.GroupKey() }

// changedLocked wakes Wait callers; h.mu held.
func (h *Hub) changedLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *Hub) notify() {
	h.mu.Lock()
	h.changedLocked()
	h.mu.Unlock()
}

// Wait calls cond until it reports true, again after every change of the
// hub (a connection, a disconnection, telemetry, a twin change, a
// settlement), and returns nil then, or ctx.Err(), or ErrClosed. cond runs
// without any lock of the hub held and may call its methods.
func (h *Hub) Wait(ctx context.Context, cond func() bool) error {
	for {
		h.mu.Lock()
		ch := h.changed
		h.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-h.core.Done():
			return ErrClosed
		}
	}
}

// Device is what the hub knows of a device.
type Device struct {
	// ID is the device id.
	ID string
	// ModelID is the model id of its registration, replaced by the one
	// given to Connect when not "".
	ModelID string
	// Connected reports a live connection.
	Connected bool
	// Connects counts the hub connections accepted so far.
	Connects int
}

// Device returns what the hub knows of device id, or an error wrapping
// ErrNotFound.
func (h *Hub) Device(id string) (Device, error) {
	d, err := h.core.Device(id)
	if err != nil {
		return Device{}, err
	}
	h.mu.Lock()
	n := h.connects[id]
	h.mu.Unlock()
	return Device{ID: d.ID, ModelID: d.ModelID, Connected: d.Connected, Connects: n}, nil
}

// Twin returns copies of the device's desired and reported sections with
// "$version" and "$metadata", as IoT Hub shows them. Numbers are float64
// or int64 ($version). It returns ErrNotFound for an unknown device.
func (h *Hub) Twin(id string) (desired, reported map[string]any, err error) {
	return h.core.Twin(id)
}

// UpdateProperties writes desired properties as an operator does (under
// component when not "", marked "__t": "c"; a nil value deletes), pushes
// the patch to the device when it is connected, and returns the new
// desired $version. Errors: ErrNotFound, ErrInvalid for a patch IoT Hub
// refuses (key rules, depth), ErrTooLarge over MaxTwinSection.
func (h *Hub) UpdateProperties(ctx context.Context, id, component string, patch map[string]any) (int64, error) {
	v, err := h.core.UpdateDesired(ctx, id, component, patch)
	if err == nil {
		h.notify()
	}
	return v, err
}

// CommandResult is a device's answer to a command.
type CommandResult struct {
	// Status is the status the device chose.
	Status int
	// Payload is the JSON answer: a body that is not JSON comes as a JSON
	// string, an empty one as nil.
	Payload []byte
}

// InvokeCommand calls a command (a direct method "component*name", or
// "name" for the root component) on the connected device and waits for
// its answer, until ctx ends or timeout passes (timeout <= 0 means 30 s;
// at most MaxCommandTimeout, IoT Hub's limit). payload is encoded as JSON
// (a json.RawMessage is sent as is). Errors: ErrNotFound, ErrInvalid for
// a bad name or payload, ErrDeviceOffline when the device is not
// connected, ErrTimeout, ctx.Err(), ErrClosed. The invocation is recorded
// in the emulator's command history.
func (h *Hub) InvokeCommand(ctx context.Context, id, component, name string, payload any, timeout time.Duration) (CommandResult, error) {
	r, err := h.core.InvokeCommand(ctx, id, component, name, payload, 0, timeout)
	if err != nil {
		return CommandResult{}, err
	}
	return CommandResult{Status: r.Status, Payload: r.Payload}, nil
}

// QueueCommand queues a command as IoT Central does for an offline
// device: a cloud-to-device message whose "method-name" property is the
// method name and whose body is the JSON payload. Errors are those of
// QueueCloudToDevice, plus ErrInvalid for a bad name or payload.
func (h *Hub) QueueCommand(ctx context.Context, id, component, name string, payload any) error {
	return h.core.QueueCommand(ctx, id, component, name, payload)
}

// PropMethodName is the property of a queued command's message.
const PropMethodName = core.PropMethodName

// Outcome is how a device settled a cloud-to-device message.
type Outcome = core.Outcome

// The three settlements of IoT Hub.
const (
	// Complete removes the message from the queue.
	Complete = core.Complete
	// Abandon puts the message back for redelivery.
	Abandon = core.Abandon
	// Reject removes the message and dead-letters it.
	Reject = core.Reject
)

// QueueCloudToDevice queues a cloud-to-device message and offers it to
// the device's connection; it stays queued until completed or rejected
// (an abandoned or unsettled message comes again). It returns the
// message id (the device's lock token). Errors: ErrNotFound, ErrTooLarge
// over MaxC2DBody, ErrInvalid for an empty property name, ErrQueueFull
// when MaxC2DQueue messages wait.
func (h *Hub) QueueCloudToDevice(ctx context.Context, id string, body []byte, props map[string]string) (string, error) {
	return h.core.QueueC2D(ctx, id, body, props)
}

// SendCloudToDevice queues a cloud-to-device message (as
// QueueCloudToDevice) and waits for the device's first accepted
// settlement of it: Complete, Abandon or Reject. A settlement the hub
// refuses (made on a connection that has ended) does not count: the
// message comes again on the next connection. It returns the errors of
// QueueCloudToDevice, ctx.Err() or ErrClosed.
func (h *Hub) SendCloudToDevice(ctx context.Context, id string, body []byte, props map[string]string) (Outcome, error) {
	ch := make(chan core.Outcome, 1)
	// h.mu is held until the watch is registered: a settlement (which
	// takes h.mu to report itself) cannot slip in before.
	h.mu.Lock()
	msgID, err := h.core.QueueC2D(ctx, id, body, props)
	if err == nil {
		h.settles[msgID] = ch
	}
	h.mu.Unlock()
	if err != nil {
		return 0, err
	}
	defer func() {
		h.mu.Lock()
		delete(h.settles, msgID)
		h.mu.Unlock()
	}()
	select {
	case o := <-ch:
		return o, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-h.core.Done():
		return 0, ErrClosed
	}
}

// settled reports an accepted settlement to a SendCloudToDevice waiter.
func (h *Hub) settled(msgID string, o core.Outcome) {
	h.mu.Lock()
	if ch, ok := h.settles[msgID]; ok {
		delete(h.settles, msgID)
		ch <- o // buffered, one sender: the entry was removed above
	}
	h.changedLocked()
	h.mu.Unlock()
}

// PendingC2D counts the cloud-to-device messages waiting for the device,
// delivered but unsettled ones included (0 for an unknown device).
func (h *Hub) PendingC2D(id string) int { return h.core.PendingC2D(id) }

// Telemetry is one device-to-cloud message as the hub stored it.
type Telemetry = core.Telemetry

// TelemetryHistory returns the device's kept messages, oldest first (at
// most Options.TelemetryHistory). It returns ErrNotFound for an unknown
// device.
func (h *Hub) TelemetryHistory(id string) ([]Telemetry, error) {
	return h.core.TelemetryHistory(id, core.HistoryFilter{})
}

// Disconnect drops the device's connection as a network failure would:
// its Conn ends with an error wrapping ErrDisconnected. Errors:
// ErrNotFound, ErrDeviceOffline when it is not connected.
func (h *Hub) Disconnect(id string) error { return h.core.DisconnectDevice(id) }

// Fault is a fault to inject; see package emulator's Fault.
type Fault = core.Fault

// FaultKind names a fault; see package emulator's FaultKind.
type FaultKind = core.FaultKind

// InjectFault schedules fault f on device id, as the emulator's
// InjectFault does (a connection fault ends the Conn; throttling and quota
// faults refuse its operations with ErrThrottled or ErrQuotaExceeded;
// connection refusals make Connect fail with ErrUnavailable). It returns
// ErrInvalid for an unknown kind or a bound over an hour.
func (h *Hub) InjectFault(id string, f Fault) error { return h.core.InjectFault(id, f) }

// RefuseConnections refuses device id's new connections (every device's
// when id is "") for d, with ErrUnavailable, without touching live ones.
// It returns ErrInvalid for d outside (0, 1 h].
func (h *Hub) RefuseConnections(id string, d time.Duration) error {
	return h.core.RefuseConnections(id, d)
}

// ClearFaults ends every fault window of device id (the global ones when
// id is "").
func (h *Hub) ClearFaults(id string) { h.core.ClearFaults(id) }
