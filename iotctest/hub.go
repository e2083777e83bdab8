// Package iotctest is an in-memory IoT Central for unit tests of device
// logic: a Hub implements the SDK's transport port with no network, so an
// iotc.Client built on it (Hub.Config) provisions, connects, sends and
// receives exactly as it does against IoT Central, in microseconds and
// with no TLS, ports or emulator to start.
//
// The hub is the emulator's own model (its core, in memory, reached
// in-process through package emulator/inproc): iotctest only adapts it to
// the SDK's ports, so it checks what the emulator checks (SAS tokens for
// the resource they name, one session per device, settlements only on the
// live session, IoT Hub's size limits and twin key rules).
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
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/domain"
	"github.com/iotc-go/iotc/emulator/inproc"
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
	// TelemetryKept is how many messages per device the Hub keeps for
	// Telemetry and WaitTelemetry (older ones are forgotten).
	TelemetryKept = 100_000
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
	in *inproc.Hub

	mu     sync.Mutex
	refuse []error

	// pmu is held across a reported patch and its recording, so that a
	// patch the twin shows is in patches too.
	pmu     sync.Mutex
	patches map[string][]json.RawMessage // accepted reported patches, per device
}

var _ ports.Transport = (*Hub)(nil)

// New returns an empty Hub: devices are created when they provision.
func New() *Hub {
	in, err := inproc.New(inproc.Options{IDScope: IDScope, HubHost: HubHost, GroupKey: GroupKey, TelemetryHistory: TelemetryKept})
	if err != nil {
		// GroupKey is a constant valid key: this cannot happen. Keep a
		// working hub whose devices cannot authenticate rather than panic.
		in, _ = inproc.New(inproc.Options{IDScope: IDScope, HubHost: HubHost, TelemetryHistory: TelemetryKept})
	}
	return &Hub{in: in, patches: map[string][]json.RawMessage{}}
}

// Config returns an iotc.Config for device id on this Hub: a group-key
// device, the Hub as its transport. Set handlers and other fields as for
// IoT Central.
func (h *Hub) Config(id string) iotc.Config {
	return iotc.Config{DeviceID: id, IDScope: IDScope, Credential: iotc.GroupKey(GroupKey), Adapter: h}
}

// Name implements ports.Transport.
func (h *Hub) Name() string { return "iotctest" }

// Provision implements ports.Provisioner as the emulator's DPS does: a
// device of the Hub's group (its key derived from GroupKey, the SAS token
// for "{IDScope}/registrations/{id}") is assigned to HubHost; the modelId
// of the payload becomes its model. Refused credentials, a token for
// another resource or an unknown ID scope give domain.ErrUnauthorized; a
// registration id IoT Hub refuses (1..128 of letters, digits and
// -.%_*?!(),:=@$') gives domain.ErrInvalidConfig.
func (h *Hub) Provision(ctx context.Context, req ports.ProvisioningRequest) (domain.Assignment, error) {
	body, err := req.Registration.Body()
	if err != nil {
		return domain.Assignment{}, fmt.Errorf("%w: registration body: %w", domain.ErrInvalidConfig, err)
	}
	id := req.Registration.RegistrationID
	r, err := h.in.Register(ctx, req.IDScope, id, req.Auth.SASToken, body)
	var dpsErr *inproc.DPSError
	switch {
	case errors.As(err, &dpsErr):
		return domain.Assignment{}, &domain.HubError{Op: "register", Status: dpsErr.Status, Code: dpsErr.Code, Message: dpsErr.Message}
	case errors.Is(err, inproc.ErrNotFound): // unknown ID scope: DPS refuses the credentials
		return domain.Assignment{}, fmt.Errorf("%w: %w", domain.ErrUnauthorized, err)
	case err != nil:
		return domain.Assignment{}, toDomain("register", err)
	case r.Status != "assigned":
		return domain.Assignment{}, &domain.ProvisioningError{Status: r.Status, ErrorCode: r.ErrorCode, Message: r.ErrorMessage}
	}
	return domain.Assignment{Hub: r.AssignedHub, DeviceID: r.DeviceID, Substatus: r.Substatus}, nil
}

// Connect implements ports.HubConnector: it opens a session for a
// provisioned device with a SAS token for "{HubHost}/devices/{id}" (X.509
// is not simulated), replacing the device's live session as IoT Hub does
// (the old one ends with domain.ErrNotConnected), and delivers the queued
// cloud-to-device messages; or it fails with the error given to
// RefuseConnect. Errors: domain.ErrUnauthorized (bad or expired token, a
// token for another resource), domain.ErrDeviceNotFound (unknown device
// or hub host), domain.ErrInvalidConfig (nil events).
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
		h.mu.Unlock()
		return nil, err
	}
	h.mu.Unlock()
	s := &session{hub: h, id: conn.DeviceID, events: events, ready: make(chan struct{})}
	c, err := h.in.Connect(ctx, conn.Host, conn.DeviceID, conn.Auth.SASToken, conn.ModelID, s)
	s.conn = c
	close(s.ready)
	if err != nil {
		return nil, toDomain("connect", err)
	}
	return s, nil
}

