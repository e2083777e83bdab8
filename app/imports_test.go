package app

import (
	"go/build"
	"strings"
	"testing"
)

// TestImportsOnlyDomainAndPorts keeps app free of adapters and protocol
// libraries (DESIGN.md, import rules): only the standard library, domain
// and ports.
func TestImportsOnlyDomainAndPorts(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		first, _, _ := strings.Cut(imp, "/")
		if !strings.Contains(first, ".") {
			continue // standard library
		}
		if imp != "github.com/iotc-go/iotc/domain" && imp != "github.com/iotc-go/iotc/ports" {
			t.Errorf("app imports %s", imp)
		}
	}
}
