package sqlgen

import (
	"context"
	"database/sql"
	"slices"
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
						checkCheckedResult(t, s.ODS, db, prog, want)
					}
				}
			}
		})
	}
}

// checkCheckedResult checks that an aggregate program's CheckedResult is
// its Result, row for row, with the cells' patients as a last column that
// together are exactly members (rows of one NHS number each), each cell's
// list as long as its patients count and in byte order.
func checkCheckedResult(t *testing.T, site string, db *sql.DB, prog *Program, members [][]any) {
	t.Helper()
	if prog.CheckedResult == nil {
		t.Fatalf("%s: an aggregate program without CheckedResult", site)
	}
	cr := *prog.CheckedResult
	if n := len(cr.Columns); n != len(prog.Result.Columns)+1 || !slices.Equal(cr.Columns[:n-1], prog.Result.Columns) || cr.Columns[n-1] != (Column{Name: ColMembers, Type: FieldStrings}) {
		t.Fatalf("%s: checked result columns %v, result columns %v", site, cr.Columns, prog.Result.Columns)
	}
	checked, err := query(context.Background(), db, cr)
	if err != nil {
		t.Fatalf("%s: %v", site, err)
	}
	result, err := query(context.Background(), db, prog.Result)
	if err != nil {
		t.Fatalf("%s: %v", site, err)
	}
	if len(checked) != len(result) {
		t.Fatalf("%s: checked result has %d rows, result %d", site, len(checked), len(result))
	}
	patients := slices.Index(columnNames(prog.Result.Columns), "patients")
	var got [][]any
	for i, row := range checked {
		last := len(row) - 1
		if diff := diffRows([][]any{row[:last]}, [][]any{result[i]}); diff != "" {
			t.Errorf("%s: checked result row %d differs from the result's:\n%s", site, i, diff)
		}
		nums, ok := row[last].([]string)
		if !ok {
			t.Fatalf("%s: members column holds %T", site, row[last])
		}
		if !slices.IsSorted(nums) {
			t.Errorf("%s: row %d: members not in byte order", site, i)
		}
		if patients >= 0 && row[patients] != int64(len(nums)) {
			t.Errorf("%s: row %d counts %v patients and lists %d", site, i, row[patients], len(nums))
		}
		for _, n := range nums {
			got = append(got, []any{n})
		}
	}
	sortRows(got)
	if diff := diffRows(got, members); diff != "" {
		t.Errorf("%s: the checked result's members differ from Members:\n%s", site, diff)
	}
}

func columnNames(cols []Column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.Name
	}
	return out
}
