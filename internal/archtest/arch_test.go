package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/iotc-go/iotc"

// packageImports maps each package directory (relative, slash-separated) to
// the imports of its non-test Go files.
func packageImports(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			out[rel] = append(out[rel], p)
		}
		if _, ok := out[rel]; !ok {
			out[rel] = nil
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func isStd(p string) bool {
	first, _, _ := strings.Cut(p, "/")
	return !strings.Contains(first, ".")
}

func under(rel, prefix string) bool { return rel == prefix || strings.HasPrefix(rel, prefix+"/") }

// violation returns why pkg (relative dir) may not import imp, or "".
func violation(pkg, imp string) string {
	internal := strings.HasPrefix(imp, module+"/") || imp == module
	irel := strings.TrimPrefix(strings.TrimPrefix(imp, module), "/")
	switch {
	case under(pkg, "domain"):
		if !isStd(imp) && !(internal && under(irel, "domain")) {
			return "domain may import only the standard library"
		}
	case under(pkg, "ports"):
		if !isStd(imp) && !(internal && (under(irel, "domain") || under(irel, "ports"))) {
			return "ports may import only domain"
		}
	case under(pkg, "app"):
		if !isStd(imp) && !(internal && (under(irel, "domain") || under(irel, "ports") || under(irel, "app"))) {
			return "app may import only domain and ports (and the standard library)"
		}
	case under(pkg, "adapters"):
		if !internal {
			return ""
		}
		if under(irel, "app") || under(irel, "emulator") || under(irel, "examples") || under(irel, "cmd") || under(irel, "mocks") || irel == "" {
			return "an adapter must not depend on the application, the emulator or programs"
		}
		own := strings.Join(strings.SplitN(pkg, "/", 3)[:2], "/")
		if under(irel, "adapters") && !under(irel, own) && !under(irel, "adapters/internal") {
			return "an adapter must not import another adapter (share code through adapters/internal)"
		}
	case under(pkg, "iotctest"):
		if internal && ((under(irel, "emulator") && irel != "emulator/inproc") || under(irel, "adapters") || under(irel, "app")) {
			return "iotctest adapts the emulator's in-process front-end (emulator/inproc) to the ports: it must not import the rest of the emulator, an adapter or app"
		}
	case under(pkg, "emulator"):
		if internal && (under(irel, "app") || under(irel, "adapters") || under(irel, "mocks") || irel == "") {
			return "the emulator must not import the SDK's app, adapters or facade"
		}
	}
	return ""
}

func TestImportRules(t *testing.T) {
	root := filepath.Join("..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	pkgs := packageImports(t, root)
	for _, must := range []string{"domain", "ports"} {
		if _, ok := pkgs[must]; !ok {
			t.Errorf("package %s not found: the walk is broken", must)
		}
	}
	for pkg, imps := range pkgs {
		for _, imp := range imps {
			if why := violation(pkg, imp); why != "" {
				t.Errorf("%s imports %s: %s", pkg, imp, why)
			}
		}
	}
}

func TestViolationRules(t *testing.T) {
	bad := [][2]string{
		{"domain", "github.com/eclipse/paho.mqtt.golang"},
		{"domain", module + "/ports"},
		{"ports", module + "/app"},
		{"ports", "github.com/golang/mock/gomock"},
		{"app", module + "/adapters/mqtt"},
		{"app", "github.com/eclipse/paho.mqtt.golang"},
		{"app", module + "/emulator"},
		{"adapters/mqtt", module + "/app"},
		{"adapters/mqttws", module + "/adapters/amqp"},
		{"adapters/amqp", module + "/emulator"},
		{"emulator", module + "/adapters/mqtt"},
		{"emulator/internal/x", module + "/app"},
		{"iotctest", module + "/emulator"},
		{"iotctest", module + "/emulator/internal/core"},
		{"iotctest", module + "/adapters/mqtt"},
	}
	for _, c := range bad {
		if violation(c[0], c[1]) == "" {
			t.Errorf("%s -> %s should be a violation", c[0], c[1])
		}
	}
	good := [][2]string{
		{"domain", "crypto/hmac"},
		{"ports", module + "/domain"},
		{"app", module + "/ports"},
		{"adapters/mqttws", module + "/adapters/internal/mqttcore"},
		{"adapters/mqtt", "github.com/eclipse/paho.mqtt.golang"},
		{"emulator", module + "/domain"},
		{"", module + "/adapters/mqtt"},
		{"examples/quickstart", module + "/emulator"},
		{"iotctest", module + "/emulator/inproc"},
	}
	for _, c := range good {
		if why := violation(c[0], c[1]); why != "" {
			t.Errorf("%s -> %s flagged: %s", c[0], c[1], why)
		}
	}
}
