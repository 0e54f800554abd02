package correctness

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/demo"
	"github.com/havenhealth/haven/integration/releasecheck"
	"github.com/havenhealth/haven/node/config"
	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/pseudonym"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// mover is a patient registered at an old practice and, later, at a new
// one, with the index dates on which the old practice counts her.
type mover struct {
	nhs, old, new string
	dates         []string
}

// maxDates caps the index dates checked per patient; they are spread over
// her time at the old practice.
const maxDates = 6

// locallyCounted is the SQL condition under which the old rule (type 1
// objections honoured only at the practice that records them) counts
// patient nhs at site on day d (an SQL expression): what would be wrong
// without the network list.
func locallyCounted(site, nhs, d string) string {
	return fmt.Sprintf(`EXISTS (SELECT 1 FROM patient p JOIN registration r ON r.site = p.site AND r.%s = p.nhs
		WHERE p.site = %s AND p.nhs = %s AND r.%s <= %s AND (r.%s IS NULL OR r.%s >= %s)
		AND p.nhs NOT IN (SELECT nhs FROM ndop)
		AND NOT EXISTS (SELECT 1 FROM type1 t WHERE t.site = p.site AND t.nhs = p.nhs)
		AND (p.death IS NULL OR p.death > %s) AND p.birth <= %s)`,
		cdm.ColNHSNumber, quote(site), quote(nhs), cdm.ColStartDate, d, cdm.ColEndDate, cdm.ColEndDate, d, d, d)
}

// countedLocally is whether the old rule counts patient nhs at site on d.
func (c *central) countedLocally(site, nhs, d string) bool {
	var ok bool
	if err := c.db.QueryRow("SELECT " + locallyCounted(site, nhs, "DATE "+quote(d))).Scan(&ok); err != nil {
		c.t.Fatalf("central: %v", err)
	}
	return ok
}

// findMovers returns patients registered at one practice and later at
// another, with no type 1 objection at the old one; objected says whether
// they must have one at the new practice (or none anywhere). Each comes
// with the quarter days on which the old rule counts her at the old
// practice, within the approved index dates.
func (c *central) findMovers(objected bool) []mover {
	cond := `NOT EXISTS (SELECT 1 FROM type1 t WHERE t.nhs = o.nhs_number)`
	if objected {
		cond = `(n.site, n.nhs_number) IN (SELECT site, nhs FROM type1) AND (o.site, o.nhs_number) NOT IN (SELECT site, nhs FROM type1)`
	}
	q := fmt.Sprintf(`SELECT DISTINCT o.nhs_number, o.site, n.site FROM registration o JOIN registration n
		ON n.nhs_number = o.nhs_number AND n.site <> o.site AND o.end_date IS NOT NULL AND n.start_date >= o.end_date
		WHERE o.nhs_number NOT IN (SELECT nhs FROM ndop) AND %s ORDER BY 1, 2, 3 LIMIT 8`, cond)
	rows, err := c.db.Query(q)
	if err != nil {
		c.t.Fatalf("central: %v", err)
	}
	var out []mover
	for rows.Next() {
		var m mover
		if err := rows.Scan(&m.nhs, &m.old, &m.new); err != nil {
			c.t.Fatal(err)
		}
		out = append(out, m)
	}
	rows.Close()
	for i := range out {
		out[i].dates = c.countedDays(out[i])
	}
	return out
}

// countedDays are the quarter days from 2018 to 2026 (the approved index
// dates) on which the old rule counts m at her old practice, at most
// maxDates of them, spread evenly.
func (c *central) countedDays(m mover) []string {
	q := fmt.Sprintf(`SELECT strftime(d, '%%Y-%%m-%%d') FROM
		(SELECT unnest(generate_series(DATE '2018-01-01', DATE '2026-10-01', INTERVAL 3 MONTH))::DATE AS d)
		WHERE %s ORDER BY d`, locallyCounted(m.old, m.nhs, "d"))
	rows, err := c.db.Query(q)
	if err != nil {
		c.t.Fatalf("central: %v", err)
	}
	defer rows.Close()
	var all []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			c.t.Fatal(err)
		}
		all = append(all, d)
	}
	if len(all) <= maxDates {
		return all
	}
	out := make([]string, maxDates)
	for i := range out {
		out[i] = all[i*(len(all)-1)/(maxDates-1)]
	}
	return out
}

