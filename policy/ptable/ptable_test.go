package ptable

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// reference are the parameters of the reference bundle's default table.
var reference = Params{Threshold: 8, Base: 5, MaxPerturbation: 10, Variance: 9, KeyRange: 256}

func mustGenerate(t *testing.T, p Params) *Table {
	t.Helper()
	tb, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// TestReferenceTable checks the properties issue 11 asks of the reference
// table, by enumerating every (count, key) pair through Release rather than
// through the table's own summaries.
func TestReferenceTable(t *testing.T) {
	tb := mustGenerate(t, reference)
	const maxCount = 300
	from := map[int64]map[int64]bool{} // released value → true counts giving it
	for c := int64(0); c <= maxCount; c++ {
		seen := map[int64]bool{}
		for k := range uint64(tb.KeyRange()) {
			v := tb.Release(c, k)
			seen[v] = true
			if from[v] == nil {
				from[v] = map[int64]bool{}
			}
			from[v][c] = true
			if v%5 != 0 {
				t.Fatalf("count %d key %d released as %d, not a multiple of 5", c, k, v)
			}
			if v > 0 && v < 8 {
				t.Fatalf("count %d key %d released as %d, below the threshold", c, k, v)
			}
			if d := v - c; d > 10 || d < -10 {
				t.Fatalf("count %d key %d released as %d, beyond the maximum perturbation", c, k, v)
			}
		}
		if c == 0 && len(seen) != 1 {
			t.Fatalf("count 0 released as %v", seen)
		}
		if c == 7 || c == 8 {
			if len(seen) < 2 || !seen[0] || !seen[10] {
				t.Errorf("count %d released as %v; want more than one value, including 0 and 10", c, seen)
			}
		}
	}
	for v, cs := range from {
		crossed := false
		for c := range cs {
			crossed = crossed || c >= 8
		}
		if !crossed {
			t.Errorf("released %d comes only from counts below the threshold: %v", v, cs)
		}
		if v > maxCount-20 {
			continue // counts above maxCount also give it
		}
		want := slices.Sorted(func(yield func(int64) bool) {
			for c := range cs {
				if !yield(c) {
					return
				}
			}
		})
		if got := tb.Preimage(v); !slices.Equal(got, want) {
			t.Errorf("Preimage(%d) = %v, enumeration gives %v", v, got, want)
		}
	}
	if got := tb.Preimage(7); len(got) != 0 {
		t.Errorf("Preimage(7) = %v; no count is released as 7", got)
	}
}

// TestLargeCounts checks the rule for counts beyond the table's rows: the
// perturbation repeats with the rounding base's period, and the mean of
// the released value stays the true count.
func TestLargeCounts(t *testing.T) {
	tb := mustGenerate(t, reference)
	for _, c := range []int64{tb.LastCount() + 1, 1000, 1001, 123457} {
		ref := tb.LastCount() - 4 + (c-tb.LastCount()+4)%5
		for k := range uint64(tb.KeyRange()) {
			if got, want := tb.Release(c, k), tb.Release(ref, k)+c-ref; got != want {
				t.Fatalf("Release(%d, %d) = %d, want %d (count %d's row shifted)", c, k, got, want, ref)
			}
		}
		var mean float64
		for _, o := range tb.Outcomes(c) {
			mean += o.Probability * float64(o.Value)
		}
		if d := mean - float64(c); d > 0.1 || d < -0.1 {
			t.Errorf("count %d: mean released value %.3f, want about %d", c, mean, c)
		}
		if lo, hi := tb.Bounds(c); lo < c-10 || hi > c+10 || lo > c || hi < c {
			t.Errorf("Bounds(%d) = %d, %d", c, lo, hi)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	tb := mustGenerate(t, reference)
	var buf bytes.Buffer
	if err := tb.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Parse(bytes.NewReader(buf.Bytes()), "ptable.csv")
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Validate(8, 5); err != nil {
		t.Fatal(err)
	}
	for c := range int64(100) {
		for k := range uint64(256) {
			if a, b := tb.Release(c, k), back.Release(c, k); a != b {
				t.Fatalf("count %d key %d: %d before writing, %d after", c, k, a, b)
			}
		}
	}
}

// edit returns the reference table as CSV with line n (1 is the header)
// replaced by repl, or removed when repl is empty.
func edit(t *testing.T, n int, repl string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := mustGenerate(t, reference).WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if repl == "" {
		lines = slices.Delete(lines, n-1, n)
	} else {
		lines[n-1] = repl
	}
	return strings.Join(lines, "\n") + "\n"
}

func TestParseRefuses(t *testing.T) {
	// Lines of the reference table: 2 is count 0 (keys 0-255), 3 and 4
	// count 1 (0 on keys 0-229, 10 on 230-255).
	cases := []struct {
		name, csv, want string
	}{
		{"empty", "", "header"},
		{"header", "count,key,value\n0,0,0\n", "line 1"},
		{"header names", "count,from,to,value\n", "header must be"},
		{"no rows", "count,key_from,key_to,value\n", "no rows"},
		{"not a number", edit(t, 3, "1,0,229,x"), `line 3: value "x" is not a whole number`},
		{"negative value", edit(t, 3, "1,0,229,-10"), "line 3: value -10 is negative"},
		{"bad keys", edit(t, 3, "1,229,0,0"), "line 3: keys 229-0"},
		{"count skipped", edit(t, 2, "2,0,255,0"), "line 2: count 2 out of order"},
		{"key gap", edit(t, 4, "1,231,255,10"), "line 4: count 1: key_from 231 must continue from key 230"},
		{"keys short", edit(t, 4, "1,230,254,10"), "line 4: count 1: keys end at 254"},
		{"row missing", edit(t, 4, ""), "count 1: keys end at 229"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.csv), "ptable.csv")
			if !errors.Is(err, ErrTable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrTable naming %q", err, tc.want)
			}
		})
	}
}

