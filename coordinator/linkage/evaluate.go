package linkage

import (
	"context"
	"encoding/binary"
	"runtime"
	"slices"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/policy/catalog"
)

// cellAcc accumulates one cell: its group codes and one acc per measure.
type cellAcc struct {
	key  []int32 // per dimension: a dictionary code, 0/1 for a bool, a site id; -1 for null
	accs []acc
}

// evaluator computes one partition's cells. Each works alone, so nothing
// in it is locked.
type evaluator struct {
	r     *Run
	index map[string]int32 // packed key → cell
	cells []cellAcc
	key   []byte
	// When the groups are few, dense maps a mixed-radix number of the
	// group codes straight to cell + 1, and index is not used.
	dense []int32
	radix []int32 // per dimension: values + 1 (for null)

	// The current patient's variables.
	vals  []float64
	ok    []bool
	codes []int32

	dis, adm []int32 // day-list scratch

	population, unlinked, unlinkedRows int64
}

// patientTable evaluates every partition in parallel and merges the cells.
func (r *Run) patientTable(ctx context.Context, st *Stats) (disclosure.Table, error) {
	evs := make([]*evaluator, len(r.parts))
	errs := make([]error, len(r.parts))
	forEach(len(r.parts), runtime.GOMAXPROCS(0), 0, func(i int) {
		if r.parts[i].spill == nil {
			evs[i], errs[i] = r.evaluate(ctx, r.parts[i])
		}
	})
	for _, err := range errs {
		if err != nil {
			return disclosure.Table{}, err
		}
	}
	if r.spill != nil {
		// The partitions in memory are evaluated; the spilled ones are read
		// back one by one, within the budget.
		if err := r.spilledTables(ctx, evs, st); err != nil {
			if ctx.Err() == nil {
				err = r.failSpill(err)
			}
			return disclosure.Table{}, err
		}
		st.SpilledBytes, st.SpilledPartitions = r.spill.bytes.Load(), int(r.spill.parts.Load())
	}
	all := r.newEvaluator()
	for i, ev := range evs {
		all.merge(ev)
		st.Patients += int64(len(r.parts[i].keys))
		st.MemoryBytes += r.parts[i].memory()
		evs[i] = nil
	}
	st.Population, st.UnlinkedPatients, st.UnlinkedRows = all.population, all.unlinked, all.unlinkedRows
	return r.output(all.cells), nil
}

func (r *Run) newEvaluator() *evaluator {
	return &evaluator{
		r:     r,
		index: map[string]int32{},
		key:   make([]byte, 4*len(r.dims)),
		vals:  make([]float64, len(r.vars)),
		ok:    make([]bool, len(r.vars)),
		codes: make([]int32, len(r.vars)),
	}
}

// maxDense is the most groups a dense cell index is used for.
const maxDense = 1 << 16

// groupRadix returns, per dimension, the number of possible values plus
// one for null, and whether their product is small enough for a dense
// index. Dictionaries do not grow while Table runs.
func (r *Run) groupRadix() ([]int32, bool) {
	radix := make([]int32, len(r.dims))
	nsites := len(r.siteODS())
	total := 1
	for d, dim := range r.dims {
		n := 2
		switch {
		case dim.dict != nil:
			n = dim.dict.size()
		case dim.site:
			n = nsites
		}
		radix[d] = int32(n + 1)
		total *= n + 1
		if total > maxDense {
			return nil, false
		}
	}
	return radix, true
}

// evaluate computes the cells of one partition's patients.
func (r *Run) evaluate(ctx context.Context, p *partition) (*evaluator, error) {
	e := r.newEvaluator()
	if radix, ok := r.groupRadix(); ok {
		total := int32(1)
		for _, n := range radix {
			total *= n
		}
		e.radix, e.dense = radix, make([]int32, total)
	}
	popBit := kindBit(r.popKind)
	for idx := range int32(len(p.keys)) {
		if idx&0xffff == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		in := p.kinds[idx]&popBit != 0
		if r.popCol >= 0 {
			in = p.cols[r.popCol].b[idx]
		}
		if !in {
			e.unlinked++
			for l := p.sites[idx]; l != 0; l = p.links[l-1].next {
				e.unlinkedRows++
			}
			continue
		}
		e.population++
		e.patient(p, idx)
	}
	// Only cells and counts are merged; the dense index could be large,
	// and many evaluators may wait for the merge.
	e.dense = nil
	return e, nil
}

