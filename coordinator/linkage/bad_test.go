package linkage_test

import (
	"context"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/linkage"
)

// alter returns a copy of schema with its fields changed by fn, keeping
// the metadata.
func alter(schema *arrow.Schema, fn func([]arrow.Field) []arrow.Field) *arrow.Schema {
	md := schema.Metadata()
	return arrow.NewSchema(fn(slices.Clone(schema.Fields())), &md)
}

func withMetadata(schema *arrow.Schema, key, value string) *arrow.Schema {
	md := schema.Metadata()
	vals := slices.Clone(md.Values())
	vals[md.FindKey(key)] = value
	nmd := arrow.NewMetadata(md.Keys(), vals)
	return arrow.NewSchema(schema.Fields(), &nmd)
}

var (
	k1 = [16]byte{1}
	k2 = [16]byte{2}
	k3 = [16]byte{3}
)

// TestBadInput sends one bad batch after good ones, for each kind of
// mistake: Add must reject it with an error that names the site and the
// field, and the run must be exactly as it was.
func TestBadInput(t *testing.T) {
	c := loadCatalog(t)
	link := newFixture(t, c, "t2dm-emergency-admissions")
	readm := newFixture(t, c, "emergency-readmissions-30d")
	agg := newFixture(t, c, "statins-chd")
	bp := newFixture(t, c, "bp-control-hypertension")

	gp := linkage.Site{ODS: "A81001", Kind: cdm.KindGP}
	gp2 := linkage.Site{ODS: "A81002", Kind: cdm.KindGP}
	rxa := linkage.Site{ODS: "RXA", Kind: cdm.KindTrust}
	gpSchema, _ := link.plan.Schema(cdm.KindGP)
	trustSchema, _ := link.plan.Schema(cdm.KindTrust)
	readmSchema, _ := readm.plan.Schema(cdm.KindTrust)
	aggSchema, _ := agg.plan.Schema(cdm.KindGP)
	bpSchema, _ := bp.plan.Schema(cdm.KindGP)

	good := map[string][]batchRows{
		link.def.ID: {
			{gp, gpSchema, []row{{"pseudonym": k1, "age_band": "50-59", "sex": "M"}, {"pseudonym": k2, "age_band": "40-49", "sex": "F"}}},
			{rxa, trustSchema, []row{{"pseudonym": k1, "emergency_admissions": int64(2)}, {"pseudonym": k3, "emergency_admissions": int64(1)}}},
		},
		readm.def.ID: {
			{rxa, readmSchema, []row{readmRow(k1, []int32{3}, []int32{10}, int32(3))}},
		},
		agg.def.ID: {
			{gp, aggSchema, []row{aggRow("50-64", "F", 10, 4, 9, 4, 5)}},
		},
		bp.def.ID: {
			{gp, bpSchema, []row{{"practice": "A81001", "age_band": "40-59", "patients": int64(12), "measured": int64(10), "controlled": int64(6),
				"mean_sbp__sum": 1402.5, "mean_sbp__n": int64(10)}}},
		},
	}

	gpRow := func(k [16]byte) row { return row{"pseudonym": k, "age_band": "50-59", "sex": "M"} }
	tests := []struct {
		name   string
		f      fixture
		site   linkage.Site
		schema *arrow.Schema
		rows   []row
		rec    func(memory.Allocator) arrow.Record // instead of schema and rows
		want   []string                            // in the error, besides the site's ODS code
	}{
		{name: "field renamed", f: link, site: gp, schema: alter(gpSchema, func(fs []arrow.Field) []arrow.Field {
			fs[1].Name = "ageband"
			return fs
		}), rows: []row{{"pseudonym": k3, "ageband": "50-59", "sex": "M"}}, want: []string{"age_band", `"ageband"`}},
		{name: "wrong type", f: link, site: rxa, schema: alter(trustSchema, func(fs []arrow.Field) []arrow.Field {
			fs[1].Type = arrow.PrimitiveTypes.Int32
			return fs
		}), rows: []row{{"pseudonym": k2, "emergency_admissions": int32(1)}}, want: []string{"emergency_admissions", "int32"}},
		{name: "fields out of order", f: link, site: gp, schema: alter(gpSchema, func(fs []arrow.Field) []arrow.Field {
			fs[1], fs[2] = fs[2], fs[1]
			return fs
		}), rows: []row{gpRow(k3)}, want: []string{"age_band"}},
		{name: "nullable differs", f: link, site: gp, schema: alter(gpSchema, func(fs []arrow.Field) []arrow.Field {
			fs[2].Nullable = true
			return fs
		}), rows: []row{gpRow(k3)}, want: []string{"sex", "nullable"}},
		{name: "field missing", f: link, site: gp, schema: alter(gpSchema, func(fs []arrow.Field) []arrow.Field {
			return fs[:2]
		}), rows: []row{gpRow(k3)}, want: []string{"sex", "missing"}},
		{name: "field added", f: link, site: gp, schema: alter(gpSchema, func(fs []arrow.Field) []arrow.Field {
			return append(fs, arrow.Field{Name: "postcode", Type: arrow.BinaryTypes.String})
		}), rows: []row{{"pseudonym": k3, "age_band": "50-59", "sex": "M", "postcode": "LS1 4AP"}}, want: []string{"postcode", "unexpected"}},
		{name: "other definition", f: link, site: gp, schema: withMetadata(gpSchema, "haven.definition.hash", "beef"),
			rows: []row{gpRow(k3)}, want: []string{"haven.definition.hash", "beef"}},
		{name: "null pseudonym", f: link, site: gp, schema: gpSchema,
			rows: []row{gpRow(k3), {"pseudonym": nil, "age_band": "50-59", "sex": "M"}}, want: []string{"pseudonym", "row 1", "null"}},
		{name: "null group value", f: link, site: gp, schema: gpSchema,
			rows: []row{{"pseudonym": k3, "age_band": "50-59", "sex": nil}}, want: []string{"sex", "row 0", "null"}},
		{name: "unknown sex", f: link, site: gp, schema: gpSchema,
			rows: []row{{"pseudonym": k3, "age_band": "50-59", "sex": "X"}}, want: []string{"sex", `"X"`}},
		{name: "unknown age band", f: link, site: gp, schema: gpSchema,
			rows: []row{{"pseudonym": k3, "age_band": "17-25", "sex": "F"}}, want: []string{"age_band", `"17-25"`}},
		{name: "negative count", f: link, site: rxa, schema: trustSchema,
			rows: []row{{"pseudonym": k2, "emergency_admissions": int64(-1)}}, want: []string{"emergency_admissions", "negative"}},
		{name: "huge count", f: link, site: rxa, schema: trustSchema,
			rows: []row{{"pseudonym": k2, "emergency_admissions": int64(1) << 50}}, want: []string{"emergency_admissions", "large"}},
		{name: "pseudonym twice in a batch", f: link, site: gp2, schema: gpSchema,
			rows: []row{gpRow(k3), gpRow([16]byte{9}), gpRow(k3)}, want: []string{"pseudonym", "row 2", "row 0"}},
		{name: "pseudonym sent in an earlier batch", f: link, site: gp, schema: gpSchema,
			rows: []row{gpRow(k3), gpRow(k1)}, want: []string{"pseudonym", "row 1", "earlier batch"}},
		{name: "site changes kind", f: link, site: linkage.Site{ODS: "RXA", Kind: cdm.KindGP}, schema: gpSchema,
			rows: []row{gpRow(k3)}, want: []string{"trust"}},
		{name: "site code not a code", f: link, site: linkage.Site{ODS: "A8 1001", Kind: cdm.KindGP}, schema: gpSchema,
			rows: []row{gpRow(k3)}, want: []string{"not a code"}},
		{name: "kind not in plan", f: agg, site: rxa, schema: trustSchema,
			rows: []row{{"pseudonym": k2, "emergency_admissions": int64(1)}}, want: []string{"trust sites take no part"}},
		{name: "no record", f: link, site: gp, rec: func(memory.Allocator) arrow.Record { return nil }, want: []string{"no record"}},
		{name: "string offsets out of range", f: link, site: gp, rec: func(mem memory.Allocator) arrow.Record {
			return malformed(t, mem, gpSchema)
		}, want: []string{"age_band", "offset 5 at index 2"}},
		{name: "short pseudonym buffer", f: link, site: gp, rec: func(mem memory.Allocator) arrow.Record {
			return shortKeys(t, mem, gpSchema)
		}, want: []string{"pseudonym", "buffer"}},

		{name: "day after the window", f: readm, site: rxa, schema: readmSchema,
			rows: []row{readmRow(k2, nil, nil, int32(366))}, want: []string{"trust__first_day", "366", "0 to 365"}},
		{name: "negative day", f: readm, site: rxa, schema: readmSchema,
			rows: []row{readmRow(k2, []int32{-1}, nil, int32(0))}, want: []string{"readmissions__discharge_days", "-1"}},
		{name: "admission after follow-up", f: readm, site: rxa, schema: readmSchema,
			rows: []row{readmRow(k2, nil, []int32{396}, int32(0))}, want: []string{"readmissions__admission_days", "0 to 395"}},
		{name: "days out of order", f: readm, site: rxa, schema: readmSchema,
			rows: []row{readmRow(k2, []int32{5, 3}, nil, int32(3))}, want: []string{"readmissions__discharge_days", "ascending"}},
		{name: "null day in a list", f: readm, site: rxa, rec: func(mem memory.Allocator) arrow.Record {
			return nullInList(t, mem, readmSchema)
		}, want: []string{"readmissions__admission_days", "null day"}},

		{name: "group twice in a batch", f: agg, site: gp2, schema: aggSchema,
			rows: []row{aggRow("50-64", "F", 3, 1, 1, 1, 1), aggRow("50-64", "F", 2, 1, 1, 1, 1)}, want: []string{"row 1", "group of row 0"}},
		{name: "group sent in an earlier batch", f: agg, site: gp, schema: aggSchema,
			rows: []row{aggRow("65-79", "F", 3, 1, 1, 1, 1), aggRow("50-64", "F", 2, 1, 1, 1, 1)}, want: []string{"row 1", "earlier batch"}},
		{name: "sum without values", f: agg, site: gp2, schema: aggSchema,
			rows: []row{aggRow("50-64", "F", 3, 0, 5, 0, nil)}, want: []string{"statin_issues__sum", "statin_issues__n is 0"}},
		{name: "top missing", f: agg, site: gp2, schema: aggSchema,
			rows: []row{aggRow("50-64", "F", 3, 2, 5, 2, nil)}, want: []string{"statin_issues__top", "null"}},
		{name: "top above sum", f: agg, site: gp2, schema: aggSchema,
			rows: []row{aggRow("50-64", "F", 3, 2, 5, 2, 7)}, want: []string{"statin_issues__top", "inconsistent"}},
		{name: "negative patients", f: agg, site: gp2, schema: aggSchema,
			rows: []row{aggRow("50-64", "F", -3, 2, 5, 2, 3)}, want: []string{"patients", "negative"}},
		{name: "unknown group value", f: agg, site: gp2, schema: aggSchema,
			rows: []row{aggRow("50-65", "F", 3, 2, 5, 2, 3)}, want: []string{"age_band", `"50-65"`}},
		{name: "not a number", f: bp, site: gp2, schema: bpSchema,
			rows: []row{{"practice": "A81002", "age_band": "40-59", "patients": int64(12), "measured": int64(10), "controlled": int64(6),
				"mean_sbp__sum": math.NaN(), "mean_sbp__n": int64(10)}}, want: []string{"mean_sbp__sum", "NaN"}},
		{name: "practice code not a code", f: bp, site: gp2, schema: bpSchema,
			rows: []row{{"practice": "A8\x001", "age_band": "40-59", "patients": int64(12), "measured": int64(10), "controlled": int64(6),
				"mean_sbp__sum": 1.5, "mean_sbp__n": int64(10)}}, want: []string{"practice", "not a code"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			r := tt.f.newRun(t, linkage.Options{Partitions: 2})
			for _, g := range good[tt.f.def.ID] {
				rec := buildRecord(t, mem, g.schema, g.rows)
				err := r.Add(context.Background(), g.site, rec)
				rec.Release()
				if err != nil {
					t.Fatalf("good batch: %v", err)
				}
			}
			before, beforeStats := tableOf(t, r)

			var rec arrow.Record
			if tt.rec != nil {
				rec = tt.rec(mem)
			} else {
				rec = buildRecord(t, mem, tt.schema, tt.rows)
			}
			err := r.Add(context.Background(), tt.site, rec)
			if rec != nil {
				rec.Release()
			}
			if !errors.Is(err, linkage.ErrBadBatch) {
				t.Fatalf("Add = %v; want an ErrBadBatch", err)
			}
			msg := err.Error()
			t.Log(msg)
			for _, w := range append([]string{tt.site.ODS}, tt.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			after, afterStats := tableOf(t, r)
			if !reflect.DeepEqual(after, before) || afterStats != beforeStats {
				t.Errorf("the rejected batch changed the run:\nbefore %+v %+v\nafter  %+v %+v", before, beforeStats, after, afterStats)
			}
		})
	}
}

type batchRows struct {
	site   linkage.Site
	schema *arrow.Schema
	rows   []row
}

func readmRow(k [16]byte, dis, adm []int32, first any) row {
	if dis == nil {
		dis = []int32{}
	}
	if adm == nil {
		adm = []int32{}
	}
	return row{"pseudonym": k, "in_population": true, "readmissions__discharge_days": dis, "readmissions__admission_days": adm, "trust__first_day": first}
}

func aggRow(band, sex string, patients, onStatin, sum, n int64, top any) row {
	if t, ok := top.(int); ok {
		top = int64(t)
	}
	return row{"age_band": band, "sex": sex, "patients": patients, "on_statin": onStatin,
		"statin_issues__sum": sum, "statin_issues__n": n, "statin_issues__top": top}
}

// malformed builds a GP record whose age_band offsets run backwards, which
// Arrow itself does not check.
func malformed(t *testing.T, mem memory.Allocator, schema *arrow.Schema) arrow.Record {
	good := buildRecord(t, mem, schema, []row{{"pseudonym": k3, "age_band": "50-59", "sex": "M"}, {"pseudonym": k2, "age_band": "50-59", "sex": "M"}})
	defer good.Release()
	offs := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes([]int32{0, 9, 5}))
	data := memory.NewBufferBytes([]byte("50-5950-59"))
	d := array.NewData(arrow.BinaryTypes.String, 2, []*memory.Buffer{nil, offs, data}, nil, 0, 0)
	defer d.Release()
	bad := array.MakeFromData(d)
	defer bad.Release()
	return array.NewRecord(schema, []arrow.Array{good.Column(0), bad, good.Column(2)}, 2)
}

