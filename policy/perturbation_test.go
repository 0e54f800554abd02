package policy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPerturbationTableReachesTheDecision switches perturbation on in a
// signed copy of the reference bundle: haven/disclose names the table and
// the decision carries the table that was checked at load.
func TestPerturbationTableReachesTheDecision(t *testing.T) {
	k := newKey(t)
	dir := copyDir(t, referenceBundle)
	withFixtureApproval(t, dir)
	editJSON(t, filepath.Join(dir, "data.json"), func(data map[string]any) {
		data["disclosure"].(map[string]any)["perturbation"] = map[string]any{"enabled": true, "table": "disclosure/ptable-8-5.csv"}
	})
	sign(t, dir, k)
	e := load(t, dir, k)
	for _, purpose := range []string{"commissioning", "research"} {
		in := validDisclose()
		in.Purpose = purpose
		d, err := e.Disclose(context.Background(), in)
		if err != nil || !d.Allow {
			t.Fatalf("%s: allow=%v err=%v reasons=%v", purpose, d.Allow, err, d.Reasons)
		}
		if d.PerturbationTable != "disclosure/ptable-8-5.csv" || d.Perturbation == nil {
			t.Fatalf("%s: perturbation %q %v, want the reference table", purpose, d.PerturbationTable, d.Perturbation)
		}
		// The reference table releases a true 7 as 0 or 10 (and rarely 15).
		if lo, hi := d.Perturbation.Bounds(7); lo != 0 || hi < 10 {
			t.Errorf("%s: a true 7 is released within [%d, %d]", purpose, lo, hi)
		}
	}
	// A node derives record keys only in the range of a table its bundle holds.
	r := d0(t, e).Perturbation.KeyRange()
	for _, c := range []struct {
		r    int
		want bool
	}{{r, true}, {r * 2, false}, {0, false}, {1 << 20, false}} {
		if got := e.HasKeyRange(c.r); got != c.want {
			t.Errorf("HasKeyRange(%d) = %v, want %v", c.r, got, c.want)
		}
	}
}

func d0(t *testing.T, e *Engine) DisclosureDecision {
	t.Helper()
	d, err := e.Disclose(context.Background(), validDisclose())
	if err != nil || d.Perturbation == nil {
		t.Fatalf("disclose: %v, perturbation %v", err, d.Perturbation)
	}
	return d
}

// TestBadPerturbationTableRefusesTheBundle: a bundle whose table is
// missing, malformed, off the rounding base or short of the threshold is
// refused at load, and the error names the table and the row.
func TestBadPerturbationTableRefusesTheBundle(t *testing.T) {
	const table = "disclosure/ptable-8-5.csv"
	cases := []struct {
		name string
		edit func(t *testing.T, dir string)
		want string
	}{
		{"missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, table)); err != nil {
				t.Fatal(err)
			}
		}, "disclosure/ptable-8-5.csv is not in the bundle"},
		{"malformed", func(t *testing.T, dir string) {
			replaceLine(t, filepath.Join(dir, table), 3, "1,0,229,ten")
		}, `ptable-8-5.csv line 3: value "ten" is not a whole number`},
		{"off the base", func(t *testing.T, dir string) {
			replaceLine(t, filepath.Join(dir, table), 3, "1,0,229,12")
		}, "count 1, keys 0-229: value 12 is not a multiple of the rounding base 5"},
		{"rounding base of a purpose", func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, "data.json"), func(data map[string]any) {
				data["disclosure"].(map[string]any)["purposes"].(map[string]any)["research"] = map[string]any{"rounding_base": 10}
			})
		}, "data.disclosure.purposes.research.perturbation.table disclosure/ptable-8-5.csv (min_cell_count 8, rounding_base 10)"},
		{"threshold not covered", func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, "data.json"), func(data map[string]any) {
				data["disclosure"].(map[string]any)["purposes"].(map[string]any)["research"] = map[string]any{"min_cell_count": 40}
			})
		}, "must cover the threshold"},
		{"no table named", func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, "data.json"), func(data map[string]any) {
				data["disclosure"].(map[string]any)["perturbation"] = map[string]any{"enabled": true}
			})
		}, "data.disclosure.perturbation.table must name a file of the bundle"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := newKey(t)
			dir := copyDir(t, referenceBundle)
			tc.edit(t, dir)
			sign(t, dir, k)
			_, err := Load(context.Background(), Config{BundlePath: dir, PublicKeyPEM: k.pub, Logger: discardLogger()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func replaceLine(t *testing.T, name string, n int, line string) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	lines[n-1] = line
	if err := os.WriteFile(name, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}
