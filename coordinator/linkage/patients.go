package linkage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// pseudonym is a run pseudonym, used as a key by value.
type pseudonym = [catalog.PseudonymBytes]byte

// storeSpec is one column of the patient table: a field of one kind's
// rows, combined across the sites that send it.
type storeSpec struct {
	typ       catalog.FieldType
	combine   catalog.Combine
	exclusive bool // written only by the patient's practice
	dict      *dictionary
}

// column holds one storeSpec's values, indexed by patient. Every slice
// grows with the partition; only those the column's type needs are used.
type column struct {
	i64  []int64
	f64  []float64
	b    []bool
	code []int32 // dictionary code + 1; 0 for none
	set  []bool  // a value is held (once, min, max)
	day  []int32 // the earliest day
	head []int32 // earliest: the winning site + 1; concat: the first chunk + 1
}

// siteLink chains the sites that sent a row for a patient.
type siteLink struct{ site, next int32 } // next: index + 1, 0 at the end

// dayChunk is one site's day list for one patient and field.
type dayChunk struct{ off, n, next int32 }

// partition is the part of the patient table whose pseudonyms hash to it:
// an open-addressing hash table (pseudonym → patient index) over columnar
// storage, guarded by mu.
type partition struct {
	mu   sync.Mutex
	seed [2]uint64

	keys  []pseudonym
	slots []uint64 // see slot; at most half full
	kinds []uint8  // bit per kind of site that sent a row
	sites []int32  // head of the patient's site chain + 1
	owner []int32  // the practice whose row holds the practice fields + 1
	cols  []column

	links  []siteLink
	chunks []dayChunk
	days   []int32

	// spill, once the partition is spilled, is its file: its rows go
	// there, and its slices are empty. est is the estimate of its memory
	// that the run's spiller last counted.
	spill *spillFile
	est   atomic.Int64
	// loaded marks a partition rebuilt from its spill file for Table,
	// which the budget does not count.
	loaded bool

	sink uint64 // keeps warm's loads from being optimised away
}

func newPartition(r *Run) *partition {
	return &partition{seed: r.seed, cols: make([]column, len(r.layout))}
}

// hash mixes a pseudonym with the run's random seed. Pseudonyms are HMAC
// outputs and already uniform; the seed stops a misbehaving site from
// crafting keys that pile into one partition or one probe sequence.
func hash(seed [2]uint64, k []byte) uint64 {
	a := binary.LittleEndian.Uint64(k[:8]) ^ seed[0]
	b := binary.LittleEndian.Uint64(k[8:16]) ^ seed[1]
	hi, lo := bits.Mul64(a, b^0x9e3779b97f4a7c15)
	return hi ^ lo ^ a
}

func kindBit(k cdm.SiteKind) uint8 {
	if k == cdm.KindGP {
		return 1
	}
	return 2
}

// A slot holds a patient's index + 1 in its high 32 bits (0: empty) and
// the low 32 bits of the pseudonym's hash in its low 32 bits. The hash bits
// let a probe skip most other patients without reading their keys, and let
// the table grow without reading any key.
func slot(idx int32, h uint64) uint64 { return uint64(idx+1)<<32 | h&0xffffffff }

// find returns the index of a patient, or -1.
func (p *partition) find(k *pseudonym, h uint64) int32 {
	if len(p.slots) == 0 {
		return -1
	}
	mask := uint64(len(p.slots) - 1)
	tag := h & 0xffffffff
	for i := h & mask; ; i = (i + 1) & mask {
		s := p.slots[i]
		if s == 0 {
			return -1
		}
		if s&0xffffffff == tag && p.keys[s>>32-1] == *k {
			return int32(s>>32) - 1
		}
	}
}

// findOrInsert returns the index of a patient, adding it if absent. The
// per-patient columns are extended separately, by extend.
func (p *partition) findOrInsert(k *pseudonym, h uint64) int32 {
	if 2*(len(p.keys)+1) > len(p.slots) {
		p.rehash(max(2*len(p.slots), 1024))
	}
	mask := uint64(len(p.slots) - 1)
	tag := h & 0xffffffff
	i := h & mask
	for ; p.slots[i] != 0; i = (i + 1) & mask {
		if s := p.slots[i]; s&0xffffffff == tag && p.keys[s>>32-1] == *k {
			return int32(s>>32) - 1
		}
	}
	idx := int32(len(p.keys))
	p.keys = appendOne(p.keys, *k)
	p.slots[i] = slot(idx, h)
	return idx
}

