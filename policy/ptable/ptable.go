// Package ptable holds the perturbation table (p-table) of cell-key
// perturbation, the method of ONS Census 2021 flexible tables and ABS
// TableBuilder: it maps a cell's true count and its cell key to the count
// that is released.
//
// Every patient has a record key in [0, R), derived at the nodes from the
// NHS number under a network secret the coordinator never holds. A cell's
// key is the sum of its members' record keys mod R, so a cell holding the
// same patients has the same key in every run and is released as the same
// value: repeating or averaging a query gains nothing. Counts that differ
// by one patient have unrelated keys, so the difference of two released
// values says little about the difference of the true counts.
//
// The table is a CSV file in the governance bundle, signed with everything
// else, with the header count,key_from,key_to,value: for each true count
// from 0 to the table's last count, the key ranges (inclusive, together
// exactly [0, R)) and the value each releases. A count beyond the last one
// is released as the row of the count below it that is congruent modulo
// the rounding base, shifted by their difference: the perturbation of a
// large count depends only on its remainder, and the shift keeps released
// values multiples of the base.
//
// Generate makes a table from stated parameters; Parse reads one and
// Validate checks it against the bundle's threshold and rounding base.
// Preimage answers the question an attacker asks: which true counts could
// have given this released value.
package ptable

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
)

// ErrTable is wrapped by every error about a malformed or unsafe table.
var ErrTable = errors.New("invalid perturbation table")

// Header is the first line of a p-table file.
var Header = []string{"count", "key_from", "key_to", "value"}

// Row maps the cell keys KeyFrom..KeyTo (inclusive) of a cell whose true
// count is Count to the released Value.
type Row struct {
	Count   int64
	KeyFrom int
	KeyTo   int
	Value   int64
}

// Table is a parsed p-table. It is never changed after Parse or Generate
// and is safe for concurrent use.
type Table struct {
	keyRange int
	base     int64   // the period of counts beyond the last row; set by Validate or Generate
	rows     [][]Row // rows[c]: the rows of count c, by key
	maxDev   int64   // the largest |Value - Count| of any row
}

// Parse reads a p-table in CSV form. name is used in errors, which give
// the line of the offending row. Parse checks the structure only: every
// count from 0 up has rows, whose key ranges tile [0, R) in order, with the
// same R for every count. Validate checks the table against the rules the
// bundle states.
func Parse(r io.Reader, name string) (*Table, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = len(Header)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: header: %v", ErrTable, name, err)
	}
	if !slices.Equal(head, Header) {
		return nil, fmt.Errorf("%w: %s line 1: header must be %q", ErrTable, name, Header)
	}
	t := &Table{}
	var lines [][]int // lines[c][i]: the line of rows[c][i], for errors
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrTable, name, err)
		}
		line, _ := cr.FieldPos(0)
		var v [4]int64
		for i, f := range rec {
			if v[i], err = strconv.ParseInt(f, 10, 64); err != nil {
				return nil, fmt.Errorf("%w: %s line %d: %s %q is not a whole number", ErrTable, name, line, Header[i], f)
			}
		}
		row := Row{Count: v[0], KeyFrom: int(v[1]), KeyTo: int(v[2]), Value: v[3]}
		cur := int64(len(t.rows)) - 1
		switch {
		case v[1] < 0 || v[2] < v[1] || v[2] >= 1<<20:
			return nil, fmt.Errorf("%w: %s line %d: keys %d-%d: key_from must be at least 0 and key_to from key_from to %d", ErrTable, name, line, v[1], v[2], 1<<20-1)
		case row.Value < 0:
			return nil, fmt.Errorf("%w: %s line %d: value %d is negative", ErrTable, name, line, row.Value)
		case row.Count == cur+1:
			t.rows = append(t.rows, nil)
			lines = append(lines, nil)
		case row.Count != cur:
			return nil, fmt.Errorf("%w: %s line %d: count %d out of order: counts run from 0 in steps of 1 (expected %d or %d)", ErrTable, name, line, row.Count, cur, cur+1)
		}
		c := len(t.rows) - 1
		t.rows[c] = append(t.rows[c], row)
		lines[c] = append(lines[c], line)
		t.maxDev = max(t.maxDev, abs(row.Value-row.Count))
	}
	if len(t.rows) == 0 {
		return nil, fmt.Errorf("%w: %s: no rows", ErrTable, name)
	}
	t.keyRange = t.rows[0][len(t.rows[0])-1].KeyTo + 1
	for c, rows := range t.rows {
		next := 0
		for i, r := range rows {
			if r.KeyFrom != next {
				return nil, fmt.Errorf("%w: %s line %d: count %d: key_from %d must continue from key %d", ErrTable, name, lines[c][i], c, r.KeyFrom, next)
			}
			next = r.KeyTo + 1
		}
		if next != t.keyRange {
			return nil, fmt.Errorf("%w: %s line %d: count %d: keys end at %d, but count 0 sets the key range to 0-%d", ErrTable, name, lines[c][len(rows)-1], c, next-1, t.keyRange-1)
		}
	}
	if t.keyRange < 2 {
		return nil, fmt.Errorf("%w: %s: the key range must hold at least 2 keys", ErrTable, name)
	}
	return t, nil
}

