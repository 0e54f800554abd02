package linkage_test

// Synthetic uploads for the reference definitions, and a brute-force
// computation of the expected table from the same rows. The brute force
// shares no code with the package: it works on plain maps, row by row,
// following the catalogue's definitions of each variable and measure.

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/policy/catalog"
)

func loadCatalog(t testing.TB) *catalog.Catalog {
	t.Helper()
	c, err := catalog.Load(os.DirFS("../../policy/bundle"))
	if err != nil {
		t.Fatalf("load bundle: %v", err)
	}
	return c
}

// fixture is one definition, planned and bound with its defaults.
type fixture struct {
	def   *catalog.Definition
	plan  *catalog.Plan
	bound *catalog.Bound
}

func newFixture(t testing.TB, c *catalog.Catalog, id string) fixture {
	t.Helper()
	d, ok := c.Get(id)
	if !ok {
		t.Fatalf("no definition %s", id)
	}
	b, err := d.Bind(nil)
	if err != nil {
		t.Fatalf("bind %s: %v", id, err)
	}
	return fixture{def: d, plan: d.Plan(), bound: b}
}

func (f fixture) newRun(t testing.TB, opts linkage.Options) *linkage.Run {
	t.Helper()
	r, err := linkage.New(f.plan, f.def, f.bound, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// row is one row a site sends: values by field name, nil for null.
type row map[string]any

// upload is everything one site sends.
type upload struct {
	site linkage.Site
	rows []row
}

var (
	practiceCodes = []string{"A81001", "A81002", "B82003", "C83004"}
	trustCodes    = []string{"RXA", "RXB", "RXC"}
)

func pseudo(rng *rand.Rand) [16]byte {
	var k [16]byte
	for i := range k {
		k[i] = byte(rng.UintN(256))
	}
	return k
}

// heldBy says which kind of site derives a variable: hospital tables at
// trusts, everything else where the population is evaluated.
func heldBy(v *catalog.Variable, pop cdm.SiteKind) cdm.SiteKind {
	t, _ := cdm.Lookup(v.Expr.Table())
	if !t.HeldByKind(pop) {
		return t.HeldBy[0]
	}
	return pop
}

// Days are drawn from small ranges, well inside every window, so that
// first days at different trusts tie and readmissions happen.
const (
	maxFirstDay = 6
	maxListDay  = 60
)

// genValue draws a value for field f of variable v at a site.
func genValue(rng *rand.Rand, f catalog.Field, v *catalog.Variable, ods string) any {
	if f.Nullable && rng.IntN(6) == 0 {
		return nil
	}
	switch x := v.Expr.(type) {
	case *catalog.AgeBandVar:
		bands := x.Bands()
		return bands[rng.IntN(len(bands))].Label
	case *catalog.ColumnVar:
		if x.Column == cdm.ColSex {
			return cdm.SexValues()[rng.IntN(4)]
		}
		return practiceCodes[rng.IntN(len(practiceCodes))]
	case *catalog.PracticeVar:
		return ods
	case *catalog.AgeVar:
		return int64(18 + rng.IntN(80))
	case *catalog.CountVar:
		return int64(rng.IntN(4))
	case *catalog.ExistsVar:
		return rng.IntN(3) == 0
	case *catalog.LatestVar:
		return 60 + float64(rng.IntN(800))/4 // quarters: every sum is exact
	case *catalog.FirstTrustVar:
		return int32(rng.IntN(maxFirstDay + 1))
	case *catalog.ReadmissionsVar:
		n := rng.IntN(4)
		days := make([]int32, n)
		for i := range days {
			days[i] = int32(rng.IntN(maxListDay + 1))
		}
		slices.Sort(days)
		return days
	}
	panic(fmt.Sprintf("no generator for %T", v.Expr))
}

// genLinkage draws patient rows for a linkage plan: a GP population at
// several practices (a tenth of the patients are seen only at trusts), or
// a hospital population; each patient at each trust with probability 0.4.
func genLinkage(rng *rand.Rand, f fixture, patients int) []upload {
	keys := make([][16]byte, patients)
	for i := range keys {
		keys[i] = pseudo(rng)
	}
	rowsBy := map[string][]row{}
	sites := map[string]linkage.Site{}
	for _, task := range f.plan.Tasks {
		codes := trustCodes
		if task.Kind == cdm.KindGP {
			codes = practiceCodes
		}
		for i, k := range keys {
			var at []string
			if task.Kind == cdm.KindGP {
				if i%10 == 0 {
					continue
				}
				at = []string{codes[rng.IntN(len(codes))]}
			} else {
				for _, c := range codes {
					if rng.Float64() < 0.4 {
						at = append(at, c)
					}
				}
			}
			for _, ods := range at {
				r := row{catalog.FieldNamePseudonym: k}
				for _, fld := range task.Fields[1:] {
					if fld.Role == catalog.RolePopulation {
						r[fld.Name] = rng.Float64() < 0.7
						continue
					}
					v, _ := f.def.Variable(fld.Source)
					r[fld.Name] = genValue(rng, fld, v, ods)
				}
				sites[ods] = linkage.Site{ODS: ods, Kind: task.Kind}
				rowsBy[ods] = append(rowsBy[ods], r)
			}
		}
	}
	var ups []upload
	for _, ods := range slices.Sorted(maps.Keys(sites)) {
		ups = append(ups, upload{site: sites[ods], rows: rowsBy[ods]})
	}
	return ups
}

// patientVals is one patient's variables: string, float64 or nil.
type patientVals map[string]any

// genAggregate draws patients at each practice and returns the cells the
// practices send, computed as a node would, and the patients themselves.
func genAggregate(rng *rand.Rand, f fixture, perPractice int) ([]upload, []patientVals) {
	var ups []upload
	var all []patientVals
	for _, ods := range practiceCodes {
		var pats []patientVals
		for range perPractice {
			p := patientVals{}
			for _, v := range f.def.Variables {
				fld := catalog.Field{Nullable: v.Expr.Type() == catalog.TypeFloat}
				val := genValue(rng, fld, v, ods)
				switch x := val.(type) {
				case int64:
					p[v.Name] = float64(x)
				case bool:
					if v.Expr.Type() == catalog.TypeBool && !slices.Contains(f.def.GroupBy, v.Name) {
						p[v.Name] = b2f(x)
					} else {
						p[v.Name] = x
					}
				default:
					p[v.Name] = val
				}
			}
			pats = append(pats, p)
		}
		all = append(all, pats...)
		ups = append(ups, upload{site: linkage.Site{ODS: ods, Kind: cdm.KindGP}, rows: practiceCells(f, pats)})
	}
	return ups, all
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// practiceCells computes one practice's cells with the catalogue's
// partials: count, sum, n (contributors: a sum's non-zero values, other
// measures' non-null values), min, max, top (a sum's largest non-zero
// value).
func practiceCells(f fixture, pats []patientVals) []row {
	task := f.plan.Tasks[0]
	groups := map[string][]patientVals{}
	var order []string
	for _, p := range pats {
		k := groupKey(f.def, p)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], p)
	}
	var rows []row
	for _, k := range order {
		ps := groups[k]
		r := row{}
		for _, g := range f.def.GroupBy {
			r[g] = ps[0][g]
		}
		for _, m := range f.def.Measures {
			var vals []float64
			count := int64(0)
			for _, p := range ps {
				if !holds(f, m.Where, p) {
					continue
				}
				count++
				if m.Of != "" {
					v, ok := p[m.Of].(float64)
					if ok && (m.Agg != catalog.AggSum || v != 0) {
						vals = append(vals, v)
					}
				}
			}
			if m.Agg == catalog.AggCount {
				r[m.Name] = count
				continue
			}
			isInt := f.def.Variables[slices.IndexFunc(f.def.Variables, func(v *catalog.Variable) bool { return v.Name == m.Of })].Expr.Type() != catalog.TypeFloat
			num := func(v float64) any {
				if isInt {
					return int64(v)
				}
				return v
			}
			var sum float64
			for _, v := range vals {
				sum += v
			}
			r[m.Name+"__n"] = int64(len(vals))
			r[m.Name+"__sum"] = num(sum)
			var lo, hi any
			if len(vals) > 0 {
				lo, hi = num(slices.Min(vals)), num(slices.Max(vals))
			}
			r[m.Name+"__min"], r[m.Name+"__max"], r[m.Name+"__top"] = lo, hi, hi
		}
		// Keep only the fields the plan has.
		out := row{}
		for _, fld := range task.Fields {
			out[fld.Name] = r[fld.Name]
		}
		rows = append(rows, out)
	}
	return rows
}

// groupKey joins a patient's group values; bools print as true/false, a
// null as the empty string.
func groupKey(d *catalog.Definition, p patientVals) string {
	parts := make([]string, len(d.GroupBy))
	for i, g := range d.GroupBy {
		switch v := p[g].(type) {
		case nil:
			parts[i] = ""
		case bool:
			parts[i] = fmt.Sprint(v)
		default:
			parts[i] = fmt.Sprint(v)
		}
	}
	return strings.Join(parts, "|")
}

// holds evaluates a where: every comparison must hold, and a null (or
// non-number) fails it.
func holds(f fixture, c *catalog.Cond, p patientVals) bool {
	if c == nil {
		return true
	}
	for _, term := range c.Terms {
		v, ok := p[term.Var].(float64)
		if !ok {
			return false
		}
		x := f.bound.Number(term.Value)
		var r bool
		switch term.Op {
		case catalog.OpLT:
			r = v < x
		case catalog.OpLE:
			r = v <= x
		case catalog.OpGT:
			r = v > x
		case catalog.OpGE:
			r = v >= x
		case catalog.OpEQ:
			r = v == x
		case catalog.OpNE:
			r = v != x
		}
		if !r {
			return false
		}
	}
	return true
}

// expCell is the expected content of one cell.
type expCell struct {
	count    []int64
	n        []int64
	sum      []float64
	contribs [][]float64 // every contribution, to be sorted
	min, max []float64
}

// expect aggregates patients into cells. In either mode a sum's
// contributors are its non-zero values, and those of other measures their
// non-null values.
func expect(f fixture, pats []patientVals) map[string]*expCell {
	out := map[string]*expCell{}
	nm := len(f.def.Measures)
	for _, p := range pats {
		k := groupKey(f.def, p)
		c := out[k]
		if c == nil {
			c = &expCell{count: make([]int64, nm), n: make([]int64, nm), sum: make([]float64, nm),
				contribs: make([][]float64, nm), min: make([]float64, nm), max: make([]float64, nm)}
			out[k] = c
		}
		for j, m := range f.def.Measures {
			if !holds(f, m.Where, p) {
				continue
			}
			if m.Agg == catalog.AggCount {
				c.count[j]++
				continue
			}
			v, ok := p[m.Of].(float64)
			if !ok {
				continue
			}
			if m.Agg == catalog.AggSum && v == 0 {
				continue
			}
			if c.n[j] == 0 || v < c.min[j] {
				c.min[j] = v
			}
			if c.n[j] == 0 || v > c.max[j] {
				c.max[j] = v
			}
			c.n[j]++
			c.sum[j] += v
			c.contribs[j] = append(c.contribs[j], v)
		}
	}
	for _, c := range out {
		for j := range c.contribs {
			slices.SortFunc(c.contribs[j], func(a, b float64) int { return cmp.Compare(b, a) })
		}
	}
	return out
}

// linkPatients combines linkage uploads into per-patient variables, by
// brute force: every site's rows for a pseudonym, combined by the rules
// the catalogue gives for each kind of variable. It returns the patients
// in the population.
func linkPatients(f fixture, ups []upload) []patientVals {
	type seen struct {
		gp        row
		gpODS     string
		trustRows []row
		trustODS  []string
	}
	byKey := map[[16]byte]*seen{}
	var order [][16]byte
	for _, u := range ups {
		for _, r := range u.rows {
			k := r[catalog.FieldNamePseudonym].([16]byte)
			s := byKey[k]
			if s == nil {
				s = &seen{}
				byKey[k] = s
				order = append(order, k)
			}
			if u.site.Kind == cdm.KindGP {
				if s.gp == nil || u.site.ODS < s.gpODS {
					s.gp, s.gpODS = r, u.site.ODS
				}
			} else {
				s.trustRows = append(s.trustRows, r)
				s.trustODS = append(s.trustODS, u.site.ODS)
			}
		}
	}
	pop := f.plan.Population
	var out []patientVals
	for _, k := range order {
		s := byKey[k]
		if pop == cdm.KindGP && s.gp == nil {
			continue
		}
		if pop == cdm.KindTrust {
			in := false
			for _, r := range s.trustRows {
				in = in || r[catalog.FieldNameInPopulation].(bool)
			}
			if !in {
				continue
			}
		}
		p := patientVals{}
		for _, v := range f.def.Variables {
			if heldBy(v, pop) == cdm.KindGP {
				switch x := s.gp[v.Name].(type) {
				case int64:
					p[v.Name] = float64(x)
				case bool:
					p[v.Name] = b2f(x)
				default:
					p[v.Name] = x
				}
				continue
			}
			switch x := v.Expr.(type) {
			case *catalog.CountVar:
				total := 0.0
				for _, r := range s.trustRows {
					total += float64(r[v.Name].(int64))
				}
				p[v.Name] = total
			case *catalog.ExistsVar:
				any := false
				for _, r := range s.trustRows {
					any = any || r[v.Name].(bool)
				}
				p[v.Name] = b2f(any)
			case *catalog.FirstTrustVar:
				best, bestODS := int32(math.MaxInt32), ""
				for i, r := range s.trustRows {
					d, ok := r[v.Name+"__first_day"].(int32)
					if ok && (d < best || (d == best && s.trustODS[i] < bestODS)) {
						best, bestODS = d, s.trustODS[i]
					}
				}
				if bestODS != "" {
					p[v.Name] = bestODS
				}
			case *catalog.ReadmissionsVar:
				within := int32(f.bound.Int(x.WithinDays))
				var dis, adm []int32
				for _, r := range s.trustRows {
					dis = append(dis, r[v.Name+"__discharge_days"].([]int32)...)
					adm = append(adm, r[v.Name+"__admission_days"].([]int32)...)
				}
				n := 0
				for _, a := range adm {
					for _, d := range dis {
						if d < a && a <= d+within {
							n++
							break
						}
					}
				}
				p[v.Name] = float64(n)
			default:
				panic(fmt.Sprintf("brute force: no rule for trust variable %T", v.Expr))
			}
		}
		out = append(out, p)
	}
	return out
}

// records cuts an upload into record batches of random sizes.
func records(t testing.TB, rng *rand.Rand, mem memory.Allocator, schema *arrow.Schema, rows []row) []arrow.Record {
	t.Helper()
	var out []arrow.Record
	for len(rows) > 0 {
		n := 1 + rng.IntN(len(rows)/2+1)
		out = append(out, buildRecord(t, mem, schema, rows[:n]))
		rows = rows[n:]
	}
	return out
}

// buildRecord builds one record of rows under schema.
func buildRecord(t testing.TB, mem memory.Allocator, schema *arrow.Schema, rows []row) arrow.Record {
	t.Helper()
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	for _, r := range rows {
		for i, fld := range schema.Fields() {
			v, fb := r[fld.Name], b.Field(i)
			if v == nil {
				fb.AppendNull()
				continue
			}
			switch fb := fb.(type) {
			case *array.FixedSizeBinaryBuilder:
				k := v.([16]byte)
				fb.Append(k[:])
			case *array.StringBuilder:
				fb.Append(v.(string))
			case *array.Int64Builder:
				fb.Append(v.(int64))
			case *array.Float64Builder:
				fb.Append(v.(float64))
			case *array.BooleanBuilder:
				fb.Append(v.(bool))
			case *array.Int32Builder:
				fb.Append(v.(int32))
			case *array.ListBuilder:
				fb.Append(true)
				vb := fb.ValueBuilder().(*array.Int32Builder)
				for _, d := range v.([]int32) {
					vb.Append(d)
				}
			default:
				t.Fatalf("no builder for %s", fld.Type)
			}
		}
	}
	return b.NewRecord()
}
