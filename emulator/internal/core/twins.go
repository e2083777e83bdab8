package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	"github.com/iotc-go/iotc/emulator/internal/twin"
)

// Twin returns copies of the device's desired and reported sections as
// IoT Hub shows them, with "$version" and "$metadata". It returns
// ErrNotFound for an unknown device.
func (c *Core) Twin(id string) (desired, reported map[string]any, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.lookup(id)
	if err != nil {
		return nil, nil, err
	}
	return d.desired.Document(), d.reported.Document(), nil
}

// UpdateProperties applies patch to the device's desired properties (under
// component when not "", marked "__t":"c"; a nil value deletes), increments
// the desired $version and pushes the patch to a connected device. It
// returns ErrNotFound, ErrInvalid for a bad patch or ErrTooLarge.
func (c *Core) UpdateProperties(ctx context.Context, id, component string, patch map[string]any) error {
	_, err := c.UpdateDesired(ctx, id, component, patch)
	return err
}

// UpdateDesired is UpdateProperties returning the new desired $version
// (0 on error), so that the caller can wait for the device's
// acknowledgement of that version. Errors are those of UpdateProperties.
func (c *Core) UpdateDesired(ctx context.Context, id, component string, patch map[string]any) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if component != "" {
		inner := map[string]any{"__t": "c"}
		maps.Copy(inner, patch)
		patch = map[string]any{component: inner}
	}
	p, err := twin.NormalizePatch(patch)
	if err != nil {
		return 0, fmt.Errorf("%w: desired patch: %v", ErrInvalid, err)
	}
	c.mu.Lock()
	d, err := c.lookup(id)
	if err != nil {
		c.mu.Unlock()
		return 0, err
	}
	v, err := d.desired.Apply(p, c.now())
	if err != nil {
		c.mu.Unlock()
		if errors.Is(err, twin.ErrTooLarge) {
			return 0, fmt.Errorf("%w: desired patch: %v", ErrTooLarge, err)
		}
		return 0, fmt.Errorf("%w: desired patch: %v", ErrInvalid, err)
	}
	l := d.link
	c.twinChangedLocked(d, "desired", p, v)
	staged := c.stageDeviceLocked(d)
	c.emit(Event{DeviceID: id, Kind: EventDesired, Version: v, Time: c.now()})
	c.observePatchLocked(FeedDesired, id, p, v)
	c.mu.Unlock()
	if err := await(ctx, staged); err != nil {
		return 0, err
	}
	c.log.Info("desired properties updated", "device_id", id, "version", v)
	if l == nil {
		return v, nil
	}
	body, err := json.Marshal(twin.WithVersion(p, v))
	if err != nil {
		return v, fmt.Errorf("emulator: encode desired patch: %w", err)
	}
	if err := l.PushDesired(body, v); err != nil {
		c.log.Warn("desired patch not delivered", "device_id", id, "error", err)
	}
	return v, nil
}

// twinErrorCode is an IoT Hub error body with its numeric code.
func twinErrorCode(code int, msg string) []byte {
	b, _ := json.Marshal(map[string]any{"errorCode": code, "message": msg})
	return b
}

func twinError(msg string) []byte {
	b, _ := json.Marshal(map[string]any{"message": msg})
	return b
}

// TwinDocument returns the status and body of a device's twin GET.
func (c *Core) TwinDocument(id string) (int, []byte) {
	c.mu.Lock()
	d, err := c.lookup(id)
	var doc map[string]any
	if err == nil {
		d.lastActivity = c.now()
		doc = map[string]any{"desired": d.desired.Document(), "reported": d.reported.Document()}
	}
	c.mu.Unlock()
	if err != nil {
		return 404, twinError(err.Error())
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return 500, twinError("encode twin")
	}
	return 200, body
}

// PatchReported applies a device's reported patch and returns the status,
// the new reported version (0 on error) and the error body.
func (c *Core) PatchReported(id string, body []byte) (int, int64, []byte) {
	patch, err := twin.ParseTwinPatch(body)
	if err != nil {
		c.log.Warn("reported patch refused", "device_id", id, "error", err)
		return 400, 0, twinError(err.Error())
	}
	c.mu.Lock()
	d, err := c.lookup(id)
	var v int64
	var staged <-chan error
	if err == nil {
		d.lastActivity = c.now()
		v, err = d.reported.Apply(patch, c.now())
		if err == nil {
			c.twinChangedLocked(d, "reported", patch, v)
			staged = c.stageDeviceLocked(d)
			c.emit(Event{DeviceID: id, Kind: EventReported, Version: v, Time: c.now()})
			c.observePatchLocked(FeedReported, id, patch, v)
		}
	}
	c.mu.Unlock()
	if err == nil {
		err = awaitNow(staged)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return 404, 0, twinError(err.Error())
	case errors.Is(err, twin.ErrTooLarge):
		c.log.Warn("reported patch refused", "device_id", id, "error", err)
		return 400, 0, twinError(err.Error())
	case err != nil:
		return 500, 0, twinError(err.Error())
	}
	return 204, v, nil
}
