package linkage_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/coordinator/linkage"
	"github.com/havenhealth/haven/policy/catalog"
)

// TestDecodeThenApply decodes every batch of each reference definition
// first, releasing the records as a caller that stages them would, and
// applies them afterwards: the table and statistics must be those of Add.
func TestDecodeThenApply(t *testing.T) {
	c := loadCatalog(t)
	for _, d := range c.Definitions() {
		t.Run(d.ID, func(t *testing.T) {
			f := newFixture(t, c, d.ID)
			rng := rand.New(rand.NewPCG(3, seedOf(d.ID)))
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			var ups []upload
			if f.plan.Mode == catalog.ModeLinkage {
				ups = genLinkage(rng, f, 2000)
			} else {
				ups, _ = genAggregate(rng, f, 300)
			}
			bs := makeBatches(t, rng, mem, f, ups)

			added := f.newRun(t, linkage.Options{Partitions: 3})
			addAll(t, added, bs)
			want, wantStats := tableOf(t, added)

			staged := f.newRun(t, linkage.Options{Partitions: 3})
			var sts []*linkage.Staged
			for _, b := range bs {
				st, err := staged.Decode(context.Background(), b.site, b.rec)
				if err != nil {
					t.Fatalf("Decode(%s %s): %v", b.site.Kind, b.site.ODS, err)
				}
				sts = append(sts, st)
			}
			// The Stageds hold the records; the caller's references go.
			release(bs)
			if _, st := tableOf(t, staged); st.Batches != 0 || st.Sites != 0 {
				t.Fatalf("stats after Decode = %+v; want an untouched run", st)
			}
			for _, st := range sts {
				if err := staged.Apply(context.Background(), st); err != nil {
					t.Fatalf("Apply: %v", err)
				}
				st.Release()
			}
			got, gotStats := tableOf(t, staged)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("table of Decode then Apply differs from Add's")
			}
			gotStats.MemoryBytes, wantStats.MemoryBytes = 0, 0
			if gotStats != wantStats {
				t.Errorf("stats = %+v; want %+v", gotStats, wantStats)
			}
		})
	}
}

// TestDecodeRefuses checks that Decode refuses a bad batch naming the field
// and row, as Add does, without touching the run or keeping the record.
func TestDecodeRefuses(t *testing.T) {
	c := loadCatalog(t)
	link := newFixture(t, c, "t2dm-emergency-admissions")
	agg := newFixture(t, c, "statins-chd")
	gp := linkage.Site{ODS: "A81001", Kind: cdm.KindGP}
	gpSchema, _ := link.plan.Schema(cdm.KindGP)
	aggSchema, _ := agg.plan.Schema(cdm.KindGP)
	gpRow := func(k [16]byte) row { return row{"pseudonym": k, "age_band": "50-59", "sex": "M"} }

	for _, tc := range []struct {
		name   string
		f      fixture
		schema *arrow.Schema
		rows   []row
		field  string
		row    int
		msg    string
	}{
		{"unknown value", link, gpSchema, []row{gpRow(k1), {"pseudonym": k2, "age_band": "50-59", "sex": "X"}}, "sex", 1, `unknown value "X"`},
		{"null pseudonym", link, gpSchema, []row{gpRow(k1), {"pseudonym": nil, "age_band": "50-59", "sex": "M"}}, "pseudonym", 1, "not nullable"},
		{"pseudonym twice", link, gpSchema, []row{gpRow(k1), gpRow(k2), gpRow(k1)}, "pseudonym", 2, "row 0"},
		{"nullable differs", link, alter(gpSchema, func(fs []arrow.Field) []arrow.Field {
			fs[2].Nullable = true
			return fs
		}), []row{gpRow(k1)}, "sex", -1, "nullable=true"},
		{"group twice", agg, aggSchema, []row{aggRow("50-64", "F", 3, 1, 1, 1, 1), aggRow("50-64", "F", 2, 1, 1, 1, 1)}, "", 1, "group of row 0"},
		{"top above sum", agg, aggSchema, []row{aggRow("50-64", "F", 3, 2, 5, 2, 7)}, "statin_issues__top", 0, "inconsistent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			r := tc.f.newRun(t, linkage.Options{Partitions: 2})
			before, beforeStats := tableOf(t, r)
			rec := buildRecord(t, mem, tc.schema, tc.rows)
			st, err := r.Decode(context.Background(), gp, rec)
			rec.Release()
			if st != nil {
				st.Release()
				t.Fatal("Decode returned a Staged with its error")
			}
			be, ok := errors.AsType[*linkage.BatchError](err)
			if !ok || !errors.Is(err, linkage.ErrBadBatch) {
				t.Fatalf("Decode = %v; want a *BatchError", err)
			}
			if be.Site != gp || be.Field != tc.field || be.Row != tc.row || !strings.Contains(be.Msg, tc.msg) {
				t.Errorf("Decode = %+v; want site %v, field %q, row %d, %q", be, gp, tc.field, tc.row, tc.msg)
			}
			after, afterStats := tableOf(t, r)
			if !reflect.DeepEqual(after, before) || afterStats != beforeStats {
				t.Errorf("the refused batch changed the run")
			}
		})
	}
}

