package restapi

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// moduleFake is the fake backend with IoT Edge modules.
type moduleFake struct {
	*fakeBackend
	mmu     sync.Mutex
	twins   map[string]Twin // key device/module
	patches []map[string]any
	invokes []string
}

func (f *moduleFake) mod(device, module string) (string, error) {
	if _, err := f.GetDevice(context.Background(), device); err != nil {
		return "", err
	}
	k := device + "/" + module
	if _, ok := f.twins[k]; !ok {
		return "", notFound("module", module)
	}
	return k, nil
}

func (f *moduleFake) ListModules(ctx context.Context, device string) ([]string, error) {
	f.mmu.Lock()
	defer f.mmu.Unlock()
	if _, err := f.GetDevice(ctx, device); err != nil {
		return nil, err
	}
	var out []string
	for k := range f.twins {
		if d, m, _ := cut(k); d == device {
			out = append(out, m)
		}
	}
	return out, nil
}

func cut(k string) (string, string, bool) {
	for i := range k {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

func (f *moduleFake) ModuleTwin(_ context.Context, device, module string) (Twin, error) {
	f.mmu.Lock()
	defer f.mmu.Unlock()
	k, err := f.mod(device, module)
	if err != nil {
		return Twin{}, err
	}
	t := f.twins[k]
	return Twin{Desired: maps.Clone(t.Desired), Reported: maps.Clone(t.Reported)}, nil
}

func (f *moduleFake) PatchModuleDesired(_ context.Context, device, module string, patch map[string]any) error {
	f.mmu.Lock()
	defer f.mmu.Unlock()
	k, err := f.mod(device, module)
	if err != nil {
		return err
	}
	f.patches = append(f.patches, patch)
	t := f.twins[k]
	d := maps.Clone(t.Desired)
	for n, v := range patch {
		switch sub := v.(type) {
		case nil:
			delete(d, n)
		case map[string]any: // a component: merged
			cur := maps.Clone(asMap(d[n]))
			if cur == nil {
				cur = map[string]any{}
			}
			for k, x := range sub {
				if x == nil {
					delete(cur, k)
				} else {
					cur[k] = x
				}
			}
			d[n] = cur
		default:
			d[n] = v
		}
	}
	t.Desired = d
	f.twins[k] = t
	return nil
}

func (f *moduleFake) InvokeModuleCommand(_ context.Context, device, module, component, name string, req CommandRequest) (CommandResult, error) {
	f.mmu.Lock()
	defer f.mmu.Unlock()
	if _, err := f.mod(device, module); err != nil {
		return CommandResult{}, err
	}
	f.invokes = append(f.invokes, fmt.Sprintf("%s/%s/%s/%s %s", device, module, component, name, req.Request))
	return CommandResult{RequestID: "r1", ResponseCode: 200, Response: []byte(`{"ok":true}`)}, nil
}

func (f *moduleFake) ModuleCommandHistory(_ context.Context, device, module, component, name string) ([]CommandInvocation, error) {
	f.mmu.Lock()
	defer f.mmu.Unlock()
	if _, err := f.mod(device, module); err != nil {
		return nil, err
	}
	return []CommandInvocation{{ID: "r1", ResponseCode: 200}}, nil
}

func (f *moduleFake) LatestModuleTelemetry(_ context.Context, device, module, component, name string) (TelemetryValue, error) {
	f.mmu.Lock()
	defer f.mmu.Unlock()
	if _, err := f.mod(device, module); err != nil {
		return TelemetryValue{}, err
	}
	if name != "temp" {
		return TelemetryValue{}, notFound("telemetry", name)
	}
	return TelemetryValue{Value: 21.5}, nil
}

// The module routes over a backend with modules: the spec's module
// examples (modules_commands_send.json, modules_properties_components_set.json);
// without a ModuleBackend they answer 501.
func TestModules(t *testing.T) {
	t.Parallel()
	mf := &moduleFake{fakeBackend: newFake(), twins: map[string]Twin{
		"mx1/Camera":     {Desired: map[string]any{"$version": 1.0}, Reported: map[string]any{"componentA": map[string]any{"__t": "c", "zoom": 2.0}}},
		"mx1/module_env": {Desired: map[string]any{"$version": 1.0, "componentA": map[string]any{"__t": "c", "Old": 1.0}}, Reported: map[string]any{}},
	}}
	mf.devices["mx1"] = Device{ID: "mx1", Enabled: true}
	srv := httptest.NewServer(New(mf, Options{Token: testToken}))
	defer srv.Close()
	e := &env{t: t, f: mf.fakeBackend, srv: srv}

	r := e.call("GET", "/api/devices/mx1/modules", "")
	r.want(t, http.StatusOK)
	jsonEqual(t, r.body, `{"value":[{"name":"Camera"},{"name":"module_env"}]}`)
	r = e.call("GET", "/api/devices/mx1/modules/Camera/components", "")
	jsonEqual(t, r.body["value"], `[{"@type":"Component","name":"componentA","displayName":"componentA"}]`)

	// modules_properties_components_set.json: the write answers the
	// desired value (the example's reported value and acknowledgement come
	// once the module reports them).
	x := loadExample(t, "modules_properties_components_set.json")
	path := "/api/devices/" + x.param(t, "deviceId") + "/modules/" + x.param(t, "moduleName") + "/components/" + x.param(t, "componentName") + "/properties"
	r = e.call("PATCH", path, x.body())
	r.want(t, http.StatusAccepted)
	want := x.response(t, "202").(map[string]any)["$metadata"].(map[string]any)["SensitivityDial"].(map[string]any)["desiredValue"]
	if got := r.body["$metadata"].(map[string]any)["SensitivityDial"].(map[string]any)["desiredValue"]; got != want {
		t.Fatalf("desiredValue %v, want %v", got, want)
	}
	mf.mmu.Lock()
	jsonEqual(t, mf.patches[0], `{"componentA":{"__t":"c","SensitivityDial":300}}`)
	mf.mmu.Unlock()
	// PUT replaces: "Old" is deleted.
	e.call("PUT", path, x.body()).want(t, http.StatusAccepted)
	mf.mmu.Lock()
	jsonEqual(t, mf.patches[1], `{"componentA":{"__t":"c","SensitivityDial":300,"Old":null}}`)
	mf.mmu.Unlock()
	r = e.call("GET", "/api/devices/mx1/modules/Camera/components/componentA/properties", "")
	if r.body["zoom"] != 2.0 {
		t.Fatalf("module component properties %s", r.raw)
	}

	// modules_commands_send.json.
	c := loadExample(t, "modules_commands_send.json")
	path = "/api/devices/" + c.param(t, "deviceId") + "/modules/" + c.param(t, "moduleName") + "/components/" + c.param(t, "componentName") + "/commands/" + c.param(t, "commandName")
	r = e.call("POST", path, c.body())
	wantExample(t, r, http.StatusCreated, c.response(t, "201"))
	mf.mmu.Lock()
	if len(mf.invokes) != 1 || mf.invokes[0] != `mx1/Camera/componentA/Reboot {"SafeMode": true}` && mf.invokes[0] != `mx1/Camera/componentA/Reboot {"SafeMode":true}` {
		t.Fatalf("invokes %v", mf.invokes)
	}
	mf.mmu.Unlock()
	e.call("GET", path, "").want(t, http.StatusOK)
	e.call("POST", "/api/devices/mx1/modules/Camera/commands/Reboot", `{}`).want(t, http.StatusCreated)
	r = e.call("GET", "/api/devices/mx1/modules/Camera/telemetry/temp", "")
	if r.body["value"] != 21.5 {
		t.Fatalf("telemetry %s", r.raw)
	}
	e.call("GET", "/api/devices/mx1/modules/Camera/telemetry/other", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", "/api/devices/mx1/modules/nope/properties", "").wantError(t, http.StatusNotFound, "NotFound")
	e.call("GET", "/api/devices/nope/modules", "").wantError(t, http.StatusNotFound, "NotFound")

	plain := newEnv(t)
	plain.call("GET", "/api/devices/dev1/modules", "").wantError(t, http.StatusNotImplemented, "NotImplemented")
}
