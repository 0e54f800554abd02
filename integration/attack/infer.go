package attack

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Kind is a kind of inference.
type Kind string

// The kinds of inference the attacker draws.
const (
	// KindPinned: a count no released value showed exactly, pinned to one
	// value.
	KindPinned Kind = "pinned"
	// KindSmall: a count pinned to a value from 1 to the threshold less 1.
	KindSmall Kind = "exact_small_count"
	// KindCrossing: the same count at two adjacent parameter values,
	// proven below the threshold at one and at or above it at the other.
	KindCrossing Kind = "threshold_crossing"
	// KindSinglePatient: a fact about each patient of a small group: a
	// group proven to hold 1 to threshold-1 patients of whom none, or all,
	// have the subset's attribute; or a count pinned at two adjacent
	// parameter values that differ by exactly one patient.
	KindSinglePatient Kind = "single_patient"
)

// Claim says that the sum of the Plus atoms less the sum of the Minus
// atoms lies in In.
type Claim struct {
	Plus, Minus []int
	In          Interval
}

// Inference is one thing the attacker says it knows: every claim holds.
type Inference struct {
	Kind   Kind
	What   string
	Claims []Claim
	// Verified is set by Verify: every claim holds in the raw data.
	Verified bool
	// Truth says what the raw data hold, after Verify.
	Truth string
}

// Truth is the true value of every atom, by name; an atom that is not in
// it is 0 (a group with nobody in it).
type Truth map[string]int64

// Attack is what one attacker has released to it and has learnt.
type Attack struct {
	Model *Prevalence
	Sys   *System
	Obs   []Observation
	// Runs are the tables read, Refused the requests refused, Repeats the
	// identical requests repeated, and RepeatsDiffering those of them that
	// released a different table.
	Runs, Refused, Repeats, RepeatsDiffering int
	// RefusedBy counts the refusals by reason code; a refusal with
	// several reasons counts under each.
	RefusedBy map[string]int
	threshold int64
}

// New returns an attack on the model's definition.
func New(m *Prevalence) *Attack { return &Attack{Model: m, Sys: NewSystem()} }

// Threshold is the largest threshold of the rules the tables were read
// with; an inference about small counts uses it.
func (a *Attack) Threshold() int64 { return a.threshold }

// observe is the common part of recording a released table.
func (a *Attack) observe(rules Rules, obs []Observation) {
	a.Runs++
	a.threshold = max(a.threshold, rules.Threshold())
	a.Obs = append(a.Obs, obs...)
}

// key names a set of atoms, so that the same group seen in several runs
// is one group.
func key(atoms []int) string {
	s := slices.Clone(atoms)
	slices.Sort(s)
	var b strings.Builder
	for _, x := range s {
		b.WriteString(strconv.Itoa(x))
		b.WriteByte(',')
	}
	return b.String()
}

// group is a set of patients the attacker can name: a cell, margin or
// total of a run, or the difference of two nested ones; counts are the
// atoms of its group measure and of each subset measure.
type group struct {
	what   string
	counts map[string]set
}

// set is a set of atoms with its key, worked out once.
type set struct {
	atoms []int
	key   string
}

func newSet(atoms []int) set { return set{atoms: atoms, key: key(atoms)} }

// bound is what the attacker knows of the sum of atoms: what the atoms
// allow, within what every observation of exactly those atoms said.
func (a *Attack) bound(s set, known map[string]Interval) Interval {
	iv := a.Sys.SumBound(s.atoms)
	if k, ok := known[s.key]; ok {
		iv = Interval{max(iv.Lo, k.Lo), min(iv.Hi, k.Hi)}
	}
	return iv
}

// Summary counts what an attack did and found.
type Summary struct {
	Runs, Refused, Repeats, RepeatsDiffering int
	// RefusedBy counts the refusals by reason code.
	RefusedBy map[string]int
	// Cells are the count values read (a mean's reading of them not
	// counted again); Pairs the pairs of the same count
	// at adjacent parameter values compared; Atoms and Sums the size of
	// what was solved.
	Cells, Pairs, Atoms, Sums int
	// Inferences and Verified by kind, and in all.
	ByKind         map[Kind]int
	VerifiedByKind map[Kind]int
	Inferences     int
	Verified       int
	// Intervals counts the atoms and observations whose interval was
	// checked against the raw data, and Unsound those it did not hold.
	Intervals, Unsound int
}

