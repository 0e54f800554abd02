package policy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// referenceBundle is the board's reference bundle in this repository.
const referenceBundle = "bundle"

// testNow is inside the fixture approval's validity.
var testNow = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// fixtureHash is the hash the fixture approval names.
const fixtureHash = "1111111111111111111111111111111111111111111111111111111111111111"

// fixtureApproval is added to copies of the reference bundle so that the
// Go tests do not depend on the hashes of the reference definitions.
var fixtureApproval = map[string]any{
	"hash":        fixtureHash,
	"approver":    "test board",
	"approved_on": "2025-11-14",
	"expires":     "2026-11-14T00:00:00Z",
	"purposes":    []string{"commissioning", "research"},
	"roles":       []string{"analyst"},
	"parameters": map[string]any{
		"index_date":    map[string]any{"min": "2018-01-01", "max": "2025-12-31"},
		"followup_days": map[string]any{"min": 30, "max": 730},
	},
}

const fixtureID = "fixture-definition"

type keyPair struct{ priv, pub []byte }

func newKey(t testing.TB) keyPair {
	t.Helper()
	priv, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{priv, pub}
}

// copyDir copies the bundle directory src into a new temporary directory,
// leaving out any signature already there.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	if err := CopyUnsigned(src, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dst, signaturesFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("CopyUnsigned copied the signatures: %v", err)
	}
	return dst
}

// withFixtureApproval adds the fixture approval to dir/data.json.
func withFixtureApproval(t testing.TB, dir string) {
	t.Helper()
	editJSON(t, filepath.Join(dir, "data.json"), func(data map[string]any) {
		approvals, _ := data["approvals"].(map[string]any)
		if approvals == nil {
			approvals = map[string]any{}
		}
		approvals[fixtureID] = fixtureApproval
		data["approvals"] = approvals
	})
}

func editJSON(t testing.TB, name string, edit func(map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	edit(v)
	if b, err = json.MarshalIndent(v, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sign(t testing.TB, dir string, k keyPair) {
	t.Helper()
	if err := Sign(dir, k.priv, "", "test-board"); err != nil {
		t.Fatal(err)
	}
}

// signedReference returns a signed copy of the reference bundle holding
// the fixture approval.
func signedReference(t testing.TB, k keyPair) string {
	t.Helper()
	dir := copyDir(t, referenceBundle)
	withFixtureApproval(t, dir)
	sign(t, dir, k)
	return dir
}

func load(t testing.TB, dir string, k keyPair, opts ...func(*Config)) *Engine {
	t.Helper()
	cfg := Config{BundlePath: dir, PublicKeyPEM: k.pub, Logger: discardLogger()}
	for _, o := range opts {
		o(&cfg)
	}
	e, err := Load(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func discardLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

// flipByte changes one byte of a file in place, keeping it the same length.
func flipByte(t testing.TB, name string, at func([]byte) int) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	i := at(b)
	b[i] ^= 0x01
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// lastLetter finds the last ASCII letter, so that flipping its low bit
// changes the text but keeps it valid.
func lastLetter(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if c := b[i] | 0x20; c >= 'a' && c <= 'y' {
			return i
		}
	}
	return len(b) - 1
}

func firstGlob(t testing.TB, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("no file matches %s (err %v)", pattern, err)
	}
	return m[0]
}
