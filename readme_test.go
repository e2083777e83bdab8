package iotc_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/iotc-go/iotc"
)

// TestReadmeSnippetsCompiled: every ```go block of README.md appears,
// whitespace aside, in example_readme_test.go, which the compiler checks.
func TestReadmeSnippetsCompiled(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := os.ReadFile("example_readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	haystack := norm(string(examples))
	blocks := strings.Split(string(readme), "```go\n")[1:]
	if len(blocks) < 5 {
		t.Fatalf("only %d Go blocks in README.md", len(blocks))
	}
	for i, b := range blocks {
		code, _, ok := strings.Cut(b, "```")
		if !ok {
			t.Fatalf("Go block %d is not closed", i+1)
		}
		if !strings.Contains(haystack, norm(code)) {
			t.Errorf("README Go block %d is not in example_readme_test.go:\n%s", i+1, code)
		}
	}
}

// TestReadmeFirstSnippetBadKey: the first snippet returns a clear error
// for a key that is not base64, instead of going on with a nil client.
func TestReadmeFirstSnippetBadKey(t *testing.T) {
	t.Setenv("IOTC_GROUP_KEY", "not base64!")
	err := runDevice(context.Background())
	if !errors.Is(err, iotc.ErrInvalidConfig) || !errors.Is(err, iotc.ErrInvalidKey) {
		t.Fatalf("runDevice = %v, want ErrInvalidConfig and ErrInvalidKey", err)
	}
}