func TestValidateRefuses(t *testing.T) {
	cases := []struct {
		name            string
		csv             string
		threshold, base int
		want            string
	}{
		{"zero released", edit(t, 2, "0,0,255,10"), 8, 5, "count 0, keys 0-255: released as 10"},
		{"off the base", edit(t, 3, "1,0,229,3"), 8, 5, "count 1, keys 0-229: value 3 is not a multiple of the rounding base 5"},
		{"other base", edit(t, 2, "0,0,255,0"), 8, 10, "value 15 is not a multiple of the rounding base 10"},
		{"below threshold", edit(t, 3, "1,0,229,5"), 8, 5, "count 1, keys 0-229: value 5 is below the threshold 8"},
		{"threshold not covered", edit(t, 2, "0,0,255,0"), 30, 5, "must cover the threshold"},
		{"single value", edit(t, 4, "1,230,255,0"), 8, 5, "count 1 is always released as 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb, err := Parse(strings.NewReader(tc.csv), "ptable.csv")
			if err != nil {
				t.Fatal(err)
			}
			err = tb.Validate(tc.threshold, tc.base)
			if !errors.Is(err, ErrTable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrTable naming %q", err, tc.want)
			}
		})
	}
}

// TestValidateRefusesProvenCrossing builds a small table in which a
// released 10 comes only from counts below the threshold, so that a 10
// beside a later 15 would prove the count crossed it.
func TestValidateRefusesProvenCrossing(t *testing.T) {
	var b strings.Builder
	b.WriteString("count,key_from,key_to,value\n0,0,1,0\n")
	for c := 1; c <= 20; c++ {
		lo, hi := "0", "10"
		if c >= 8 {
			lo, hi = "15", "20"
		}
		b.WriteString(strings.Join([]string{strconv.Itoa(c), "0", "0", lo}, ",") + "\n")
		b.WriteString(strings.Join([]string{strconv.Itoa(c), "1", "1", hi}, ",") + "\n")
	}
	tb, err := Parse(strings.NewReader(b.String()), "ptable.csv")
	if err != nil {
		t.Fatal(err)
	}
	err = tb.Validate(8, 5)
	if !errors.Is(err, ErrTable) || !strings.Contains(err.Error(), "is given only by counts below the threshold") {
		t.Fatalf("got %v, want a refusal of a value that proves a crossing", err)
	}
}

func TestGenerateRefuses(t *testing.T) {
	cases := []struct {
		name string
		p    Params
		want string
	}{
		{"small perturbation", Params{Threshold: 8, Base: 5, MaxPerturbation: 5, Variance: 9, KeyRange: 256}, "must be at least 10"},
		{"no variance", Params{Threshold: 8, Base: 5, MaxPerturbation: 10, KeyRange: 256}, "variance positive"},
		{"one key", Params{Threshold: 8, Base: 5, MaxPerturbation: 10, Variance: 9, KeyRange: 1}, "key range"},
		{"no threshold", Params{Base: 5, MaxPerturbation: 10, Variance: 9, KeyRange: 256}, "threshold"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Generate(tc.p)
			if !errors.Is(err, ErrTable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrTable naming %q", err, tc.want)
			}
		})
	}
}