// toDomain maps the emulator's errors to the SDK's port contract.
func toDomain(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, inproc.ErrDisconnected):
		if errors.Is(err, inproc.ErrUnauthorized) {
			return fmt.Errorf("%w: %w: %w", domain.ErrNotConnected, domain.ErrUnauthorized, err)
		}
		return fmt.Errorf("%w: %w", domain.ErrNotConnected, err)
	case errors.Is(err, inproc.ErrUnauthorized):
		return fmt.Errorf("%w: %w", domain.ErrUnauthorized, err)
	case errors.Is(err, inproc.ErrNotFound):
		return fmt.Errorf("%w: %w", domain.ErrDeviceNotFound, err)
	case errors.Is(err, inproc.ErrTooLarge):
		return fmt.Errorf("%w: %w", domain.ErrMessageTooLarge, err)
	case errors.Is(err, inproc.ErrThrottled):
		return fmt.Errorf("%w: %w", domain.ErrThrottled, err)
	case errors.Is(err, inproc.ErrQuotaExceeded):
		return &domain.HubError{Op: op, Status: 403, Code: 403002, Message: err.Error()}
	case errors.Is(err, inproc.ErrUnavailable):
		return &domain.HubError{Op: op, Status: 503, Message: err.Error()}
	case errors.Is(err, inproc.ErrInvalid):
		return fmt.Errorf("%w: %w", domain.ErrInvalidConfig, err)
	case errors.Is(err, inproc.ErrClosed):
		return fmt.Errorf("%w: %w", domain.ErrNotConnected, err)
	}
	return err
}

// operatorErr maps an emulator error of an operator call: an unknown
// device wraps ErrNotFound (and ErrOffline when offline), an offline one
// ErrOffline.
func operatorErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, inproc.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, inproc.ErrDeviceOffline):
		return fmt.Errorf("%w: %w", ErrOffline, err)
	}
	return err
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
// reconnects by itself. It returns ErrOffline when there is none (and
// ErrNotFound too for an unknown device).
func (h *Hub) Drop(id string) error {
	err := h.in.Disconnect(id)
	if errors.Is(err, inproc.ErrNotFound) {
		return fmt.Errorf("%w: %w: %w", ErrOffline, ErrNotFound, err)
	}
	return operatorErr(err)
}

// Connected reports whether the device has an open session.
func (h *Hub) Connected(id string) bool {
	d, err := h.in.Device(id)
	return err == nil && d.Connected
}

// Connects counts the device's hub connections so far.
func (h *Hub) Connects(id string) int {
	d, _ := h.in.Device(id)
	return d.Connects
}

// WaitConnected waits until the device has an open session, its
// connection number n or later (1 is the first), or ctx ends.
func (h *Hub) WaitConnected(ctx context.Context, id string, n int) error {
	return h.in.Wait(ctx, func() bool {
		d, err := h.in.Device(id)
		return err == nil && d.Connected && d.Connects >= n
	})
}

// ModelID returns the model the device announced.
func (h *Hub) ModelID(id string) string {
	d, _ := h.in.Device(id)
	return d.ModelID
}

// Telemetry returns every message the device sent, in order (the last
// TelemetryKept).
func (h *Hub) Telemetry(id string) []Telemetry {
	hist, err := h.in.TelemetryHistory(id)
	if err != nil {
		return nil
	}
	out := make([]Telemetry, len(hist))
	for i, m := range hist {
		out[i] = Telemetry{Component: m.Component, Body: m.Body, Properties: m.Properties, MessageID: m.MessageID, Received: m.Received}
	}
	return out
}

// WaitTelemetry waits until the device sent at least n messages and
// returns them all.
func (h *Hub) WaitTelemetry(ctx context.Context, id string, n int) ([]Telemetry, error) {
	err := h.in.Wait(ctx, func() bool { return len(h.Telemetry(id)) >= n })
	return h.Telemetry(id), err
}

// twin returns the device's sections, nil for an unknown device.
func (h *Hub) twin(id string) (desired, reported map[string]any) {
	desired, reported, err := h.in.Twin(id)
	if err != nil {
		return nil, nil
	}
	return desired, reported
}

// Reported returns the reported properties as the twin holds them
// (without $version and $metadata; numbers are float64).
func (h *Hub) Reported(id string) map[string]any {
	_, rep := h.twin(id)
	if rep == nil {
		return nil
	}
	delete(rep, "$version")
	delete(rep, "$metadata")
	return rep
}

