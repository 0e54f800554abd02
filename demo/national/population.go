package national

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/policy/catalog"
	"github.com/havenhealth/haven/synth"
)

// nationalPopulation is England's registered population, which the
// practices' list sizes are drawn for before they are scaled to the
// population being simulated.
const nationalPopulation = 60_000_000

// population is a generated national population that is never held in
// memory: patient id's attributes are a pure function of (seed, id), so a
// simulated site computes its patients when a task asks, and the bench
// computes the true answer by going over them again. That is what lets
// one small process stand in for 60 million patients.
//
// Practices are sized by the synthesiser's model (synth.ListSizes, drawn
// for England and scaled to the population simulated) and use the trusts
// it gives them (synth.PracticeTrusts): four in ten patients were
// admitted as an emergency, to their practice's main trust or, near a
// boundary, its second.
type population struct {
	seed uint64
	// first[p] is the id of practice p's first patient; first[len(first)-1]
	// is the population's size.
	first  []int64
	trusts [][]int   // by practice: the trusts it uses, nearest first
	share  []float64 // by practice: the share whose main trust is trusts[0]
	// catchment lists, by trust, the practices whose patients it may
	// have admitted.
	catchment [][]int
}

// patient is one generated patient.
type patient struct {
	age          int // whole years on the index date, 18 to 95
	sex          string
	statinIssues int64
	trust        int   // trust admitted to, or -1
	admissions   int64 // emergency admissions there
}

var sexes = [...]string{"F", "M", "U"}

// newPopulation lays out size patients over practices practices and
// trusts trusts.
func newPopulation(seed uint64, practices, trusts int, size int64) *population {
	sizes := synth.ListSizes(seed, practices, nationalPopulation)
	var total int64
	for _, s := range sizes {
		total += int64(s)
	}
	pop := &population{seed: seed, first: make([]int64, practices+1), trusts: make([][]int, practices),
		share: make([]float64, practices), catchment: make([][]int, trusts)}
	// Scale the national lists to size, keeping their skew: practice p's
	// list ends where the cumulative national share says.
	var cum int64
	for p, s := range sizes {
		cum += int64(s)
		pop.first[p+1] = int64(math.Round(float64(cum) / float64(total) * float64(size)))
		if trusts > 0 {
			pop.trusts[p], pop.share[p] = synth.PracticeTrusts(p, practices, trusts)
			for _, t := range pop.trusts[p] {
				pop.catchment[t] = append(pop.catchment[t], p)
			}
		}
	}
	return pop
}

// listSize is practice p's number of patients.
func (pop *population) listSize(p int) int64 { return pop.first[p+1] - pop.first[p] }

// patient returns patient id of practice p.
func (pop *population) patient(p int, id int64) patient {
	h := synth.Mix64(pop.seed ^ uint64(id)*0x9e3779b97f4a7c15)
	next := func(n uint64) uint64 {
		v := h % n
		h = synth.Mix64(h + 0x9e3779b97f4a7c15)
		return v
	}
	pt := patient{age: 18 + int(next(78)), sex: sexes[next(2)], trust: -1}
	if next(50) == 0 {
		pt.sex = "U"
	}
	if next(10) >= 4 {
		pt.statinIssues = 1 + int64(next(12))
	}
	if ts := pop.trusts[p]; len(ts) > 0 && next(10) >= 6 {
		pt.trust = ts[0]
		if len(ts) > 1 && float64(next(1000))/1000 >= pop.share[p] {
			pt.trust = ts[1]
		}
		pt.admissions = 1 + int64(next(3))
	}
	return pt
}

// pseudonymKeys derives the simulator's pseudonym keys for a run.
func pseudonymKeys(runID string) (uint64, uint64) {
	k := sha256.Sum256([]byte("national bench pseudonyms\x00" + runID))
	return binary.BigEndian.Uint64(k[:8]), binary.BigEndian.Uint64(k[8:16])
}

// pseudonym is patient id's run pseudonym. Nodes derive theirs with a
// keyed HMAC of the NHS number (whose cost the node's own benchmarks
// measure); the coordinator needs only that they are uniform and unique
// within the run, which two keyed bijections of the id give at a few
// nanoseconds a patient, so the simulator does not compete with the
// coordinator it measures for the CPU.
func pseudonym(dst []byte, k1, k2 uint64, id int64) {
	binary.BigEndian.PutUint64(dst[:8], synth.Mix64(k1^uint64(id)))
	binary.BigEndian.PutUint64(dst[8:16], synth.Mix64(k2+uint64(id)))
}

