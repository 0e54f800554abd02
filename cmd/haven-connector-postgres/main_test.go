package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	dir := t.TempDir()
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte("  postgres://haven:pw@db/cdm\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	t.Setenv("TEST_DSN", "postgres://haven@db/cdm")
	t.Setenv("EMPTY_DSN", "")
	tests := []struct {
		args    []string
		wantDSN string
		wantErr string
	}{
		{[]string{"--dsn-file", dsnFile}, "postgres://haven:pw@db/cdm", ""},
		{[]string{"--dsn-env", "TEST_DSN", "--schema", "site_a"}, "postgres://haven@db/cdm", ""},
		{nil, "", "no DSN"},
		{[]string{"--dsn-env", "TEST_DSN", "--dsn-file", dsnFile}, "", "not both"},
		{[]string{"--dsn-env", "EMPTY_DSN"}, "", "empty or unset"},
		{[]string{"--dsn-file", empty}, "", "is empty"},
		{[]string{"--dsn-file", filepath.Join(dir, "nope")}, "", "no such file"},
		{[]string{"--dsn-env", "TEST_DSN", "--schema", "a;b"}, "", "want a letter"},
		{[]string{"--dsn-env", "TEST_DSN", "stray"}, "", "unexpected arguments"},
	}
	for _, tt := range tests {
		cfg, err := parse(tt.args)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("parse(%q): err = %v, want %q", tt.args, err, tt.wantErr)
		case tt.wantErr == "" && err != nil:
			t.Errorf("parse(%q): %v", tt.args, err)
		case tt.wantErr == "" && cfg.DSN != tt.wantDSN:
			t.Errorf("parse(%q): DSN %q, want %q", tt.args, cfg.DSN, tt.wantDSN)
		}
		if err != nil && strings.Contains(err.Error(), "pw@") {
			t.Errorf("parse(%q): the error shows the DSN: %v", tt.args, err)
		}
	}
}
