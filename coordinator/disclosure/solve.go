package disclosure

import (
	"container/heap"
	"context"
	"errors"
	"math"
	"math/big"
	"slices"
)

// term is one coefficient of a line restricted to the withheld variables:
// +1 for the margin, -1 for a cell.
type term struct {
	col  int32
	coef int8
}

// determinedCols returns, in ascending order, the columns x_j fixed by the
// homogeneous system rows·x = b for every b the system is consistent with:
// those whose unit vector lies in the row space. The right-hand sides (the
// released values moved across) do not matter, only which values are
// withheld.
//
// It brings the rows to reduced row echelon form by Gauss–Jordan
// elimination in exact arithmetic; a column is determined exactly when it
// is a pivot whose row has no other entry. The rows are sparse and mostly
// short (a practice's few small cells) with a few long ones (an age band
// across every practice), so the next pivot row is the shortest remaining
// row and its pivot the column in the fewest rows (Markowitz's rule), which
// keeps fill-in to the long rows. Entries are int64 and the elimination
// fraction-free; if one would overflow it starts again with big.Int.
func determinedCols(ctx context.Context, ncols int, rows [][]term) ([]int32, error) {
	det, err := eliminate(ctx, &int64Ring{}, ncols, rows)
	if errors.Is(err, errOverflow) {
		det, err = eliminate(ctx, bigRing{}, ncols, rows)
	}
	return det, err
}

var errOverflow = errors.New("int64 overflow")

// ring is the exact integer arithmetic the elimination needs.
type ring[T any] interface {
	fromInt(int64) T
	isZero(T) bool
	isUnit(T) bool // ±1
	mul(x, y T) T
	sub(x, y T) T
	// quo returns x/y and whether y divides x.
	quo(x, y T) (T, bool)
	gcd(x, y T) T // positive
	err() error
}

// eliminate is determinedCols over the ring r.
func eliminate[T any, R ring[T]](ctx context.Context, r R, ncols int, in [][]term) ([]int32, error) {
	rows := make([]map[int32]T, len(in))
	colCount := make([]int32, ncols)  // how many rows hold each column
	colRows := make([][]int32, ncols) // rows that have held each column; may be stale
	h := &rowHeap{}
	for i, t := range in {
		m := make(map[int32]T, len(t))
		for _, e := range t {
			m[e.col] = r.fromInt(int64(e.coef))
			colCount[e.col]++
			colRows[e.col] = append(colRows[e.col], int32(i))
		}
		rows[i] = m
		h.items = append(h.items, rowLen{len(m), int32(i)})
	}
	heap.Init(h)

	e := eliminator[T, R]{r: r, rows: rows, colCount: colCount, colRows: colRows}
	pivot := make([]int32, len(rows))
	for i := range pivot {
		pivot[i] = -1
	}
	for n := 0; h.Len() > 0; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		it := heap.Pop(h).(rowLen)
		p := rows[it.row]
		if pivot[it.row] >= 0 || len(p) != it.n || it.n == 0 {
			continue // stale, or a row that turned out dependent
		}
		c, pc := e.choosePivot(p)
		pivot[it.row] = c
		for _, o := range colRows[c] {
			if o == it.row {
				continue
			}
			oc, ok := rows[o][c]
			if !ok {
				continue
			}
			e.eliminate(o, oc, p, pc)
			if err := r.err(); err != nil {
				return nil, err
			}
			if pivot[o] < 0 {
				heap.Push(h, rowLen{len(rows[o]), o})
			}
		}
		colRows[c] = append(colRows[c][:0], it.row)
	}

	var det []int32
	for i, c := range pivot {
		if c >= 0 && len(rows[i]) == 1 {
			det = append(det, c)
		}
	}
	slices.Sort(det)
	return det, nil
}

type eliminator[T any, R ring[T]] struct {
	r        R
	rows     []map[int32]T
	colCount []int32
	colRows  [][]int32
}

// choosePivot picks the column of row p held by the fewest rows, preferring
// a ±1 entry (which divides everything, so no row needs scaling) and then
// the lowest column, so that the choice does not depend on map order.
func (e *eliminator[T, R]) choosePivot(p map[int32]T) (int32, T) {
	best := int32(-1)
	var bestV T
	bestCount, bestUnit := int32(0), false
	for c, v := range p {
		n, unit := e.colCount[c], e.r.isUnit(v)
		if best < 0 || n < bestCount || n == bestCount && (unit && !bestUnit || unit == bestUnit && c < best) {
			best, bestV, bestCount, bestUnit = c, v, n, unit
		}
	}
	return best, bestV
}