// ageBands maps an age to its band's label in def's age_band variable.
func ageBands(def *catalog.Definition) ([]string, error) {
	v, ok := def.Variable("age_band")
	if !ok {
		return nil, fmt.Errorf("definition %s has no age_band", def.ID)
	}
	ab, ok := v.Expr.(*catalog.AgeBandVar)
	if !ok {
		return nil, fmt.Errorf("age_band of %s is not an age band", def.ID)
	}
	out := make([]string, 120)
	for age := range out {
		for _, b := range ab.Bands() {
			if int64(age) >= b.Min && (b.Max < 0 || int64(age) <= b.Max) {
				out[age] = b.Label
			}
		}
	}
	return out, nil
}

// maxBatchRows bounds the rows of one record batch a simulated site
// sends, as a node's connector does.
const maxBatchRows = 64 * 1024

// recordWriter builds record batches of at most maxBatchRows rows.
type recordWriter struct {
	schema *arrow.Schema
	b      *array.RecordBuilder
	rows   int
	out    []arrow.Record
}

func newRecordWriter(schema *arrow.Schema) *recordWriter {
	return &recordWriter{schema: schema, b: array.NewRecordBuilder(memory.DefaultAllocator, schema)}
}

// row counts a row appended to w.b, cutting a batch when it is full.
func (w *recordWriter) row() {
	if w.rows++; w.rows == maxBatchRows {
		w.cut()
	}
}

func (w *recordWriter) cut() {
	if w.rows > 0 {
		w.out = append(w.out, w.b.NewRecord())
		w.rows = 0
	}
}

func (w *recordWriter) records() []arrow.Record {
	w.cut()
	w.b.Release()
	return w.out
}

// practiceRows is practice p's answer to t2dm-emergency-admissions: a row
// per patient under the run pseudonym, with age band and sex.
func (pop *population) practiceRows(p int, schema *arrow.Schema, bands []string, runID string) []arrow.Record {
	k1, k2 := pseudonymKeys(runID)
	w := newRecordWriter(schema)
	ps := w.b.Field(0).(*array.FixedSizeBinaryBuilder)
	ab := w.b.Field(1).(*array.StringBuilder)
	sx := w.b.Field(2).(*array.StringBuilder)
	var buf [catalog.PseudonymBytes]byte
	for id := pop.first[p]; id < pop.first[p+1]; id++ {
		pt := pop.patient(p, id)
		pseudonym(buf[:], k1, k2, id)
		ps.Append(buf[:])
		ab.Append(bands[pt.age])
		sx.Append(pt.sex)
		w.row()
	}
	return w.records()
}

// trustRows is trust t's answer to t2dm-emergency-admissions: a row per
// patient it admitted, under the run pseudonym, with the count.
func (pop *population) trustRows(t int, schema *arrow.Schema, runID string) []arrow.Record {
	k1, k2 := pseudonymKeys(runID)
	w := newRecordWriter(schema)
	ps := w.b.Field(0).(*array.FixedSizeBinaryBuilder)
	n := w.b.Field(1).(*array.Int64Builder)
	var buf [catalog.PseudonymBytes]byte
	pop.admitted(t, func(id int64, pt patient) {
		pseudonym(buf[:], k1, k2, id)
		ps.Append(buf[:])
		n.Append(pt.admissions)
		w.row()
	})
	return w.records()
}

// admitted calls f for every patient admitted to trust t.
func (pop *population) admitted(t int, f func(id int64, pt patient)) {
	for _, p := range pop.catchment[t] {
		for id := pop.first[p]; id < pop.first[p+1]; id++ {
			if pt := pop.patient(p, id); pt.trust == t {
				f(id, pt)
			}
		}
	}
}

// trustRowCount is the number of patients trust t admitted.
func (pop *population) trustRowCount(t int) int64 {
	var n int64
	pop.admitted(t, func(int64, patient) { n++ })
	return n
}

// statinCell is one (age band, sex) group of a practice's statins-chd
// answer.
type statinCell struct{ patients, onStatin, sum, n, top int64 }

// statinCells is practice p's statins-chd cells.
func (pop *population) statinCells(p int, bands []string) map[[2]string]*statinCell {
	cells := map[[2]string]*statinCell{}
	for id := pop.first[p]; id < pop.first[p+1]; id++ {
		pt := pop.patient(p, id)
		k := [2]string{bands[pt.age], pt.sex}
		c := cells[k]
		if c == nil {
			c = &statinCell{}
			cells[k] = c
		}
		c.patients++
		// A sum's n and top count its contributors: the patients who
		// add something to it (catalog.Partial).
		if pt.statinIssues > 0 {
			c.onStatin++
			c.sum += pt.statinIssues
			c.n++
			c.top = max(c.top, pt.statinIssues)
		}
	}
	return cells
}

