package attack_test

// The truth the attacker's inferences are checked against: plain DuckDB
// SQL over the pooled Parquet files of every practice, with raw NHS
// numbers, written from the rules policy/catalog and node/sqlgen
// document (as integration/correctness does), sharing no code with the
// nodes or the coordinator.

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/integration/attack"
	"github.com/havenhealth/haven/integration/releasecheck"
	"github.com/havenhealth/haven/synth"
)

// central answers over one network's files.
type central struct {
	t  testing.TB
	db *sql.DB
}

func newCentral(t testing.TB, n *synth.Network, bundle string) *central {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatalf("open duckdb: %v", err)
	}
	db.SetMaxOpenConns(1) // temp tables and macros live in one connection
	t.Cleanup(func() { db.Close() })
	glob := func(table string) string { return quote(filepath.Join(n.Path("sites"), "*", table+".parquet")) }
	site := `regexp_extract(filename, '/sites/([^/]+)/[^/]+$', 1)`
	var ndop, codes []string
	for nhs := range releasecheck.MustReadNDOP(t, n) {
		ndop = append(ndop, nhs)
	}
	for c := range releasecheck.MustReadCodelist(t, bundle, "t2dm") {
		codes = append(codes, c)
	}
	var weighted []string
	for i := 1; i <= 9; i++ {
		weighted = append(weighted, fmt.Sprintf("TRY_CAST(substr(s, %d, 1) AS INTEGER) * %d", i, 11-i))
	}
	stmts := []string{
		`CREATE MACRO valid_nhs(s) AS coalesce(regexp_full_match(s, '[0-9]{10}') AND
			(11 - (` + strings.Join(weighted, " + ") + `) % 11) % 11 = TRY_CAST(substr(s, 10, 1) AS INTEGER), false)`,
		`CREATE MACRO age_on(birth, d) AS year(d) - year(birth) -
			CASE WHEN strftime(birth, '%m%d') > strftime(d, '%m%d') THEN 1 ELSE 0 END`,
		`CREATE TEMP TABLE ndop AS SELECT unnest(` + list(ndop) + `::VARCHAR[]) AS nhs`,
		fmt.Sprintf(`CREATE TEMP TABLE patient AS SELECT %s AS site, %s AS nhs, min(%s) AS birth, min(%s) AS death, min(%s) AS sex
			FROM read_parquet(%s, filename = true) WHERE valid_nhs(%s) GROUP BY ALL`,
			site, cdm.ColNHSNumber, cdm.ColBirthDate, cdm.ColDateOfDeath, cdm.ColSex, glob(cdm.TablePatient), cdm.ColNHSNumber),
		fmt.Sprintf(`CREATE TEMP TABLE registration AS SELECT %s AS site, * EXCLUDE (filename)
			FROM read_parquet(%s, filename = true) WHERE valid_nhs(%s) AND %s = %s`,
			site, glob(cdm.TableRegistration), cdm.ColNHSNumber, cdm.ColPracticeODS, site),
		fmt.Sprintf(`CREATE TEMP TABLE type1 AS SELECT DISTINCT %s AS site, %s AS nhs FROM read_parquet(%s, filename = true) WHERE %s = %s`,
			site, cdm.ColNHSNumber, glob(cdm.TableOptOut), cdm.ColKind, quote(cdm.OptOutType1)),
		// Diagnoses: coded events of valid numbers not on the national
		// opt-out list, less those dated after the death the site records.
		fmt.Sprintf(`CREATE TEMP TABLE t2dm AS
			SELECT e.site, e.%s AS nhs, min(e.%s) AS first FROM (SELECT %s AS site, * EXCLUDE (filename) FROM read_parquet(%s, filename = true)) e
			LEFT JOIN patient p ON p.site = e.site AND p.nhs = e.%s
			WHERE valid_nhs(e.%s) AND e.%s NOT IN (SELECT nhs FROM ndop) AND e.%s IS NOT NULL AND e.%s IN (SELECT unnest(%s))
			AND (p.death IS NULL OR e.%s <= p.death) GROUP BY ALL`,
			cdm.ColNHSNumber, cdm.ColEventDate, site, glob(cdm.TableClinicalEvent), cdm.ColNHSNumber,
			cdm.ColNHSNumber, cdm.ColNHSNumber, cdm.ColEventDate, cdm.ColSNOMEDCode, list(codes), cdm.ColEventDate),
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("central set-up: %v\n%s", err, s)
		}
	}
	return &central{t: t, db: db}
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func list(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// atoms adds to truth the true atoms of t2dm-prevalence on each index
// date: the living patients registered at each practice on the date (a
// registration that ends on it is over), on neither opt-out list (a type 1
// objection holds wherever it was recorded), by sex and exact age
// (attack.MaxAge and over as one), and those of them with a type 2
// diabetes code on or before it.
func (c *central) atoms(m *attack.Prevalence, dates []string, truth attack.Truth) {
	c.t.Helper()
	q := fmt.Sprintf(`WITH dates AS (SELECT unnest(%[1]s::DATE[]) AS d), pop AS (
			SELECT dates.d, p.site, p.nhs, age_on(p.birth, dates.d) AS age, p.sex FROM patient p
			JOIN registration r ON r.site = p.site AND r.%[2]s = p.nhs
			JOIN dates ON r.%[3]s <= dates.d AND (r.%[4]s IS NULL OR r.%[4]s > dates.d)
			WHERE p.nhs NOT IN (SELECT nhs FROM ndop) AND p.nhs NOT IN (SELECT nhs FROM type1)
			AND (p.death IS NULL OR p.death > dates.d) AND age_on(p.birth, dates.d) >= 0),
		one AS (SELECT DISTINCT * FROM pop)
		SELECT strftime(one.d, '%%Y-%%m-%%d'), one.site, one.sex, least(one.age, %[5]d), count(*), count(t2dm.first) FROM one
		LEFT JOIN t2dm ON t2dm.site = one.site AND t2dm.nhs = one.nhs AND t2dm.first <= one.d
		GROUP BY ALL`, list(dates), cdm.ColNHSNumber, cdm.ColStartDate, cdm.ColEndDate, attack.MaxAge)
	rows, err := c.db.Query(q)
	if err != nil {
		c.t.Fatalf("central atoms: %v\n%s", err, q)
	}
	defer rows.Close()
	for rows.Next() {
		var d, site, sex string
		var age int
		var n, dm int64
		if err := rows.Scan(&d, &site, &sex, &age, &n, &dm); err != nil {
			c.t.Fatalf("central atoms: %v", err)
		}
		truth[m.AtomName(d, site, sex, age, m.Group)] += n
		truth[m.AtomName(d, site, sex, age, "t2dm")] += dm
	}
	if err := rows.Err(); err != nil {
		c.t.Fatalf("central atoms: %v", err)
	}
}

// table is the true table of one run, from the atoms of its index date:
// what releasecheck compares a released table with.
func table(truth attack.Truth, d string, minAge int) releasecheck.TrueTable {
	out := releasecheck.TrueTable{}
	for name, v := range truth {
		f := strings.Split(name, "|") // date, practice, sex, age, measure
		var age int
		if f[0] != d || v == 0 {
			continue
		}
		if _, err := fmt.Sscan(f[3], &age); err != nil || age < minAge {
			continue
		}
		cell := out.Cell(f[1], band(age), f[2])
		switch f[4] {
		case "patients":
			cell.Add("patients", float64(v), false)
			for range v {
				cell.Add("prevalence", 0, true) // every patient is one of the mean's divisor
			}
		case "t2dm":
			cell.Add("t2dm", float64(v), false)
			cell.Add("prevalence", float64(v), false)
		}
	}
	return out
}

func band(age int) string {
	if age >= 90 {
		return "90+"
	}
	return fmt.Sprintf("%d-%d", age/10*10, age/10*10+9)
}