// eliminate clears the pivot column from row o, whose entry there is oc,
// using pivot row p with pivot entry pc.
func (e *eliminator[T, R]) eliminate(o int32, oc T, p map[int32]T, pc T) {
	r, row := e.r, e.rows[o]
	q, exact := r.quo(oc, pc)
	if !exact {
		// row := a·row - b·p, with a = pc/g and b = oc/g.
		g := r.gcd(oc, pc)
		a, _ := r.quo(pc, g)
		q, _ = r.quo(oc, g)
		for c, v := range row {
			row[c] = r.mul(a, v)
		}
	}
	for c, pv := range p {
		old, had := row[c]
		var nv T
		if had {
			nv = r.sub(old, r.mul(q, pv))
		} else {
			nv = r.sub(r.fromInt(0), r.mul(q, pv))
		}
		switch {
		case r.isZero(nv):
			if had {
				delete(row, c)
				e.colCount[c]--
			}
		default:
			row[c] = nv
			if !had {
				e.colCount[c]++
				e.colRows[c] = append(e.colRows[c], o)
			}
		}
	}
	if !exact {
		// Divide out the row's content so that entries stay small.
		var g T
		first := true
		for _, v := range row {
			if first {
				g, first = r.gcd(v, v), false
			} else {
				g = r.gcd(g, v)
			}
		}
		if !first && !r.isUnit(g) {
			for c, v := range row {
				row[c], _ = r.quo(v, g)
			}
		}
	}
}

type rowLen struct {
	n   int
	row int32
}

// rowHeap orders rows by length, then by index.
type rowHeap struct{ items []rowLen }

func (h *rowHeap) Len() int { return len(h.items) }
func (h *rowHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	return a.n < b.n || a.n == b.n && a.row < b.row
}
func (h *rowHeap) Swap(i, j int) { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *rowHeap) Push(x any)    { h.items = append(h.items, x.(rowLen)) }
func (h *rowHeap) Pop() any {
	n := len(h.items)
	x := h.items[n-1]
	h.items = h.items[:n-1]
	return x
}

// int64Ring is int64 arithmetic that records overflow instead of wrapping.
type int64Ring struct{ overflow bool }

func (*int64Ring) fromInt(x int64) int64 { return x }
func (*int64Ring) isZero(x int64) bool   { return x == 0 }
func (*int64Ring) isUnit(x int64) bool   { return x == 1 || x == -1 }

func (r *int64Ring) err() error {
	if r.overflow {
		return errOverflow
	}
	return nil
}

func (r *int64Ring) mul(x, y int64) int64 {
	if x == 0 || y == 0 {
		return 0
	}
	p := x * y
	if p/y != x || x == -1 && y == math.MinInt64 || y == -1 && x == math.MinInt64 {
		r.overflow = true
	}
	return p
}

func (r *int64Ring) sub(x, y int64) int64 {
	d := x - y
	if (x >= 0) != (y >= 0) && (d >= 0) != (x >= 0) {
		r.overflow = true
	}
	return d
}

func (r *int64Ring) quo(x, y int64) (int64, bool) {
	if y == -1 && x == math.MinInt64 {
		r.overflow = true
		return 0, false
	}
	return x / y, x%y == 0
}

func (r *int64Ring) gcd(x, y int64) int64 {
	if x == math.MinInt64 || y == math.MinInt64 {
		r.overflow = true
		return 1
	}
	x, y = abs(x), abs(y)
	for y != 0 {
		x, y = y, x%y
	}
	return x
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// bigRing is exact arbitrary-precision arithmetic, the fallback.
type bigRing struct{}

func (bigRing) fromInt(x int64) *big.Int { return big.NewInt(x) }
func (bigRing) isZero(x *big.Int) bool   { return x.Sign() == 0 }
func (bigRing) isUnit(x *big.Int) bool   { return x.IsInt64() && (x.Int64() == 1 || x.Int64() == -1) }
func (bigRing) mul(x, y *big.Int) *big.Int {
	return new(big.Int).Mul(x, y)
}
func (bigRing) sub(x, y *big.Int) *big.Int { return new(big.Int).Sub(x, y) }
func (bigRing) quo(x, y *big.Int) (*big.Int, bool) {
	q, m := new(big.Int).QuoRem(x, y, new(big.Int))
	return q, m.Sign() == 0
}
func (bigRing) gcd(x, y *big.Int) *big.Int {
	return new(big.Int).GCD(nil, nil, new(big.Int).Abs(x), new(big.Int).Abs(y))
}
func (bigRing) err() error { return nil }