// statinRows is practice p's answer to statins-chd, without cell keys
// (the bench's bundle has perturbation off, as coordinatortest's does).
func (pop *population) statinRows(p int, schema *arrow.Schema, bands []string) ([]arrow.Record, error) {
	cells := pop.statinCells(p, bands)
	keys := slices.Collect(maps.Keys(cells))
	slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	w := newRecordWriter(schema)
	for _, k := range keys {
		c := cells[k]
		for f, field := range schema.Fields() {
			switch field.Name {
			case "age_band":
				w.b.Field(f).(*array.StringBuilder).Append(k[0])
			case "sex":
				w.b.Field(f).(*array.StringBuilder).Append(k[1])
			case "patients":
				w.b.Field(f).(*array.Int64Builder).Append(c.patients)
			case "on_statin":
				w.b.Field(f).(*array.Int64Builder).Append(c.onStatin)
			case "statin_issues__sum":
				w.b.Field(f).(*array.Int64Builder).Append(c.sum)
			case "statin_issues__n":
				w.b.Field(f).(*array.Int64Builder).Append(c.n)
			case "statin_issues__top":
				if c.n == 0 {
					w.b.Field(f).(*array.Int64Builder).AppendNull()
				} else {
					w.b.Field(f).(*array.Int64Builder).Append(c.top)
				}
			default:
				w.b.Release()
				return nil, fmt.Errorf("statins-chd: unexpected field %s (does the task ask for cell keys?)", field.Name)
			}
		}
		w.row()
	}
	return w.records(), nil
}

// Truth is a question answered centrally over the generated population,
// before disclosure control: by cell (age band, sex), each measure's
// value and, for a sum, the number of patients who add to it.
type Truth map[[2]string]*TrueCell

// TrueCell is one cell of a Truth.
type TrueCell struct {
	Values map[string]float64
	N      map[string]int64
}

func (t Truth) cell(band, sex string) *TrueCell {
	k := [2]string{band, sex}
	c := t[k]
	if c == nil {
		c = &TrueCell{Values: map[string]float64{}, N: map[string]int64{}}
		t[k] = c
	}
	return c
}

// Total adds measure up over every cell.
func (t Truth) Total(measure string) float64 {
	var sum float64
	for _, c := range t {
		sum += c.Values[measure]
	}
	return sum
}

// statinsTruth is statins-chd answered centrally over the practices in
// (all when nil).
func (pop *population) statinsTruth(bands []string, in func(p int) bool) Truth {
	tt := Truth{}
	for p := range len(pop.first) - 1 {
		if in != nil && !in(p) {
			continue
		}
		for k, c := range pop.statinCells(p, bands) {
			cell := tt.cell(k[0], k[1])
			cell.Values["patients"] += float64(c.patients)
			cell.Values["on_statin"] += float64(c.onStatin)
			cell.Values["statin_issues"] += float64(c.sum)
			cell.N["statin_issues"] += c.n
		}
	}
	return tt
}

// t2dmTruth is t2dm-emergency-admissions answered centrally: the patients
// of the practices in (all when nil) and their admissions at the trusts
// in (all when nil).
func (pop *population) t2dmTruth(bands []string, practiceIn, trustIn func(int) bool) Truth {
	type cell struct{ patients, admitted, admissions int64 }
	cells := map[[2]string]*cell{}
	for p := range len(pop.first) - 1 {
		if practiceIn != nil && !practiceIn(p) {
			continue
		}
		for id := pop.first[p]; id < pop.first[p+1]; id++ {
			pt := pop.patient(p, id)
			k := [2]string{bands[pt.age], pt.sex}
			c := cells[k]
			if c == nil {
				c = &cell{}
				cells[k] = c
			}
			c.patients++
			if pt.trust >= 0 && (trustIn == nil || trustIn(pt.trust)) {
				c.admitted++
				c.admissions += pt.admissions
			}
		}
	}
	tt := Truth{}
	for k, c := range cells {
		cell := tt.cell(k[0], k[1])
		cell.Values["patients"] = float64(c.patients)
		cell.Values["admitted"] = float64(c.admitted)
		// Every patient admitted adds to the sum: they are its n.
		cell.Values["admissions"] = float64(c.admissions)
		cell.N["admissions"] = c.admitted
	}
	return tt
}