// Infer solves what was observed and lists every inference, without
// duplicates, and the pairs compared. Verify checks them.
func (a *Attack) Infer(maxRounds int) ([]*Inference, int, error) {
	if _, err := a.Sys.Propagate(maxRounds); err != nil {
		return nil, 0, err
	}
	t := a.threshold
	known := map[string]Interval{}
	exact := map[int]bool{} // atoms some released value showed exactly
	sets := make([]set, len(a.Obs))
	for i, o := range a.Obs {
		sets[i] = newSet(o.Atoms)
		k := sets[i].key
		iv, ok := known[k]
		if !ok {
			iv = o.Known
		}
		known[k] = Interval{max(iv.Lo, o.Known.Lo), min(iv.Hi, o.Known.Hi)}
	}
	for _, sm := range a.Sys.sums { // released zeros, and groups with no row
		if sm.bound.Exact() {
			for _, x := range sm.atoms {
				exact[x] = true
			}
		}
	}
	var out []*Inference
	seen := map[string]bool{}
	emit := func(inf *Inference) {
		var b strings.Builder
		b.WriteString(string(inf.Kind))
		for _, c := range inf.Claims {
			fmt.Fprintf(&b, "|%s-%s:%v", key(c.Plus), key(c.Minus), c.In)
		}
		if !seen[b.String()] {
			seen[b.String()] = true
			out = append(out, inf)
		}
	}
	pin := func(what string, atoms set, iv Interval, shown bool) {
		if !iv.Exact() || shown {
			return
		}
		c := []Claim{{Plus: atoms.atoms, In: iv}}
		emit(&Inference{Kind: KindPinned, What: what + " = " + iv.String(), Claims: c})
		if iv.Lo >= 1 && iv.Lo < t {
			emit(&Inference{Kind: KindSmall, What: what + " = " + iv.String(), Claims: c})
		}
	}
	// Pins: observations narrowed to one value, then atoms.
	for i, o := range a.Obs {
		pin(o.Label(), sets[i], a.bound(sets[i], known), o.Known.Exact())
	}
	for x := range a.Sys.Atoms() {
		pin("atom "+a.Sys.Name(x), newSet([]int{x}), a.Sys.Bound(x), exact[x])
	}
	// Groups: each row of each run, for single-patient facts.
	var groups []group
	rows := map[string]*group{}
	for i, o := range a.Obs {
		k := rowKey(o)
		g := rows[k]
		if g == nil {
			g = &group{what: fmt.Sprintf("%s (index_date=%s min_age=%s)", o.Row, o.Params["index_date"], o.Params["min_age"]), counts: map[string]set{}}
			rows[k] = g
		}
		g.counts[o.Measure] = sets[i]
	}
	for _, k := range slices.Sorted(maps.Keys(rows)) {
		groups = append(groups, *rows[k])
	}
	// Pairs: the same count at adjacent values of one parameter, the
	// others equal.
	pairs := 0
	for _, param := range []string{"index_date", "min_age"} {
		byRest := map[string][]int{} // observations by everything but param
		for i, o := range a.Obs {
			rest := maps.Clone(o.Params)
			delete(rest, param)
			k := fmt.Sprint(rest) + "|" + o.Row + "|" + o.Measure
			byRest[k] = append(byRest[k], i)
		}
		for _, k := range slices.Sorted(maps.Keys(byRest)) {
			list := byRest[k]
			value := func(i int) string { return a.Obs[i].Params[param] }
			slices.SortStableFunc(list, func(x, y int) int { return compareParam(param, value(x), value(y)) })
			list = slices.CompactFunc(list, func(x, y int) bool { return value(x) == value(y) })
			for i := 1; i < len(list); i++ {
				pairs++
				p, q := a.Obs[list[i-1]], a.Obs[list[i]]
				bp, bq := a.bound(sets[list[i-1]], known), a.bound(sets[list[i]], known)
				what := fmt.Sprintf("%s %s: %s=%s %v → %s=%s %v (%s)", p.Row, p.Measure, param, p.Params[param], bp, param, q.Params[param], bq, others(p.Params, param))
				switch {
				case bp.Hi < t && bq.Lo >= t:
					emit(&Inference{Kind: KindCrossing, What: what, Claims: []Claim{{Plus: p.Atoms, In: Interval{0, t - 1}}, {Plus: q.Atoms, In: Interval{t, Unbounded}}}})
				case bq.Hi < t && bp.Lo >= t:
					emit(&Inference{Kind: KindCrossing, What: what, Claims: []Claim{{Plus: p.Atoms, In: Interval{t, Unbounded}}, {Plus: q.Atoms, In: Interval{0, t - 1}}}})
				}
				// Nested rows of adjacent min_ages differ by the patients of
				// exactly the lower age: a group of its own.
				if param == "min_age" && p.Measure == a.Model.Group {
					if d, ok := difference(*rows[rowKey(p)], *rows[rowKey(q)], a.Model.Group); ok {
						groups = append(groups, d)
					}
				}
				if bp.Exact() && bq.Exact() && (bq.Lo-bp.Lo == 1 || bp.Lo-bq.Lo == 1) {
					emit(&Inference{Kind: KindSinglePatient, What: what + ": exactly one patient more or fewer",
						Claims: []Claim{{Plus: q.Atoms, Minus: p.Atoms, In: Interval{bq.Lo - bp.Lo, bq.Lo - bp.Lo}}}})
				}
			}
		}
	}
	// Each atom of the group measure is a group of its own: the patients
	// of one practice, sex and exact age.
	for x := range a.Sys.Atoms() {
		name := a.Sys.Name(x)
		stem, ok := strings.CutSuffix(name, "|"+a.Model.Group)
		if !ok {
			continue
		}
		g := group{what: "atom " + stem, counts: map[string]set{a.Model.Group: newSet([]int{x})}}
		for _, m := range a.Model.Subsets {
			if y, ok := a.Sys.index[stem+"|"+m]; ok {
				g.counts[m] = newSet([]int{y})
			}
		}
		groups = append(groups, g)
	}
	for _, g := range groups {
		members := g.counts[a.Model.Group]
		n := a.bound(members, known)
		if n.Lo < 1 || n.Hi >= t {
			continue
		}
		for _, m := range a.Model.Subsets {
			sub, ok := g.counts[m]
			if !ok {
				continue
			}
			b := a.bound(sub, known)
			size := Claim{Plus: members.atoms, In: n}
			switch {
			case b.Hi == 0:
				emit(&Inference{Kind: KindSinglePatient, What: fmt.Sprintf("none of the %v patients of %s has %s", n, g.what, m),
					Claims: []Claim{size, {Plus: sub.atoms, In: Interval{0, 0}}}})
			case b.Lo >= n.Hi:
				emit(&Inference{Kind: KindSinglePatient, What: fmt.Sprintf("all %v patients of %s have %s", n, g.what, m),
					Claims: []Claim{size, {Plus: members.atoms, Minus: sub.atoms, In: Interval{0, 0}}}})
			}
		}
	}
	return out, pairs, nil
}

