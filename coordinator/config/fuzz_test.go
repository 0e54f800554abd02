package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds the coordinator's configuration parser arbitrary YAML:
// Parse, Validate and String must return (an error is fine), never panic,
// and String must never print a user's token hash.
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
		cfg, err := Parse(b)
		if err != nil {
			return
		}
		cfg.resolve("/etc/haven")
		_ = cfg.Validate()
		s := cfg.String()
		for _, u := range cfg.Users {
			if len(u.TokenSHA256) >= 16 && strings.Contains(s, u.TokenSHA256) {
				t.Fatalf("String() prints the token hash of %q", u.ID)
			}
		}
	})
}
