// Package releasecheck checks a released table against the true answer to
// the same question, computed independently by a test: every released
// value must be the true value as disclosure control documents it
// (counts and sums rounded to the base, binary and integer means from
// rounded figures, continuous means to 4 significant figures), and every
// withheld value must carry a reason that fits the true value. The
// integration tests (demo, integration/correctness) share it.
//
// A table whose counts were perturbed (release.Meta.Perturbed) is checked
// against the p-table it names, which the caller reads from the bundle
// (PTable): every released count must lie within the table's bounds for
// the true count, and no count may be withheld but as attribute
// disclosure. A caller that knows the cell keys (the sum of the record
// keys of the patients each count counts, computed from the raw NHS
// numbers and the network's perturbation secret) puts them in the true
// table (CellValues.AddKey); each perturbed count must then equal exactly
// what the p-table releases for its true count and key. Without keys the
// check proves bounds only. That repeats release the same values is
// checked by comparing two runs (Diff).
package releasecheck

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/policy/ptable"
	"github.com/havenhealth/haven/release"
	"github.com/havenhealth/haven/synth"
)

// CellValues are the true values of one cell's measures, before
// disclosure control, by measure name; n counts the patients a sum or
// mean is over. Keys, when set, hold each count's cell key before its
// reduction mod R: the sum of the record keys of the patients the count
// counts. A TrueTable has keys in every cell or in none.
type CellValues struct {
	Values map[string]float64
	N      map[string]int64
	Keys   map[string]uint64
}

func (c *CellValues) Add(measure string, v float64, contributes bool) {
	if c.Values == nil {
		c.Values, c.N = map[string]float64{}, map[string]int64{}
	}
	c.Values[measure] += v
	if contributes {
		c.N[measure]++
	}
}

// AddKey adds record key k to the cell key of count measure; a count
// that does not count a patient adds 0, so that the cell is known to be
// keyed.
func (c *CellValues) AddKey(measure string, k uint64) {
	if c.Keys == nil {
		c.Keys = map[string]uint64{}
	}
	c.Keys[measure] += k
}

// TrueTable is an answer before disclosure control: cells keyed by their
// group values joined with "|".
type TrueTable map[string]*CellValues

func (tt TrueTable) Cell(key ...string) *CellValues {
	k := strings.Join(key, "|")
	if tt[k] == nil {
		tt[k] = &CellValues{}
	}
	return tt[k]
}

// sum adds the true values of the cells whose key matches.
func (tt TrueTable) Sum(match func(key []string) bool) CellValues {
	var out CellValues
	for k, c := range tt {
		if !match(strings.Split(k, "|")) {
			continue
		}
		for name, v := range c.Values {
			out.Add(name, v, false)
			out.N[name] += c.N[name]
		}
		// A margin's patients are its cells' patients, so its key is the
		// sum of theirs.
		for name, k := range c.Keys {
			out.AddKey(name, k)
		}
	}
	return out
}

// keyed reports whether every cell of tt carries cell keys, and whether
// any does.
func (tt TrueTable) keyed() (all, any bool) {
	all = len(tt) > 0
	for _, c := range tt {
		all = all && c.Keys != nil
		any = any || c.Keys != nil
	}
	return all, any
}

// Stats counts what Check looked at. Exact counts the perturbed counts
// checked against the value the p-table gives for their true count and
// cell key (a keyed true table), each also within bounds.
type Stats struct{ Cells, Released, Withheld, Problems, Exact int }

