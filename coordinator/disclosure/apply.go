package disclosure

import (
	"context"
	"fmt"
	"slices"
	"strconv"
)

// Apply applies disclosure control to t under the thresholds th and returns
// the table that may be released, as described in the package
// documentation. It never modifies t. The result depends only on the
// contents of t, not on the order of its cells: cells come out sorted by
// key, margins by dimension and then value.
//
// A malformed table gives an error wrapping ErrTable that names the cell
// and measure; bad thresholds give one wrapping ErrThresholds.
func Apply(ctx context.Context, t Table, th Thresholds) (*Released, error) {
	if err := th.Validate(); err != nil {
		return nil, err
	}
	g, err := newGrid(&t, th)
	if err != nil {
		return nil, err
	}
	out := &Released{
		Dims:     slices.Clone(t.Dims),
		Measures: slices.Clone(t.Measures),
		Cells:    make([]ReleasedCell, g.nCells),
	}
	for i, ci := range g.order {
		out.Cells[i] = ReleasedCell{Key: slices.Clone(t.Cells[ci].Key), Values: make([]Value, len(t.Measures))}
	}
	if g.nMargins > 0 {
		out.Margins = make([]Margin, g.nMargins)
		for v := g.nCells; v < g.nCells+g.nMargins; v++ {
			d, c := g.marginOf(v)
			out.Margins[v-g.nCells] = Margin{Dim: t.Dims[d], Category: g.cats[d][c], Values: make([]Value, len(t.Measures))}
		}
	}
	if g.total() >= 0 {
		out.Total = make([]Value, len(t.Measures))
	}

	small, err := g.smallGroups(th)
	if err != nil {
		return nil, err
	}
	attribute := withheld(CodeAttributeDisclosure, fmt.Sprintf("the group has fewer than %d patients, so its values would say something about each of them", th.MinCount))
	values := make([]Value, g.nVars)
	for j, m := range t.Measures {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if additive(m.Kind) {
			aggs, err := g.aggregates(j, th)
			if err != nil {
				return nil, fmt.Errorf("%w: measure %q: %v", ErrTable, m.Name, err)
			}
			for v := range aggs {
				values[v] = primary(m, &aggs[v], th)
				if small != nil && small[v] {
					values[v] = attribute
				}
			}
			// A perturbed count needs no complements: every count beside
			// it, margins and total included, is perturbed by a key the
			// reader does not know, so subtracting gives a range as wide
			// as the perturbations, not the withheld value.
			if m.Kind != KindCount || th.Perturbation == nil {
				if err := protect(ctx, g, values, magnitudes(aggs, m.Kind)); err != nil {
					return nil, fmt.Errorf("secondary suppression of measure %q: %w", m.Name, err)
				}
			}
		} else {
			for i, ci := range g.order {
				in := &t.Cells[ci].Values[j]
				values[i] = primary(m, &aggregate{n: in.N, nKey: in.NKey, sumKey: in.SumKey, sum: in.Sum, top: in.TopContributions, min: in.Min, max: in.Max}, th)
				if small != nil && small[i] {
					values[i] = attribute
				}
			}
			na := Value{Status: StatusNotApplicable, Reason: Reason{CodeNotAdditive, "margins and totals are given only for counts and sums"}}
			for v := g.nCells; v < g.nVars; v++ {
				values[v] = na
			}
		}
		for i := range out.Cells {
			out.Cells[i].Values[j] = values[i]
		}
		for v := g.nCells; v < g.nCells+g.nMargins; v++ {
			out.Margins[v-g.nCells].Values[j] = values[v]
		}
		if tv := g.total(); tv >= 0 {
			out.Total[j] = values[tv]
		}
	}
	guardMeans(&t, g, out)
	return out, nil
}

// guardMeans withholds (secondary) every released binary or integer mean
// of a cell whose N or Sum is the true value of a count or sum of the same
// cell that is withheld. Such a mean is R(Sum)/R(N): with one rounded
// figure released beside it, it gives back the other (t2dm 30 and a
// prevalence of 0.2 give patients 150). Matching by value rather than by
// declared population catches every measure over the same patients; a
// coincidental match only withholds more.
func guardMeans(t *Table, g *grid, out *Released) {
	for i, ci := range g.order {
		in, vals := t.Cells[ci].Values, out.Cells[i].Values
		for j, m := range t.Measures {
			if m.Kind != KindMean || m.Values == ValueContinuous || vals[j].Status != StatusReleased {
				continue
			}
			for k, o := range t.Measures {
				if vals[k].Status != StatusWithheld {
					continue
				}
				if o.Kind == KindCount && (in[k].Count == in[j].N || float64(in[k].Count) == in[j].Sum) ||
					o.Kind == KindSum && in[k].Sum == in[j].Sum {
					vals[j] = withheld(CodeSecondary, fmt.Sprintf("with the rounded values beside it, it would give back the withheld %s", o.Name))
					break
				}
			}
		}
	}
}