// TestApplyChecksRunState checks what only Apply can know: a pseudonym or
// group the site sent in an earlier batch, and a site that sent batches as
// another kind. Decode passes each batch; Apply refuses it and the run is
// unchanged.
func TestApplyChecksRunState(t *testing.T) {
	c := loadCatalog(t)
	link := newFixture(t, c, "t2dm-emergency-admissions")
	agg := newFixture(t, c, "statins-chd")
	gp := linkage.Site{ODS: "A81001", Kind: cdm.KindGP}
	gpSchema, _ := link.plan.Schema(cdm.KindGP)
	trustSchema, _ := link.plan.Schema(cdm.KindTrust)
	aggSchema, _ := agg.plan.Schema(cdm.KindGP)
	gpRow := func(k [16]byte) row { return row{"pseudonym": k, "age_band": "50-59", "sex": "M"} }
	trustRow := row{"pseudonym": k1, "emergency_admissions": int64(1)}

	for _, tc := range []struct {
		name        string
		f           fixture
		first, next linkage.Site
		schema      [2]*arrow.Schema
		rows        [2][]row
		want        string
	}{
		{"pseudonym in an earlier batch", link, gp, gp, [2]*arrow.Schema{gpSchema, gpSchema},
			[2][]row{{gpRow(k1)}, {gpRow(k2), gpRow(k1)}}, "field pseudonym: row 1: the site sent this pseudonym in an earlier batch"},
		{"group in an earlier batch", agg, gp, gp, [2]*arrow.Schema{aggSchema, aggSchema},
			[2][]row{{aggRow("50-64", "F", 3, 1, 1, 1, 1)}, {aggRow("65-79", "F", 3, 1, 1, 1, 1), aggRow("50-64", "F", 2, 1, 1, 1, 1)}},
			"row 1: the site sent this group in an earlier batch"},
		{"site changes kind", link, linkage.Site{ODS: "A81001", Kind: cdm.KindTrust}, gp, [2]*arrow.Schema{trustSchema, gpSchema},
			[2][]row{{trustRow}, {gpRow(k2)}}, "already sent batches as a trust site"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			r := tc.f.newRun(t, linkage.Options{Partitions: 2})
			// Both are decoded before either is applied, as uploads staged
			// at once would be.
			var sts [2]*linkage.Staged
			for i, site := range []linkage.Site{tc.first, tc.next} {
				rec := buildRecord(t, mem, tc.schema[i], tc.rows[i])
				st, err := r.Decode(context.Background(), site, rec)
				rec.Release()
				if err != nil {
					t.Fatalf("Decode %d: %v", i, err)
				}
				defer st.Release()
				sts[i] = st
			}
			if err := r.Apply(context.Background(), sts[0]); err != nil {
				t.Fatalf("Apply of the first batch: %v", err)
			}
			before, beforeStats := tableOf(t, r)
			err := r.Apply(context.Background(), sts[1])
			if !errors.Is(err, linkage.ErrBadBatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply = %v; want a bad batch: %q", err, tc.want)
			}
			after, afterStats := tableOf(t, r)
			if !reflect.DeepEqual(after, before) || afterStats != beforeStats {
				t.Errorf("the refused batch changed the run")
			}
		})
	}
}

// TestStagedLifecycle checks that a Staged released without Apply leaves
// the run as it was, and that a Staged is applied at most once, to its own
// run only, and not after Release or Close.
func TestStagedLifecycle(t *testing.T) {
	f := newFixture(t, loadCatalog(t), "t2dm-emergency-admissions")
	gp := linkage.Site{ODS: "A81001", Kind: cdm.KindGP}
	schema, _ := f.plan.Schema(cdm.KindGP)
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := buildRecord(t, mem, schema, []row{{"pseudonym": k1, "age_band": "50-59", "sex": "M"}})
	defer rec.Release()
	ctx := context.Background()
	decode := func(r *linkage.Run) *linkage.Staged {
		t.Helper()
		st, err := r.Decode(ctx, gp, rec)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		return st
	}

	r := f.newRun(t, linkage.Options{Partitions: 2})
	before, beforeStats := tableOf(t, r)
	st := decode(r)
	st.Release()
	st.Release()
	if after, afterStats := tableOf(t, r); !reflect.DeepEqual(after, before) || afterStats != beforeStats {
		t.Errorf("a released Staged changed the run: %+v, was %+v", afterStats, beforeStats)
	}
	if err := r.Apply(ctx, st); err == nil {
		t.Error("Apply after Release succeeded")
	}

	other := f.newRun(t, linkage.Options{Partitions: 2})
	st = decode(other)
	defer st.Release()
	if err := r.Apply(ctx, st); err == nil {
		t.Error("Apply of another run's Staged succeeded")
	}
	if err := other.Apply(ctx, st); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := other.Apply(ctx, st); err == nil {
		t.Error("second Apply of one Staged succeeded")
	}
	if _, stats := tableOf(t, other); stats.Batches != 1 || stats.GPRows != 1 {
		t.Errorf("stats = %+v; want the batch applied once", stats)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	st = decode(r)
	defer st.Release()
	if _, err := r.Decode(cancelled, gp, rec); !errors.Is(err, context.Canceled) {
		t.Errorf("Decode with a cancelled context = %v", err)
	}
	if err := r.Apply(cancelled, st); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with a cancelled context = %v", err)
	}
	r.Close()
	if err := r.Apply(ctx, st); !errors.Is(err, linkage.ErrClosed) {
		t.Errorf("Apply after Close = %v; want ErrClosed", err)
	}
	if _, err := r.Decode(ctx, gp, rec); !errors.Is(err, linkage.ErrClosed) {
		t.Errorf("Decode after Close = %v; want ErrClosed", err)
	}
}