// rehash moves the slots into a table of size slots, a power of two up
// to 2^32: the hash bits kept in each slot are enough to place it.
func (p *partition) rehash(size int) {
	old := p.slots
	p.slots = make([]uint64, size)
	mask := uint64(size - 1)
	for _, s := range old {
		if s == 0 {
			continue
		}
		i := s & mask
		for p.slots[i] != 0 {
			i = (i + 1) & mask
		}
		p.slots[i] = s
	}
}

// reserve makes room for n patients, so that the table does not grow
// (rehash, copy) while the run's batches arrive.
func (p *partition) reserve(layout []storeSpec, n int) {
	size := 1024
	for size < 2*n {
		size *= 2
	}
	p.rehash(size)
	p.keys = slices.Grow(p.keys, n)
	p.kinds = slices.Grow(p.kinds, n)
	p.sites = slices.Grow(p.sites, n)
	p.owner = slices.Grow(p.owner, n)
	p.links = slices.Grow(p.links, n)
	for i, st := range layout {
		c := &p.cols[i]
		switch st.typ {
		case catalog.FieldInt64:
			c.i64 = slices.Grow(c.i64, n)
		case catalog.FieldFloat64:
			c.f64 = slices.Grow(c.f64, n)
		case catalog.FieldBool:
			c.b = slices.Grow(c.b, n)
		case catalog.FieldString:
			c.code = slices.Grow(c.code, n)
		case catalog.FieldDay:
			c.day = slices.Grow(c.day, n)
			c.head = slices.Grow(c.head, n)
		case catalog.FieldDays:
			c.head = slices.Grow(c.head, n)
		}
		switch st.combine {
		case catalog.CombineOnce, catalog.CombineMin, catalog.CombineMax:
			c.set = slices.Grow(c.set, n)
		}
	}
}

// extend grows every per-patient slice to the number of patients, with
// zero values: no value, no site, no chunk.
func (p *partition) extend(layout []storeSpec) {
	n := len(p.keys)
	p.kinds = grow(p.kinds, n)
	p.sites = grow(p.sites, n)
	p.owner = grow(p.owner, n)
	for i, st := range layout {
		c := &p.cols[i]
		switch st.typ {
		case catalog.FieldInt64:
			c.i64 = grow(c.i64, n)
		case catalog.FieldFloat64:
			c.f64 = grow(c.f64, n)
		case catalog.FieldBool:
			c.b = grow(c.b, n)
		case catalog.FieldString:
			c.code = grow(c.code, n)
		case catalog.FieldDay:
			c.day = grow(c.day, n)
			c.head = grow(c.head, n)
		case catalog.FieldDays:
			c.head = grow(c.head, n)
		}
		switch st.combine {
		case catalog.CombineOnce, catalog.CombineMin, catalog.CombineMax:
			c.set = grow(c.set, n)
		}
	}
}

// grow returns s with length n, new elements zero. Capacity at least
// doubles when it runs out: append alone grows large slices by a quarter,
// which copies the patient table several times over.
func grow[T any](s []T, n int) []T {
	old := len(s)
	if n <= old {
		return s
	}
	if n > cap(s) {
		t := make([]T, old, max(n, 2*cap(s)))
		copy(t, s)
		s = t
	}
	s = s[:n]
	clear(s[old:])
	return s
}

// appendOne appends v, doubling the capacity when it runs out.
func appendOne[T any](s []T, v T) []T {
	if len(s) == cap(s) {
		s = grow(s, len(s)+1)
		s[len(s)-1] = v
		return s
	}
	return append(s, v)
}

// hasSite reports whether site already sent a row for patient idx.
func (p *partition) hasSite(idx, site int32) bool {
	for l := p.sites[idx]; l != 0; l = p.links[l-1].next {
		if p.links[l-1].site == site {
			return true
		}
	}
	return false
}

// scratch is the per-batch working memory of checkPatients and
// addPatients.
type scratch struct {
	found []int32 // patient index in its partition, or -1
	order []int32 // rows grouped by partition
	start []int32 // partition i's rows are order[start[i]:start[i+1]]
	take  []bool  // practice rows whose values are kept
	dedup []int32
}