// TestMovedAndObjected: a patient who moves and then objects (type 1) at
// her new practice is left out at her former practice for every index
// date on which it held her registration, with the network of separate
// processes, against the central DuckDB answer over the pooled data
// (which applies type 1 objections wherever they were recorded). The
// central answer under the old rule would count her: the test can fail.
// Then a patient who moved and had not objected objects at her new
// practice while the network runs: the time until her former practice's
// node holds the objection is measured, and she is left out there too.
// Last, a patient transferred on an index date is counted once, at her new
// practice (a registration that ends on the index date is over).
func TestMovedAndObjected(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole network as processes; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 14*time.Minute)
	defer cancel()
	net, err := demo.Start(ctx, demo.Options{
		Dir:        filepath.Join(t.TempDir(), "net"),
		Keep:       true, // the central answer reads its files
		EditBundle: disclosureOff,
		StopGrace:  5 * time.Second,
	})
	if net != nil {
		defer net.Close(true)
	}
	if err != nil {
		t.Fatalf("start the network: %v", err)
	}
	res := net.Result()
	c := newCentral(t, res.Network, net.Bundle())
	pt := releasecheck.MustPTable(t, net.Bundle())

	check := func(m mover, d, what string) {
		t.Helper()
		rr, err := net.Submit(ctx, demo.Query{Definition: "t2dm-prevalence", Purpose: "commissioning",
			Parameters: map[string]string{"index_date": d, "min_age": "0"}})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if rr.Run.GetState() != havenv1.RunState_RUN_STATE_RELEASED || rr.Table == nil {
			t.Fatalf("%s: run %s is %s (%s)", what, rr.Run.GetId(), rr.Run.GetState(), rr.Run.GetError())
		}
		if meta := rr.Table.Meta; meta.MinCellCount != 1 || meta.RoundingBase != 1 {
			t.Fatalf("%s: released with min cell count %d, rounding base %d", what, meta.MinCellCount, meta.RoundingBase)
		}
		if !c.countedLocally(m.old, m.nhs, d) {
			t.Fatalf("%s: the old rule would not count the patient; the check proves nothing", what)
		}
		st := releasecheck.CheckT(t, rr.Table, c.t2dmPrevalence(d, 0), meanValues, pt, what)
		if st.Problems != 0 {
			t.Errorf("%s: %d cells differ from the central answer", what, st.Problems)
		}
	}

	// 1. A patient of seed 1 who moved and objected at the new practice
	// (one: each index date is a run, and this machine is small).
	movers := c.findMovers(true)
	checked := 0
	for _, m := range movers {
		if len(m.dates) == 0 || checked == 1 {
			continue
		}
		checked++
		for _, d := range m.dates {
			check(m, d, fmt.Sprintf("moved %s→%s and objected, index date %s", m.old, m.new, d))
		}
		t.Logf("a patient who moved %s→%s and objected at %s: left out at %s on %d index dates %v",
			m.old, m.new, m.new, m.old, len(m.dates), m.dates)
	}
	if checked == 0 {
		t.Fatalf("seed 1 has no patient who moved and then objected at the new practice (%d candidates)", len(movers))
	}

	// 2. A mover objects at her new practice while the network runs.
	var m mover
	for _, cand := range c.findMovers(false) {
		if len(cand.dates) > 0 {
			m = cand
			break
		}
	}
	if m.nhs == "" {
		t.Fatal("seed 1 has no patient who moved and has not objected")
	}
	secret, err := os.ReadFile(res.SecretFile())
	if err != nil {
		t.Fatal(err)
	}
	sec, err := pseudonym.NewSecret(bytes.TrimSuffix(secret, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	h, err := pseudonym.NewOptOutHasher(sec)
	if err != nil {
		t.Fatal(err)
	}
	oldCfg, err := config.Load(net.NodeConfig(m.old))
	if err != nil {
		t.Fatal(err)
	}
	holds := func() bool {
		n, err := optout.ReadNetworkFile(oldCfg.StateDir)
		return err == nil && n.Contains(h.Of(m.nhs))
	}
	if holds() {
		t.Fatal("the former practice holds an objection not made yet")
	}
	began := time.Now()
	addType1(t, c.db, res.Network.Path(filepath.Join("sites", m.new, cdm.TableOptOut+".parquet")), m.nhs)
	deadline := time.Now().Add(2 * time.Minute)
	for !holds() {
		if time.Now().After(deadline) {
			t.Fatalf("the objection at %s did not reach %s's node within 2 minutes", m.new, m.old)
		}
		time.Sleep(50 * time.Millisecond)
	}
	propagation := time.Since(began)
	t.Logf("propagation: an objection recorded at %s reached the node of %s in %s", m.new, m.old, propagation.Round(time.Millisecond))
	d := m.dates[len(m.dates)-1]
	check(m, d, fmt.Sprintf("moved %s→%s, objected while running, index date %s", m.old, m.new, d))

	// 3. A transfer on the index date: a mover's old registration is made
	// to end, and her new one to start, on an approved index date. She is
	// registered at the new practice that day and no longer at the old one,
	// so she is counted once; the rule registration-ends-on-the-day-counts
	// would count her at both.
	var tm mover
	for _, cand := range c.findMovers(false) {
		if cand.nhs != m.nhs && len(cand.dates) > 0 {
			tm = cand
			break
		}
	}
	if tm.nhs == "" {
		t.Fatal("seed 1 has no second patient who moved and has not objected")
	}
	td := tm.dates[0]
	setTransfer(t, c.db, c.sitesDir, tm, td)
	if got := c.registeredAt(tm.nhs, td); len(got) != 1 || got[0] != tm.new {
		t.Fatalf("after the transfer on %s the central answer counts the patient at %v, want [%s] only", td, got, tm.new)
	}
	check(tm, td, fmt.Sprintf("transferred %s→%s on the index date %s", tm.old, tm.new, td))
	t.Logf("a patient transferred %s→%s on the index date %s: counted at %s only", tm.old, tm.new, td, tm.new)
}

// setTransfer rewrites the registrations of m so that the one at her old
// practice covering d ends on d and her first one at the new practice from
// d on starts on d: a transfer on d, as a site's next extract would show it.
func setTransfer(t *testing.T, db *sql.DB, sitesDir string, m mover, d string) {
	t.Helper()
	day := "DATE " + quote(d)
	rewrite := func(site, col, cond string) {
		path := filepath.Join(sitesDir, site, cdm.TableRegistration+".parquet")
		tmp := path + ".new"
		q := fmt.Sprintf(`COPY (SELECT * REPLACE (CASE WHEN %s = %s AND %s THEN %s ELSE %s END AS %s)
			FROM read_parquet(%s)) TO %s (FORMAT parquet)`,
			cdm.ColNHSNumber, quote(m.nhs), cond, day, col, col, quote(path), quote(tmp))
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("rewrite %s's registrations: %v", site, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	rewrite(m.old, cdm.ColEndDate, fmt.Sprintf("%s <= %s AND (%s IS NULL OR %s >= %s)",
		cdm.ColStartDate, day, cdm.ColEndDate, cdm.ColEndDate, day))
	first := fmt.Sprintf(`(SELECT min(%s) FROM read_parquet(%s) WHERE %s = %s AND %s >= %s)`,
		cdm.ColStartDate, quote(filepath.Join(sitesDir, m.new, cdm.TableRegistration+".parquet")),
		cdm.ColNHSNumber, quote(m.nhs), cdm.ColStartDate, day)
	rewrite(m.new, cdm.ColStartDate, cdm.ColStartDate+" = "+first)
}

// registeredAt lists the practices at which the central answer counts
// patient nhs as registered (and otherwise in the population) on d.
func (c *central) registeredAt(nhs, d string) []string {
	rows, err := c.db.Query(fmt.Sprintf(`SELECT site FROM (%s) WHERE nhs = %s ORDER BY site`, gpPopulation(d, 0), quote(nhs)))
	if err != nil {
		c.t.Fatalf("central: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			c.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// addType1 records a type 1 objection for nhs in a practice's opt_out
// Parquet file, replacing the file whole as a site's extract would.
func addType1(t *testing.T, db *sql.DB, path, nhs string) {
	t.Helper()
	tmp := path + ".new"
	q := fmt.Sprintf(`COPY (SELECT * FROM read_parquet(%s) UNION ALL BY NAME
		SELECT %s AS %s, %s AS %s, current_date AS %s) TO %s (FORMAT parquet)`,
		quote(path), quote(nhs), cdm.ColNHSNumber, quote(cdm.OptOutType1), cdm.ColKind, cdm.ColRecordedDate, quote(tmp))
	if _, err := db.Exec(q); err != nil {
		t.Fatalf("add a type 1 objection: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
