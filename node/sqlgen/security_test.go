package sqlgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// hostile are site facts no SQL text may ever contain.
var hostileODS = `X'); DROP TABLE patient; --`

func hostileNDOP() []string {
	return []string{`1' OR '1'='1`, `"; SELECT * FROM patient; --`, "$1x", "9434765919", `\x00`, "ünïcödé"}
}

// randomParams returns random valid raw values for every parameter of d
// (it may still fail Bind's checks across parameters).
func randomParams(r *rand.Rand, d *catalog.Definition) map[string]string {
	out := map[string]string{}
	for _, p := range d.Parameters {
		switch p.Type {
		case catalog.ParamDate:
			lo, hi := catalog.DateOf(2015, 1, 1), catalog.DateOf(2025, 12, 31)
			if p.Min != nil {
				lo = p.Min.Date
			}
			if p.Max != nil {
				hi = p.Max.Date
			}
			out[p.Name] = (lo + catalog.Date(r.IntN(int(hi-lo)+1))).String()
		case catalog.ParamInt:
			lo, hi := int64(0), int64(1000)
			if p.Min != nil {
				lo = p.Min.Int
			}
			if p.Max != nil {
				hi = p.Max.Int
			}
			out[p.Name] = fmt.Sprint(lo + r.Int64N(hi-lo+1))
		case catalog.ParamEnum, catalog.ParamCodelist:
			out[p.Name] = p.Values[r.IntN(len(p.Values))]
		}
	}
	return out
}

// bindRandom binds random parameters, retrying until Bind accepts them.
func bindRandom(t testing.TB, r *rand.Rand, d *catalog.Definition) *catalog.Bound {
	t.Helper()
	for range 100 {
		if b, err := d.Bind(randomParams(r, d)); err == nil {
			return b
		}
	}
	t.Fatalf("%s: no random parameters bind", d.ID)
	return nil
}

// stringsIn lists the string values among args, list elements included.
func stringsIn(args []any) []string {
	var out []string
	for _, a := range args {
		switch a := a.(type) {
		case string:
			out = append(out, a)
		case []string:
			out = append(out, a...)
		case time.Time:
			out = append(out, a.Format(time.DateOnly))
		}
	}
	return out
}

var quotedIdent = regexp.MustCompile(`"[a-z][a-z0-9_]*"`)

// codelistDef chooses its codelist by parameter, so that one SQL text
// must serve codelists of different sizes and systems' codes.
const codelistDef = `
id: by-condition
version: 1
title: By condition
parameters:
  index_date: {type: date, default: 2024-01-01}
  condition: {type: codelist, values: [t2dm, copd, hypertension, chd], default: t2dm}
  method: {type: enum, values: [emergency, elective, maternity], default: emergency}
population:
  registered_on: $index_date
  has_event: {table: clinical_event, codelist: $condition, on_or_before: $index_date}
variables:
  sex: {column: patient.sex}
  admissions: {count: {table: apc_episode, where: {admission_method: $method}, between: [$index_date, $index_date + 365]}}
measures:
  - {name: patients, count: patients}
  - {name: admitted, count: patients, where: admissions > 0}
group_by: [sex]
`