// getScratch takes working memory from the run's pool; putScratch
// returns it.
func (r *Run) getScratch() *scratch {
	if sc, ok := r.scratch.Get().(*scratch); ok {
		return sc
	}
	return &scratch{}
}

func (r *Run) putScratch(sc *scratch) { r.scratch.Put(sc) }

// checkPatients checks a decoded batch of patient rows on its own: no
// pseudonym twice. It hashes the pseudonyms into b.hash for addPatients.
func (r *Run) checkPatients(b *batch) error {
	b.hash = make([]uint64, b.n)
	for i := range b.n {
		b.hash[i] = hash(r.seed, b.keys[16*i:16*i+16])
	}
	sc := r.getScratch()
	defer r.putScratch(sc)
	if row, first := sc.duplicate(b); row >= 0 {
		return &BatchError{Site: b.site, Field: catalog.FieldNamePseudonym, Row: row,
			Msg: fmt.Sprintf("repeats the pseudonym of row %d", first)}
	}
	return nil
}

// addPatients applies a batch of patient rows that checkPatients passed,
// unless the site sent one of its pseudonyms in an earlier batch: that is
// known only now. Either every row is applied or none.
func (r *Run) addPatients(ctx context.Context, b *batch) error {
	sc := r.getScratch()
	defer r.putScratch(sc)
	n, np := b.n, len(r.parts)
	sc.found = grow(sc.found[:0], n)
	sc.order = grow(sc.order[:0], n)
	sc.take = grow(sc.take[:0], n)
	sc.start = grow(sc.start[:0], np+1)

	// Group rows by partition (a counting sort): the high bits of the hash
	// pick the partition, the low bits the slot within it.
	part := func(h uint64) int { return int((h >> 32) * uint64(np) >> 32) }
	for _, h := range b.hash {
		sc.start[part(h)+1]++
	}
	for i := range np {
		sc.start[i+1] += sc.start[i]
	}
	fill := make([]int32, np)
	copy(fill, sc.start[:np])
	for i, h := range b.hash {
		p := part(h)
		sc.order[fill[p]] = int32(i)
		fill[p]++
	}

	workers := 1
	if n >= r.parallelRows {
		workers = min(np, runtime.GOMAXPROCS(0))
	}
	rows := func(p int) []int32 { return sc.order[sc.start[p]:sc.start[p+1]] }

	b.state.mu.Lock()
	defer b.state.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	// Check: no pseudonym this site sent in an earlier batch. A site's
	// first batch (often its only one) has none to repeat.
	for i := range n {
		sc.found[i] = -1
	}
	if b.state.applied > 0 {
		bad := make([]int32, np)
		forEach(np, workers, int(b.state.id), func(p int) { bad[p] = r.parts[p].check(b, rows(p), sc) })
		badRow := int32(-1)
		for _, row := range bad {
			if row >= 0 && (badRow < 0 || row < badRow) {
				badRow = row
			}
		}
		if badRow >= 0 {
			return &BatchError{Site: b.site, Field: catalog.FieldNamePseudonym, Row: int(badRow),
				Msg: "the site sent this pseudonym in an earlier batch"}
		}
	}
	b.state.applied++
	// The batch is accepted: give its new codes their run-wide codes, then
	// apply each partition's rows.
	for i := range b.cols {
		c := &b.cols[i]
		if c.local == nil {
			continue
		}
		global := b.ks.cols[i].dict.intern(c.local.values)
		for row, code := range c.codes {
			if code != 0 {
				c.codes[row] = global[code-1] + 1
			}
		}
	}
	dups := make([]int64, np)
	errs := make([]error, np)
	forEach(np, workers, int(b.state.id), func(p int) { dups[p], errs[p] = r.parts[p].apply(r, b, rows(p), sc) })
	for _, d := range dups {
		r.duplicates.Add(d)
	}
	if r.spill == nil {
		return nil
	}
	// A spill file that could not be written has lost rows: the run can no
	// longer give a true answer.
	if err := errors.Join(errs...); err != nil {
		return r.failSpill(err)
	}
	return r.spillOver()
}

