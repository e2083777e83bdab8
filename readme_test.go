package iotc_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/iotc-go/iotc"
)

// docPages are README.md and every page of docs/.
func docPages(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "README.md")
	pages := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pages[f] = string(b)
	}
	if len(pages) < 7 {
		t.Fatalf("only %d documentation pages: %v", len(pages), files)
	}
	return pages
}

// codeBlocks returns the fenced blocks of page whose info string is lang
// ("" for every block).
func codeBlocks(t *testing.T, name, page, lang string) []string {
	t.Helper()
	var out []string
	parts := strings.Split(page, "```")
	for i := 1; i < len(parts); i += 2 {
		info, body, _ := strings.Cut(parts[i], "\n")
		if lang == "" || strings.TrimSpace(info) == lang {
			out = append(out, body)
		}
	}
	if len(parts)%2 == 0 {
		t.Fatalf("%s: a code block is not closed", name)
	}
	return out
}

// TestReadmeSnippetsCompiled: every ```go block of README.md and docs/
// appears, whitespace aside, in example_readme_test.go, which the compiler
// checks.
func TestReadmeSnippetsCompiled(t *testing.T) {
	examples, err := os.ReadFile("example_readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	haystack := norm(string(examples))
	n := 0
	for name, page := range docPages(t) {
		for i, code := range codeBlocks(t, name, page, "go") {
			n++
			if !strings.Contains(haystack, norm(code)) {
				t.Errorf("%s: Go block %d is not in example_readme_test.go:\n%s", name, i+1, code)
			}
		}
	}
	if n < 5 {
		t.Fatalf("only %d Go blocks in the documentation", n)
	}
}

// anchor is GitHub's anchor of a heading.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestDocLinks: every relative link of README.md and docs/ reaches a file
// of the repository, and its #anchor a heading of that file.
func TestDocLinks(t *testing.T) {
	pages := docPages(t)
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading := regexp.MustCompile(`(?m)^#+ (.+)$`)
	anchors := func(file string) map[string]bool {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil
		}
		set := map[string]bool{}
		for _, m := range heading.FindAllStringSubmatch(string(b), -1) {
			set[anchor(strings.ReplaceAll(m[1], "`", ""))] = true
		}
		return set
	}
	for name, page := range pages {
		for _, m := range link.FindAllStringSubmatch(page, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(target, "#")
			path := name
			if file != "" {
				path = filepath.Join(filepath.Dir(name), file)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %s: %v", name, target, err)
				continue
			}
			if frag != "" && strings.HasSuffix(path, ".md") && !anchors(path)[frag] {
				t.Errorf("%s: link %s: no heading #%s in %s", name, target, frag, path)
			}
		}
	}
}

// TestDocCommands: every "go run/build/test ./path" of the documentation
// names a package of this module, and every flag its code blocks give to
// one of the tools (cmd/...) is one that tool defines.
func TestDocCommands(t *testing.T) {
	goCmd := regexp.MustCompile(`go (?:run|build|test)(?: -[a-z]+(?: [^ ./][^ ]*)?)* ((?:\./[A-Za-z0-9_./-]+ ?)+)`)
	tool := regexp.MustCompile(`(?:^|[\s/])(iotc-(?:emulator|device|certs|fleet))\b([^\n|;&` + "`" + `]*)`)
	flagRE := regexp.MustCompile(`(?:^|\s)--?([a-z][a-z0-9-]*)`)
	sources := map[string]string{}
	flagsOf := func(prog string) string {
		if s, ok := sources[prog]; ok {
			return s
		}
		var all strings.Builder
		_ = filepath.WalkDir(filepath.Join("cmd", prog), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
				b, _ := os.ReadFile(p)
				all.Write(b)
			}
			return nil
		})
		sources[prog] = all.String()
		return sources[prog]
	}
	checked := 0
	for name, page := range docPages(t) {
		// Commands in the text (inline code, tables) count too.
		for _, m := range goCmd.FindAllStringSubmatch(page, -1) {
			for _, p := range strings.Fields(m[1]) {
				dir := strings.TrimSuffix(strings.TrimSuffix(p, "/..."), "/")
				if st, err := os.Stat(dir); err != nil || !st.IsDir() {
					t.Errorf("%s: %q: no package %s", name, m[0], p)
				}
				checked++
			}
		}
		for _, block := range codeBlocks(t, name, page, "") {
			for _, line := range strings.Split(block, "\n") {
				if strings.HasPrefix(strings.TrimSpace(line), "#") {
					continue
				}
				line, _, _ = strings.Cut(line, " #") // a comment after the command
				for _, m := range tool.FindAllStringSubmatch(line, -1) {
					src := flagsOf(m[1])
					if src == "" {
						t.Errorf("%s: %s is not a program of cmd/", name, m[1])
						continue
					}
					args := regexp.MustCompile(`'[^']*'|"[^"]*"`).ReplaceAllString(m[2], "")
					for _, f := range flagRE.FindAllStringSubmatch(args, -1) {
						if f[1] == "h" || f[1] == "help" {
							continue
						}
						if !strings.Contains(src, fmt.Sprintf("%q", f[1])) {
							t.Errorf("%s: %s has no flag -%s (%s)", name, m[1], f[1], strings.TrimSpace(line))
						}
						checked++
					}
				}
			}
		}
	}
	if checked < 30 {
		t.Fatalf("only %d commands and flags checked", checked)
	}
}

// TestReadmeFits: README.md is the front door: about a screenful of
// sections, at most 300 lines.
func TestReadmeFits(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > 300 {
		t.Errorf("README.md has %d lines; move detail to docs/", n)
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
