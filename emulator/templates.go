package emulator

import "github.com/iotc-go/iotc/emulator/internal/core"

// DeviceSpec is what an operator sets on a device with PutDevice; nil
// fields are left as they are (on create: display name = id, enabled,
// not simulated, no template, no organization).
type DeviceSpec = core.DeviceSpec

// DeviceDetails is a device with its operator-side settings (assigned
// template, simulated, organizations).
type DeviceDetails = core.DeviceDetails

// CommandRecord is one finished command invocation of the history.
type CommandRecord = core.CommandRecord

// PutDevice creates device id (individual enrollment with random keys, not
// yet provisioned) or updates it, as REST PUT/PATCH /api/devices/{id} do.
// Setting Enabled false makes DPS answer "disabled", the hub refuse the
// device on every transport, and drops a live connection. Errors:
// ErrInvalid for a malformed id.
func (e *Emulator) PutDevice(id string, spec DeviceSpec) (DeviceDetails, error) {
	d, _, err := e.core.PutDevice(id, spec)
	return d, err
}

// DeviceDetails returns the device with its operator-side settings, or
// ErrNotFound.
func (e *Emulator) DeviceDetails(id string) (DeviceDetails, error) { return e.core.DeviceDetails(id) }

// DeleteDevice removes a device with its twin, queues and history and drops
// its connection. ErrNotFound for an unknown device.
func (e *Emulator) DeleteDevice(id string) error { return e.core.DeleteDevice(id) }

// DeleteEnrollmentGroup removes an enrollment group. ErrNotFound.
func (e *Emulator) DeleteEnrollmentGroup(id string) error { return e.core.DeleteEnrollmentGroup(id) }

// PutDeviceTemplate stores device template id, a document as IoT Central
// stores it: "@type" (non-empty array), "capabilityModel" (a DTDL
// interface with "contents" of Telemetry, Property, Command and Component
// entries and optional "extends"), "displayName", "description". A device
// whose assigned template or model id is id (or the capability model's
// "@id") uses it. Errors: ErrInvalid, ErrTooLarge (over 512 KiB).
func (e *Emulator) PutDeviceTemplate(id string, doc map[string]any) (map[string]any, error) {
	return e.core.PutTemplate(id, doc)
}

// DeviceTemplate returns a copy of device template id, or ErrNotFound.
func (e *Emulator) DeviceTemplate(id string) (map[string]any, error) { return e.core.Template(id) }

// DeviceTemplates returns copies of every device template, sorted by id.
func (e *Emulator) DeviceTemplates() []map[string]any { return e.core.Templates() }

// DeleteDeviceTemplate removes device template id. ErrNotFound, or
// ErrConflict while a device is assigned to it.
func (e *Emulator) DeleteDeviceTemplate(id string) error { return e.core.DeleteTemplate(id) }

// CommandHistory returns the last invocations (at most 10) of a command
// run through the REST API, oldest first (component "" for the root).
// ErrNotFound for an unknown device.
func (e *Emulator) CommandHistory(id, component, name string) ([]CommandRecord, error) {
	return e.core.CommandHistory(id, component, name)
}
