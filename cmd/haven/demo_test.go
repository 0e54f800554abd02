package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The demo itself runs in demo's tests; these check that the
// command hands its flags to it and reports its errors.
func TestDemoCommand(t *testing.T) {
	foreign := t.TempDir()
	if err := os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"demo", "--dir", foreign}, "not made by haven demo"},
		{[]string{"demo", "--dir", foreign, "--keep", "--postgres"}, "not made by haven demo"},
		{[]string{"demo", "extra"}, `unknown command "extra"`},
		{[]string{"demo", "--no-such-flag"}, "unknown flag"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := runHaven(t, tc.args...)
			if code != 1 || !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, errOut, tc.wantErr)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(foreign, "notes.txt")); err != nil {
		t.Errorf("the demo touched a directory it did not make: %v", err)
	}

	out, _, code := runHaven(t, "demo", "--help")
	for _, want := range []string{"--dir", "--keep", "--postgres", "t2dm-prevalence"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("demo --help (exit %d) does not mention %s:\n%s", code, want, out)
		}
	}
}
