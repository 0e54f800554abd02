package runner_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/havenhealth/haven/node/nodetest"
	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/node/runner"
	"github.com/havenhealth/haven/node/sqlgen"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// testKeyRange is R of the reference bundle's perturbation table
// (policy/bundle/disclosure/ptable-8-5.csv).
const testKeyRange = 256

var testPerturbationSecret = []byte("test-perturbation-secret-0123456789-abcdef")

// keyedTask asks for record keys in [0, r): the fields of the keyed plan.
func keyedTask(t *testing.T, e *env, task *havenv1.Task, r uint32) *havenv1.Task {
	t.Helper()
	def, _ := e.cat.Get(task.GetDefinitionId())
	st, _ := def.PlanWith(catalog.PlanOptions{RecordKeys: true}).Task(e.site.Kind)
	task.OutputFields = nil
	for _, f := range st.Fields {
		task.OutputFields = append(task.OutputFields, f.Name)
	}
	task.RecordKeyRange = r
	return task
}

func testKeyer(t *testing.T) *pseudonym.RecordKeyer {
	t.Helper()
	s, err := pseudonym.NewPerturbationSecret(testPerturbationSecret)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pseudonym.NewRecordKeyer(s, testKeyRange)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestCellKeysEqualIndependentSums: an aggregate task with record keys
// uploads the plain cells unchanged plus, beside every count, the sum mod
// R of the record keys of the patients it counts. The expected sums are
// computed here from the keyed program's Keys rows read directly with
// database/sql and keyed with the test's own RecordKeyer.
func TestCellKeysEqualIndependentSums(t *testing.T) {
	e := newEnv(t, envOptions{perturbationSecret: testPerturbationSecret})
	task := keyedTask(t, e, e.task(t, "t2dm-prevalence", "run-keys-1", nil), testKeyRange)
	done(t, e.run(t, task))
	u, ok := e.coord.Upload(task.GetTaskId())
	if !ok {
		t.Fatal("nothing uploaded")
	}
	def, _ := e.cat.Get(task.GetDefinitionId())
	st, _ := def.PlanWith(catalog.PlanOptions{RecordKeys: true}).Task(e.site.Kind)
	plain := e.compiled(t, task)
	b, _ := def.Bind(nil)
	keyedProg, err := sqlgen.Compile(b, def.PlanWith(catalog.PlanOptions{RecordKeys: true}), e.site.Kind, sqlgen.DuckDB(),
		sqlgen.Options{SiteODS: e.site.ODS, NDOP: nodetest.NDOP(t, e.n)})
	if err != nil {
		t.Fatal(err)
	}
	var groups, keyNames []string
	for _, f := range st.Fields {
		switch {
		case f.Role == catalog.RoleGroup:
			groups = append(groups, f.Name)
		case f.Partial.IsKey():
			keyNames = append(keyNames, f.Name)
		}
	}
	// want: group text → key sums.
	k := testKeyer(t)
	want := map[string][]uint64{}
	for _, r := range nodetest.Rows(t, e.src.DB, keyedProg.Keys.SQL, keyedProg.Keys.Args...) {
		g := sqlRows([][]any{r[1 : 1+len(groups)]})[0]
		if want[g] == nil {
			want[g] = make([]uint64, len(keyNames))
		}
		rk := uint64(k.Of(r[0].(string)))
		for i := range keyNames {
			if r[1+len(groups)+i] == true {
				want[g][i] = (want[g][i] + rk) % testKeyRange
			}
		}
	}
	// The upload less its key columns is the plain direct answer.
	var plainRows, gotGroups []string
	nonzero := 0
	for _, rec := range u.Records {
		for i := range int(rec.NumRows()) {
			var parts, gparts []string
			var keys []uint64
			for c := range int(rec.NumCols()) {
				name := rec.ColumnName(c)
				if slices.Contains(keyNames, name) {
					keys = append(keys, uint64(rec.Column(c).(*array.Int64).Value(i)))
					continue
				}
				parts = append(parts, cellText(rec.Column(c), i))
				if slices.Contains(groups, name) {
					gparts = append(gparts, cellText(rec.Column(c), i))
				}
			}
			plainRows = append(plainRows, strings.Join(parts, "|"))
			g := strings.Join(gparts, "|")
			gotGroups = append(gotGroups, g)
			if !slices.Equal(keys, want[g]) {
				t.Errorf("cell %s: keys %v, want %v", g, keys, want[g])
			}
			for _, x := range keys {
				if x != 0 {
					nonzero++
				}
			}
		}
	}
	slices.Sort(plainRows)
	if w := sqlRows(nodetest.Rows(t, e.src.DB, plain.Result.SQL, plain.Result.Args...)); !slices.Equal(plainRows, w) {
		t.Errorf("keyed upload less its keys differs from the plain answer: %d rows (%s), want %d (%s)", len(plainRows), first(plainRows), len(w), first(w))
	}
	if len(gotGroups) != len(want) || len(want) < 2 || nonzero == 0 {
		t.Errorf("%d cells uploaded, %d groups of patients, %d non-zero keys: the test proves nothing", len(gotGroups), len(want), nonzero)
	}
	assertNoIdentifiers(t, e)
}

// TestLinkageRecordKeys: a population task with record keys sends each
// patient's record key right after the pseudonym; a trust reporting on a
// GP population sends none.
func TestLinkageRecordKeys(t *testing.T) {
	for _, kind := range []string{"gp", "trust"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, envOptions{kind: kind, perturbationSecret: testPerturbationSecret})
			runID := "run-linkkeys-" + kind
			task := keyedTask(t, e, e.task(t, "t2dm-emergency-admissions", runID, nil), testKeyRange)
			done(t, e.run(t, task))
			u, ok := e.coord.Upload(task.GetTaskId())
			if !ok {
				t.Fatal("nothing uploaded")
			}
			if kind == "trust" {
				if i := u.Schema.FieldIndices(catalog.FieldNameRecordKey); len(i) != 0 {
					t.Fatalf("a trust reporting on a GP population sent record keys: %v", u.Schema)
				}
				return
			}
			if u.Schema.Field(1).Name != catalog.FieldNameRecordKey {
				t.Fatalf("second field %v, want record_key", u.Schema.Field(1))
			}
			prog := e.compiled(t, task)
			s, _ := pseudonym.NewSecret(testSecret)
			d, _ := pseudonym.NewDeriver(s, runID)
			k := testKeyer(t)
			want := map[string]int64{}
			for _, r := range nodetest.Rows(t, e.src.DB, prog.Result.SQL, prog.Result.Args...) {
				p := d.Of(r[0].(string))
				want[fmt.Sprintf("%x", p[:])] = int64(k.Of(r[0].(string)))
			}
			n := 0
			for _, rec := range u.Records {
				ps, keys := rec.Column(0).(*array.FixedSizeBinary), rec.Column(1).(*array.Int64)
				for i := range int(rec.NumRows()) {
					n++
					if w, ok := want[fmt.Sprintf("%x", ps.Value(i))]; !ok || keys.Value(i) != w {
						t.Fatalf("row %d: record key %d, want %d (known %v)", i, keys.Value(i), w, ok)
					}
				}
			}
			if n != len(want) || n == 0 {
				t.Errorf("%d rows uploaded, %d expected", n, len(want))
			}
		})
	}
}

