package sqlgen

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"testing"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	"github.com/havenhealth/haven/synth"
)

// TestRandomParameters compiles every definition (the reference ones and
// this package's test ones) with random valid parameters, and has each
// database EXPLAIN every statement, which parses and plans it with its
// arguments. For the first few parameter sets it also runs the Result at
// one practice and one trust and checks it against the reference. Both
// dialects see the same parameter sets.
func TestRandomParameters(t *testing.T) {
	n := loadNetwork(t)
	defs := loadBundle(t).Definitions()
	defs = append(defs, parseDefinition(t, codelistDef), parseDefinition(t, gpLinkageDef), parseDefinition(t, hospitalDef))
	iterations, checked := 6, 2
	if testing.Short() {
		iterations, checked = 2, 1
	}
	ctx := context.Background()
	for _, dialect := range Dialects() {
		t.Run(dialect.Name(), func(t *testing.T) {
			if testing.Short() && dialect.Name() == PostgreSQL().Name() {
				t.Skip("loads synthetic sites into PostgreSQL")
			}
			r := rand.New(rand.NewPCG(5, 6))
			sites := map[cdm.SiteKind]synth.Site{}
			dbs := map[cdm.SiteKind]*sql.DB{}
			for _, k := range cdm.SiteKinds() {
				sites[k] = n.SitesOfKind(k)[0]
				dbs[k] = openSite(t, dialect, n, sites[k])
			}
			for _, d := range defs {
				p := d.Plan()
				for i := range iterations {
					b := bindRandom(t, r, d)
					for _, task := range p.Tasks {
						s, db := sites[task.Kind], dbs[task.Kind]
						prog, err := Compile(b, p, task.Kind, dialect, Options{SiteODS: s.ODS, NDOP: network.ndop})
						if err != nil {
							t.Fatalf("%s %v: %v", d.ID, b.Params(), err)
						}
						for _, st := range prog.Statements() {
							rows, err := db.QueryContext(ctx, "EXPLAIN "+st.SQL, st.Args...)
							if err != nil {
								t.Fatalf("%s %s %s with %v: %v", d.ID, task.Kind, st.Name, b.Params(), err)
							}
							rows.Close()
						}
						if i >= checked {
							continue
						}
						got, err := query(ctx, db, prog.Result)
						if err != nil {
							t.Fatal(err)
						}
						ref := newReference(t, b, task.Kind, siteRows(t, n, s), network.ndop)
						var want [][]any
						if task.Rows == catalog.RowsCells {
							want = ref.cellRows()
						} else {
							want = ref.patientRows()
						}
						sortRows(got)
						sortRows(want)
						if diff := diffRows(got, want); diff != "" {
							t.Errorf("%s %s with %v:\n%s", d.ID, task.Kind, b.Params(), diff)
						}
					}
				}
			}
		})
	}
}