// Validate checks t against the threshold (the bundle's min_cell_count)
// and rounding base, and fixes the base as the period of counts beyond the
// last row. It refuses, naming the count:
//
//   - a count of 0 released as anything but 0 (an empty cell has no key);
//   - a released value that is not a multiple of base;
//   - a positive released value below threshold;
//   - a table whose rows end before threshold + base, or whose last base
//     counts can be released as 0 (the rule for larger counts would then
//     release 0 for arbitrarily large counts);
//   - a released value that only counts below the threshold give, which
//     would prove, beside a later value, that a count crossed it;
//   - a count from 1 to the threshold released as one value only.
func (t *Table) Validate(threshold, base int) error {
	if threshold < 1 || base < 1 {
		return fmt.Errorf("%w: threshold %d and rounding base %d must be at least 1", ErrTable, threshold, base)
	}
	th, b := int64(threshold), int64(base)
	last := int64(len(t.rows)) - 1
	if last < th+b {
		return fmt.Errorf("%w: rows end at count %d; they must cover the threshold and one rounding base beyond it (at least count %d)", ErrTable, last, th+b)
	}
	for c, rows := range t.rows {
		for _, r := range rows {
			switch {
			case c == 0 && r.Value != 0:
				return fmt.Errorf("%w: count 0, keys %d-%d: released as %d; an empty cell must be released as 0", ErrTable, r.KeyFrom, r.KeyTo, r.Value)
			case r.Value%b != 0:
				return fmt.Errorf("%w: count %d, keys %d-%d: value %d is not a multiple of the rounding base %d", ErrTable, c, r.KeyFrom, r.KeyTo, r.Value, b)
			case r.Value > 0 && r.Value < th:
				return fmt.Errorf("%w: count %d, keys %d-%d: value %d is below the threshold %d", ErrTable, c, r.KeyFrom, r.KeyTo, r.Value, th)
			case int64(c) > last-b && r.Value == 0:
				return fmt.Errorf("%w: count %d, keys %d-%d: one of the last %d counts is released as 0, and larger counts repeat them", ErrTable, c, r.KeyFrom, r.KeyTo, b)
			}
		}
		if c >= 1 && int64(c) <= th && len(t.Outcomes(int64(c))) < 2 {
			return fmt.Errorf("%w: count %d is always released as %d; a count up to the threshold must be released as more than one value", ErrTable, c, rows[0].Value)
		}
	}
	t.base = b
	for c := int64(0); c <= last; c++ {
		for _, o := range t.Outcomes(c) {
			pre := t.Preimage(o.Value)
			if pre[len(pre)-1] < th {
				return fmt.Errorf("%w: value %d is given only by counts below the threshold %d (count %d releases it); beside another release it would prove a crossing", ErrTable, o.Value, th, c)
			}
		}
	}
	return nil
}

// KeyRange is R: record and cell keys lie in [0, R).
func (t *Table) KeyRange() int { return t.keyRange }

// LastCount is the largest count the table has rows for.
func (t *Table) LastCount() int64 { return int64(len(t.rows)) - 1 }

// MaxPerturbation is the largest difference between a true and a released
// count, for any count.
func (t *Table) MaxPerturbation() int64 { return t.maxDev }

// row returns the row for count c (c within the table) and cell key k.
func (t *Table) row(c int64, k int) Row {
	rows := t.rows[c]
	i, _ := slices.BinarySearchFunc(rows, k, func(r Row, k int) int {
		switch {
		case r.KeyTo < k:
			return -1
		case r.KeyFrom > k:
			return 1
		}
		return 0
	})
	return rows[i]
}

