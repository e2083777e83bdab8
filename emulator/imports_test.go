package emulator

import (
	"os/exec"
	"strings"
	"testing"
)

// TestEmulatorImportRules keeps the emulator hexagonal and independent of
// the SDK it checks:
//   - a front-end (device or service side) imports the core, never another
//     front-end;
//   - a store adapter imports the core's port, never a front-end;
//   - the data export (internal/export) imports the core, never a
//     front-end (the REST API imports it to configure it);
//   - no package under emulator/, tests included, imports the SDK's
//     packages (domain, ports, app, adapters, iotctest, mocks, the iotc
//     facade), so the peer that checks the SDK cannot share its bugs.
//
// The core's own rules (no protocol, no wire, no adapter) are in
// internal/core's TestCoreImportsNoProtocol.
func TestEmulatorImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f",
		"{{.ImportPath}}|{{join .Imports \",\"}}|{{join .TestImports \",\"}},{{join .XTestImports \",\"}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/iotc-go/iotc/"
	const in = mod + "emulator/internal/"
	frontEnds := map[string]bool{
		in + "mqtthub": true, in + "amqphub": true, in + "restapi": true, in + "dashboard": true, in + "wslistener": true, in + "hubapi": true, in + "dpsapi": true, in + "fileupload": true,
		in + "eventhubs":        true, // the Event Hubs-compatible endpoint (amqphub reaches it through an interface)
		mod + "emulator/inproc": true, // the in-process device front-end iotctest adapts
		in + "devicehttp":       true, // IoT Hub's device HTTPS API
	}
	sdk := []string{mod + "domain", mod + "ports", mod + "app", mod + "adapters", mod + "iotctest", mod + "mocks", mod + "internal"}
	isSDK := func(p string) bool {
		if p == strings.TrimSuffix(mod, "/") {
			return true
		}
		for _, s := range sdk {
			if p == s || strings.HasPrefix(p, s+"/") {
				return true
			}
		}
		return false
	}
	pkgs := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		if len(parts) != 3 {
			t.Fatalf("go list line %q", line)
		}
		pkg, imports, testImports := parts[0], strings.Split(parts[1], ","), strings.Split(parts[2], ",")
		pkgs++
		for _, imp := range append(imports, testImports...) {
			if isSDK(imp) {
				t.Errorf("%s imports the SDK package %s", pkg, imp)
			}
		}
		for _, imp := range imports {
			if frontEnds[pkg] && frontEnds[imp] && imp != pkg {
				t.Errorf("front-end %s imports front-end %s", pkg, imp)
			}
			if strings.HasPrefix(pkg, in+"store/") && frontEnds[imp] {
				t.Errorf("store adapter %s imports front-end %s", pkg, imp)
			}
			// The data export is a service over the core that front-ends
			// (the REST API) configure: it never imports a front-end.
			if pkg == in+"export" && frontEnds[imp] {
				t.Errorf("data export %s imports front-end %s", pkg, imp)
			}
		}
	}
	if pkgs < 15 {
		t.Fatalf("go list gave %d packages", pkgs)
	}
}
