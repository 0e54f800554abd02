package linkage

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/havenhealth/haven/policy/catalog"
)

// spillBuffer is the write buffer of each spill file. Every spilled
// partition has one, outside the budget, so it is kept small.
const spillBuffer = 32 << 10

// spiller moves partitions to disk when the patient table passes
// Options.MemoryBudget (see the package doc, "Parallelism and memory").
type spiller struct {
	budget  int64
	dir     string
	pattern string // os.CreateTemp pattern of the run's files, with %d for the partition

	// mu lets one Apply at a time choose and spill partitions.
	mu sync.Mutex
	// inMemory is the estimated bytes of the partitions still in memory.
	inMemory atomic.Int64
	// bytes is what the run wrote to its spill files, parts how many
	// partitions it spilled.
	bytes atomic.Int64
	parts atomic.Int64

	// failed is the error that failed the run: a spill file that could not
	// be written or read back. Once set, Apply and Table return it.
	failed atomic.Pointer[error]
}

// spillFile is one spilled partition's file: a snapshot of the partition
// as it was when spilled, then the rows that arrived since, in the order
// they were applied. It is guarded by its partition's mu.
type spillFile struct {
	name string
	f    *os.File
	w    *bufio.Writer
	buf  []byte // encoding scratch
	err  error  // the first write error; the file is gone once set
	// rows counts the rows appended after the snapshot: room to reserve
	// when the partition is rebuilt, so that it does not grow by copying.
	rows int
}