// others names the parameters other than param, for a pair's
// description.
func others(params map[string]string, param string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if k != param {
			out = append(out, k+"="+params[k])
		}
	}
	return strings.Join(out, " ")
}

// rowKey names the row of a run an observation is of.
func rowKey(o Observation) string { return fmt.Sprint(o.Params) + "|" + o.Row }

// difference is the group of outer's patients that are not inner's,
// when inner's atoms are a proper subset of outer's for every measure.
func difference(outer, inner group, groupMeasure string) (group, bool) {
	if len(inner.counts[groupMeasure].atoms) == 0 || len(inner.counts[groupMeasure].atoms) >= len(outer.counts[groupMeasure].atoms) {
		return group{}, false
	}
	d := group{what: outer.what + " less " + inner.what, counts: map[string]set{}}
	for m, out := range outer.counts {
		in, ok := inner.counts[m]
		if !ok {
			return group{}, false
		}
		rest := map[int]bool{}
		for _, x := range out.atoms {
			rest[x] = true
		}
		for _, x := range in.atoms {
			if !rest[x] {
				return group{}, false
			}
			delete(rest, x)
		}
		d.counts[m] = newSet(slices.Sorted(maps.Keys(rest)))
	}
	return d, true
}

// compareParam orders parameter values: whole numbers by value, dates
// (ISO) and anything else as strings.
func compareParam(_ string, x, y string) int {
	a, errA := strconv.Atoi(x)
	b, errB := strconv.Atoi(y)
	if errA == nil && errB == nil {
		return cmp.Compare(a, b)
	}
	return strings.Compare(x, y)
}

