package sqlgen

import (
	"context"
	"fmt"
	"testing"

	"github.com/havenhealth/haven/policy/catalog"
)

// TestRecordKeyStatements compiles every reference definition with record
// keys, in DuckDB and PostgreSQL, over one synthetic site of each kind:
//
//   - an aggregate program's Result is the plain program's, row for row
//     (the key fields are left to the node);
//   - its Keys statement lists exactly Members' patients, and counting each
//     key field's true flags per group gives the Result's count for that
//     cell, so the node sums the record keys of exactly the patients each
//     count counts;
//   - a linkage program's Result is the plain one (record_key is left to
//     the node) and it has no Keys statement.
func TestRecordKeyStatements(t *testing.T) {
	if testing.Short() {
		t.Skip("loads synthetic sites into PostgreSQL")
	}
	n := loadNetwork(t)
	ctx := context.Background()
	sawAgg, sawLinkage := false, false
	for _, tdb := range testDialects(t) {
		t.Run(tdb.d.Name(), func(t *testing.T) {
			for _, d := range loadBundle(t).Definitions() {
				b := bind(t, d, nil)
				plain, keyed := d.Plan(), d.PlanWith(catalog.PlanOptions{RecordKeys: true})
				for _, task := range keyed.Tasks {
					s := n.SitesOfKind(task.Kind)[0]
					db := openSite(t, tdb.d, n, s)
					opts := Options{SiteODS: s.ODS, NDOP: network.ndop}
					pp, err := Compile(b, plain, task.Kind, tdb.d, opts)
					if err != nil {
						t.Fatal(err)
					}
					kp, err := Compile(b, keyed, task.Kind, tdb.d, opts)
					if err != nil {
						t.Fatal(err)
					}
					run := func(st Statement) [][]any {
						rows, err := query(ctx, db, st)
						if err != nil {
							t.Fatalf("%s %s: %v", d.ID, s.ODS, err)
						}
						return rows
					}
					want, got := run(pp.Result), run(kp.Result)
					if diff := diffRows(got, want); diff != "" {
						t.Errorf("%s %s: keyed result differs from plain:\n%s", d.ID, s.ODS, diff)
					}
					if task.Rows == catalog.RowsPatients {
						sawLinkage = true
						if kp.Keys != nil {
							t.Errorf("%s %s: a linkage program has a Keys statement", d.ID, s.ODS)
						}
						continue
					}
					sawAgg = true
					if pp.Keys != nil || kp.Keys == nil {
						t.Fatalf("%s: Keys plain %v keyed %v", d.ID, pp.Keys != nil, kp.Keys != nil)
					}
					checkKeysMatchCells(t, d.ID+" "+s.ODS, task, run(*kp.Keys), run(*kp.Members), got, kp.Result.Columns)
				}
			}
		})
	}
	if !sawAgg || !sawLinkage {
		t.Errorf("aggregate %v linkage %v: the reference bundle did not exercise both modes", sawAgg, sawLinkage)
	}
}

// checkKeysMatchCells: keys rows are nhs_number, group columns, then one
// flag per key field in task order; cells are the Result rows.
func checkKeysMatchCells(t *testing.T, what string, task catalog.SiteTask, keys, members, cells [][]any, cellCols []Column) {
	t.Helper()
	if len(keys) != len(members) {
		t.Fatalf("%s: %d keys rows for %d members", what, len(keys), len(members))
	}
	for i := range keys {
		if keys[i][0] != members[i][0] {
			t.Fatalf("%s: keys row %d is patient %v, members %v", what, i, keys[i][0], members[i][0])
		}
	}
	var groups, keyFields []string
	for _, f := range task.Fields {
		switch {
		case f.Role == catalog.RoleGroup:
			groups = append(groups, f.Name)
		case f.Partial == catalog.PartialKey:
			keyFields = append(keyFields, f.Source)
		}
	}
	if len(keyFields) == 0 {
		t.Fatalf("%s: no key fields", what)
	}
	// counted[group][k] is how many patients key field k counts.
	counted := map[string][]int64{}
	for _, r := range keys {
		g := fmt.Sprint(r[1 : 1+len(groups)])
		if counted[g] == nil {
			counted[g] = make([]int64, len(keyFields))
		}
		for k := range keyFields {
			if r[1+len(groups)+k] == true {
				counted[g][k]++
			}
		}
	}
	col := map[string]int{}
	for i, c := range cellCols {
		col[c.Name] = i
	}
	for _, c := range cells {
		g := fmt.Sprint(c[:len(groups)])
		for k, m := range keyFields {
			if got, want := counted[g], c[col[m]]; got == nil || got[k] != want {
				t.Errorf("%s: cell %s: keys flag %v patients for %s, the result counts %v", what, g, got, m, want)
			}
		}
		delete(counted, g)
	}
	if len(counted) > 0 {
		t.Errorf("%s: keys rows for groups with no cell: %v", what, counted)
	}
}
