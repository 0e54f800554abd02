package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds the node's configuration parser arbitrary YAML: Parse
// and Validate must return (an error is fine), never panic.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("/etc/haven/node.yaml", b)
		if err != nil {
			return
		}
		_ = c.Validate()
		_ = c.String()
	})
}
