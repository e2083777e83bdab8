package core

import (
	"fmt"
	"slices"
)

// This file holds IoT Edge device scopes as IoT Hub's registry keeps them:
// an edge device (capabilities.iotEdge) gets a generated, immutable device
// scope and the $edgeAgent and $edgeHub module identities; a child device
// names its parent edge device by that scope (deviceScope, mirrored in
// parentScopes), and a nested edge device names its parent in
// parentScopes. The scopes are checked and shown; the emulator runs no IoT
// Edge runtime, so a child authenticates with its own credentials only:
// an edge device's $edgeHub acting for its children is not emulated.

// edgeScopePrefix starts every scope IoT Hub generates for an edge device.
const edgeScopePrefix = "ms-azure-iot-edge://"

// edgeScope is the scope IoT Hub generates for edge device d.
func edgeScope(d *device) string { return edgeScopePrefix + d.id + "-" + GenerationID(d.created) }

// scopesLocked resolves the scopes a registry PUT of device id sets (cur is
// the device, nil on create): for an edge device the current scope (""
// means generate one) and the checked parent scopes; for a leaf device the
// scope of its parent edge device, also its one parent scope. It returns
// ErrInvalid for a scope that names no other edge device; c.mu held.
func (c *Core) scopesLocked(id string, cur *device, spec HubDeviceSpec) (string, []string, error) {
	isEdgeScope := func(s string) bool {
		for _, d := range c.devices {
			if d.edge && d.deviceScope == s && d.id != id {
				return true
			}
		}
		return false
	}
	if spec.IotEdge {
		for _, p := range spec.ParentScopes {
			if !isEdgeScope(p) {
				return "", nil, fmt.Errorf("%w: parent scope %q is not the device scope of another IoT Edge device", ErrInvalid, p)
			}
		}
		scope := ""
		if cur != nil && cur.edge {
			scope = cur.deviceScope // immutable once generated
		}
		return scope, slices.Clone(spec.ParentScopes), nil
	}
	scope := spec.DeviceScope
	if scope == "" && len(spec.ParentScopes) == 1 {
		scope = spec.ParentScopes[0]
	}
	if scope == "" {
		return "", nil, nil
	}
	if len(spec.ParentScopes) == 1 && spec.ParentScopes[0] != scope {
		return "", nil, fmt.Errorf("%w: a device's parent scope is its device scope %q, not %q", ErrInvalid, scope, spec.ParentScopes[0])
	}
	if !isEdgeScope(scope) {
		return "", nil, fmt.Errorf("%w: device scope %q is not the scope of an IoT Edge device", ErrInvalid, scope)
	}
	return scope, []string{scope}, nil
}

// edgeModulesLocked creates the $edgeAgent and $edgeHub modules of edge
// device d that it lacks, as IoT Hub does, and returns them; c.mu held.
func (c *Core) edgeModulesLocked(d *device) []*device {
	var added []*device
	for _, mid := range []string{ModuleEdgeAgent, ModuleEdgeHub} {
		if _, ok := d.modules[mid]; ok {
			continue
		}
		m := newModule(d.id, mid, c.now())
		if d.modules == nil {
			d.modules = map[string]*device{}
		}
		d.modules[mid] = m
		added = append(added, m)
	}
	return added
}

// edgeLocked gives an edge device what IoT Hub gives it: its generated
// scope when it has none, and the $edgeAgent and $edgeHub modules it
// lacks, which it returns (nil for a device that is not an edge device);
// c.mu held.
func (c *Core) edgeLocked(d *device) []*device {
	if !d.edge {
		return nil
	}
	if d.deviceScope == "" {
		d.deviceScope = edgeScope(d)
	}
	return c.edgeModulesLocked(d)
}

// stageDeviceAndModulesLocked is stageDeviceLocked of device d with the
// puts of modules (new ones of d) in the same unit; c.mu held.
func (c *Core) stageDeviceAndModulesLocked(d *device, modules []*device) <-chan error {
	if !c.durable() {
		return nil
	}
	changes := []Change{c.deviceChangeLocked(d)}
	for _, m := range modules {
		changes = append(changes, moduleChange(m))
	}
	return c.stageLocked(append(changes, c.takeSunkLocked()...)...)
}
