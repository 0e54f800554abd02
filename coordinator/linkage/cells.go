package linkage

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/policy/catalog"
)

// cellStore adds up the cells practices send in aggregate mode. Cells are
// few (groups, not patients), so one lock guards them all.
type cellStore struct {
	mu    sync.Mutex
	index map[string]int // by packed group values
	cells []aggCell
}

type aggCell struct {
	key  []string // group values; Missing for null
	null []bool
	accs []acc
}

func newCellStore() *cellStore { return &cellStore{index: map[string]int{}} }

// keySep separates group values in a packed key. Values are printable
// (checked by decode), so it cannot occur in one; a null is packed as
// keyNull.
const (
	keySep  = "\x1f"
	keyNull = "\x00"
)

// checkCells checks a decoded batch of cells on its own: no group twice,
// and partials that agree with each other. It packs each row's group
// values into b.groups and b.values for add.
func (r *Run) checkCells(b *batch) error {
	bad := func(field string, row int, format string, args ...any) error {
		return &BatchError{Site: b.site, Field: field, Row: row, Msg: fmt.Sprintf(format, args...)}
	}
	// Group values as strings: the batch's codes are local until accepted,
	// and cells are few.
	b.groups = make([]string, b.n)
	b.values = make([][]string, b.n)
	seen := make(map[string]int, b.n)
	for row := range b.n {
		parts := make([]string, len(r.dims))
		packed := make([]string, len(r.dims))
		for d, dim := range r.dims {
			c := &b.cols[dim.v]
			switch {
			case !c.isValid(row):
				parts[d], packed[d] = Missing, keyNull
			case dim.typ == catalog.TypeBool:
				parts[d] = fmt.Sprint(c.b[row])
			case c.local != nil:
				parts[d] = c.local.values[c.codes[row]-1]
			default:
				parts[d] = dim.dict.values[c.codes[row]-1]
			}
			if packed[d] == "" {
				packed[d] = parts[d]
			}
		}
		b.groups[row], b.values[row] = strings.Join(packed, keySep), parts
		if first, dup := seen[b.groups[row]]; dup {
			return bad("", row, "repeats the group of row %d", first)
		}
		seen[b.groups[row]] = row
		if err := r.checkPartials(b, row, bad); err != nil {
			return err
		}
	}
	return nil
}