// fold maps a count to the count of the table whose row it uses and the
// shift to add to that row's value.
func (t *Table) fold(c int64) (int64, int64) {
	last := t.LastCount()
	if c <= last {
		return c, 0
	}
	d := (c - last) % t.base
	f := last
	if d != 0 {
		f = last - t.base + d
	}
	return f, c - f
}

// Release returns the value released for a cell whose true count is c (at
// least 0) and whose cell key is key. The key is reduced mod R. Release
// must only be called on a table that passed Validate or came from
// Generate.
func (t *Table) Release(c int64, key uint64) int64 {
	f, shift := t.fold(c)
	return t.row(f, int(key%uint64(t.keyRange))).Value + shift
}

// Outcome is one value a count can be released as, with the share of cell
// keys that give it (its probability when keys are uniform).
type Outcome struct {
	Value       int64
	Keys        int
	Probability float64
}

// Outcomes returns the values a true count c can be released as, in
// ascending order, with their probabilities.
func (t *Table) Outcomes(c int64) []Outcome {
	f, shift := t.fold(c)
	var out []Outcome
	for _, r := range t.rows[f] {
		v, n := r.Value+shift, r.KeyTo-r.KeyFrom+1
		if i := slices.IndexFunc(out, func(o Outcome) bool { return o.Value == v }); i >= 0 {
			out[i].Keys += n
			continue
		}
		out = append(out, Outcome{Value: v, Keys: n})
	}
	slices.SortFunc(out, func(a, b Outcome) int { return int(a.Value - b.Value) })
	for i := range out {
		out[i].Probability = float64(out[i].Keys) / float64(t.keyRange)
	}
	return out
}

// Bounds returns the smallest and largest values a true count c can be
// released as: a released value always lies within them.
func (t *Table) Bounds(c int64) (lo, hi int64) {
	o := t.Outcomes(c)
	return o[0].Value, o[len(o)-1].Value
}

// ExpectedAbsError is the mean of |released - c| over all cell keys.
func (t *Table) ExpectedAbsError(c int64) float64 {
	var e float64
	for _, o := range t.Outcomes(c) {
		e += o.Probability * float64(abs(o.Value-c))
	}
	return e
}