// shortKeys builds a GP record of two rows with one pseudonym's bytes.
func shortKeys(t *testing.T, mem memory.Allocator, schema *arrow.Schema) arrow.Record {
	good := buildRecord(t, mem, schema, []row{{"pseudonym": k3, "age_band": "50-59", "sex": "M"}, {"pseudonym": k2, "age_band": "50-59", "sex": "M"}})
	defer good.Release()
	keys := memory.NewBufferBytes(make([]byte, 16))
	d := array.NewData(schema.Field(0).Type, 2, []*memory.Buffer{nil, keys}, nil, 0, 0)
	defer d.Release()
	bad := array.MakeFromData(d)
	defer bad.Release()
	return array.NewRecord(schema, []arrow.Array{bad, good.Column(1), good.Column(2)}, 2)
}

// nullInList builds a readmissions record with a null admission day.
func nullInList(t *testing.T, mem memory.Allocator, schema *arrow.Schema) arrow.Record {
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	b.Field(0).(*array.FixedSizeBinaryBuilder).Append(k2[:])
	b.Field(1).(*array.BooleanBuilder).Append(true)
	dis := b.Field(2).(*array.ListBuilder)
	dis.Append(true)
	dis.ValueBuilder().(*array.Int32Builder).Append(1)
	adm := b.Field(3).(*array.ListBuilder)
	adm.Append(true)
	adm.ValueBuilder().(*array.Int32Builder).AppendNull()
	b.Field(4).(*array.Int32Builder).Append(1)
	return b.NewRecord()
}