// add adds a batch of cells that checkCells passed, unless the site sent
// one of its groups in an earlier batch: that is known only now. Either
// every cell is added or none.
func (s *cellStore) add(r *Run, b *batch) error {
	keys, site := b.groups, b.state
	site.mu.Lock()
	defer site.mu.Unlock()
	for row, k := range keys {
		if _, dup := site.cellKeys[k]; dup {
			return &BatchError{Site: b.site, Row: row, Msg: "the site sent this group in an earlier batch"}
		}
	}
	if site.cellKeys == nil {
		site.cellKeys = map[string]struct{}{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for row, k := range keys {
		site.cellKeys[k] = struct{}{}
		ci, ok := s.index[k]
		if !ok {
			ci = len(s.cells)
			s.index[k] = ci
			c := aggCell{key: b.values[row], null: make([]bool, len(r.dims)), accs: make([]acc, len(r.measures))}
			for d, dim := range r.dims {
				c.null[d] = !b.cols[dim.v].isValid(row)
			}
			s.cells = append(s.cells, c)
		}
		accs := s.cells[ci].accs
		for j := range r.measures {
			m := &r.measures[j]
			a := &accs[j]
			switch m.kind {
			case disclosure.KindCount:
				a.count += b.cols[m.count].i64[row]
				if m.key >= 0 {
					// Each site's key sum is below R, so the sum is exact
					// before it is reduced.
					a.key = (a.key + uint64(b.cols[m.key].i64[row])) % uint64(r.opts.KeyRange)
				}
			case disclosure.KindSum, disclosure.KindMean:
				n, sum := b.cols[m.n].i64[row], number(&b.cols[m.sum], row)
				a.n += n
				a.add(sum)
				if m.nKey >= 0 {
					a.nKey += uint64(b.cols[m.nKey].i64[row])
				}
				if m.sumKey >= 0 {
					a.sumKey += uint64(b.cols[m.sumKey].i64[row])
				}
				if m.dominance && n > 0 {
					a.sites = append(a.sites, siteShare{top: number(&b.cols[m.top], row), sum: sum, n: n})
				}
			case disclosure.KindMin:
				if n := b.cols[m.n].i64[row]; n > 0 {
					v := number(&b.cols[m.min], row)
					a.extremes(v, v, n)
				}
			case disclosure.KindMax:
				if n := b.cols[m.n].i64[row]; n > 0 {
					v := number(&b.cols[m.max], row)
					a.extremes(v, v, n)
				}
			}
		}
	}
	return nil
}

// number reads an int64 or float64 partial as a float64.
func number(c *bcol, row int) float64 {
	if c.i64 != nil {
		return float64(c.i64[row])
	}
	return c.f64[row]
}

// checkPartials checks that one cell's partials agree with each other.
// decode has already checked each value on its own.
func (r *Run) checkPartials(b *batch, row int, bad func(string, int, string, ...any) error) error {
	fields := b.ks.cols
	for j := range r.measures {
		m := &r.measures[j]
		for _, at := range []int{m.key, m.nKey, m.sumKey} {
			if at < 0 {
				continue
			}
			if k := b.cols[at].i64[row]; k < 0 || k >= int64(r.opts.KeyRange) {
				return bad(fields[at].field.Name, row, "cell key %d is outside 0-%d", k, r.opts.KeyRange-1)
			}
		}
		if m.kind == disclosure.KindCount {
			continue
		}
		n := b.cols[m.n].i64[row]
		present := func(i int) error {
			ok := b.cols[i].isValid(row)
			switch {
			case n == 0 && ok:
				return bad(fields[i].field.Name, row, "has a value but %s is 0", fields[m.n].field.Name)
			case n > 0 && !ok:
				return bad(fields[i].field.Name, row, "is null but %s is %d", fields[m.n].field.Name, n)
			}
			return nil
		}
		switch m.kind {
		case disclosure.KindSum, disclosure.KindMean:
			sum := number(&b.cols[m.sum], row)
			if n == 0 && sum != 0 {
				return bad(fields[m.sum].field.Name, row, "is %v but %s is 0", sum, fields[m.n].field.Name)
			}
			if !m.dominance {
				continue
			}
			if err := present(m.top); err != nil {
				return err
			}
			// Whole-number variables (counts, flags, ages) are never
			// negative, so their largest value bounds the sum both ways.
			if top := b.cols[m.top]; n > 0 && top.i64 != nil {
				t := float64(top.i64[row])
				if t > sum || sum > t*float64(n) {
					return bad(fields[m.top].field.Name, row, "largest value %v is inconsistent with sum %v over %d values", t, sum, n)
				}
			}
		case disclosure.KindMin:
			if err := present(m.min); err != nil {
				return err
			}
		case disclosure.KindMax:
			if err := present(m.max); err != nil {
				return err
			}
		}
	}
	return nil
}

// table returns the added cells, in group order.
func (s *cellStore) table(ctx context.Context, r *Run, st *Stats) (disclosure.Table, error) {
	if err := ctx.Err(); err != nil {
		return disclosure.Table{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	order := make([]int, len(s.cells))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		a, b := &s.cells[i], &s.cells[j]
		for d, dim := range r.dims {
			switch {
			case a.null[d] && b.null[d]:
				continue
			case a.null[d]:
				return 1
			case b.null[d]:
				return -1
			}
			x, y := a.key[d], b.key[d]
			if x == y {
				continue
			}
			if dim.dict != nil && dim.dict.fixed {
				return int(dim.dict.index[x]) - int(dim.dict.index[y])
			}
			return strings.Compare(x, y)
		}
		return 0
	})
	t := disclosure.Table{Dims: slices.Clone(r.table.Dims), Measures: slices.Clone(r.table.Measures), Cells: make([]disclosure.Cell, len(s.cells))}
	k := r.opts.TopContributions
	for i, ci := range order {
		c := &s.cells[ci]
		tops := make([][]float64, len(c.accs))
		for j := range c.accs {
			if r.table.Measures[j].Dominance {
				tops[j] = boundTops(c.accs[j].sites, k)
			}
		}
		t.Cells[i] = disclosure.Cell{Key: slices.Clone(c.key), Values: r.inputs(c.accs, tops)}
		st.MemoryBytes += int64(len(c.accs))*64 + int64(len(c.key))*32
	}
	return t, nil
}