// smallGroups returns, for every variable of g (cells, margins, total),
// whether the attribute disclosure rule withholds it: its group total is
// from 1 to MinCount-1. It returns nil when the rule is off or no measure
// is a group total.
func (g *grid) smallGroups(th Thresholds) ([]bool, error) {
	if !th.AttributeDisclosure {
		return nil, nil
	}
	j := slices.IndexFunc(g.t.Measures, func(m Measure) bool { return m.GroupTotal })
	if j < 0 {
		return nil, nil
	}
	aggs, err := g.aggregates(j, th)
	if err != nil {
		return nil, fmt.Errorf("%w: measure %q: %v", ErrTable, g.t.Measures[j].Name, err)
	}
	small := make([]bool, len(aggs))
	for v, a := range aggs {
		if th.Perturbation != nil {
			// Decided on the perturbed group total, so that a withheld
			// group says no more than a released 0 would: a rule on the
			// true total would prove, across two runs, that it crossed
			// the threshold.
			small[v] = th.Perturbation.Release(a.count, a.key) < int64(th.MinCount)
			continue
		}
		small[v] = a.count >= 1 && a.count < int64(th.MinCount)
	}
	return small, nil
}

// aggregate is the true value of one measure for one cell, margin or total.
type aggregate struct {
	count    int64
	key      uint64 // cell key of a count, under perturbation
	nKey     uint64 // cell key of a sum's or mean's n, under perturbation
	sumKey   uint64 // cell key of a binary mean's sum, under perturbation
	n        int64
	sum      float64
	top      []float64 // largest contributions, descending; only for dominance
	min, max float64
}

// aggregates returns the true values of additive measure j for every
// variable of g: the cells as given, and the margins and total summed from
// them.
func (g *grid) aggregates(j int, th Thresholds) ([]aggregate, error) {
	m := g.t.Measures[j]
	aggs := make([]aggregate, g.nVars)
	for i, ci := range g.order {
		in := &g.t.Cells[ci].Values[j]
		aggs[i] = aggregate{count: in.Count, key: in.Key, nKey: in.NKey, sumKey: in.SumKey, n: in.N, sum: in.Sum}
		if m.Dominance {
			aggs[i].top = in.TopContributions
		}
	}
	if g.k == 0 {
		return aggs, nil
	}
	var rows []int32
	for i := range g.nCells {
		c := &aggs[i]
		rows = g.rowsOf(rows[:0], i)
		for _, r := range rows {
			a := &aggs[g.rowHead[r]]
			a.count += c.count
			if th.Perturbation != nil {
				// A margin's key is the sum of its cells' keys, so it is the
				// sum of its patients' record keys, as a cell's is.
				r := uint64(th.Perturbation.KeyRange())
				a.key, a.nKey = (a.key+c.key)%r, (a.nKey+c.nKey)%r
			}
			a.n += c.n
			a.sum += c.sum
			if a.count > maxExactCount || a.n > maxExactCount {
				return nil, fmt.Errorf("totals exceed %d", int64(maxExactCount))
			}
			if m.Dominance {
				// A margin's largest contributions are among its cells'
				// largest, since every patient is in exactly one cell.
				for _, x := range c.top {
					a.top = insertTop(a.top, x, th.Dominance.N)
				}
			}
		}
	}
	for v := g.nCells; v < g.nVars; v++ {
		a := &aggs[v]
		if !finite(a.sum) {
			return nil, fmt.Errorf("a total is too large to represent")
		}
	}
	return aggs, nil
}

// insertTop adds x to top, the n largest values so far in descending order,
// keeping only the n largest.
func insertTop(top []float64, x float64, n int) []float64 {
	if len(top) == n && x <= top[n-1] {
		return top
	}
	i := len(top)
	for i > 0 && top[i-1] < x {
		i--
	}
	if len(top) < n {
		top = append(top, 0)
	}
	copy(top[i+1:], top[i:])
	top[i] = x
	return top
}