// TestSQLTextIndependentOfValues compiles every definition with its
// defaults and with random parameters and hostile site facts: the SQL
// text must not change, must hold no string literal, and no argument's
// text may appear in it.
func TestSQLTextIndependentOfValues(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	defs := loadBundle(t).Definitions()
	defs = append(defs, parseDefinition(t, codelistDef))
	for _, d := range defs {
		p := d.Plan()
		base := bind(t, d, nil)
		for _, task := range p.Tasks {
			for _, dialect := range Dialects() {
				name := fmt.Sprintf("%s/%s/%s", d.ID, task.Kind, dialect.Name())
				want, err := Compile(base, p, task.Kind, dialect, Options{SiteODS: "A00001"})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				for i := range 8 {
					b := bindRandom(t, r, d)
					got, err := Compile(b, p, task.Kind, dialect, Options{SiteODS: hostileODS, NDOP: hostileNDOP()})
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					ws, gs := want.Statements(), got.Statements()
					if len(ws) != len(gs) {
						t.Fatalf("%s: %d statements, then %d", name, len(ws), len(gs))
					}
					for k := range gs {
						if gs[k].SQL != ws[k].SQL || gs[k].SHA256 != ws[k].SHA256 {
							t.Errorf("%s %s: SQL text changed with parameters %v", name, gs[k].Name, b.Params())
						}
						if len(gs[k].Args) != len(ws[k].Args) {
							t.Errorf("%s %s: %d args, then %d", name, gs[k].Name, len(ws[k].Args), len(gs[k].Args))
						}
						if strings.ContainsRune(gs[k].SQL, '\'') {
							t.Errorf("%s %s: SQL has a string literal", name, gs[k].Name)
						}
						// Names from the definition are quoted identifiers; a
						// value may be part of one (emergency_admissions).
						text := quotedIdent.ReplaceAllString(gs[k].SQL, `""`)
						for _, s := range stringsIn(gs[k].Args) {
							if len(s) >= 2 && strings.Contains(text, s) {
								t.Errorf("%s %s: argument %q appears in the SQL text", name, gs[k].Name, s)
							}
						}
						if i == 0 && gs[k].Name == StatementResult && task.Kind == cdm.KindGP {
							args := strings.Join(stringsIn(gs[k].Args), "\n")
							for _, h := range append(hostileNDOP(), hostileODS) {
								if !strings.Contains(args, h) {
									t.Errorf("%s: site fact %q is not among the arguments", name, h)
								}
							}
						}
					}
				}
			}
		}
	}
}

// TestCodesOnlyInArgs: every code of the codelists a definition uses
// reaches the program as an argument, never as text.
func TestCodesOnlyInArgs(t *testing.T) {
	d := parseDefinition(t, codelistDef)
	for _, cl := range []string{"t2dm", "copd", "hypertension", "chd"} {
		b := bind(t, d, map[string]string{"condition": cl})
		prog, err := Compile(b, d.Plan(), cdm.KindGP, DuckDB(), Options{SiteODS: "A00001"})
		if err != nil {
			t.Fatal(err)
		}
		list, _ := d.Codelist(cl)
		args := stringsIn(prog.Result.Args)
		for _, code := range list.Values() {
			if strings.Contains(prog.Result.SQL, code) {
				t.Errorf("%s: code %s in the SQL text", cl, code)
			}
			if !slices.Contains(args, code) {
				t.Errorf("%s: code %s not among the arguments", cl, code)
			}
		}
	}
}

