package linkage

import "math"

// acc accumulates one measure in one cell.
type acc struct {
	count int64
	// key is the count's cell key before reduction mod R: in aggregate
	// mode the practices' key sums, in linkage mode the patients' record
	// keys, summed. Keys are below 2^20 and counts below 2^40, so the sum
	// cannot overflow.
	key uint64
	// nKey and sumKey are the cell keys of a sum's or mean's n and of a
	// bool mean's sum, before reduction, summed as key is.
	nKey, sumKey uint64
	n            int64 // contributors
	// sum + comp is the total: Neumaier's compensated summation, so that
	// fractional values give the same total, to the last bit in all but
	// pathological cases, whatever order patients and partitions come in.
	// Whole numbers below 2^53 are exact in any order.
	sum, comp float64
	min, max  float64     // valid when n > 0
	top       []float64   // largest contributions, descending
	sites     []siteShare // aggregate mode, dominance measures: each practice's partials
}

// siteShare is what one practice reported for a dominance measure in one
// cell: its largest value, its number of values and their sum.
type siteShare struct {
	top, sum float64
	n        int64
}

func (a *acc) add(v float64) {
	t := a.sum + v
	if math.Abs(a.sum) >= math.Abs(v) {
		a.comp += (a.sum - t) + v
	} else {
		a.comp += (v - t) + a.sum
	}
	a.sum = t
}

// extreme folds n values whose smallest and largest are v into min and max.
func (a *acc) extreme(v float64, n int64) {
	a.extremes(v, v, n)
}

func (a *acc) extremes(lo, hi float64, n int64) {
	if n <= 0 {
		return
	}
	if a.n == 0 || lo < a.min {
		a.min = lo
	}
	if a.n == 0 || hi > a.max {
		a.max = hi
	}
	a.n += n
}

// merge adds o into a, keeping k top contributions.
func (a *acc) merge(o *acc, k int) {
	a.count += o.count
	a.key += o.key
	a.nKey += o.nKey
	a.sumKey += o.sumKey
	if o.n > 0 {
		if a.n == 0 || o.min < a.min {
			a.min = o.min
		}
		if a.n == 0 || o.max > a.max {
			a.max = o.max
		}
	}
	a.n += o.n
	a.add(o.sum)
	a.add(o.comp)
	for _, v := range o.top {
		a.top = insertTop(a.top, v, k)
	}
	a.sites = append(a.sites, o.sites...)
}

// insertTop inserts v into top, kept in descending order and at most k long.
func insertTop(top []float64, v float64, k int) []float64 {
	if len(top) == k {
		if v <= top[k-1] {
			return top
		}
		top = top[:k-1]
	}
	i := len(top)
	for i > 0 && top[i-1] < v {
		i--
	}
	top = append(top, 0)
	copy(top[i+1:], top[i:])
	top[i] = v
	return top
}

// boundTops returns, for a cell of aggregate mode, k values in descending
// order that are at least the cell's k largest contributions: each practice
// accounts for at most min(n, k) values, each at most its largest value t,
// together at most its sum s. The first is the cell's exact largest value.
func boundTops(shares []siteShare, k int) []float64 {
	var out []float64
	for _, s := range shares {
		rem := s.sum
		for range min(s.n, int64(k)) {
			v := max(min(s.top, rem), 0)
			out = insertTop(out, v, k)
			rem -= v
		}
	}
	return out
}