// duplicate finds a pseudonym repeated within the batch: the row that
// repeats it and the row it first appeared in, or -1.
func (sc *scratch) duplicate(b *batch) (row, first int) {
	size := 16
	for size < 2*b.n {
		size *= 2
	}
	sc.dedup = grow(sc.dedup[:0], size)
	mask := uint64(size - 1)
	for i := range b.n {
		k := b.keys[16*i : 16*i+16]
		j := b.hash[i] & mask
		for ; sc.dedup[j] != 0; j = (j + 1) & mask {
			o := int(sc.dedup[j] - 1)
			if b.hash[o] == b.hash[i] && string(b.keys[16*o:16*o+16]) == string(k) {
				return i, o
			}
		}
		sc.dedup[j] = int32(i) + 1
	}
	return -1, -1
}

// check looks up the rows' pseudonyms, recording each patient's index in
// sc.found, and returns the first row whose pseudonym the same site sent
// before, or -1.
func (p *partition) check(b *batch, rows []int32, sc *scratch) int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spill != nil {
		// The rows are checked when the partition is read back.
		return -1
	}
	site := b.state.id
	for g := 0; g < len(rows); g += warmGroup {
		group := rows[g:min(g+warmGroup, len(rows))]
		p.warm(group, b.hash)
		for _, row := range group {
			k := (*pseudonym)(b.keys[16*row : 16*row+16])
			idx := p.find(k, b.hash[row])
			sc.found[row] = idx
			if idx >= 0 && p.hasSite(idx, site) {
				return row
			}
		}
	}
	return -1
}

// warmGroup is how many rows warm loads ahead.
const warmGroup = 32

// warm reads, for a group of rows, the slot each will probe first and the
// key that slot points to. The table is far larger than the caches and
// the probes are random, so each probe is a cache miss; issued back to
// back, independent of each other, the misses overlap, and the probes
// that follow find their lines in the cache.
func (p *partition) warm(rows []int32, hash []uint64) {
	if len(p.slots) == 0 {
		return
	}
	mask := uint64(len(p.slots) - 1)
	var sink uint64
	for _, row := range rows {
		sink += p.slots[hash[row]&mask]
	}
	for _, row := range rows {
		if s := p.slots[hash[row]&mask]; s != 0 {
			sink += uint64(p.keys[s>>32-1][0])
		}
	}
	p.sink += sink
}

