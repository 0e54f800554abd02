//go:build duckdb_arrow

package main

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--dir", "/srv/site", "--threads", "2", "--memory-limit", "512MB"}, ""},
		{nil, "no site directory"},
		{[]string{"--dir", "/srv/site", "--threads", "-1"}, "must not be negative"},
		{[]string{"--dir", "/srv/site", "extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		cfg, err := parse(tt.args)
		if tt.wantErr == "" {
			if err != nil || cfg.Dir != "/srv/site" || cfg.Threads != 2 || cfg.MemoryLimit != "512MB" {
				t.Errorf("parse(%q) = %+v, %v", tt.args, cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("parse(%q): err = %v, want %q", tt.args, err, tt.wantErr)
		}
	}
}
