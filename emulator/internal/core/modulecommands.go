package core

import (
	"context"
	"slices"
	"strings"
	"time"
)

// moduleHistoryKey names one incarnation of a module, so a module deleted
// and created again under the same id starts with an empty history.
func moduleHistoryKey(m *device) string {
	return ModuleKey(m.id, m.moduleID) + "@" + GenerationID(m.created)
}

// InvokeModuleCommand runs command name of a component ("" for the root)
// on a connected module, as InvokeCommand does for a device (the method
// name is "{component}*{name}" for a component), and records it in the
// module's command history (ModuleCommandHistory; at most
// MaxCommandHistory per command, in memory only: a restart forgets it).
// Errors: ErrNotFound (ErrModuleNotFound), ErrInvalid for a bad name or
// payload, ErrDeviceOffline, ErrTimeout, ctx.Err(), ErrClosed.
func (c *Core) InvokeModuleCommand(ctx context.Context, deviceID, moduleID, component, name string, payload any, connectTimeout, timeout time.Duration) (CommandResult, error) {
	method, err := MethodName(component, name)
	if err != nil {
		return CommandResult{}, err
	}
	body, err := encodePayload(payload)
	if err != nil {
		return CommandResult{}, err
	}
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	timeout = min(timeout, MaxCommandTimeout)
	c.mu.Lock()
	_, err = c.moduleLocked(deviceID, moduleID)
	c.mu.Unlock()
	if err != nil {
		return CommandResult{}, err
	}
	res, err := c.invokeMethod(ctx, ModuleKey(deviceID, moduleID), method, body, connectTimeout, timeout)
	if err != nil {
		return CommandResult{}, err
	}
	rec := CommandRecord{ID: res.RequestID, Component: component, Name: name, Response: res.Payload,
		ResponseCode: res.Status, ConnectionTimeout: int(connectTimeout / time.Second), ResponseTimeout: int(timeout / time.Second)}
	if string(body) != "null" {
		rec.Request = body
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.moduleLocked(deviceID, moduleID)
	if err != nil { // deleted while the command ran: nothing to keep
		return res, nil
	}
	rec.Time = c.now()
	if c.ext.moduleCommands == nil {
		c.ext.moduleCommands = map[string][]CommandRecord{}
	}
	// Histories of modules deleted since (or replaced by a new module of
	// the same id) go now, so the map holds live modules only.
	for k := range c.ext.moduleCommands {
		dev, rest, _ := strings.Cut(k, "/")
		mod, _, _ := strings.Cut(rest, "@")
		if live, err := c.moduleLocked(dev, mod); err != nil || moduleHistoryKey(live) != k {
			delete(c.ext.moduleCommands, k)
		}
	}
	key := moduleHistoryKey(m)
	hist := append(c.ext.moduleCommands[key], rec)
	same := func(r CommandRecord) bool { return r.Component == component && r.Name == name }
	for n := countFunc(hist, same); n > MaxCommandHistory; n-- {
		hist = slices.Delete(hist, slices.IndexFunc(hist, same), slices.IndexFunc(hist, same)+1)
	}
	c.ext.moduleCommands[key] = hist
	return res, nil
}

// ModuleCommandHistory returns the kept invocations of one command of a
// module (component "" for the root) made through InvokeModuleCommand,
// oldest first. It returns ErrNotFound (ErrModuleNotFound) for an unknown
// device or module; a command never run gives an empty list.
func (c *Core) ModuleCommandHistory(deviceID, moduleID, component, name string) ([]CommandRecord, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.moduleLocked(deviceID, moduleID)
	if err != nil {
		return nil, err
	}
	out := []CommandRecord{}
	for _, r := range c.ext.moduleCommands[moduleHistoryKey(m)] {
		if r.Component == component && r.Name == name {
			r.Request, r.Response = slices.Clone(r.Request), slices.Clone(r.Response)
			out = append(out, r)
		}
	}
	return out, nil
}

func countFunc[T any](s []T, f func(T) bool) int {
	n := 0
	for _, v := range s {
		if f(v) {
			n++
		}
	}
	return n
}