// finalSelect returns the select list of a statement's outer query.
func finalSelect(sql string) string {
	i := strings.LastIndex(sql, "\nSELECT ")
	if i < 0 {
		i = 0
	}
	rest := sql[i:]
	if j := strings.Index(rest, "\nFROM"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// TestNoIdentifyingOutputs: no Result returns an identifying column
// other than the nhs_number the node replaces, and none selects one.
func TestNoIdentifyingOutputs(t *testing.T) {
	for _, d := range loadBundle(t).Definitions() {
		p := d.Plan()
		b := bind(t, d, nil)
		for _, task := range p.Tasks {
			for _, dialect := range Dialects() {
				prog, err := Compile(b, p, task.Kind, dialect, Options{SiteODS: "A00001"})
				if err != nil {
					t.Fatal(err)
				}
				sel := finalSelect(prog.Result.SQL)
				if !strings.HasPrefix(sel, "\nSELECT ") {
					t.Fatalf("%s: no outer SELECT found", d.ID)
				}
				for _, col := range []string{cdm.ColBirthDate, cdm.ColLSOA, cdm.ColDateOfDeath} {
					if strings.Contains(sel, col) {
						t.Errorf("%s %s: the result's select list reads %s:\n%s", d.ID, task.Kind, col, sel)
					}
				}
				for _, st := range prog.Statements() {
					if strings.Contains(st.SQL, cdm.ColLSOA) {
						t.Errorf("%s %s %s: reads lsoa, which no definition needs", d.ID, task.Kind, st.Name)
					}
				}
				for i, c := range prog.Result.Columns {
					if c.Name == cdm.ColNHSNumber && (i == 0 && p.Mode == catalog.ModeLinkage) {
						continue
					}
					for _, tbl := range cdm.Tables() {
						if col, ok := tbl.Column(c.Name); ok && col.Sensitivity == cdm.Identifying {
							t.Errorf("%s %s: result column %s is identifying", d.ID, task.Kind, c.Name)
						}
					}
				}
				if p.Mode == catalog.ModeAggregate && strings.Contains(sel, cdm.ColNHSNumber) {
					t.Errorf("%s: an aggregate result selects nhs_number", d.ID)
				}
			}
		}
	}
}

// TestOptOutsAndInvalidNumbersNeverLeave runs every reference definition
// at every site and checks each NHS number a Result or Members returns
// against the synthetic files: never on the national list, never with a
// type 1 objection at the site, never invalid. It also checks that the
// exclusions matter: without the national list, some of its patients
// would have been counted.
func TestOptOutsAndInvalidNumbersNeverLeave(t *testing.T) {
	n := loadNetwork(t)
	ndop := map[string]bool{}
	for _, x := range network.ndop {
		ndop[x] = true
	}
	ctx := context.Background()
	for _, d := range loadBundle(t).Definitions() {
		p := d.Plan()
		b := bind(t, d, nil)
		for _, task := range p.Tasks {
			for _, s := range n.SitesOfKind(task.Kind) {
				sd := siteRows(t, n, s)
				type1 := map[string]bool{}
				for _, o := range sd.optOuts {
					if o.kind == cdm.OptOutType1 {
						type1[o.nhs] = true
					}
				}
				db := openDuckDB(t, n, s)
				prog, err := Compile(b, p, task.Kind, DuckDB(), Options{SiteODS: s.ODS, NDOP: network.ndop})
				if err != nil {
					t.Fatal(err)
				}
				st := prog.Result
				if prog.Members != nil {
					st = *prog.Members
				}
				rows, err := query(ctx, db, st)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rows {
					nhs := r[0].(string)
					switch {
					case ndop[nhs]:
						t.Errorf("%s %s: a national opt-out is in %s", d.ID, s.ODS, st.Name)
					case type1[nhs]:
						t.Errorf("%s %s: a type 1 objection is in %s", d.ID, s.ODS, st.Name)
					case !cdm.ValidNHSNumber(nhs):
						t.Errorf("%s %s: an invalid NHS number is in %s", d.ID, s.ODS, st.Name)
					}
				}
			}
		}
	}

	// The exclusions are exercised: at the first practice, patients on
	// the national list and with type 1 objections are registered.
	d, _ := loadBundle(t).Get("t2dm-prevalence")
	s := n.SitesOfKind(cdm.KindGP)[0]
	b := bind(t, d, nil)
	with, err := Compile(b, d.Plan(), cdm.KindGP, DuckDB(), Options{SiteODS: s.ODS, NDOP: network.ndop})
	if err != nil {
		t.Fatal(err)
	}
	without, err := Compile(b, d.Plan(), cdm.KindGP, DuckDB(), Options{SiteODS: s.ODS})
	if err != nil {
		t.Fatal(err)
	}
	db := openDuckDB(t, n, s)
	a, err := query(ctx, db, *with.Members)
	if err != nil {
		t.Fatal(err)
	}
	c, err := query(ctx, db, *without.Members)
	if err != nil {
		t.Fatal(err)
	}
	extra := 0
	for nhs := range byNHS(c) {
		if ndop[nhs] {
			extra++
		}
	}
	if extra == 0 || len(c)-len(a) != extra {
		t.Errorf("without the national list %d members, with it %d; %d on the list", len(c), len(a), extra)
	}
	ref := newReference(t, b, cdm.KindGP, siteRows(t, n, s), nil)
	type1 := 0
	for _, o := range ref.sd.optOuts {
		if o.kind == cdm.OptOutType1 && ref.registeredHere(o.nhs, b.Date(*d.Population.RegisteredOn)) != nil {
			type1++
		}
	}
	if type1 == 0 {
		t.Error("no registered patient has a type 1 objection: the exclusion is not exercised")
	}
}

// TestInvalidNHSNumbersMatchNetwork compares InvalidNHSNumbers with the
// defects the generator recorded, for definitions that read every table
// of each kind of site.
func TestInvalidNHSNumbersMatchNetwork(t *testing.T) {
	n := loadNetwork(t)
	c := loadBundle(t)
	for _, tt := range []struct {
		def  string
		kind cdm.SiteKind
	}{{"statins-chd", cdm.KindGP}, {"bp-control-hypertension", cdm.KindGP}, {"copd-ae-attendances", cdm.KindTrust}} {
		d, _ := c.Get(tt.def)
		b := bind(t, d, nil)
		for _, s := range n.SitesOfKind(tt.kind) {
			prog, err := Compile(b, d.Plan(), tt.kind, DuckDB(), Options{SiteODS: s.ODS})
			if err != nil {
				t.Fatal(err)
			}
			rows, err := query(context.Background(), openDuckDB(t, n, s), prog.InvalidNHSNumbers)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 {
				t.Fatalf("%d rows", len(rows))
			}
			total := int64(0)
			for i, col := range prog.InvalidNHSNumbers.Columns {
				want := s.Files[col.Name].InvalidNHSNumbers
				if rows[0][i] != want {
					t.Errorf("%s %s: %d invalid numbers in %s, the network records %d", tt.def, s.ODS, rows[0][i], col.Name, want)
				}
				total += want
			}
			if total == 0 {
				t.Errorf("%s %s: no invalid numbers at all; the test proves nothing", tt.def, s.ODS)
			}
		}
	}
}

// TestValidNHSInSQL checks the SQL check digit test against
// cdm.ValidNHSNumber on valid numbers, each with every wrong check digit,
// numbers that have no check digit, and malformed strings.
func TestValidNHSInSQL(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var cases []string
	for range 200 {
		n := nhsNumber(t, uint32(r.IntN(999_999_000)))
		cases = append(cases, n)
		for d := byte('0'); d <= '9'; d++ {
			cases = append(cases, n[:9]+string(rune(d)))
		}
	}
	for range 500 {
		cases = append(cases, fmt.Sprintf("%010d", r.Int64N(10_000_000_000)))
	}
	valid := nhsNumber(t, 943476591)
	cases = append(cases, noCheckDigit(t), "", " ", valid[:9], valid+"0", " "+valid[:9], valid[:9]+" ",
		"12345678AB", "٩٤٣٤٧٦٥٩١٩", "９４３４７６５９１９", strings.ReplaceAll(valid, "4", "\x00"), "+"+valid[1:], "-"+valid[1:], valid[:5]+"."+valid[6:],
		// Forms a cast to a number might read.
		" "+valid[1:], valid[1:]+" ", "1e9"+valid[3:], valid[:4]+"e"+valid[5:], valid[:4]+"_"+valid[5:], "0x"+valid[2:], valid[:8]+".0",
		"-000000001", "-999999999", "9.22337e18", "99999999e9", valid+valid)
	seen := map[bool]int{}
	for _, x := range cases {
		seen[cdm.ValidNHSNumber(x)]++
	}
	if seen[true] < 100 || seen[false] < 100 {
		t.Fatalf("cases: %v", seen)
	}
	for _, dialect := range testDialects(t) {
		t.Run(dialect.d.Name(), func(t *testing.T) {
			db := dialect.open(t)
			in := cases
			if dialect.d.Name() == PostgreSQL().Name() {
				// PostgreSQL text cannot hold NUL.
				in = slices.DeleteFunc(slices.Clone(cases), func(x string) bool { return strings.ContainsRune(x, 0) })
			}
			q := "SELECT t.x, " + dialect.d.validNHS("t.x") + " FROM (SELECT unnest(" + dialect.d.textArray("$1") + ") AS x) AS t"
			rows, err := db.Query(q, in)
			if err != nil {
				t.Fatalf("%s: %v", dialect.d.Name(), err)
			}
			checked := 0
			for rows.Next() {
				var x string
				var got bool
				if err := rows.Scan(&x, &got); err != nil {
					t.Fatal(err)
				}
				if want := cdm.ValidNHSNumber(x); got != want {
					t.Errorf("%s: %q valid = %v, want %v", dialect.d.Name(), x, got, want)
				}
				checked++
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			rows.Close()
			if checked != len(in) {
				t.Errorf("%s: checked %d of %d", dialect.d.Name(), checked, len(in))
			}
			var got bool
			if err := db.QueryRow("SELECT " + dialect.d.validNHS("CAST(NULL AS "+dialect.d.textType()+")")).Scan(&got); err != nil || got {
				t.Errorf("%s: NULL valid = %v, %v", dialect.d.Name(), got, err)
			}
		})
	}
}
