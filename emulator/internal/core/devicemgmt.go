package core

import (
	"errors"
	"fmt"
	"slices"

	"github.com/iotc-go/iotc/emulator/internal/sas"
)

// DeviceSpec is what an operator sets on a device (REST PUT/PATCH
// /devices/{id}). Nil fields are left as they are (on create: DisplayName
// defaults to the id, Enabled to true, Simulated to false, Template to none).
type DeviceSpec struct {
	// DisplayName is the name shown for the device.
	DisplayName *string
	// Template is the assigned device template id; "" removes the
	// assignment (the device's model id then chooses its template).
	Template *string
	// Enabled false blocks the device: DPS answers "disabled", the hub
	// refuses its connects, and a live connection is dropped.
	Enabled *bool
	// Simulated is stored and shown; the emulator simulates nothing.
	Simulated *bool
	// Organizations are stored and shown (at most one in IoT Central).
	Organizations *[]string
}

// DeviceDetails is a device with the operator-side settings.
type DeviceDetails struct {
	Device
	// Template is the assigned template id, else the model id.
	Template string
	// Simulated is as set by the operator.
	Simulated bool
	// Organizations are as set by the operator.
	Organizations []string
	// IndividualKeys is set when the device has its own symmetric keys
	// (an individual attestation), not only keys derived from a group.
	IndividualKeys bool
}

// errBlockedByOperator is the reason given to a link dropped because its
// device was disabled or deleted.
var errBlockedByOperator = errors.New("emulator: device disabled or deleted by operator")

// PutDevice creates device id (with an individual enrollment and random
// symmetric keys, not yet provisioned) or updates it with spec, and returns
// it and whether it was created. Disabling a connected device drops its
// connection. It returns ErrInvalid for a malformed id.
func (c *Core) PutDevice(id string, spec DeviceSpec) (DeviceDetails, bool, error) {
	if err := ValidID(id); err != nil {
		return DeviceDetails{}, false, fmt.Errorf("device: %w", err)
	}
	c.mu.Lock()
	d, ok := c.devices[id]
	created := !ok
	if created {
		d = newDevice(id, c.now())
		d.indivKeys = [2]string{RandomKey(), RandomKey()}
		c.devices[id] = d
	}
	s := c.ext.settingsOf(id)
	wasName, wasTemplate, wasEnabled := d.displayName, c.detailsLocked(d).Template, d.enabled
	if spec.DisplayName != nil {
		d.displayName = *spec.DisplayName
		if d.displayName == "" {
			d.displayName = id
		}
	}
	if spec.Template != nil {
		s.template = *spec.Template
	}
	if spec.Simulated != nil {
		s.simulated = *spec.Simulated
	}
	if spec.Organizations != nil {
		s.organizations = slices.Clone(*spec.Organizations)
	}
	d.version++
	var drop Link
	if spec.Enabled != nil {
		d.enabled = *spec.Enabled
		if !d.enabled {
			drop = d.link
		}
	}
	out := c.detailsLocked(d)
	if created {
		c.sinkNotificationLocked(d, DeviceNotification{Op: OpCreateDeviceIdentity})
	}
	staged := c.stageDeviceLocked(d)
	switch {
	case created:
		c.observeLocked(FeedEvent{Kind: FeedRegistered, DeviceID: id})
	default:
		if d.enabled != wasEnabled {
			k := FeedDisabled
			if d.enabled {
				k = FeedEnabled
			}
			c.observeLocked(FeedEvent{Kind: k, DeviceID: id})
		}
		if d.displayName != wasName {
			c.observeLocked(FeedEvent{Kind: FeedDisplayNameChanged, DeviceID: id})
		}
		if out.Template != wasTemplate {
			c.observeLocked(FeedEvent{Kind: FeedTemplateAssigned, DeviceID: id})
		}
	}
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return DeviceDetails{}, false, err
	}
	if created {
		c.log.Info("device created", "device_id", id)
	}
	if drop != nil {
		c.log.Info("device disabled, dropping its connection", "device_id", id)
		drop.Drop(errBlockedByOperator)
	}
	return out, created, nil
}