// Preimage returns, in ascending order, every true count that some cell
// key releases as v: all that a reader who knows the table, but not the
// cell key, can conclude from a released v. It is empty when no count
// gives v (a value that is not a multiple of the rounding base, say).
// Since a released value is within MaxPerturbation of its true count, the
// set is finite.
func (t *Table) Preimage(v int64) []int64 {
	var out []int64
	for c := max(0, v-t.maxDev); c <= v+t.maxDev; c++ {
		for _, o := range t.Outcomes(c) {
			if o.Value == v {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// WriteCSV writes t in the form Parse reads.
func (t *Table) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(Header); err != nil {
		return err
	}
	for _, rows := range t.rows {
		for _, r := range rows {
			if err := cw.Write([]string{strconv.FormatInt(r.Count, 10), strconv.Itoa(r.KeyFrom), strconv.Itoa(r.KeyTo), strconv.FormatInt(r.Value, 10)}); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// Params are what a board states to generate a table.
type Params struct {
	// Threshold is the bundle's min_cell_count: no positive count below it
	// is released.
	Threshold int
	// Base is the rounding base: every released value is a multiple of it.
	Base int
	// MaxPerturbation bounds |released - true|. It must be at least the
	// smallest releasable positive value (Threshold rounded up to Base), so
	// that every count up to it can be released both as 0 and as that value.
	MaxPerturbation int
	// Variance is the target variance of released - true for large counts.
	Variance float64
	// KeyRange is R, the number of record and cell keys.
	KeyRange int
}

// Generate makes a p-table by the method of the ONS and ABS: for each true
// count c, the candidates are 0 and the multiples of Base from the
// smallest releasable value up within MaxPerturbation of c; their
// probabilities are a discretised normal around c with the stated
// variance, tilted so that the released value is unbiased (its mean is c),
// and quantised to shares of the KeyRange keys. Keys are assigned to values
// in ascending order, so that for one cell key the released value rises
// with the count. Every count from 1 to the smallest releasable value keeps
// at least one key releasing 0 and one releasing that value, so that
// neither proves which side of the threshold the count is on.
func Generate(p Params) (*Table, error) {
	if p.Threshold < 1 || p.Base < 1 || p.KeyRange < 2 || p.KeyRange > 1<<20 || p.Variance <= 0 || math.IsNaN(p.Variance) || math.IsInf(p.Variance, 0) {
		return nil, fmt.Errorf("%w: threshold and base must be at least 1, key range from 2 to %d, and variance positive", ErrTable, 1<<20)
	}
	b, d := int64(p.Base), int64(p.MaxPerturbation)
	floor := (int64(p.Threshold) + b - 1) / b * b
	if d < floor {
		return nil, fmt.Errorf("%w: max perturbation %d must be at least %d (the threshold rounded up to the base), or small counts could not be released both as 0 and as %d", ErrTable, d, floor, floor)
	}
	if d > 10000 || floor > 10000 {
		return nil, fmt.Errorf("%w: max perturbation %d and threshold %d must be at most 10000", ErrTable, d, p.Threshold)
	}
	// The last base counts have no 0 among their candidates, so larger
	// counts can repeat them.
	last := floor + d + 2*b
	t := &Table{keyRange: p.KeyRange, base: b, rows: make([][]Row, last+1)}
	t.rows[0] = []Row{{Count: 0, KeyFrom: 0, KeyTo: p.KeyRange - 1, Value: 0}}
	for c := int64(1); c <= last; c++ {
		var cands []int64
		for v := (max(0, c-d) + b - 1) / b * b; v <= c+d; v += b {
			if v == 0 || v >= floor {
				cands = append(cands, v)
			}
		}
		must := func(v int64) bool { return c <= floor && (v == 0 || v == floor) }
		probs := unbiased(cands, c, p.Variance)
		keys := quantise(probs, p.KeyRange, func(i int) bool { return must(cands[i]) })
		next := 0
		for i, v := range cands {
			if keys[i] == 0 {
				continue
			}
			t.rows[c] = append(t.rows[c], Row{Count: c, KeyFrom: next, KeyTo: next + keys[i] - 1, Value: v})
			t.maxDev = max(t.maxDev, abs(v-c))
			next += keys[i]
		}
	}
	if err := t.Validate(p.Threshold, p.Base); err != nil {
		return nil, fmt.Errorf("generated table: %w", err)
	}
	return t, nil
}

// unbiased returns probabilities for the candidates (ascending) that are
// proportional to exp(-(v-c)²/2σ² + λv), with λ chosen by bisection so
// that their mean is c.
func unbiased(cands []int64, c int64, variance float64) []float64 {
	p := make([]float64, len(cands))
	weights := func(lambda float64) float64 {
		var sum, mean float64
		for i, v := range cands {
			x := float64(v - c)
			p[i] = math.Exp(-x*x/(2*variance) + lambda*x)
			sum += p[i]
		}
		for i, v := range cands {
			p[i] /= sum
			mean += p[i] * float64(v)
		}
		return mean
	}
	lo, hi := -50.0, 50.0
	for range 200 {
		mid := (lo + hi) / 2
		if weights(mid) < float64(c) {
			lo = mid
		} else {
			hi = mid
		}
	}
	weights((lo + hi) / 2)
	return p
}

// quantise shares n keys among the probabilities by largest remainder,
// giving at least one key to each index keep reports, and none to a
// value whose share rounds to nothing.
func quantise(p []float64, n int, keep func(int) bool) []int {
	keys := make([]int, len(p))
	rem := make([]float64, len(p))
	used := 0
	for i, q := range p {
		keys[i] = int(q * float64(n))
		rem[i] = q*float64(n) - float64(keys[i])
		if keys[i] == 0 && keep(i) {
			keys[i], rem[i] = 1, 0
		}
		used += keys[i]
	}
	order := make([]int, len(p))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case rem[a] > rem[b]:
			return -1
		case rem[a] < rem[b]:
			return 1
		}
		return 0
	})
	for i := 0; used < n; i = (i + 1) % len(order) {
		keys[order[i]]++
		used++
	}
	for used > n { // the kept minimums overshot: take from the largest share
		i := 0
		for j := range keys {
			if keys[j] > keys[i] {
				i = j
			}
		}
		keys[i]--
		used--
	}
	return keys
}