// Check checks every value of a released table against the true answer,
// and that the table has exactly the true table's cells. means says what
// each mean measure averages, which decides how disclosure control
// releases it. It returns one line per problem found.
//
// pt is the p-table of the bundle the table was released under, or nil; a
// table that says its counts were perturbed is a problem without one.
func Check(tab *release.Table, truth TrueTable, means map[string]disclosure.ValueKind, pt *ptable.Table) (Stats, []string) {
	var st Stats
	var problems []string
	m := tab.Meta
	fail := func(format string, args ...any) {
		st.Problems++
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if m.MinCellCount < 1 || m.RoundingBase < 1 {
		fail("table says min cell count %d, rounding base %d", m.MinCellCount, m.RoundingBase)
		return st, problems
	}
	if !m.Perturbed() {
		pt = nil
	} else if pt == nil || int64(pt.KeyRange()) != m.PerturbationKeyRange {
		fail("table says its counts went through %s (key range %d), but the check was given no such p-table", m.PerturbationTable, m.PerturbationKeyRange)
		return st, problems
	}
	keyed, anyKeys := truth.keyed()
	if anyKeys && !keyed {
		fail("the true table has cell keys in some cells but not all")
		return st, problems
	}
	var cells []string
	for _, row := range tab.Rows {
		var key string
		var v CellValues
		switch row.Kind {
		case release.RowCell:
			key = strings.Join(row.Key, "|")
			c, ok := truth[key]
			if !ok {
				fail("released cell %s has no patients centrally", key)
				continue
			}
			cells = append(cells, key)
			v = *c
		case release.RowMargin:
			key = tab.Dims[row.MarginDim] + "=" + row.Key[row.MarginDim]
			v = truth.Sum(func(k []string) bool { return k[row.MarginDim] == row.Key[row.MarginDim] })
		case release.RowTotal:
			key = "total"
			v = truth.Sum(func([]string) bool { return true })
		}
		// The attribute disclosure rule withholds a group whose total is
		// below the minimum; the total is at least every count of the row.
		var largest float64
		for _, ms := range tab.Measures {
			if ms.Kind == disclosure.KindCount {
				largest = max(largest, v.Values[ms.Name])
			}
		}
		for j, ms := range tab.Measures {
			got := row.Values[j]
			want, n := v.Values[ms.Name], v.N[ms.Name]
			switch {
			case got.Released:
				st.Released++
			case got.Withheld():
				st.Withheld++
			}
			if got.Withheld() && got.Reason == disclosure.CodeAttributeDisclosure {
				if pt != nil {
					// The rule reads the group total through the p-table.
					if lo, _ := pt.Bounds(int64(largest)); lo >= m.MinCellCount {
						fail("%s %s %s: withheld as attribute_disclosure, but a group of %s is never perturbed below %d", row.Kind, key, ms.Name, ftoa(largest), m.MinCellCount)
					}
					continue
				}
				if largest >= float64(m.MinCellCount) {
					fail("%s %s %s: withheld as attribute_disclosure, but the row has a count of %s", row.Kind, key, ms.Name, ftoa(largest))
				}
				continue
			}
			values, ok := means[ms.Name]
			if ms.Kind == disclosure.KindMean && !ok {
				fail("nothing says what mean %s averages", ms.Name)
				continue
			}
			msg := ""
			switch {
			case pt != nil && ms.Kind == disclosure.KindCount:
				msg = checkPerturbed(pt, got, want)
				if msg == "" && keyed {
					k, ok := v.Keys[ms.Name]
					switch {
					case !ok:
						msg = "the true table has no cell key for this count"
					case got.Value != float64(pt.Release(int64(want), k)):
						msg = "released " + ftoa(got.Value) + ", but the p-table releases " + strconv.FormatInt(pt.Release(int64(want), k), 10) +
							" for the true count " + ftoa(want) + " and cell key " + strconv.FormatUint(k%uint64(pt.KeyRange()), 10)
					default:
						st.Exact++
					}
				}
			case pt != nil && (ms.Kind == disclosure.KindSum || ms.Kind == disclosure.KindMean):
				msg = checkPerturbedNumber(pt, ms.Kind, values, row.Kind, got, want, n, m.MinCellCount, m.RoundingBase)
			default:
				msg = CheckValue(ms.Kind, values, row.Kind, got, want, n, m.MinCellCount, m.RoundingBase)
			}
			if msg != "" {
				fail("%s %s %s: %s", row.Kind, key, ms.Name, msg)
			}
			if ms.Kind != disclosure.KindMean || values == disclosure.ValueContinuous || !got.Released {
				continue
			}
			for k, o := range tab.Measures {
				c := v.Values[o.Name]
				if o.Kind == disclosure.KindCount && row.Values[k].Withheld() && (c == float64(n) || c == want) {
					fail("%s %s %s: released %s beside a withheld %s it gives back", row.Kind, key, ms.Name, ftoa(got.Value), o.Name)
				}
			}
		}
	}
	st.Cells = len(cells)
	if len(truth) != len(cells) {
		for k := range truth {
			if !slices.Contains(cells, k) {
				fail("cell %s has patients centrally but is not in the released table", k)
			}
		}
	}
	// The grand total is last. Its values are checked above like any
	// other: under plain rounding it may be withheld (a total of 1-7 as
	// low_count, or as secondary when a min_age leaves one small cell).
	if last := tab.Rows[len(tab.Rows)-1]; last.Kind != release.RowTotal {
		fail("the last row is not the grand total")
	}
	return st, problems
}

// checkValue returns what is wrong with a released or withheld value,
// given the true value and the patients n it is over, or "". values is
// what a mean averages.
func CheckValue(kind disclosure.Kind, values disclosure.ValueKind, row release.RowKind, got release.Value, want float64, n, minCount, base int64) string {
	reason := got.Reason
	switch kind {
	case disclosure.KindCount:
		c := int64(want)
		switch {
		case got.Released && got.Value != float64(RoundCount(c, minCount, base)):
			return "released " + ftoa(got.Value) + ", want " + strconv.FormatInt(RoundCount(c, minCount, base), 10) + " (true count " + ftoa(want) + ")"
		case got.Released:
		case reason == disclosure.CodeLowCount && (c < 1 || c >= minCount):
			return "withheld as low_count but the true count is " + ftoa(want)
		case reason != disclosure.CodeLowCount && reason != disclosure.CodeSecondary:
			return "withheld as " + string(reason) + ", want low_count or secondary"
		}
	case disclosure.KindSum:
		switch {
		case got.Released && got.Value != RoundSum(want, base):
			return "released " + ftoa(got.Value) + ", want " + ftoa(RoundSum(want, base)) + " (true sum " + ftoa(want) + ")"
		case got.Released:
		case n == 0:
			return "a sum over no patients is withheld as " + string(reason)
		case reason == disclosure.CodeFewContributors && n >= minCount:
			return "withheld as few_contributors but " + strconv.FormatInt(n, 10) + " patients contribute"
		case reason != disclosure.CodeFewContributors && reason != disclosure.CodeDominance && reason != disclosure.CodeSecondary:
			return "withheld as " + string(reason)
		}
	case disclosure.KindMean:
		continuous := values == disclosure.ValueContinuous
		smallSum := !continuous && want > 0 && want < float64(minCount)
		switch {
		case row != release.RowCell:
			if got.Released {
				return "a mean has no margins, but one was released"
			}
		case n == 0:
			if reason != disclosure.CodeNoPatients {
				return "a mean over no patients is " + string(reason) + ", want no_patients"
			}
		case got.Released && smallSum:
			return "released " + ftoa(got.Value) + ", but its sum " + ftoa(want) + " is below " + strconv.FormatInt(minCount, 10)
		case got.Released && continuous && math.Abs(got.Value-want/float64(n)) > 5e-4*want/float64(n):
			return "released " + ftoa(got.Value) + ", want " + ftoa(want/float64(n)) + " to 4 significant figures"
		case got.Released && !continuous && got.Value != float64(RoundCount(int64(want), minCount, base))/float64(RoundCount(n, minCount, base)):
			return "released " + ftoa(got.Value) + ", want the rounded sum over the rounded patients, " +
				strconv.FormatInt(RoundCount(int64(want), minCount, base), 10) + "/" + strconv.FormatInt(RoundCount(n, minCount, base), 10)
		case got.Released:
		case reason == disclosure.CodeFewContributors && n >= minCount && !smallSum:
			return "withheld as few_contributors but " + strconv.FormatInt(n, 10) + " patients contribute a sum of " + ftoa(want)
		case reason != disclosure.CodeFewContributors && reason != disclosure.CodeDominance && reason != disclosure.CodeSecondary:
			return "withheld as " + string(reason)
		}
	default:
		return "unexpected measure kind " + string(kind)
	}
	return ""
}

// checkPerturbed returns what is wrong with a count released through p-table
// pt, given its true count, or "": a released count lies within the
// table's bounds for the true count, and a perturbed count is never
// withheld as small (attribute disclosure is checked by the caller).
func checkPerturbed(pt *ptable.Table, got release.Value, want float64) string {
	c := int64(want)
	if !got.Released {
		return "withheld as " + string(got.Reason) + "; perturbed counts are withheld only as attribute_disclosure"
	}
	lo, hi := pt.Bounds(c)
	if v := got.Value; v != math.Trunc(v) || int64(v) < lo || int64(v) > hi {
		return "released " + ftoa(v) + ", outside the p-table's bounds " + strconv.FormatInt(lo, 10) + "-" + strconv.FormatInt(hi, 10) +
			" for the true count " + ftoa(want)
	}
	return ""
}

// checkPerturbedNumber returns what is wrong with a sum or mean released
// under perturbation, or "". The few-contributors rule reads N through the
// p-table, so a value may be withheld as few_contributors only if some
// cell key releases N below minCount, and released only if some key
// releases it at minCount or more. A released sum is the true sum rounded;
// a mean of 0/1 values is some perturbed Sum over some perturbed N (the
// Sum's perturbed value capped at N's) to 4 significant figures; other
// means are checked as without perturbation.
func checkPerturbedNumber(pt *ptable.Table, kind disclosure.Kind, values disclosure.ValueKind, row release.RowKind, got release.Value, want float64, n, minCount, base int64) string {
	if kind == disclosure.KindMean && row != release.RowCell {
		if got.Released {
			return "a mean has no margins, but one was released"
		}
		return ""
	}
	lo, hi := pt.Bounds(n)
	switch {
	case !got.Released && got.Reason == disclosure.CodeFewContributors:
		if lo >= minCount {
			return "withheld as few_contributors, but " + strconv.FormatInt(n, 10) + " contributors are never perturbed below " + strconv.FormatInt(minCount, 10)
		}
		return ""
	case !got.Released && (got.Reason == disclosure.CodeDominance || got.Reason == disclosure.CodeSecondary):
		return ""
	case !got.Released:
		return "withheld as " + string(got.Reason) + "; under perturbation a sum or mean is withheld as few_contributors, dominance or secondary"
	case hi < minCount:
		return "released, but " + strconv.FormatInt(n, 10) + " contributors are always perturbed below " + strconv.FormatInt(minCount, 10)
	}
	switch {
	case kind == disclosure.KindSum:
		if got.Value != RoundSum(want, base) {
			return "released " + ftoa(got.Value) + ", want " + ftoa(RoundSum(want, base)) + " (true sum " + ftoa(want) + ")"
		}
	case values == disclosure.ValueBinary:
		for _, np := range pt.Outcomes(n) {
			if np.Value < minCount {
				continue
			}
			// The sum of 0/1 values counts the patients with a 1.
			for _, sp := range pt.Outcomes(int64(want)) {
				r, _ := strconv.ParseFloat(strconv.FormatFloat(float64(min(sp.Value, np.Value))/float64(np.Value), 'g', 4, 64), 64)
				if r == got.Value {
					return ""
				}
			}
		}
		return "released " + ftoa(got.Value) + ", which is no perturbed sum over a perturbed N (true " + ftoa(want) + "/" + strconv.FormatInt(n, 10) + ")"
	case n == 0:
		return "released " + ftoa(got.Value) + ", a mean over no patients"
	case values == disclosure.ValueContinuous:
		if w := want / float64(n); math.Abs(got.Value-w) > 5e-4*math.Abs(w) {
			return "released " + ftoa(got.Value) + ", want " + ftoa(w) + " to 4 significant figures"
		}
	default:
		return CheckValue(kind, values, row, got, want, n, minCount, base)
	}
	return ""
}

// PTable reads the p-table a bundle directory's data.json names for
// perturbation, validated against the bundle's threshold and rounding
// base; nil when the bundle does not perturb.
func PTable(bundle string) (*ptable.Table, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "data.json"))
	if err != nil {
		return nil, err
	}
	var data struct {
		Disclosure struct {
			MinCellCount int `json:"min_cell_count"`
			RoundingBase int `json:"rounding_base"`
			Perturbation *struct {
				Enabled bool   `json:"enabled"`
				Table   string `json:"table"`
			} `json:"perturbation"`
		} `json:"disclosure"`
	}
	if err := json.Unmarshal(b, &data); err != nil {
		return nil, fmt.Errorf("%s/data.json: %w", bundle, err)
	}
	p := data.Disclosure.Perturbation
	if p == nil || !p.Enabled {
		return nil, nil
	}
	f, err := os.Open(filepath.Join(bundle, filepath.FromSlash(p.Table)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pt, err := ptable.Parse(f, p.Table)
	if err != nil {
		return nil, err
	}
	if err := pt.Validate(data.Disclosure.MinCellCount, data.Disclosure.RoundingBase); err != nil {
		return nil, err
	}
	return pt, nil
}

// MustPTable is PTable for a test: an error ends it.
func MustPTable(t testing.TB, bundle string) *ptable.Table {
	t.Helper()
	pt, err := PTable(bundle)
	if err != nil {
		t.Fatalf("p-table of bundle %s: %v", bundle, err)
	}
	return pt
}

// roundCount is disclosure control's documented rounding of a count that
// passed: to the nearest multiple of base, half up, never under the
// smallest multiple of base that is at least minCount.
func RoundCount(c, minCount, base int64) int64 {
	if c == 0 {
		return 0
	}
	r := (2*c + base) / (2 * base) * base
	return max(r, (minCount+base-1)/base*base)
}

// roundSum rounds a sum to the nearest multiple of base, half up.
func RoundSum(s float64, base int64) float64 {
	b := float64(base)
	return math.Floor(s/b+0.5) * b
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// ReadNDOP reads a synthetic network's national data opt-out list.
func ReadNDOP(n *synth.Network) (map[string]bool, error) {
	f, err := os.Open(n.Path(n.NationalOptOut.Path))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		if !first {
			out[strings.TrimSpace(sc.Text())] = true
		}
	}
	return out, sc.Err()
}

// ReadCodelist reads the codes of a codelist of a bundle directory.
func ReadCodelist(bundle, name string) (map[string]bool, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "codelists", name+".csv"))
	if err != nil {
		return nil, err
	}
	var body strings.Builder
	for line := range strings.Lines(string(b)) {
		if !strings.HasPrefix(line, "#") {
			body.WriteString(line)
		}
	}
	r := csv.NewReader(strings.NewReader(body.String()))
	codes := map[string]bool{}
	for first := true; ; first = false {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("codelist %s: %w", name, err)
		}
		if !first {
			codes[rec[0]] = true
		}
	}
	if len(codes) == 0 {
		return nil, fmt.Errorf("codelist %s has no codes", name)
	}
	return codes, nil
}

