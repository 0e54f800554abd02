package disclosure

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
)

// protect adds secondary suppressions to values, the primary-suppressed
// values of one additive measure for every variable of g, until no withheld
// value is determined by the released ones. mag[v] is the size of variable
// v's true value, used to choose the cheapest complements.
//
// It works in two stages. A quick heuristic first closes every line (a
// margin and its cells, the total and the cells, the total and one
// dimension's margins) that holds exactly one withheld value, since that
// value is the line's difference: it withholds the line's smallest non-zero
// released member, else its head (the margin or total), else a zero member.
// Zeros come last because a zero is often known to be zero (no men in a
// maternity ward), so withholding one hides little; the total comes last
// but for zeros because it is the most useful value. Closing lines is not
// enough: withheld values can still be determined through several lines at
// once. So an exact audit follows (see determinedCols), and each value it
// finds determined gets one more complement, taken from its line with the
// fewest withheld values; then lines are closed again and the audit
// repeats, until it finds nothing. Every round withholds at least one more
// value, and with everything withheld nothing is determined, so this ends.
func protect(ctx context.Context, g *grid, values []Value, mag []float64) error {
	if g.nRows == 0 {
		return nil
	}
	s := &suppressor{g: g, values: values, mag: mag, withheld: make([]bool, g.nVars), unk: make([]int32, g.nRows)}
	var rows []int32
	for v := range g.nVars {
		if values[v].Status == StatusWithheld {
			s.withheld[v] = true
			rows = g.rowsOf(rows[:0], v)
			for _, r := range rows {
				s.unk[r]++
			}
		}
	}
	for r := range g.nRows {
		s.queue = append(s.queue, int32(r))
	}
	s.closeLines()
	for {
		det, err := s.audit(ctx)
		if err != nil {
			return err
		}
		if len(det) == 0 {
			return nil
		}
		if s.cover(det) == 0 {
			return fmt.Errorf("%d withheld values are derivable and nothing more can be withheld", len(det))
		}
	}
}

type suppressor struct {
	g        *grid
	values   []Value
	mag      []float64
	withheld []bool
	unk      []int32 // per row: how many of its variables are withheld
	queue    []int32 // rows to check for exactly one withheld value
	scratch  []int32
}

func (s *suppressor) withhold(v int) {
	s.values[v] = withheld(CodeSecondary, "withheld so that another withheld value cannot be worked out from the totals")
	s.withheld[v] = true
	s.scratch = s.g.rowsOf(s.scratch[:0], v)
	for _, r := range s.scratch {
		s.unk[r]++
		s.queue = append(s.queue, r)
	}
}

// closeLines withholds a complement in every queued line that has exactly
// one withheld value, until there are none.
func (s *suppressor) closeLines() {
	for len(s.queue) > 0 {
		r := s.queue[len(s.queue)-1]
		s.queue = s.queue[:len(s.queue)-1]
		if s.unk[r] != 1 {
			continue
		}
		if v := s.complement(r); v >= 0 {
			s.withhold(v)
		}
	}
}

// complement returns the released variable of row r that is cheapest to
// withhold, or -1 if r has none: non-zero members before the head before
// zero members, smaller before larger, lower variable first.
func (s *suppressor) complement(r int32) int {
	best, bestClass, bestMag := -1, 0, 0.0
	consider := func(v, class int) {
		if s.withheld[v] {
			return
		}
		m := s.mag[v]
		if best < 0 || class < bestClass || class == bestClass && m < bestMag {
			best, bestClass, bestMag = v, class, m
		}
	}
	for _, c := range s.g.rowMembers[r] {
		class := 0
		if s.mag[c] == 0 {
			class = 2
		}
		consider(int(c), class)
	}
	consider(int(s.g.rowHead[r]), 1)
	return best
}

// cover withholds complements for the determined variables det and returns
// how many it withheld. A variable whose lines already got a complement in
// this call is skipped: that complement may well have freed it, and the
// next audit will tell.
func (s *suppressor) cover(det []int) int {
	touched := make(map[int32]bool)
	added := 0
	var rows []int32
	for _, u := range det {
		rows = s.g.rowsOf(rows[:0], u)
		if slices.ContainsFunc(rows, func(r int32) bool { return touched[r] }) {
			continue
		}
		v := s.complementNear(u, rows)
		if v < 0 {
			continue
		}
		s.withhold(v)
		added++
		for _, r := range rows {
			touched[r] = true
		}
		for _, r := range s.scratch { // rows of v, left there by withhold
			touched[r] = true
		}
	}
	s.closeLines()
	return added
}

