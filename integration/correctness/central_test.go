package correctness

// The central answers: plain DuckDB SQL over the pooled Parquet files of
// every site, written from the rules that policy/catalog and node/sqlgen
// document, sharing no code with node/sqlgen or the coordinator.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/integration/releasecheck"
	"github.com/havenhealth/haven/synth"
)

// central answers questions over one network's files.
type central struct {
	t        testing.TB
	db       *sql.DB
	bundle   string
	sitesDir string
	// recordKey, when set, gives a patient's record key from the NHS
	// number, and answers carry cell keys (withRecordKeys).
	recordKey func(nhs string) uint64
}

// withRecordKeys has c's answers carry, for every count of every cell,
// the sum of the record keys of exactly the patients the count counts,
// so that releasecheck can compute the released value exactly. The rule
// is the documented one (node/pseudonym), written here afresh:
//
//	record key = HMAC-SHA256(secret, NHS number), first 8 bytes as a
//	             big-endian integer, mod R
//
// secretFile is the network's perturbation secret as the custodian
// wrote it for the nodes (one trailing newline is not part of it).
func (c *central) withRecordKeys(secretFile string, keyRange int) {
	c.t.Helper()
	b, err := os.ReadFile(secretFile)
	if err != nil {
		c.t.Fatalf("perturbation secret: %v", err)
	}
	secret := bytes.TrimSuffix(b, []byte("\n"))
	if len(secret) == 0 || keyRange < 1 {
		c.t.Fatalf("perturbation secret of %d bytes, key range %d", len(secret), keyRange)
	}
	c.recordKey = func(nhs string) uint64 {
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(nhs))
		return binary.BigEndian.Uint64(mac.Sum(nil)[:8]) % uint64(keyRange)
	}
}

// newCentral answers over every site of n but those in without.
func newCentral(t testing.TB, n *synth.Network, bundle string, without ...string) *central {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatalf("open duckdb: %v", err)
	}
	db.SetMaxOpenConns(1) // temp tables and macros live in one connection
	t.Cleanup(func() { db.Close() })
	c := &central{t: t, db: db, bundle: bundle, sitesDir: n.Path("sites")}
	sitesDir := c.sitesDir
	glob := func(table string) string {
		return quote(filepath.Join(sitesDir, "*", table+".parquet"))
	}
	// site is the ODS code of the directory a row's file lies in.
	site := `regexp_extract(filename, '/sites/([^/]+)/[^/]+$', 1)`
	// kept leaves out the files of the sites in without.
	kept := site + " NOT IN (SELECT unnest(" + list(append([]string{""}, without...)) + "::VARCHAR[]))"
	var ndop []string
	for nhs := range releasecheck.MustReadNDOP(t, n) {
		ndop = append(ndop, nhs)
	}
	stmts := []string{
		// A valid NHS number: ten digits whose modulus-11 check digit is right.
		`CREATE MACRO valid_nhs(s) AS coalesce(regexp_full_match(s, '[0-9]{10}') AND
			(11 - (` + weighted() + `) % 11) % 11 = TRY_CAST(substr(s, 10, 1) AS INTEGER), false)`,
		`CREATE MACRO age_on(birth, d) AS year(d) - year(birth) -
			CASE WHEN strftime(birth, '%m%d') > strftime(d, '%m%d') THEN 1 ELSE 0 END`,
		`CREATE TEMP TABLE ndop AS SELECT unnest(` + list(ndop) + `::VARCHAR[]) AS nhs`,
		fmt.Sprintf(`CREATE TEMP VIEW patient AS SELECT %s AS site, %s AS nhs, min(%s) AS birth, min(%s) AS death, min(%s) AS sex
			FROM read_parquet(%s, filename = true) WHERE valid_nhs(%s) AND %s GROUP BY ALL`,
			site, cdm.ColNHSNumber, cdm.ColBirthDate, cdm.ColDateOfDeath, cdm.ColSex, glob(cdm.TablePatient), cdm.ColNHSNumber, kept),
		fmt.Sprintf(`CREATE TEMP VIEW registration AS SELECT %s AS site, * EXCLUDE (filename)
			FROM read_parquet(%s, filename = true) WHERE valid_nhs(%s) AND %s = %s AND %s`,
			site, glob(cdm.TableRegistration), cdm.ColNHSNumber, cdm.ColPracticeODS, site, kept),
		fmt.Sprintf(`CREATE TEMP VIEW type1 AS SELECT DISTINCT %s AS site, %s AS nhs FROM read_parquet(%s, filename = true) WHERE %s = %s`,
			site, cdm.ColNHSNumber, glob(cdm.TableOptOut), cdm.ColKind, quote(cdm.OptOutType1)),
	}
	// Event tables: distinct rows (a duplicated row is one event) of valid
	// numbers on no opt-out list (national, or type 1 at any practice: an
	// objection holds wherever the record sits), less those dated after
	// the death the site's own patient table records.
	for _, e := range []struct{ table, date string }{
		{cdm.TableClinicalEvent, cdm.ColEventDate},
		{cdm.TableMedication, cdm.ColIssueDate},
		{cdm.TableAPCEpisode, cdm.ColAdmissionDate},
		{cdm.TableAEAttendance, cdm.ColArrivalDate},
	} {
		stmts = append(stmts, fmt.Sprintf(`CREATE TEMP VIEW %s AS
			SELECT DISTINCT e.* FROM (SELECT %s AS site, * EXCLUDE (filename) FROM read_parquet(%s, filename = true) WHERE %s) e
			LEFT JOIN patient p ON p.site = e.site AND p.nhs = e.%s
			WHERE valid_nhs(e.%s) AND e.%s NOT IN (SELECT nhs FROM ndop) AND e.%s NOT IN (SELECT nhs FROM type1) AND e.%s IS NOT NULL
			AND (p.death IS NULL OR e.%s <= p.death)`,
			e.table, site, glob(e.table), kept, cdm.ColNHSNumber, cdm.ColNHSNumber, cdm.ColNHSNumber, cdm.ColNHSNumber, e.date, e.date))
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("central set-up: %v\n%s", err, s)
		}
	}
	return c
}