// newSpiller prepares spilling for a run with a memory budget, checking
// that the spill directory takes files.
func newSpiller(opts Options) (*spiller, error) {
	dir := opts.SpillDir
	if dir == "" {
		dir = os.TempDir()
	}
	name := "run"
	if opts.RunID != "" {
		name = strings.Map(func(c rune) rune {
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
				return c
			}
			return '_'
		}, opts.RunID)
		name = name[:min(len(name), 64)]
	}
	s := &spiller{budget: opts.MemoryBudget, dir: dir, pattern: "haven-linkage-" + name + "-p%d-*.spill"}
	// Find an unusable directory now, not when the first partition spills.
	f, err := os.CreateTemp(dir, "haven-linkage-"+name+"-check-*")
	if err != nil {
		return nil, fmt.Errorf("linkage: spill directory %s does not take files: %w", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return s, nil
}

// err returns the error that failed the run, or nil.
func (s *spiller) err() error {
	if s == nil {
		return nil
	}
	if e := s.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// fail records err as the run's failure (the first one wins) and removes
// every spill file: nothing the run wrote outlives a failed run.
func (r *Run) failSpill(err error) error {
	s := r.spill
	s.failed.CompareAndSwap(nil, &err)
	for _, p := range r.parts {
		p.mu.Lock()
		p.spill.remove(s.err())
		p.mu.Unlock()
	}
	return s.err()
}

// removeSpills removes every spill file; Close calls it.
func (r *Run) removeSpills() {
	for _, p := range r.parts {
		p.mu.Lock()
		p.spill.remove(ErrClosed)
		p.mu.Unlock()
	}
}

// remove closes and removes the file; later writes return err. A nil f
// has nothing to remove.
func (f *spillFile) remove(err error) {
	if f == nil || f.f == nil {
		return
	}
	f.f.Close()
	os.Remove(f.name)
	f.f, f.w = nil, nil
	if f.err == nil {
		f.err = err
	}
}

// write appends b to the file, counting it in the run's spilled bytes.
func (f *spillFile) write(s *spiller, b []byte) error {
	if f.err != nil {
		return f.err
	}
	n, err := f.w.Write(b)
	s.bytes.Add(int64(n))
	if err != nil {
		f.err = fmt.Errorf("linkage: write spill file %s: %w", f.name, err)
		return f.err
	}
	return nil
}

// account records the partition's new size estimate; the caller holds
// p.mu. It is called after every change to an in-memory partition.
func (p *partition) account(s *spiller) {
	if s == nil || p.spill != nil || p.loaded {
		return
	}
	m := p.memory()
	s.inMemory.Add(m - p.est.Swap(m))
}

// spillOver moves the largest in-memory partitions to disk until the
// patient table is within the budget again. The caller holds no
// partition's lock.
func (r *Run) spillOver() error {
	s := r.spill
	if s.inMemory.Load() <= s.budget {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.inMemory.Load() > s.budget {
		var big *partition
		var bigIdx int
		for i, p := range r.parts {
			if big == nil || p.est.Load() > big.est.Load() {
				big, bigIdx = p, i
			}
		}
		if big == nil || big.est.Load() == 0 {
			return nil // every partition is on disk
		}
		big.mu.Lock()
		err := big.spillTo(r, bigIdx)
		big.mu.Unlock()
		if err != nil {
			return r.failSpill(err)
		}
	}
	return nil
}

// spillTo writes the partition to a new spill file and frees its memory;
// the caller holds p.mu. From now on its rows go to the file.
func (p *partition) spillTo(r *Run, idx int) error {
	s := r.spill
	if p.spill != nil {
		return nil
	}
	f, err := os.CreateTemp(s.dir, fmt.Sprintf(s.pattern, idx))
	if err != nil {
		return fmt.Errorf("linkage: create spill file in %s: %w", s.dir, err)
	}
	// CreateTemp makes files 0600 already; say so for a reader.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("linkage: spill file %s: %w", f.Name(), err)
	}
	sf := &spillFile{name: f.Name(), f: f, w: bufio.NewWriterSize(f, spillBuffer)}
	p.spill = sf
	s.parts.Add(1)
	if err := p.writeSnapshot(s, sf); err != nil {
		return err
	}
	p.free()
	s.inMemory.Add(-p.est.Swap(0))
	return nil
}

// free drops the partition's contents, keeping its lock, seed and spill
// file.
func (p *partition) free() {
	p.keys, p.slots, p.kinds, p.sites, p.owner = nil, nil, nil, nil, nil
	p.links, p.chunks, p.days = nil, nil, nil
	p.cols = make([]column, len(p.cols))
}

// writeSnapshot writes the partition's columnar contents: every slice in
// a fixed order, as a length and its bytes. The file lives no longer than
// the process that wrote it, so values are written in the machine's byte
// order. The slots are not written: load rebuilds them from the keys.
func (p *partition) writeSnapshot(s *spiller, f *spillFile) error {
	w := func(b []byte) error { return f.write(s, b) }
	err := errors.Join(
		writeSlice(w, p.keys), writeSlice(w, p.kinds), writeSlice(w, p.sites), writeSlice(w, p.owner),
		writeSlice(w, p.links), writeSlice(w, p.chunks), writeSlice(w, p.days))
	for i := range p.cols {
		c := &p.cols[i]
		err = errors.Join(err, writeSlice(w, c.i64), writeSlice(w, c.f64), writeSlice(w, c.b), writeSlice(w, c.code),
			writeSlice(w, c.set), writeSlice(w, c.day), writeSlice(w, c.head))
	}
	if err != nil {
		return f.err
	}
	return nil
}

func writeSlice[T any](w func([]byte) error, s []T) error {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
	if err := w(n[:]); err != nil {
		return err
	}
	if len(s) == 0 {
		return nil
	}
	var zero T
	return w(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(zero))))
}

// readSlice reads a slice that writeSlice wrote, with room for extra
// more elements when it is not empty.
func readSlice[T any](r io.Reader, extra int) ([]T, error) {
	var n [8]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	l := binary.LittleEndian.Uint64(n[:])
	if l == 0 {
		return nil, nil
	}
	if l > math.MaxInt32 {
		return nil, fmt.Errorf("slice of %d elements", l)
	}
	s := make([]T, l, int(l)+extra)
	var zero T
	_, err := io.ReadFull(r, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(zero))))
	return s, err
}

