package sqlgen

import (
	"context"
	"testing"

	"github.com/havenhealth/haven/cdm"
)

// TestReferenceDefinitions runs every reference definition, with its
// default parameters, at every site of every kind it involves, in DuckDB
// over the synthetic network, and checks each Result row for row against
// the plain-Go reference, and Members against the reference population.
func TestReferenceDefinitions(t *testing.T) {
	n := loadNetwork(t)
	for _, d := range loadBundle(t).Definitions() {
		t.Run(d.ID, func(t *testing.T) {
			b, err := d.Bind(nil)
			if err != nil {
				t.Fatal(err)
			}
			p := d.Plan()
			for _, task := range p.Tasks {
				for _, s := range n.SitesOfKind(task.Kind) {
					sd := siteRows(t, n, s)
					db := openDuckDB(t, n, s)
					prog, err := Compile(b, p, task.Kind, DuckDB(), Options{SiteODS: s.ODS, NDOP: network.ndop})
					if err != nil {
						t.Fatal(err)
					}
					ref := newReference(t, b, task.Kind, sd, network.ndop)
					got, err := query(context.Background(), db, prog.Result)
					if err != nil {
						t.Fatalf("%s: %v", s.ODS, err)
					}
					var want [][]any
					if task.Kind == cdm.KindGP && prog.Members != nil {
						want = ref.cellRows()
					} else {
						want = ref.patientRows()
					}
					sortRows(got)
					sortRows(want)
					if diff := diffRows(got, want); diff != "" {
						t.Errorf("%s %s result:\n%s", s.ODS, task.Kind, diff)
					}
					if len(want) == 0 {
						t.Errorf("%s %s: no rows expected; the test proves nothing", s.ODS, task.Kind)
					}
					if prog.Members != nil {
						got, err := query(context.Background(), db, *prog.Members)
						if err != nil {
							t.Fatalf("%s: %v", s.ODS, err)
						}
						var want [][]any
						for _, nhs := range ref.gpPopulation() {
							want = append(want, []any{nhs})
						}
						if diff := diffRows(got, want); diff != "" {
							t.Errorf("%s members:\n%s", s.ODS, diff)
						}
					}
				}
			}
		})
	}
}