// primary applies the primary rules to one value and, when it is released,
// rounds it.
func primary(m Measure, a *aggregate, th Thresholds) Value {
	if m.Kind == KindCount {
		if th.Perturbation != nil {
			return Value{Status: StatusReleased, Value: float64(th.Perturbation.Release(a.count, a.key))}
		}
		if a.count > 0 && a.count < int64(th.MinCount) {
			return withheld(CodeLowCount, fmt.Sprintf("a count below %d", th.MinCount))
		}
		return Value{Status: StatusReleased, Value: float64(th.roundCount(a.count))}
	}
	if th.Perturbation != nil && (m.Kind == KindSum || m.Kind == KindMean) {
		return perturbedPrimary(m, a, th)
	}
	if a.n == 0 {
		if m.Kind == KindSum {
			return Value{Status: StatusReleased, Value: 0}
		}
		return Value{Status: StatusNotApplicable, Reason: Reason{CodeNoPatients, "no patients contributed"}}
	}
	if a.n < int64(th.MinCount) {
		return withheld(CodeFewContributors, fmt.Sprintf("derived from fewer than %d patients", th.MinCount))
	}
	if m.Kind == KindMean && m.Values != ValueContinuous && a.sum > 0 && a.sum < float64(th.MinCount) {
		// For 0/1 values the sum is the number of patients with a 1; for
		// whole numbers ≥ 0 it bounds the number with a non-zero value. A
		// mean and a rounded N would give it back (0.006711 × 298 = 2).
		return withheld(CodeFewContributors, fmt.Sprintf("its sum, an upper bound on the patients with a non-zero value, is below %d", th.MinCount))
	}
	if m.Dominance && dominated(a, th.Dominance) {
		return withheld(CodeDominance, fmt.Sprintf("the largest %d contribution(s) exceed %v%% of the total",
			th.Dominance.N, strconv.FormatFloat(100*th.Dominance.K, 'f', -1, 64)))
	}
	switch m.Kind {
	case KindSum:
		return Value{Status: StatusReleased, Value: th.roundSum(a.sum)}
	case KindMean:
		if m.Values == ValueContinuous {
			return Value{Status: StatusReleased, Value: roundSignificant(a.sum/float64(a.n), 4)}
		}
		// From the rounded sum and N, so that the mean says no more than
		// they would: the true Sum/N to 4 figures can pin the exact N
		// (12/295 = 0.04068, which neither 12/294 nor 12/296 gives).
		return Value{Status: StatusReleased, Value: th.roundMeanSum(a.sum) / float64(th.roundCount(a.n))}
	}
	if !th.ReleaseMinMax {
		return withheld(CodeMinMaxDisclosive, "a minimum or maximum is one patient's own value")
	}
	if m.Kind == KindMin {
		return Value{Status: StatusReleased, Value: a.min}
	}
	return Value{Status: StatusReleased, Value: a.max}
}

// perturbedPrimary is primary for a sum or mean under perturbation. The
// few-contributors rule reads N through the p-table with N's own cell key,
// and so does the rule's "no patients" case: withholding on the true N
// would prove, across two runs, that N crossed the threshold (a sum of
// admissions withheld at 7 admitted patients and released at 8), and a
// reason of its own for N = 0 would tell 0 from 1-7. A mean of 0/1 values
// is the perturbed Sum (a count of patients with a 1) over the perturbed
// N, to 4 significant figures, so that it says no more than two perturbed
// counts would. Other means are Sum/N to 4 significant figures (a
// continuous mean) or the rounded Sum over the rounded N (whole numbers),
// as without perturbation; dominance and the rounding of sums are
// unchanged.
func perturbedPrimary(m Measure, a *aggregate, th Thresholds) Value {
	n := th.Perturbation.Release(a.n, a.nKey)
	if n < int64(th.MinCount) {
		return withheld(CodeFewContributors, fmt.Sprintf("derived from fewer than about %d patients (the perturbed number of contributors is below %d)", th.MinCount, th.MinCount))
	}
	if m.Dominance && dominated(a, th.Dominance) {
		return withheld(CodeDominance, fmt.Sprintf("the largest %d contribution(s) exceed %v%% of the total",
			th.Dominance.N, strconv.FormatFloat(100*th.Dominance.K, 'f', -1, 64)))
	}
	switch {
	case m.Kind == KindSum:
		return Value{Status: StatusReleased, Value: th.roundSum(a.sum)}
	case a.n == 0:
		// The p-table released N ≥ MinCount from a true 0 (a table that
		// moves 0 could): there is no mean to give.
		return withheld(CodeFewContributors, fmt.Sprintf("derived from fewer than about %d patients", th.MinCount))
	case m.Values == ValueBinary:
		s := min(th.Perturbation.Release(int64(a.sum), a.sumKey), n)
		return Value{Status: StatusReleased, Value: roundSignificant(float64(s)/float64(n), 4)}
	case m.Values == ValueContinuous:
		return Value{Status: StatusReleased, Value: roundSignificant(a.sum/float64(a.n), 4)}
	}
	return Value{Status: StatusReleased, Value: th.roundMeanSum(a.sum) / float64(th.roundCount(a.n))}
}

func withheld(c Code, msg string) Value {
	return Value{Status: StatusWithheld, Reason: Reason{Code: c, Message: msg}}
}

// dominated reports whether the d.N largest contributions to a make up more
// than d.K of its sum.
func dominated(a *aggregate, d Dominance) bool {
	var top float64
	for _, v := range a.top[:min(len(a.top), d.N)] {
		top += v
	}
	return top > d.K*a.sum
}

// roundSignificant rounds f to the given number of significant figures,
// correctly (via the decimal conversion), with no -0.
func roundSignificant(f float64, digits int) float64 {
	r, err := strconv.ParseFloat(strconv.FormatFloat(f, 'g', digits, 64), 64)
	if err != nil || r == 0 {
		return 0
	}
	return r
}
