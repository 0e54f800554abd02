// Package connectortest helps tests that run connector plugins: it builds
// plugin binaries with `go build` once per test binary and keeps other
// costly fixtures (a generated site, say) for the tests that share them.
//
// A test package holds one Cache for its whole run and removes it in
// TestMain:
//
//	var cache connectortest.Cache
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		cache.Close()
//		os.Exit(code)
//	}
package connectortest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/havenhealth/haven/node/connector"
)

// Binary is a built plugin binary and its checksum, ready for
// connector.LaunchConfig.
type Binary struct {
	Path   string
	SHA256 string
}

// Cache holds what tests build once and share. The zero Cache is ready to
// use; it is safe for concurrent use by parallel tests.
type Cache struct {
	mu    sync.Mutex
	root  string
	built map[string]Binary
	dirs  map[string]dirResult
}

type dirResult struct {
	dir string
	err error
}

func (c *Cache) rootDir() (string, error) {
	if c.root == "" {
		dir, err := os.MkdirTemp("", "haven-connectortest-")
		if err != nil {
			return "", err
		}
		c.root = dir
	}
	return c.root, nil
}

// Plugin builds the main package pkg (an import path) with the given build
// tags, or returns the binary built earlier in this test run. A failed
// build fails the test with the compiler's output.
func (c *Cache) Plugin(t testing.TB, pkg string, tags ...string) Binary {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	key := pkg + " " + strings.Join(tags, ",")
	if b, ok := c.built[key]; ok {
		return b
	}
	root, err := c.rootDir()
	if err != nil {
		t.Fatalf("build %s: %v", pkg, err)
	}
	out := filepath.Join(root, fmt.Sprintf("%s-%d", path.Base(pkg), len(c.built)))
	b, err := Build(t.Context(), out, pkg, tags...)
	if err != nil {
		t.Fatal(err)
	}
	if c.built == nil {
		c.built = map[string]Binary{}
	}
	c.built[key] = b
	return b
}

// Dir returns a directory that fill filled in, calling fill only the first
// time a key is asked for. A fill that failed fails every test that asks.
func (c *Cache) Dir(t testing.TB, key string, fill func(dir string) error) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.dirs[key]; ok {
		if r.err != nil {
			t.Fatalf("%s: %v", key, r.err)
		}
		return r.dir
	}
	root, err := c.rootDir()
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	r := dirResult{dir: filepath.Join(root, fmt.Sprintf("dir-%d", len(c.dirs)))}
	if r.err = os.Mkdir(r.dir, 0o755); r.err == nil {
		r.err = fill(r.dir)
	}
	if c.dirs == nil {
		c.dirs = map[string]dirResult{}
	}
	c.dirs[key] = r
	if r.err != nil {
		t.Fatalf("%s: %v", key, r.err)
	}
	return r.dir
}

// Close removes everything the cache built.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.root != "" {
		os.RemoveAll(c.root)
		c.root = ""
	}
	c.built, c.dirs = nil, nil
}

// Build runs `go build` for the main package pkg with the given tags,
// writing the binary to out, and returns it with its checksum.
func Build(ctx context.Context, out, pkg string, tags ...string) (Binary, error) {
	args := []string{"build", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return Binary{}, fmt.Errorf("go build %s: %v\n%s", pkg, err, output.String())
	}
	sum, err := connector.FileSHA256(out)
	if err != nil {
		return Binary{}, err
	}
	return Binary{Path: out, SHA256: sum}, nil
}