// appendRows writes the rows of a batch that fall in a spilled partition:
// the site, the number of rows, the pseudonyms, then each field's values
// for those rows (a validity bitmap when the field has nulls). String
// values are written as run-wide dictionary codes. The caller holds p.mu.
func (f *spillFile) appendRows(s *spiller, b *batch, rows []int32) error {
	e := f.buf[:0]
	e = binary.LittleEndian.AppendUint32(e, uint32(b.state.id))
	e = binary.LittleEndian.AppendUint32(e, uint32(len(rows)))
	for _, row := range rows {
		e = append(e, b.keys[16*row:16*row+16]...)
	}
	for i := 1; i < len(b.ks.cols); i++ {
		c := &b.cols[i]
		if c.valid == nil {
			e = append(e, 0)
		} else {
			e = append(e, 1)
			e = appendBits(e, rows, func(row int32) bool { return c.valid[row] })
		}
		switch b.ks.cols[i].field.Type {
		case catalog.FieldInt64:
			for _, row := range rows {
				e = binary.LittleEndian.AppendUint64(e, uint64(c.i64[row]))
			}
		case catalog.FieldFloat64:
			for _, row := range rows {
				e = binary.LittleEndian.AppendUint64(e, math.Float64bits(c.f64[row]))
			}
		case catalog.FieldBool:
			e = appendBits(e, rows, func(row int32) bool { return c.b[row] })
		case catalog.FieldDay:
			for _, row := range rows {
				e = binary.LittleEndian.AppendUint32(e, uint32(c.i32[row]))
			}
		case catalog.FieldString:
			for _, row := range rows {
				e = binary.LittleEndian.AppendUint32(e, uint32(c.codes[row]))
			}
		case catalog.FieldDays:
			for _, row := range rows {
				e = binary.LittleEndian.AppendUint32(e, uint32(c.offs[row+1]-c.offs[row]))
			}
			for _, row := range rows {
				for _, d := range c.i32[c.offs[row]:c.offs[row+1]] {
					e = binary.LittleEndian.AppendUint32(e, uint32(d))
				}
			}
		}
	}
	f.rows += len(rows)
	f.buf = e[:0]
	if cap(f.buf) > 1<<20 {
		f.buf = nil // a one-off large batch need not stay allocated
	}
	return f.write(s, e)
}

func appendBits(e []byte, rows []int32, bit func(int32) bool) []byte {
	var x byte
	for i, row := range rows {
		if bit(row) {
			x |= 1 << (i % 8)
		}
		if i%8 == 7 {
			e = append(e, x)
			x = 0
		}
	}
	if len(rows)%8 != 0 {
		e = append(e, x)
	}
	return e
}

// spillReader reads a spill file back.
type spillReader struct {
	r   *bufio.Reader
	buf []byte
}

func (sr *spillReader) next(n int) ([]byte, error) {
	if cap(sr.buf) < n {
		sr.buf = make([]byte, n)
	}
	b := sr.buf[:n]
	_, err := io.ReadFull(sr.r, b)
	return b, err
}

// load rebuilds a spilled partition: its snapshot, then every row written
// since, checked and applied by the same code as in memory, in the same
// order. It returns the partition and the practice rows it found for
// patients another practice had sent (Stats.DuplicateRegistrations).
func (r *Run) load(ctx context.Context, idx int, f *spillFile) (*partition, int64, error) {
	if err := f.w.Flush(); err != nil {
		f.err = fmt.Errorf("linkage: write spill file %s: %w", f.name, err)
		return nil, 0, f.err
	}
	file, err := os.Open(f.name)
	if err != nil {
		return nil, 0, fmt.Errorf("linkage: read spill file %s: %w", f.name, err)
	}
	defer file.Close()
	p := newPartition(r)
	p.loaded = true
	sr := &spillReader{r: bufio.NewReaderSize(file, spillBuffer)}
	dups, err := p.replay(ctx, r, sr, f.rows)
	if err != nil {
		if _, ok := errors.AsType[*BatchError](err); ok || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("linkage: read spill file %s of partition %d: %w", f.name, idx, err)
	}
	return p, dups, nil
}

