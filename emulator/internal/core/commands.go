package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MethodName is the direct-method name of a command: "component*name",
// or "name" for the root component. It returns ErrInvalid for an empty
// name or one with a character that breaks a topic.
func MethodName(component, name string) (string, error) {
	if name == "" || strings.ContainsAny(name+component, "/+#?*&=") {
		return "", fmt.Errorf("%w: command name %q (component %q)", ErrInvalid, name, component)
	}
	if component != "" {
		return component + "*" + name, nil
	}
	return name, nil
}

func encodePayload(payload any) ([]byte, error) {
	if raw, ok := payload.(json.RawMessage); ok {
		if !json.Valid(raw) {
			return nil, fmt.Errorf("%w: payload is not valid JSON", ErrInvalid)
		}
		return raw, nil
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrInvalid, err)
	}
	return b, nil
}

// Result is a device's method answer: a JSON body as it is, another body
// as a JSON string, an empty one as nil.
func Result(status int, body []byte) CommandResult {
	res := CommandResult{Status: status}
	switch {
	case len(strings.TrimSpace(string(body))) == 0:
	case json.Valid(body):
		res.Payload = append(json.RawMessage(nil), body...)
	default:
		res.Payload, _ = json.Marshal(string(body))
	}
	return res
}

// InvokeCommand calls a direct method on a connected device, first waiting
// up to connectTimeout (when > 0) for it to be connected and subscribed to
// methods. timeout <= 0 means DefaultCommandTimeout; it is capped at
// MaxCommandTimeout. It returns ErrNotFound, ErrInvalid for a bad name or
// payload, ErrDeviceOffline, ErrTimeout, ctx.Err() or ErrClosed.
func (c *Core) InvokeCommand(ctx context.Context, id, component, name string, payload any, connectTimeout, timeout time.Duration) (CommandResult, error) {
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
	if _, err := c.Device(id); err != nil {
		return CommandResult{}, err
	}
	res, err := c.invokeMethod(ctx, id, method, body, connectTimeout, timeout)
	if err != nil {
		return CommandResult{}, err
	}
	rec := CommandRecord{ID: res.RequestID, Component: component, Name: name, Response: res.Payload,
		ResponseCode: res.Status, ConnectionTimeout: int(connectTimeout / time.Second), ResponseTimeout: int(timeout / time.Second)}
	if string(body) != "null" {
		rec.Request = body
	}
	// Recorded whoever invoked it: the REST API, the dashboard, the Go API.
	if err := c.RecordCommand(id, rec); err != nil && !errors.Is(err, ErrNotFound) {
		return CommandResult{}, err
	}
	return res, nil
}

// invokeMethod calls direct method on the connection of key (a device id
// or a module key, see ModuleKey) with a JSON body, waiting up to
// connectTimeout (when > 0) for it to be connected and subscribed to
// methods; timeout is normalized as InvokeCommand's. Errors: ErrNotFound,
// ErrDeviceOffline, ErrTimeout, ctx.Err(), ErrClosed.
func (c *Core) invokeMethod(ctx context.Context, key, method string, body []byte, connectTimeout, timeout time.Duration) (CommandResult, error) {
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	timeout = min(timeout, MaxCommandTimeout)
	if connectTimeout > 0 {
		wctx, cancel := context.WithTimeout(ctx, min(connectTimeout, MaxCommandTimeout))
		err := c.WaitSubscribed(wctx, key, FeatureMethods)
		cancel()
		if errors.Is(err, ErrClosed) || ctx.Err() != nil {
			return CommandResult{}, errors.Join(err, ctx.Err())
		}
	}
	c.mu.Lock()
	d, err := c.entityLocked(key)
	var l Link
	if err == nil {
		l = d.link
	}
	c.mu.Unlock()
	if err != nil {
		return CommandResult{}, err
	}
	if l == nil || !l.Subscribed(FeatureMethods) {
		return CommandResult{}, fmt.Errorf("%w: %s (method %s)", ErrDeviceOffline, keyName(key), method)
	}
	bctx, cancel := c.bound(ctx)
	defer cancel()
	tctx, tcancel := context.WithTimeout(bctx, timeout)
	defer tcancel()
	status, resp, err := l.InvokeMethod(tctx, method, body)
	switch {
	case err == nil:
		res := Result(status, resp)
		res.RequestID = NewUUID()
		return res, nil
	case ctx.Err() != nil:
		return CommandResult{}, ctx.Err()
	case c.closed():
		return CommandResult{}, ErrClosed
	case errors.Is(err, context.DeadlineExceeded):
		c.log.Warn("direct method timed out", "device_id", key, "method", method, "timeout", timeout)
		return CommandResult{}, fmt.Errorf("%w: %s, method %s, after %s", ErrTimeout, keyName(key), method, timeout)
	default:
		return CommandResult{}, fmt.Errorf("%w: %s (method %s): %v", ErrDeviceOffline, keyName(key), method, err)
	}
}

// QueueCommand queues a command for a device that may be offline, as IoT
// Central does: a cloud-to-device message whose "method-name" property is
// the method name and whose body is the JSON payload. Errors are those of
// SendCloudToDevice, plus ErrInvalid for a bad name or payload.
func (c *Core) QueueCommand(ctx context.Context, id, component, name string, payload any) error {
	method, err := MethodName(component, name)
	if err != nil {
		return err
	}
	body, err := encodePayload(payload)
	if err != nil {
		return err
	}
	return c.SendCloudToDevice(ctx, id, body, map[string]string{PropMethodName: method})
}

// PropMethodName is the cloud-to-device property of a queued command.
const PropMethodName = "method-name"