// Verify checks every inference against the true atoms, and every
// observation's and atom's interval, and returns the counts.
func (a *Attack) Verify(infs []*Inference, pairs int, truth Truth) Summary {
	sum := Summary{Runs: a.Runs, Refused: a.Refused, RefusedBy: maps.Clone(a.RefusedBy), Repeats: a.Repeats, RepeatsDiffering: a.RepeatsDiffering,
		Cells: cells(a.Obs), Pairs: pairs, Atoms: a.Sys.Atoms(), Sums: a.Sys.Sums(),
		ByKind: map[Kind]int{}, VerifiedByKind: map[Kind]int{}}
	byAtom := make([]int64, a.Sys.Atoms())
	for x := range byAtom {
		byAtom[x] = truth[a.Sys.Name(x)]
	}
	value := func(atoms []int) int64 {
		var v int64
		for _, x := range atoms {
			v += byAtom[x]
		}
		return v
	}
	for _, inf := range infs {
		inf.Verified = true
		var truths []string
		for _, c := range inf.Claims {
			v := value(c.Plus) - value(c.Minus)
			truths = append(truths, strconv.FormatInt(v, 10))
			if !c.In.Contains(v) {
				inf.Verified = false
			}
		}
		inf.Truth = strings.Join(truths, ", ")
		sum.Inferences++
		sum.ByKind[inf.Kind]++
		if inf.Verified {
			sum.Verified++
			sum.VerifiedByKind[inf.Kind]++
		}
	}
	for _, o := range a.Obs {
		sum.Intervals++
		if !o.Known.Contains(value(o.Atoms)) {
			sum.Unsound++
		}
	}
	for x := range a.Sys.Atoms() {
		sum.Intervals++
		if !a.Sys.Bound(x).Contains(byAtom[x]) {
			sum.Unsound++
		}
	}
	return sum
}

// cells counts the released count values among the observations (not
// what a mean said of them).
func cells(obs []Observation) int {
	n := 0
	for _, o := range obs {
		if o.Via == "" {
			n++
		}
	}
	return n
}

// Print writes the summary as a table.
func (s Summary) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "runs\trefused\trepeats (differing)\tcells\tpairs\tatoms\tsums\tinferences\tverified true\tsingle-patient facts\tpinned\texact small\tcrossings\t")
	k := func(kind Kind) string { return fmt.Sprintf("%d/%d", s.VerifiedByKind[kind], s.ByKind[kind]) }
	fmt.Fprintf(tw, "%d\t%d\t%d (%d)\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\n", s.Runs, s.Refused, s.Repeats, s.RepeatsDiffering,
		s.Cells, s.Pairs, s.Atoms, s.Sums, s.Inferences, s.Verified, k(KindSinglePatient), k(KindPinned), k(KindSmall), k(KindCrossing))
	tw.Flush()
	if len(s.RefusedBy) > 0 {
		var by []string
		for _, c := range slices.Sorted(maps.Keys(s.RefusedBy)) {
			by = append(by, fmt.Sprintf("%s %d", c, s.RefusedBy[c]))
		}
		fmt.Fprintf(w, "refused by reason: %s\n", strings.Join(by, ", "))
	}
}