// ReportedPatches returns every reported-properties patch the device
// sent and the hub accepted, in order.
func (h *Hub) ReportedPatches(id string) []json.RawMessage {
	h.pmu.Lock()
	defer h.pmu.Unlock()
	return append([]json.RawMessage(nil), h.patches[id]...)
}

// WaitReported waits until the reported properties satisfy cond (called
// with the current reported properties, without $version and $metadata).
func (h *Hub) WaitReported(ctx context.Context, id string, cond func(reported map[string]any) bool) error {
	return h.in.Wait(ctx, func() bool {
		rep := h.Reported(id)
		return rep != nil && cond(rep)
	})
}

// Desired returns the desired properties with $version and $metadata
// (numbers are float64, $version int64).
func (h *Hub) Desired(id string) map[string]any {
	d, _ := h.twin(id)
	return d
}

// UpdateProperties writes desired properties (in component, "" for the
// root; a component's patch gets "__t": "c") as an operator does, pushes
// the patch to the device if it is connected, and returns the new desired
// $version. The device sees it at its next twin read if offline. Errors:
// ErrNotFound; a patch IoT Hub refuses (a key with '.', '$' or a space,
// nesting over 10 levels, a section over 32 KiB) wraps
// emulator/inproc.ErrInvalid or ErrTooLarge.
func (h *Hub) UpdateProperties(id, component string, props map[string]any) (int64, error) {
	v, err := h.in.UpdateProperties(context.Background(), id, component, props)
	return v, operatorErr(err)
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
	err = h.in.Wait(ctx, func() bool {
		a, ok := h.PropertyAck(id, component, name)
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
	sec := h.Reported(id)
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
// answer until ctx ends (at most 300 s, IoT Hub's limit). It returns
// ErrOffline when the device is not connected (with ErrNotFound for an
// unknown device), and an error wrapping emulator/inproc.ErrInvalid for a
// name with a character that breaks a topic ("/+#?*&=") or a payload
// that does not encode as JSON. The answer's payload is JSON: a device's
// non-JSON answer comes as a JSON string, an empty one as nil.
func (h *Hub) InvokeCommand(ctx context.Context, id, component, name string, payload any) (CommandResult, error) {
	r, err := h.in.InvokeCommand(ctx, id, component, name, payload, inproc.MaxCommandTimeout)
	if errors.Is(err, inproc.ErrNotFound) {
		return CommandResult{}, fmt.Errorf("%w: %w: %w", ErrOffline, ErrNotFound, err)
	}
	if err != nil {
		return CommandResult{}, operatorErr(err)
	}
	return CommandResult{Status: r.Status, Payload: r.Payload}, nil
}

// QueueCommand queues a command for the device as IoT Central does for an
// offline device: a cloud-to-device message with "method-name". It is
// delivered at once if the device is connected, else on its next
// connection. Errors are those of SendCloudToDevice, plus ErrInvalid (of
// emulator/inproc) for a bad name or payload.
func (h *Hub) QueueCommand(id, component, name string, payload any) error {
	return operatorErr(h.in.QueueCommand(context.Background(), id, component, name, payload))
}

// SendCloudToDevice queues a cloud-to-device message and waits for the
// device's first settlement of it (Complete, Abandon or Reject), delivering
// it at once if the device is connected, else on its next connection. An
// abandoned message stays queued and comes again: with the next delivery
// on the same connection (when another message is sent), or on the next
// connection.
// A settlement made on a session that has ended does not count (IoT Hub
// refuses it): the message comes again. Errors: ErrNotFound, and those of
// emulator/inproc: ErrTooLarge over 64 KiB, ErrQueueFull when 50 messages
// wait, ErrInvalid for an empty property name; ctx.Err().
func (h *Hub) SendCloudToDevice(ctx context.Context, id string, body []byte, props map[string]string) (iotc.Outcome, error) {
	o, err := h.in.SendCloudToDevice(ctx, id, body, props)
	if err != nil {
		return 0, operatorErr(err)
	}
	return fromOutcome(o), nil
}

// Queued counts the cloud-to-device messages waiting for the device
// (delivered but unsettled ones included).
func (h *Hub) Queued(id string) int { return h.in.PendingC2D(id) }

func fromOutcome(o inproc.Outcome) domain.Outcome {
	switch o {
	case inproc.Abandon:
		return domain.Abandon
	case inproc.Reject:
		return domain.Reject
	}
	return domain.Complete
}

func toOutcome(o domain.Outcome) inproc.Outcome {
	switch o {
	case domain.Abandon:
		return inproc.Abandon
	case domain.Reject:
		return inproc.Reject
	}
	return inproc.Complete
}

func cloneProps(m map[string]string) map[string]string {
	out := maps.Clone(m)
	if out == nil {
		out = map[string]string{}
	}
	return out
}
