package restapi

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// The module routes of the REST API reach the core's module identities
// (those the IoT Hub service API creates and IoT Edge devices get).
var _ ModuleBackend = coreBackend{}

func (b coreBackend) ListModules(ctx context.Context, device string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ms, err := b.c.HubModules(device)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ModuleID
	}
	return ids, nil
}

func (b coreBackend) ModuleTwin(ctx context.Context, device, module string) (Twin, error) {
	if err := ctx.Err(); err != nil {
		return Twin{}, err
	}
	t, err := b.c.HubModuleTwin(device, module)
	if err != nil {
		return Twin{}, err
	}
	return Twin{Desired: t.Desired, Reported: t.Reported}, nil
}

func (b coreBackend) PatchModuleDesired(ctx context.Context, device, module string, patch map[string]any) error {
	_, err := b.c.UpdateHubModuleTwin(ctx, device, module, "", nil, patch, false)
	return err
}

func (b coreBackend) InvokeModuleCommand(ctx context.Context, device, module, component, name string, req CommandRequest) (CommandResult, error) {
	res, err := b.c.InvokeModuleCommand(ctx, device, module, component, name, rawPayload(req.Request),
		time.Duration(req.ConnectionTimeout)*time.Second, time.Duration(req.ResponseTimeout)*time.Second)
	if err != nil {
		return CommandResult{}, err
	}
	return CommandResult{RequestID: res.RequestID, ResponseCode: res.Status, Response: res.Payload}, nil
}

func (b coreBackend) ModuleCommandHistory(ctx context.Context, device, module, component, name string) ([]CommandInvocation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rs, err := b.c.ModuleCommandHistory(device, module, component, name)
	if err != nil {
		return nil, err
	}
	out := make([]CommandInvocation, len(rs))
	for i, r := range rs {
		out[i] = CommandInvocation{ID: r.ID, Request: r.Request, Response: r.Response, ResponseCode: r.ResponseCode,
			ConnectionTimeout: r.ConnectionTimeout, ResponseTimeout: r.ResponseTimeout}
	}
	return out, nil
}

// LatestModuleTelemetry is the newest value of a field in the module's
// messages among the device's kept telemetry history (module messages are
// kept with their device's, marked with the module id).
func (b coreBackend) LatestModuleTelemetry(ctx context.Context, device, module, component, name string) (TelemetryValue, error) {
	if err := ctx.Err(); err != nil {
		return TelemetryValue{}, err
	}
	if _, err := b.c.HubModule(device, module); err != nil {
		return TelemetryValue{}, err
	}
	hist, err := b.c.TelemetryHistory(device, core.HistoryFilter{Component: component, ByComponent: true})
	if err != nil {
		return TelemetryValue{}, err
	}
	for _, m := range slices.Backward(hist) {
		if m.ModuleID != module {
			continue
		}
		if v, ok := core.JSONField(m.Body, name); ok {
			return TelemetryValue{Timestamp: m.Received, Value: v}, nil
		}
	}
	return TelemetryValue{}, fmt.Errorf("%w: telemetry %q of module %q of device %q component %q", ErrNotFound, name, module, device, component)
}