// apply adds the rows to the partition and returns how many were practice
// rows for a patient another practice had sent. The rows of a spilled
// partition are appended to its file instead, and counted when it is read
// back; the only error is a failure to write them.
func (p *partition) apply(r *Run, b *batch, rows []int32, sc *scratch) (dups int64, err error) {
	if len(rows) == 0 {
		return 0, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spill != nil {
		return 0, p.spill.appendRows(r.spill, b, rows)
	}
	defer p.account(r.spill)
	site := b.state.id
	for g := 0; g < len(rows); g += warmGroup {
		group := rows[g:min(g+warmGroup, len(rows))]
		p.warm(group, b.hash)
		for _, row := range group {
			// A row that check did not find (or that was not checked) may
			// have been inserted since by another site's batch.
			if sc.found[row] < 0 {
				sc.found[row] = p.findOrInsert((*pseudonym)(b.keys[16*row:16*row+16]), b.hash[row])
			}
		}
	}
	p.extend(r.layout)
	bit := kindBit(b.ks.kind)
	for _, row := range rows {
		idx := sc.found[row]
		p.kinds[idx] |= bit
		p.links = appendOne(p.links, siteLink{site: site, next: p.sites[idx]})
		p.sites[idx] = int32(len(p.links))
		if !b.ks.exclusive {
			sc.take[row] = true
			continue
		}
		// Registration is exclusive; if two practices send one patient the
		// smaller ODS code's row holds the values, whatever the order.
		switch o := p.owner[idx]; {
		case o == 0:
			sc.take[row] = true
		case b.site.ODS < r.siteByID(o-1).site.ODS:
			sc.take[row] = true
			dups++
		default:
			sc.take[row] = false
			dups++
		}
		if sc.take[row] {
			p.owner[idx] = site + 1
		}
	}
	for i := 1; i < len(b.ks.cols); i++ {
		spec := &b.ks.cols[i]
		p.applyColumn(r, &r.layout[spec.store], &p.cols[spec.store], &b.cols[i], rows, sc, b.state)
	}
	return dups, nil
}

// applyColumn combines one field of the rows into its column.
func (p *partition) applyColumn(r *Run, st *storeSpec, col *column, c *bcol, rows []int32, sc *scratch, site *siteState) {
	switch st.combine {
	case catalog.CombineOnce:
		for _, row := range rows {
			if !sc.take[row] {
				continue
			}
			idx, ok := sc.found[row], c.validAt(row)
			col.set[idx] = ok
			switch st.typ {
			case catalog.FieldInt64:
				col.i64[idx] = pick(ok, c.i64, row)
			case catalog.FieldFloat64:
				col.f64[idx] = pick(ok, c.f64, row)
			case catalog.FieldBool:
				col.b[idx] = pick(ok, c.b, row)
			case catalog.FieldString:
				col.code[idx] = c.codes[row] // 0 when null
			}
		}
	case catalog.CombineSum:
		for _, row := range rows {
			if !c.validAt(row) {
				continue
			}
			if st.typ == catalog.FieldInt64 {
				col.i64[sc.found[row]] += c.i64[row]
			} else {
				col.f64[sc.found[row]] += c.f64[row]
			}
		}
	case catalog.CombineAny:
		for _, row := range rows {
			if c.validAt(row) && c.b[row] {
				col.b[sc.found[row]] = true
			}
		}
	case catalog.CombineMin, catalog.CombineMax:
		sign := 1
		if st.combine == catalog.CombineMax {
			sign = -1
		}
		for _, row := range rows {
			if !c.validAt(row) {
				continue
			}
			idx := sc.found[row]
			var better bool
			switch st.typ {
			case catalog.FieldInt64:
				better = !col.set[idx] || sign*cmpNum(c.i64[row], col.i64[idx]) < 0
				if better {
					col.i64[idx] = c.i64[row]
				}
			case catalog.FieldFloat64:
				better = !col.set[idx] || sign*cmpNum(c.f64[row], col.f64[idx]) < 0
				if better {
					col.f64[idx] = c.f64[row]
				}
			case catalog.FieldString:
				// A category several trusts report: the smallest (or
				// largest) string, a deterministic choice.
				better = !col.set[idx] || sign*strings.Compare(st.dict.value(c.codes[row]-1), st.dict.value(col.code[idx]-1)) < 0
				if better {
					col.code[idx] = c.codes[row]
				}
			}
			col.set[idx] = true
		}
	case catalog.CombineEarliest:
		for _, row := range rows {
			if !c.validAt(row) {
				continue
			}
			idx, d := sc.found[row], c.i32[row]
			cur := col.head[idx]
			if cur == 0 || d < col.day[idx] || (d == col.day[idx] && site.site.ODS < r.siteByID(cur-1).site.ODS) {
				col.day[idx], col.head[idx] = d, site.id+1
			}
		}
	case catalog.CombineConcat:
		for _, row := range rows {
			from, to := c.offs[row], c.offs[row+1]
			if from == to {
				continue
			}
			idx := sc.found[row]
			p.chunks = appendOne(p.chunks, dayChunk{off: int32(len(p.days)), n: to - from, next: col.head[idx]})
			p.days = append(p.days, c.i32[from:to]...)
			col.head[idx] = int32(len(p.chunks))
		}
	}
}

func pick[T any](ok bool, s []T, i int32) T {
	if ok {
		return s[i]
	}
	var zero T
	return zero
}

func cmpNum[T int64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// memory estimates the bytes the partition holds.
func (p *partition) memory() int64 {
	n := int64(cap(p.keys))*16 + int64(cap(p.slots))*8 + int64(cap(p.kinds)) + int64(cap(p.sites))*4 + int64(cap(p.owner))*4 +
		int64(cap(p.links))*8 + int64(cap(p.chunks))*12 + int64(cap(p.days))*4
	for _, c := range p.cols {
		n += int64(cap(c.i64))*8 + int64(cap(c.f64))*8 + int64(cap(c.b)) + int64(cap(c.code))*4 + int64(cap(c.set)) +
			int64(cap(c.day))*4 + int64(cap(c.head))*4
	}
	return n
}