// DeviceDetails returns the device with its operator-side settings, or
// ErrNotFound.
func (c *Core) DeviceDetails(id string) (DeviceDetails, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.lookup(id)
	if err != nil {
		return DeviceDetails{}, err
	}
	return c.detailsLocked(d), nil
}

// detailsLocked needs c.mu.
func (c *Core) detailsLocked(d *device) DeviceDetails {
	out := DeviceDetails{Device: d.public(), Template: d.modelID, IndividualKeys: d.indivKeys[0] != ""}
	if s := c.ext.settings[d.id]; s != nil {
		if s.template != "" {
			out.Template = s.template
		}
		out.Simulated = s.simulated
		out.Organizations = slices.Clone(s.organizations)
	}
	return out
}

// DeleteDevice removes the device, its twin, telemetry, queues and
// history, and drops its connection. It returns ErrNotFound. A device of
// an enrollment group that auto-approves can register again afterwards.
func (c *Core) DeleteDevice(id string) error {
	c.mu.Lock()
	d, ok := c.devices[id]
	if !ok {
		c.mu.Unlock()
		return errNoDevice(id)
	}
	l := d.link
	c.sinkNotificationLocked(d, DeviceNotification{Op: OpDeleteDeviceIdentity})
	delete(c.devices, id)
	delete(c.ext.settings, id)
	delete(c.ext.commands, id)
	changes := append([]Change{{Op: OpDeleteDevice, Record: Record{Kind: KindDevice, Key: id}}}, c.takeSunkLocked()...)
	if ch, ok := c.forgetUploadsLocked(id); ok { // fileupload.go
		changes = append(changes, ch)
	}
	staged := c.stageLocked(changes...)
	c.observeLocked(FeedEvent{Kind: FeedDeleted, DeviceID: id})
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return err
	}
	c.log.Info("device deleted", "device_id", id)
	if l != nil {
		l.Drop(errBlockedByOperator)
	}
	return nil
}

// SetDeviceKeys replaces the individual symmetric keys of a device (its
// individual attestation) and makes it a symmetric-key device. Empty keys
// are generated. It returns ErrNotFound, or ErrInvalid for a key that is
// not base64.
func (c *Core) SetDeviceKeys(id, primary, secondary string) (string, string, error) {
	for _, k := range []*string{&primary, &secondary} {
		if *k == "" {
			*k = RandomKey()
		} else if err := validKey(*k); err != nil {
			return "", "", err
		}
	}
	c.mu.Lock()
	d, err := c.lookup(id)
	if err != nil {
		c.mu.Unlock()
		return "", "", err
	}
	d.indivKeys = [2]string{primary, secondary}
	d.x509 = false
	d.version++
	staged := c.stageDeviceLocked(d)
	c.mu.Unlock()
	if err := awaitNow(staged); err != nil {
		return "", "", err
	}
	return primary, secondary, nil
}

// RemoveDeviceKeys removes the individual symmetric keys of a device, so
// it authenticates only through its enrollment group. It returns
// ErrNotFound.
func (c *Core) RemoveDeviceKeys(id string) error {
	c.mu.Lock()
	d, err := c.lookup(id)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	d.indivKeys = [2]string{}
	d.version++
	staged := c.stageDeviceLocked(d)
	c.mu.Unlock()
	return awaitNow(staged)
}

// DeleteEnrollmentGroup removes the group; its devices stay but can no
// longer register through it. It returns ErrNotFound.
func (c *Core) DeleteEnrollmentGroup(id string) error {
	c.mu.Lock()
	for i, g := range c.groups {
		if g.ID == id {
			c.groups = append(c.groups[:i:i], c.groups[i+1:]...)
			delete(c.ext.verifying, id)
			staged := c.stageLocked(Change{Op: OpDelete, Record: Record{Kind: KindGroup, Key: id}})
			c.mu.Unlock()
			if err := awaitNow(staged); err != nil {
				return err
			}
			c.log.Info("enrollment group deleted", "group_id", id)
			return nil
		}
	}
	c.mu.Unlock()
	return fmt.Errorf("%w: enrollment group %q", ErrNotFound, id)
}

func validKey(k string) error {
	if err := sas.ValidKey(k); err != nil {
		return fmt.Errorf("%w: symmetric key is not valid base64", ErrInvalid)
	}
	return nil
}