func (p *partition) replay(ctx context.Context, r *Run, sr *spillReader, extra int) (dups int64, err error) {
	rd := sr.r
	if p.keys, err = readSlice[pseudonym](rd, extra); err != nil {
		return 0, err
	}
	if p.kinds, err = readSlice[uint8](rd, extra); err != nil {
		return 0, err
	}
	if p.sites, err = readSlice[int32](rd, extra); err != nil {
		return 0, err
	}
	if p.owner, err = readSlice[int32](rd, extra); err != nil {
		return 0, err
	}
	if p.links, err = readSlice[siteLink](rd, extra); err != nil {
		return 0, err
	}
	if p.chunks, err = readSlice[dayChunk](rd, 0); err != nil {
		return 0, err
	}
	if p.days, err = readSlice[int32](rd, 0); err != nil {
		return 0, err
	}
	for i := range p.cols {
		c := &p.cols[i]
		c.i64, err = readSlice[int64](rd, extra)
		if err == nil {
			c.f64, err = readSlice[float64](rd, extra)
		}
		if err == nil {
			c.b, err = readSlice[bool](rd, extra)
		}
		if err == nil {
			c.code, err = readSlice[int32](rd, extra)
		}
		if err == nil {
			c.set, err = readSlice[bool](rd, extra)
		}
		if err == nil {
			c.day, err = readSlice[int32](rd, extra)
		}
		if err == nil {
			c.head, err = readSlice[int32](rd, extra)
		}
		if err != nil {
			return 0, err
		}
	}
	size := 1024
	for size < 2*(len(p.keys)+extra) {
		size *= 2
	}
	p.slots = make([]uint64, size)
	mask := uint64(size - 1)
	for i := range p.keys {
		h := hash(p.seed, p.keys[i][:])
		j := h & mask
		for p.slots[j] != 0 {
			j = (j + 1) & mask
		}
		p.slots[j] = slot(int32(i), h)
	}

	sc := &scratch{}
	for n := 0; ; n++ {
		if n&0xff == 0 {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		b, err := r.readRows(sr)
		if err == io.EOF {
			return dups, nil
		}
		if err != nil {
			return 0, err
		}
		rows := make([]int32, b.n)
		for i := range rows {
			rows[i] = int32(i)
		}
		sc.found = grow(sc.found[:0], b.n)
		sc.take = grow(sc.take[:0], b.n)
		for i := range sc.found {
			sc.found[i] = -1
		}
		// In memory Apply refuses a batch that repeats a pseudonym the site
		// sent before; a spilled partition's rows are checked only now.
		if row := p.check(b, rows, sc); row >= 0 {
			return 0, &BatchError{Site: b.site, Field: catalog.FieldNamePseudonym, Row: -1,
				Msg: "the site sent a pseudonym in two batches (found when the run's spilled rows were read back)"}
		}
		d, err := p.apply(r, b, rows, sc)
		if err != nil {
			return 0, err
		}
		dups += d
	}
}

// readRows reads one group of rows that appendRows wrote, as a batch; io.EOF
// at the end of the file.
func (r *Run) readRows(sr *spillReader) (*batch, error) {
	h, err := sr.next(8)
	if err != nil {
		return nil, err // io.EOF between groups is the end
	}
	id, n := int32(binary.LittleEndian.Uint32(h)), int(binary.LittleEndian.Uint32(h[4:]))
	if id < 0 || int(id) >= len(r.byID) {
		return nil, fmt.Errorf("site %d is not the run's", id)
	}
	state := r.byID[id]
	b := &batch{site: state.site, state: state, ks: r.kinds[state.site.Kind], n: n}
	b.cols = make([]bcol, len(b.ks.cols))
	read := func(size int) ([]byte, error) {
		raw, err := sr.next(size)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return raw, err
	}
	raw, err := read(16 * n)
	if err != nil {
		return nil, err
	}
	b.keys = append([]byte(nil), raw...)
	b.hash = make([]uint64, n)
	for i := range n {
		b.hash[i] = hash(r.seed, b.keys[16*i:16*i+16])
	}
	bits := func() ([]bool, error) {
		raw, err := read((n + 7) / 8)
		if err != nil {
			return nil, err
		}
		out := make([]bool, n)
		for i := range out {
			out[i] = raw[i/8]&(1<<(i%8)) != 0
		}
		return out, nil
	}
	u32s := func(k int) ([]int32, error) {
		raw, err := read(4 * k)
		if err != nil {
			return nil, err
		}
		out := make([]int32, k)
		for i := range out {
			out[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return out, nil
	}
	for i := 1; i < len(b.ks.cols); i++ {
		c := &b.cols[i]
		flag, err := read(1)
		if err != nil {
			return nil, err
		}
		if flag[0] == 1 {
			if c.valid, err = bits(); err != nil {
				return nil, err
			}
		}
		switch b.ks.cols[i].field.Type {
		case catalog.FieldInt64, catalog.FieldFloat64:
			raw, err := read(8 * n)
			if err != nil {
				return nil, err
			}
			if b.ks.cols[i].field.Type == catalog.FieldInt64 {
				c.i64 = make([]int64, n)
				for j := range c.i64 {
					c.i64[j] = int64(binary.LittleEndian.Uint64(raw[8*j:]))
				}
			} else {
				c.f64 = make([]float64, n)
				for j := range c.f64 {
					c.f64[j] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*j:]))
				}
			}
		case catalog.FieldBool:
			c.b, err = bits()
		case catalog.FieldDay:
			c.i32, err = u32s(n)
		case catalog.FieldString:
			c.codes, err = u32s(n)
		case catalog.FieldDays:
			var lens []int32
			if lens, err = u32s(n); err != nil {
				return nil, err
			}
			c.offs = make([]int32, n+1)
			for j, l := range lens {
				c.offs[j+1] = c.offs[j] + l
			}
			c.i32, err = u32s(int(c.offs[n]))
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// spilledTables evaluates the spilled partitions: each is rebuilt from
// its file, evaluated and dropped, as many at once as the budget left by
// the partitions in memory allows (at least one).
func (r *Run) spilledTables(ctx context.Context, evs []*evaluator, st *Stats) error {
	s := r.spill
	var spilled []int
	var largest int64
	for i, p := range r.parts {
		if p.spill != nil {
			if p.spill.f == nil {
				return p.spill.err
			}
			spilled = append(spilled, i)
			if fi, err := p.spill.f.Stat(); err == nil {
				largest = max(largest, fi.Size())
			}
		}
	}
	if len(spilled) == 0 {
		return nil
	}
	// A rebuilt partition takes about twice its file: the slots and the
	// growth of its slices. As many are read back at once as fit in what
	// the budget has left, or in an eighth of it (a partition's share by
	// design) when it is full: one core rebuilding every spilled partition
	// in turn would make the run's end the slowest part of it.
	workers := 1
	if largest > 0 {
		room := max(s.budget-s.inMemory.Load(), s.budget/8)
		workers = int(max(1, min(int64(runtime.GOMAXPROCS(0)), room/(2*largest+spillBuffer))))
	}
	errs := make([]error, len(spilled))
	dups := make([]int64, len(spilled))
	patients := make([]int64, len(spilled))
	forEach(len(spilled), workers, 0, func(i int) {
		idx := spilled[i]
		p, d, err := r.load(ctx, idx, r.parts[idx].spill)
		if err != nil {
			errs[i] = err
			return
		}
		evs[idx], errs[i] = r.evaluate(ctx, p)
		dups[i], patients[i] = d, int64(len(p.keys))
	})
	for i := range spilled {
		if errs[i] != nil {
			return errs[i]
		}
		st.DuplicateRegistrations += dups[i]
		st.Patients += patients[i]
	}
	return nil
}

// budgetPartitions is the number of partitions of a run with a memory
// budget: more than the cores, so that a partition is a small part of the
// budget and spilling one frees just what is needed, and enough that an
// expected table of expected bytes has partitions of at most an eighth of
// the budget, so several fit when Table reads them back.
func budgetPartitions(budget, expected int64) int {
	n := max(4*runtime.GOMAXPROCS(0), 64)
	if expected > 0 {
		n = max(n, int(min(expected/max(budget/8, 1), 1<<12))+1)
	}
	return min(n, 1<<12)
}

// patientBytes estimates the memory of one patient in the table: key,
// slots (at most half full), kinds, site chain, owner and every column.
func (r *Run) patientBytes() int64 {
	n := int64(16 + 24 + 1 + 4 + 4 + 8)
	for _, st := range r.layout {
		switch st.typ {
		case catalog.FieldInt64, catalog.FieldFloat64:
			n += 8
		case catalog.FieldBool:
			n++
		case catalog.FieldString:
			n += 4
		case catalog.FieldDay:
			n += 8
		case catalog.FieldDays:
			n += 4 + 12 + 8 // head, a chunk and a couple of days
		}
		switch st.combine {
		case catalog.CombineOnce, catalog.CombineMin, catalog.CombineMax:
			n++
		}
	}
	return n
}