// TestRecordKeyRefusals: a node refuses a task that needs record keys when
// it has no perturbation secret, or when the key range is not one its own
// bundle's perturbation tables use, saying why.
func TestRecordKeyRefusals(t *testing.T) {
	bare := newEnv(t, envOptions{})
	task := keyedTask(t, bare, bare.task(t, "t2dm-prevalence", "run-nokeys", nil), testKeyRange)
	o := bare.run(t, task)
	r := o.GetRefused()
	if r == nil || len(r.GetReasons()) != 1 || r.GetReasons()[0].GetCode() != runner.CodeNoPerturbationSecret ||
		!strings.Contains(r.GetReasons()[0].GetMessage(), "perturbation_secret_file") {
		t.Errorf("no secret: outcome %v", o)
	}
	e := newEnv(t, envOptions{perturbationSecret: testPerturbationSecret})
	task = keyedTask(t, e, e.task(t, "t2dm-prevalence", "run-widekeys", nil), 1<<16)
	o = e.run(t, task)
	if r := o.GetRefused(); r == nil || r.GetReasons()[0].GetCode() != runner.CodeInvalidTask ||
		!strings.Contains(r.GetReasons()[0].GetMessage(), "65536") {
		t.Errorf("key range outside the bundle: outcome %v", o)
	}
	if _, ok := e.coord.Upload(task.GetTaskId()); ok {
		t.Error("a refused task uploaded")
	}
}
