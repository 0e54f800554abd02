package coordinator

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestPrepareSpillDir: start-up makes the spill directory and removes the
// spill files a stopped coordinator left, and nothing else.
func TestPrepareSpillDir(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name  string
		files []string // present before start-up
		kept  []string // present after
	}{
		{name: "new directory"},
		{name: "leftovers", files: []string{"haven-linkage-run_1-p3-123.spill", "haven-linkage-run_1-check-9", "notes.txt"},
			kept: []string{"notes.txt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data", "spill")
			if len(tc.files) > 0 {
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := prepareSpillDir(dir, log); err != nil {
				t.Fatal(err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range entries {
				got = append(got, e.Name())
			}
			if len(got) != len(tc.kept) || (len(got) > 0 && got[0] != tc.kept[0]) {
				t.Errorf("after start-up the directory holds %q; want %q", got, tc.kept)
			}
		})
	}
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prepareSpillDir(file, log); err == nil {
		t.Error("a spill dir that is a file was accepted")
	}
}