// activity counts a trust's hospital activity records as its files hold
// them: every row of apc_episode and ae_attendance, as a connector counts
// its tables.
func (c *central) activity(trust string) int64 {
	c.t.Helper()
	var n int64
	for _, table := range []string{cdm.TableAPCEpisode, cdm.TableAEAttendance} {
		var k int64
		q := "SELECT count(*) FROM read_parquet(" + quote(filepath.Join(c.sitesDir, trust, table+".parquet")) + ")"
		if err := c.db.QueryRow(q).Scan(&k); err != nil {
			c.t.Fatalf("central activity of %s: %v", trust, err)
		}
		n += k
	}
	return n
}

// weighted is the modulus-11 weighted sum of the first nine digits of s.
func weighted() string {
	var terms []string
	for i := 1; i <= 9; i++ {
		terms = append(terms, fmt.Sprintf("TRY_CAST(substr(s, %d, 1) AS INTEGER) * %d", i, 11-i))
	}
	return strings.Join(terms, " + ")
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func list(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// codes is a codelist of the bundle as a DuckDB list literal.
func (c *central) codes(name string) string {
	var out []string
	for code := range releasecheck.MustReadCodelist(c.t, c.bundle, name) {
		out = append(out, code)
	}
	return list(out)
}

// gpPopulation is the SQL of the patients registered at a practice on d
// (a registration that ends on d is over), alive on d (every reference
// definition with a GP population states alive_on), aged minAge or over,
// on neither opt-out list: columns site, nhs, age, sex, death.
func gpPopulation(d string, minAge int) string {
	return fmt.Sprintf(`SELECT p.site, p.nhs, age_on(p.birth, DATE %s) AS age, p.sex, p.death FROM patient p
		WHERE (p.site, p.nhs) IN (SELECT site, %s FROM registration WHERE %s <= DATE %s AND (%s IS NULL OR %s > DATE %s))
		AND p.nhs NOT IN (SELECT nhs FROM ndop) AND p.nhs NOT IN (SELECT nhs FROM type1)
		AND (p.death IS NULL OR p.death > DATE %s)
		AND age_on(p.birth, DATE %s) >= %d`,
		quote(d), cdm.ColNHSNumber, cdm.ColStartDate, quote(d), cdm.ColEndDate, cdm.ColEndDate, quote(d), quote(d), quote(d), minAge)
}

// hasEvent is the SQL of the (site, nhs) pairs with a clinical event coded
// in codelist on or before d at that site.
func (c *central) hasEvent(codelist, d string) string {
	return fmt.Sprintf(`SELECT site, %s FROM %s WHERE %s IN (SELECT unnest(%s)) AND %s <= DATE %s`,
		cdm.ColNHSNumber, cdm.TableClinicalEvent, cdm.ColSNOMEDCode, c.codes(codelist), cdm.ColEventDate, quote(d))
}

// band10 labels ten-year age bands, 90+ at the top.
const band10 = `CASE WHEN age >= 90 THEN '90+' WHEN age >= 0 THEN (age // 10 * 10)::VARCHAR || '-' || (age // 10 * 10 + 9)::VARCHAR END`

// bands labels age bands with the given lower limits.
func bands(limits ...int) string {
	var b strings.Builder
	b.WriteString("CASE")
	for i := len(limits) - 1; i >= 0; i-- {
		label := fmt.Sprintf("%d+", limits[i])
		if i < len(limits)-1 {
			label = fmt.Sprintf("%d-%d", limits[i], limits[i+1]-1)
		}
		fmt.Fprintf(&b, " WHEN age >= %d THEN '%s'", limits[i], label)
	}
	if limits[0] > 0 {
		fmt.Fprintf(&b, " WHEN age >= 0 THEN '0-%d'", limits[0]-1)
	}
	b.WriteString(" END")
	return b.String()
}

// measure says how one result column adds into a cell.
type measure struct {
	name string
	kind string // "count", "sum" or "mean"
}

// answer runs a per-patient query whose first column is the patient's NHS
// number, whose next keys columns are the group values and whose next
// columns are the measures' per-patient values, and adds them up into
// cells. A count's per-patient value is 1 for a patient it counts, else
// 0; with record keys, the patients it counts add their keys to its cell
// key.
func (c *central) answer(query string, keys int, measures ...measure) releasecheck.TrueTable {
	c.t.Helper()
	rows, err := c.db.Query(query)
	if err != nil {
		c.t.Fatalf("central query: %v\n%s", err, query)
	}
	defer rows.Close()
	out := releasecheck.TrueTable{}
	for rows.Next() {
		var nhs string
		k := make([]sql.NullString, keys)
		v := make([]sql.NullFloat64, len(measures))
		dest := make([]any, 0, 1+keys+len(measures))
		dest = append(dest, &nhs)
		for i := range k {
			dest = append(dest, &k[i])
		}
		for i := range v {
			dest = append(dest, &v[i])
		}
		if err := rows.Scan(dest...); err != nil {
			c.t.Fatalf("central query: %v", err)
		}
		key := make([]string, keys)
		for i, s := range k {
			key[i] = s.String
		}
		cell := out.Cell(key...)
		var rk uint64
		if c.recordKey != nil {
			rk = c.recordKey(nhs)
		}
		for i, m := range measures {
			switch m.kind {
			case "count":
				n := v[i].Float64
				if n != 0 && n != 1 {
					c.t.Fatalf("central query: count %s of a patient is %v, want 0 or 1", m.name, n)
				}
				cell.Add(m.name, n, false)
				if c.recordKey != nil {
					cell.AddKey(m.name, uint64(n)*rk)
				}
			case "sum":
				cell.Add(m.name, v[i].Float64, v[i].Valid && v[i].Float64 != 0)
			case "mean":
				if v[i].Valid {
					cell.Add(m.name, v[i].Float64, true)
				} else {
					cell.Add(m.name, 0, false)
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		c.t.Fatalf("central query: %v", err)
	}
	return out
}

// t2dmPrevalence: by practice, ten-year band and sex, the living
// registered patients of minAge or over, and those with type 2 diabetes.
func (c *central) t2dmPrevalence(d string, minAge int) releasecheck.TrueTable {
	q := fmt.Sprintf(`WITH pop AS (%s), dm AS (%s)
		SELECT nhs, site, %s, sex, 1, h, h FROM (
			SELECT *, CASE WHEN (site, nhs) IN (SELECT * FROM dm) THEN 1 ELSE 0 END AS h FROM pop)`,
		gpPopulation(d, minAge), c.hasEvent("t2dm", d), band10)
	return c.answer(q, 3, measure{"patients", "count"}, measure{"t2dm", "count"}, measure{"prevalence", "mean"})
}

// t2dmEmergencyAdmissions: adults with type 2 diabetes at a practice, and
// their distinct emergency episodes at every trust in the follow-up.
func (c *central) t2dmEmergencyAdmissions(d string, followup int) releasecheck.TrueTable {
	q := fmt.Sprintf(`WITH pop AS (%s), adm AS (
			SELECT %s AS nhs, count(DISTINCT (site, %s)) AS a FROM %s
			WHERE %s = %s AND %s BETWEEN DATE %s AND DATE %s + %d GROUP BY ALL)
		SELECT nhs, %s, sex, 1, CASE WHEN a > 0 THEN 1 ELSE 0 END, coalesce(a, 0)
		FROM pop LEFT JOIN adm USING (nhs) WHERE (site, nhs) IN (%s)`,
		gpPopulation(d, 18), cdm.ColNHSNumber, cdm.ColEpisodeID, cdm.TableAPCEpisode,
		cdm.ColAdmissionMethod, quote(cdm.AdmissionEmergency), cdm.ColAdmissionDate, quote(d), quote(d), followup,
		band10, c.hasEvent("t2dm", d))
	return c.answer(q, 2, measure{"patients", "count"}, measure{"admitted", "count"}, measure{"admissions", "sum"})
}

// statinsCHD: adults with coronary heart disease at a practice and the
// statin issues of the lookback window there.
func (c *central) statinsCHD(d string, lookback int) releasecheck.TrueTable {
	q := fmt.Sprintf(`WITH pop AS (%s), iss AS (
			SELECT site, %s AS nhs, count(*) AS n FROM %s
			WHERE %s IN (SELECT unnest(%s)) AND %s BETWEEN DATE %s - %d AND DATE %s GROUP BY ALL)
		SELECT nhs, %s, sex, 1, CASE WHEN n > 0 THEN 1 ELSE 0 END, coalesce(n, 0)
		FROM pop LEFT JOIN iss USING (site, nhs) WHERE (site, nhs) IN (%s)`,
		gpPopulation(d, 18), cdm.ColNHSNumber, cdm.TableMedication, cdm.ColDMDCode, c.codes("statins"),
		cdm.ColIssueDate, quote(d), lookback, quote(d), bands(18, 50, 65, 80), c.hasEvent("chd", d))
	return c.answer(q, 2, measure{"patients", "count"}, measure{"on_statin", "count"}, measure{"statin_issues", "sum"})
}

// bpControl: adults with hypertension at a practice, by practice and age
// band, and the latest systolic reading of the lookback window there.
func (c *central) bpControl(d string, lookback, target int) releasecheck.TrueTable {
	q := fmt.Sprintf(`WITH pop AS (%s), sbp AS (
			SELECT site, %s AS nhs, arg_max(%s, (%s, %s)) AS v FROM %s
			WHERE %s IN (SELECT unnest(%s)) AND %s IS NOT NULL AND %s BETWEEN DATE %s - %d AND DATE %s GROUP BY ALL)
		SELECT nhs, site, %s, 1, CASE WHEN v > 0 THEN 1 ELSE 0 END, CASE WHEN v > 0 AND v < %d THEN 1 ELSE 0 END, v
		FROM pop LEFT JOIN sbp USING (site, nhs) WHERE (site, nhs) IN (%s)`,
		gpPopulation(d, 18), cdm.ColNHSNumber, cdm.ColNumericValue, cdm.ColEventDate, cdm.ColNumericValue,
		cdm.TableClinicalEvent, cdm.ColSNOMEDCode, c.codes("systolic-bp"), cdm.ColNumericValue,
		cdm.ColEventDate, quote(d), lookback, quote(d), bands(18, 40, 60, 80), target, c.hasEvent("hypertension", d))
	return c.answer(q, 2, measure{"patients", "count"}, measure{"measured", "count"}, measure{"controlled", "count"}, measure{"mean_sbp", "mean"})
}

// copdAE: people of 35 or over with COPD at a practice, their A&E
// attendances at every trust in the follow-up, and their emergency
// admissions with a COPD primary diagnosis.
func (c *central) copdAE(d string, followup int) releasecheck.TrueTable {
	q := fmt.Sprintf(`WITH pop AS (%s),
		ae AS (SELECT %s AS nhs, count(*) AS n FROM %s WHERE %s BETWEEN DATE %s AND DATE %s + %d GROUP BY ALL),
		adm AS (SELECT %s AS nhs, count(DISTINCT (site, %s)) AS n FROM %s
			WHERE %s = %s AND %s BETWEEN DATE %s AND DATE %s + %d
			AND len(list_filter(%s, c -> starts_with(regexp_replace(%s, '\.', ''), c))) > 0 GROUP BY ALL)
		SELECT nhs, %s, sex, 1, CASE WHEN ae.n > 0 THEN 1 ELSE 0 END, coalesce(ae.n, 0), CASE WHEN adm.n > 0 THEN 1 ELSE 0 END
		FROM pop LEFT JOIN ae USING (nhs) LEFT JOIN adm USING (nhs) WHERE (site, nhs) IN (%s)`,
		gpPopulation(d, 35),
		cdm.ColNHSNumber, cdm.TableAEAttendance, cdm.ColArrivalDate, quote(d), quote(d), followup,
		cdm.ColNHSNumber, cdm.ColEpisodeID, cdm.TableAPCEpisode, cdm.ColAdmissionMethod, quote(cdm.AdmissionEmergency),
		cdm.ColAdmissionDate, quote(d), quote(d), followup, c.codes("copd-icd10"), cdm.ColPrimaryDiagnosis,
		bands(35, 50, 65, 80), c.hasEvent("copd", d))
	return c.answer(q, 2, measure{"patients", "count"}, measure{"attended", "count"}, measure{"attendances", "sum"}, measure{"admitted_copd", "count"})
}

// readmissions: patients with an emergency admission in [start, end] at
// any trust, counted once, under the trust of their first such admission
// (ties to the smaller ODS code), and their emergency admissions that
// follow, by 1 to window days, an emergency discharge in the period.
func (c *central) readmissions(start, end string, window int) releasecheck.TrueTable {
	q := fmt.Sprintf(`WITH emerg AS (
			SELECT site, %s AS nhs, %s AS episode, %s AS a, %s AS d FROM %s WHERE %s = %s),
		pop AS (SELECT nhs, arg_min(site, (a, site)) AS trust FROM emerg
			WHERE a BETWEEN DATE %s AND DATE %s GROUP BY ALL),
		dis AS (SELECT DISTINCT site, nhs, episode, d FROM emerg WHERE d BETWEEN DATE %s AND DATE %s),
		adm AS (SELECT DISTINCT site, nhs, episode, a FROM emerg WHERE a BETWEEN DATE %s AND DATE %s + %d),
		re AS (SELECT nhs, count(*) AS n FROM adm
			WHERE EXISTS (SELECT 1 FROM dis WHERE dis.nhs = adm.nhs AND dis.d < adm.a AND adm.a <= dis.d + %d) GROUP BY ALL)
		SELECT nhs, trust, 1, CASE WHEN n > 0 THEN 1 ELSE 0 END, coalesce(n, 0) FROM pop LEFT JOIN re USING (nhs)`,
		cdm.ColNHSNumber, cdm.ColEpisodeID, cdm.ColAdmissionDate, cdm.ColDischargeDate, cdm.TableAPCEpisode,
		cdm.ColAdmissionMethod, quote(cdm.AdmissionEmergency),
		quote(start), quote(end), quote(start), quote(end), quote(start), quote(end), window, window)
	return c.answer(q, 1, measure{"patients", "count"}, measure{"readmitted", "count"}, measure{"readmissions", "sum"})
}
