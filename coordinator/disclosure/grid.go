package disclosure

import (
	"fmt"
	"slices"
)

// grid is a validated table laid out for disclosure control. It numbers
// every value of one measure as a variable: the cells in key order
// (0..nCells-1), then the one-way margins dimension by dimension, each in
// category order, then the grand total.
//
// The margins and the total are what make withheld cells derivable, so the
// grid also holds the lines that an attacker knows: each margin equals the
// sum of its cells, the total equals the sum of all cells, and (for two or
// more dimensions) the total equals the sum of each dimension's margins.
// Row r says that variable rowHead[r] equals the sum of rowMembers[r].
// The last kind of line is a combination of the others, so it adds nothing
// to what can be derived, but it is a line that the suppression heuristic
// must close like any other.
type grid struct {
	t          *Table
	k          int        // dimensions
	order      []int      // order[i] is the Table.Cells index of cell variable i
	cats       [][]string // per dimension: its values, sorted
	cat        []int32    // cat[i*k+d]: the category of cell i in dimension d
	margin0    []int      // per dimension: the variable of its first margin
	nCells     int
	nMargins   int
	nVars      int
	nRows      int
	rowHead    []int32
	rowMembers [][]int32
	totalRow   int // the row of the total over all cells
}

// total returns the variable of the grand total, or -1 for a table without
// dimensions.
func (g *grid) total() int {
	if g.k == 0 {
		return -1
	}
	return g.nCells + g.nMargins
}

// newGrid validates t's cells and lays them out.
func newGrid(t *Table, th Thresholds) (*grid, error) {
	if err := t.checkShape(); err != nil {
		return nil, err
	}
	for i := range t.Cells {
		if err := t.checkCell(i, th); err != nil {
			return nil, err
		}
	}
	g := &grid{t: t, k: len(t.Dims), nCells: len(t.Cells)}
	g.order = make([]int, len(t.Cells))
	for i := range g.order {
		g.order[i] = i
	}
	slices.SortStableFunc(g.order, func(a, b int) int {
		return slices.Compare(t.Cells[a].Key, t.Cells[b].Key)
	})
	for i := 1; i < len(g.order); i++ {
		if slices.Equal(t.Cells[g.order[i-1]].Key, t.Cells[g.order[i]].Key) {
			return nil, fmt.Errorf("%w: cell %s appears twice", ErrTable, t.cellName(g.order[i]))
		}
	}
	if g.k == 0 { // one cell at most: two would have the same, empty key
		g.nVars = g.nCells
		return g, nil
	}

	g.cats = make([][]string, g.k)
	g.cat = make([]int32, g.nCells*g.k)
	for d := range g.k {
		index := make(map[string]int32)
		for _, ci := range g.order {
			index[t.Cells[ci].Key[d]] = 0
		}
		cats := make([]string, 0, len(index))
		for v := range index {
			cats = append(cats, v)
		}
		slices.Sort(cats)
		for j, v := range cats {
			index[v] = int32(j)
		}
		g.cats[d] = cats
		for i, ci := range g.order {
			g.cat[i*g.k+d] = index[t.Cells[ci].Key[d]]
		}
	}

	// A one-dimensional table's one-way margins are its cells; only the
	// grand total adds anything.
	g.margin0 = make([]int, g.k)
	if g.k >= 2 {
		for d := range g.k {
			g.margin0[d] = g.nCells + g.nMargins
			g.nMargins += len(g.cats[d])
		}
	}
	g.nVars = g.nCells + g.nMargins + 1
	total := int32(g.total())
	// Rows: one per margin (row r defines variable nCells+r), the total
	// over the cells, then the total over each dimension's margins.
	g.nRows = g.nMargins + 1
	if g.k >= 2 {
		g.nRows += g.k
	}
	g.totalRow = g.nMargins
	g.rowHead = make([]int32, g.nRows)
	g.rowMembers = make([][]int32, g.nRows)
	for r := range g.nMargins {
		g.rowHead[r] = int32(g.nCells + r)
	}
	all := make([]int32, g.nCells)
	for i := range g.nCells {
		all[i] = int32(i)
		if g.k >= 2 {
			for d := range g.k {
				r := g.marginRow(d, i)
				g.rowMembers[r] = append(g.rowMembers[r], int32(i))
			}
		}
	}
	g.rowHead[g.totalRow] = total
	g.rowMembers[g.totalRow] = all
	if g.k >= 2 {
		for d := range g.k {
			r := g.totalRow + 1 + d
			g.rowHead[r] = total
			for c := range g.cats[d] {
				g.rowMembers[r] = append(g.rowMembers[r], int32(g.margin0[d]+c))
			}
		}
	}
	return g, nil
}

// marginRow returns the row of cell i's margin in dimension d.
func (g *grid) marginRow(d, i int) int {
	return g.margin0[d] + int(g.cat[i*g.k+d]) - g.nCells
}

// rowsOf appends to dst the rows that variable v appears in, as head or
// member.
func (g *grid) rowsOf(dst []int32, v int) []int32 {
	switch {
	case v < g.nCells: // a cell: its margins and the total
		if g.k >= 2 {
			for d := range g.k {
				dst = append(dst, int32(g.marginRow(d, v)))
			}
		}
		return append(dst, int32(g.totalRow))
	case v < g.nCells+g.nMargins: // a margin: its own row and its dimension's total
		d, _ := g.marginOf(v)
		return append(dst, int32(v-g.nCells), int32(g.totalRow+1+d))
	}
	dst = append(dst, int32(g.totalRow)) // the total
	for r := g.totalRow + 1; r < g.nRows; r++ {
		dst = append(dst, int32(r))
	}
	return dst
}

// marginOf returns the dimension and category of margin variable v.
func (g *grid) marginOf(v int) (d int, cat int) {
	for d = g.k - 1; g.margin0[d] > v; d-- {
	}
	return d, v - g.margin0[d]
}