// complementNear returns a complement for determined variable u: from the
// line of u with the fewest withheld values that has a released one, or,
// if all of u's lines are fully withheld, from the nearest line reached
// through withheld values. It returns -1 if there is none.
func (s *suppressor) complementNear(u int, rows []int32) int {
	seenRow := make(map[int32]bool)
	seenVar := map[int]bool{u: true}
	frontier := slices.Clone(rows)
	for len(frontier) > 0 {
		slices.SortFunc(frontier, func(a, b int32) int {
			return cmp.Or(cmp.Compare(s.unk[a], s.unk[b]), cmp.Compare(a, b))
		})
		frontier = slices.Compact(frontier)
		for _, r := range frontier {
			seenRow[r] = true
			if v := s.complement(r); v >= 0 {
				return v
			}
		}
		// Every variable of these rows is withheld: step to their other rows.
		var next []int32
		var rs []int32
		for _, r := range frontier {
			for _, v := range s.rowVars(r) {
				if seenVar[v] {
					continue
				}
				seenVar[v] = true
				rs = s.g.rowsOf(rs[:0], v)
				for _, r2 := range rs {
					if !seenRow[r2] {
						next = append(next, r2)
					}
				}
			}
		}
		frontier = next
	}
	return -1
}

// rowVars returns every variable of row r: its head and its members.
func (s *suppressor) rowVars(r int32) []int {
	vs := []int{int(s.g.rowHead[r])}
	for _, c := range s.g.rowMembers[r] {
		vs = append(vs, int(c))
	}
	return vs
}

// audit returns the withheld variables that the released values determine,
// in ascending order. It splits the withheld variables into connected
// components (two are connected when they share a line) and solves each
// component on its own, over the lines that touch it.
func (s *suppressor) audit(ctx context.Context) ([]int, error) {
	g := s.g
	parent := make([]int32, g.nVars)
	for v := range parent {
		parent[v] = int32(v)
	}
	find := func(v int32) int32 {
		for parent[v] != v {
			parent[v] = parent[parent[v]]
			v = parent[v]
		}
		return v
	}
	rowFirst := make([]int32, g.nRows) // some withheld variable of the row, or -1
	for r := range g.nRows {
		rowFirst[r] = -1
		if s.unk[r] == 0 {
			continue
		}
		first := int32(-1)
		link := func(v int32) {
			if !s.withheld[v] {
				return
			}
			if first < 0 {
				first = v
				return
			}
			if a, b := find(first), find(v); a != b {
				parent[max(a, b)] = min(a, b)
			}
		}
		link(g.rowHead[r])
		for _, c := range g.rowMembers[r] {
			link(c)
		}
		rowFirst[r] = first
	}

	// Number the components by their smallest variable and the variables
	// within each component in ascending order.
	comp := make([]int32, g.nVars)
	local := make([]int32, g.nVars)
	var sizes []int32
	var vars [][]int
	rootComp := make(map[int32]int32)
	for v := range g.nVars {
		if !s.withheld[v] {
			continue
		}
		root := find(int32(v))
		c, ok := rootComp[root]
		if !ok {
			c = int32(len(sizes))
			rootComp[root] = c
			sizes = append(sizes, 0)
			vars = append(vars, nil)
		}
		comp[v], local[v] = c, sizes[c]
		sizes[c]++
		vars[c] = append(vars[c], v)
	}
	rows := make([][][]term, len(sizes))
	for r := range g.nRows {
		if rowFirst[r] < 0 {
			continue
		}
		c := comp[rowFirst[r]]
		var row []term
		if h := g.rowHead[r]; s.withheld[h] {
			row = append(row, term{col: local[h], coef: 1})
		}
		for _, v := range g.rowMembers[r] {
			if s.withheld[v] {
				row = append(row, term{col: local[v], coef: -1})
			}
		}
		rows[c] = append(rows[c], row)
	}

	var det []int
	for c := range sizes {
		cols, err := determinedCols(ctx, int(sizes[c]), rows[c])
		if err != nil {
			return nil, err
		}
		for _, col := range cols {
			det = append(det, vars[c][col])
		}
	}
	slices.Sort(det)
	return det, nil
}

// magnitudes returns the size of each variable's true value, for choosing
// complements.
func magnitudes(aggs []aggregate, kind Kind) []float64 {
	mag := make([]float64, len(aggs))
	for v := range aggs {
		if kind == KindCount {
			mag[v] = float64(aggs[v].count)
		} else {
			mag[v] = math.Abs(aggs[v].sum)
		}
	}
	return mag
}