// patient adds one patient of the population to its cell.
func (e *evaluator) patient(p *partition, idx int32) {
	r := e.r
	for i := range r.vars {
		e.variable(p, idx, i)
	}
	accs := e.cells[e.cell()].accs
	k := r.opts.TopContributions
	var rk uint64
	if r.keyCol >= 0 {
		rk = uint64(p.cols[r.keyCol].i64[idx])
	}
	for j := range r.measures {
		m := &r.measures[j]
		if !e.holds(m.where) {
			continue
		}
		a := &accs[j]
		if m.of < 0 {
			a.count++
			a.key += rk
			continue
		}
		if !e.ok[m.of] {
			continue
		}
		v := e.vals[m.of]
		switch m.kind {
		case disclosure.KindSum:
			// Contributors to a sum are the patients who add to it.
			if v != 0 {
				a.n++
				a.nKey += rk
				a.add(v)
				if m.dominance {
					a.top = insertTop(a.top, v, k)
				}
			}
		case disclosure.KindMean:
			a.n++
			a.nKey += rk
			if m.binary && v != 0 {
				a.sumKey += rk
			}
			a.add(v)
			if m.dominance {
				a.top = insertTop(a.top, v, k)
			}
		case disclosure.KindMin, disclosure.KindMax:
			a.extreme(v, 1)
		}
	}
}

// cell returns the current patient's cell, adding it the first time.
func (e *evaluator) cell() int32 {
	r := e.r
	if e.dense != nil {
		x := int32(0)
		for d, dim := range r.dims {
			c := e.codes[dim.v]
			if c < 0 {
				c = e.radix[d] - 1
			}
			x = x*e.radix[d] + c
		}
		if ci := e.dense[x]; ci > 0 {
			return ci - 1
		}
		ci := e.newGroup()
		e.dense[x] = ci + 1
		return ci
	}
	for d, dim := range r.dims {
		binary.LittleEndian.PutUint32(e.key[4*d:], uint32(e.codes[dim.v]))
	}
	if ci, ok := e.index[string(e.key)]; ok {
		return ci
	}
	ci := e.newGroup()
	e.index[string(e.key)] = ci
	return ci
}

// newGroup adds a cell for the current patient's group.
func (e *evaluator) newGroup() int32 {
	ci := int32(len(e.cells))
	e.cells = append(e.cells, cellAcc{key: make([]int32, len(e.r.dims)), accs: make([]acc, len(e.r.measures))})
	for d, dim := range e.r.dims {
		e.cells[ci].key[d] = e.codes[dim.v]
	}
	return ci
}

func (e *evaluator) newCell(key string) int32 {
	ci := int32(len(e.cells))
	e.index[key] = ci
	e.cells = append(e.cells, cellAcc{key: make([]int32, len(e.r.dims)), accs: make([]acc, len(e.r.measures))})
	return ci
}

// holds evaluates a measure's where for the current patient. A null
// variable fails every comparison.
func (e *evaluator) holds(where []cond) bool {
	for _, c := range where {
		if !e.ok[c.v] || !compare(e.vals[c.v], c.op, c.x) {
			return false
		}
	}
	return true
}

func compare(v float64, op catalog.Op, x float64) bool {
	switch op {
	case catalog.OpLT:
		return v < x
	case catalog.OpLE:
		return v <= x
	case catalog.OpGT:
		return v > x
	case catalog.OpGE:
		return v >= x
	case catalog.OpEQ:
		return v == x
	case catalog.OpNE:
		return v != x
	}
	return false
}

// variable reads variable i of patient idx into vals, ok and codes.
func (e *evaluator) variable(p *partition, idx int32, i int) {
	r := e.r
	vs := &r.vars[i]
	switch vs.how {
	case firstTrust:
		site := p.cols[vs.col].head[idx] - 1
		e.codes[i], e.ok[i] = site, site >= 0
		return
	case readmissions:
		e.dis = gather(e.dis[:0], p, p.cols[vs.col].head[idx])
		e.adm = gather(e.adm[:0], p, p.cols[vs.col2].head[idx])
		e.vals[i], e.ok[i] = float64(countReadmissions(e.dis, e.adm, vs.within)), true
		return
	}
	st, c := &r.layout[vs.col], &p.cols[vs.col]
	ok := true
	switch st.combine {
	case catalog.CombineOnce, catalog.CombineMin, catalog.CombineMax:
		ok = c.set[idx]
	}
	var v float64
	code := int32(-1)
	switch st.typ {
	case catalog.FieldInt64:
		v = float64(c.i64[idx])
	case catalog.FieldFloat64:
		v = c.f64[idx]
	case catalog.FieldBool:
		if c.b[idx] {
			v = 1
		}
		if ok {
			code = int32(v)
		}
	case catalog.FieldString:
		code = c.code[idx] - 1
		ok = code >= 0
	}
	e.vals[i], e.ok[i], e.codes[i] = v, ok, code
}