// CheckT reports through t every problem Check finds, each prefixed by
// what, and returns the counts.
func CheckT(t testing.TB, tab *release.Table, truth TrueTable, means map[string]disclosure.ValueKind, pt *ptable.Table, what string) Stats {
	t.Helper()
	st, problems := Check(tab, truth, means, pt)
	for _, p := range problems {
		t.Errorf("%s: %s", what, p)
	}
	return st
}

// MustReadNDOP is ReadNDOP for a test: an error ends it.
func MustReadNDOP(t testing.TB, n *synth.Network) map[string]bool {
	t.Helper()
	m, err := ReadNDOP(n)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// MustReadCodelist is ReadCodelist for a test: an error ends it.
func MustReadCodelist(t testing.TB, bundle, name string) map[string]bool {
	t.Helper()
	m, err := ReadCodelist(bundle, name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Diff returns one line per difference between the released contents of
// two tables (dimensions, measures, and every row's key and values with
// their reasons), or nil when they release the same table. Metadata that
// differs between runs (run id, times) is not compared.
func Diff(a, b *release.Table) []string {
	var out []string
	if !slices.Equal(a.Dims, b.Dims) {
		return []string{fmt.Sprintf("dimensions %v, then %v", a.Dims, b.Dims)}
	}
	if !slices.Equal(a.Measures, b.Measures) {
		return []string{fmt.Sprintf("measures %v, then %v", a.Measures, b.Measures)}
	}
	if len(a.Rows) != len(b.Rows) {
		return []string{fmt.Sprintf("%d rows, then %d", len(a.Rows), len(b.Rows))}
	}
	for i, ra := range a.Rows {
		rb := b.Rows[i]
		if ra.Kind != rb.Kind || ra.MarginDim != rb.MarginDim || !slices.Equal(ra.Key, rb.Key) {
			out = append(out, fmt.Sprintf("row %d is %s %v, then %s %v", i, ra.Kind, ra.Key, rb.Kind, rb.Key))
			continue
		}
		for j, va := range ra.Values {
			if vb := rb.Values[j]; va != vb {
				out = append(out, fmt.Sprintf("%s %v %s: %s, then %s", ra.Kind, ra.Key, a.Measures[j].Name, describe(va), describe(vb)))
			}
		}
	}
	return out
}

// describe renders a released value or the reason it is missing.
func describe(v release.Value) string {
	if v.Released {
		return "released " + ftoa(v.Value)
	}
	return "missing as " + string(v.Reason)
}
