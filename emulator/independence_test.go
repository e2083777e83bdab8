package emulator

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoSharedSASOrPropertyBagCode keeps the emulator independent of the
// SDK where a shared bug would hide: SAS tokens, key derivation and
// property bags are the emulator's own code (internal/sas, wire.DecodeBag),
// checked against vectors made with openssl. No file under emulator/ may
// call the SDK's SAS or key functions (tests included: their tokens are
// built independently too), and no non-test file its property-bag codec.
func TestNoSharedSASOrPropertyBagCode(t *testing.T) {
	always := map[string]bool{"BuildSAS": true, "ParseSAS": true, "SASToken": true, "DeriveDeviceKey": true, "ValidateKey": true}
	notInCode := map[string]bool{"DecodePropertyBag": true, "PropertyBag": true, "Property": true, "EscapeComponent": true}
	files := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		files++
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		local := ""
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == "github.com/iotc-go/iotc/domain" {
				local = "domain"
				if imp.Name != nil {
					local = imp.Name.Name
				}
			}
		}
		if local == "" {
			return nil
		}
		test := strings.HasSuffix(path, "_test.go")
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == local {
				if always[sel.Sel.Name] || !test && notInCode[sel.Sel.Name] {
					t.Errorf("%s uses domain.%s", path, sel.Sel.Name)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("walked only %d Go files", files)
	}
}