// gather appends the days of a chunk chain.
func gather(dst []int32, p *partition, head int32) []int32 {
	for c := head; c != 0; c = p.chunks[c-1].next {
		ch := p.chunks[c-1]
		dst = append(dst, p.days[ch.off:ch.off+ch.n]...)
	}
	return dst
}

// countReadmissions counts the admission days a for which some discharge
// day d has d < a ≤ d + within (catalog.ReadmissionsVar). Each admission
// counts once; an admission on a discharge day is not its own readmission.
func countReadmissions(dis, adm []int32, within int32) int64 {
	if len(dis) == 0 || len(adm) == 0 {
		return 0
	}
	slices.Sort(dis)
	slices.Sort(adm)
	var n int64
	j := 0 // dis[:j] are the discharges before a
	for _, a := range adm {
		for j < len(dis) && dis[j] < a {
			j++
		}
		if j > 0 && int64(a)-int64(dis[j-1]) <= int64(within) {
			n++
		}
	}
	return n
}

// merge adds another evaluator's cells and counts into e.
func (e *evaluator) merge(o *evaluator) {
	k := e.r.opts.TopContributions
	for _, c := range o.cells {
		for d, code := range c.key {
			binary.LittleEndian.PutUint32(e.key[4*d:], uint32(code))
		}
		ci, ok := e.index[string(e.key)]
		if !ok {
			ci = e.newCell(string(e.key))
			copy(e.cells[ci].key, c.key)
		}
		for j := range c.accs {
			e.cells[ci].accs[j].merge(&c.accs[j], k)
		}
	}
	e.population += o.population
	e.unlinked += o.unlinked
	e.unlinkedRows += o.unlinkedRows
}

// output turns merged cells into the disclosure table, in group order.
func (r *Run) output(cells []cellAcc) disclosure.Table {
	ods := r.siteODS()
	slices.SortFunc(cells, func(a, b cellAcc) int {
		for d, dim := range r.dims {
			x, y := a.key[d], b.key[d]
			switch {
			case x == y:
				continue
			case x < 0:
				return 1 // nulls last
			case y < 0:
				return -1
			case dim.dict != nil:
				if c := dim.dict.compare(x, y); c != 0 {
					return c
				}
			case dim.site:
				if ods[x] < ods[y] {
					return -1
				}
				return 1
			default:
				return int(x) - int(y)
			}
		}
		return 0
	})
	t := disclosure.Table{Dims: slices.Clone(r.table.Dims), Measures: slices.Clone(r.table.Measures), Cells: make([]disclosure.Cell, len(cells))}
	for i, c := range cells {
		key := make([]string, len(r.dims))
		for d, dim := range r.dims {
			code := c.key[d]
			switch {
			case code < 0:
				key[d] = Missing
			case dim.dict != nil:
				key[d] = dim.dict.value(code)
			case dim.site:
				key[d] = ods[code]
			case code == 1:
				key[d] = "true"
			default:
				key[d] = "false"
			}
		}
		t.Cells[i] = disclosure.Cell{Key: key, Values: r.inputs(c.accs, nil)}
	}
	return t
}

// inputs converts a cell's accumulators into disclosure inputs. tops, when
// set, replaces the kept top contributions (aggregate mode's bounds).
func (r *Run) inputs(accs []acc, tops [][]float64) []disclosure.Input {
	out := make([]disclosure.Input, len(accs))
	for j, a := range accs {
		m := r.table.Measures[j]
		in := disclosure.Input{Count: a.count, N: a.n}
		if kr := uint64(r.opts.KeyRange); kr > 0 {
			in.Key, in.NKey, in.SumKey = a.key%kr, a.nKey%kr, a.sumKey%kr
		}
		switch m.Kind {
		case disclosure.KindSum, disclosure.KindMean:
			in.Sum = a.sum + a.comp
			if m.Dominance {
				if tops != nil {
					in.TopContributions = tops[j]
				} else {
					in.TopContributions = slices.Clone(a.top)
				}
			}
		case disclosure.KindMin, disclosure.KindMax:
			if a.n > 0 {
				in.Min, in.Max = a.min, a.max
			}
		}
		out[j] = in
	}
	return out
}

// siteODS returns every registered site's ODS code by id.
func (r *Run) siteODS() []string {
	r.sitesMu.RLock()
	defer r.sitesMu.RUnlock()
	out := make([]string, len(r.byID))
	for i, s := range r.byID {
		out[i] = s.site.ODS
	}
	return out
}
