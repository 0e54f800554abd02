package sqlgen

import (
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

func TestCompileRefusesBadInput(t *testing.T) {
	c := loadBundle(t)
	prev, _ := c.Get("t2dm-prevalence")
	readmit, _ := c.Get("emergency-readmissions-30d")
	b := bind(t, prev, nil)
	plan := prev.Plan()
	tampered := prev.Plan()
	tampered.Tasks[0].Fields[0].Name = `practice"; DROP TABLE patient; --`
	renamed := prev.Plan()
	renamed.Tasks[0].Fields = renamed.Tasks[0].Fields[1:]
	opts := Options{SiteODS: "A00001"}
	tests := []struct {
		name string
		b    *catalog.Bound
		plan *catalog.Plan
		kind cdm.SiteKind
		d    Dialect
		opts Options
		want string
	}{
		{"no bound definition", nil, plan, cdm.KindGP, DuckDB(), opts, "no bound definition"},
		{"no plan", b, nil, cdm.KindGP, DuckDB(), opts, "no plan"},
		{"no dialect", b, plan, cdm.KindGP, nil, opts, "no SQL dialect"},
		{"another definition's plan", b, readmit.Plan(), cdm.KindGP, DuckDB(), opts, "the plan is for definition emergency-readmissions-30d"},
		{"tampered field name", b, tampered, cdm.KindGP, DuckDB(), opts, "differs from the definition's own plan"},
		{"field dropped", b, renamed, cdm.KindGP, DuckDB(), opts, "differs from the definition's own plan"},
		{"kind not in plan", b, plan, cdm.KindTrust, DuckDB(), opts, "trust sites take no part"},
		{"unknown kind", b, plan, cdm.SiteKind("lab"), DuckDB(), opts, "lab sites take no part"},
		{"no ODS code at a practice", b, plan, cdm.KindGP, DuckDB(), Options{}, "no site ODS code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.b, tt.plan, tt.kind, tt.d, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile = %v, %v; want an error containing %q", p, err, tt.want)
			}
		})
	}
}

// TestCompileRefusesKeyName: a variable may not take the name the
// statements give the patient's number.
func TestCompileRefusesKeyName(t *testing.T) {
	d := parseDefinition(t, `
id: key-name
version: 1
title: Key name
parameters:
  index_date: {type: date, default: 2024-01-01}
population: {registered_on: $index_date}
variables:
  nhs_number: {column: patient.sex}
measures:
  - {name: patients, count: patients}
group_by: [nhs_number]
`)
	_, err := Compile(bind(t, d, nil), d.Plan(), cdm.KindGP, DuckDB(), Options{SiteODS: "A00001"})
	if err == nil || !strings.Contains(err.Error(), "cannot be called nhs_number") {
		t.Fatalf("Compile = %v", err)
	}
}

func TestInvalidCountsBadInput(t *testing.T) {
	for _, tables := range [][]string{nil, {"patient", "no_such_table"}} {
		if _, err := InvalidCounts(cdm.KindGP, DuckDB(), tables); err == nil {
			t.Errorf("InvalidCounts(%v) succeeded", tables)
		}
	}
}

func TestProgramShape(t *testing.T) {
	c := loadBundle(t)
	tests := []struct {
		def     string
		kind    cdm.SiteKind
		members bool
		tables  string
	}{
		{"t2dm-prevalence", cdm.KindGP, true, "patient registration clinical_event opt_out"},
		{"statins-chd", cdm.KindGP, true, "patient registration clinical_event medication opt_out"},
		{"t2dm-emergency-admissions", cdm.KindGP, false, "patient registration clinical_event opt_out"},
		{"t2dm-emergency-admissions", cdm.KindTrust, false, "patient apc_episode"},
		{"copd-ae-attendances", cdm.KindTrust, false, "patient apc_episode ae_attendance"},
		{"emergency-readmissions-30d", cdm.KindTrust, false, "patient apc_episode"},
	}
	for _, tt := range tests {
		d, _ := c.Get(tt.def)
		p := d.Plan()
		task, _ := p.Task(tt.kind)
		b := bind(t, d, nil)
		prog, err := Compile(b, p, tt.kind, PostgreSQL(), Options{SiteODS: "A00001"})
		if err != nil {
			t.Fatal(err)
		}
		if prog.Definition != d.ID || prog.Hash != d.Hash() || prog.Mode != p.Mode || prog.Kind != tt.kind || prog.Dialect != "postgres" {
			t.Errorf("%s: program header %s %s %s %s %s", tt.def, prog.Definition, prog.Hash, prog.Mode, prog.Kind, prog.Dialect)
		}
		if got := strings.Join(prog.Tables, " "); got != tt.tables {
			t.Errorf("%s %s: tables %s, want %s", tt.def, tt.kind, got, tt.tables)
		}
		if (prog.Members != nil) != tt.members {
			t.Errorf("%s %s: members %v, want %v", tt.def, tt.kind, prog.Members != nil, tt.members)
		}
		// Result columns are the task's fields, the key being nhs_number.
		if len(prog.Result.Columns) != len(task.Fields) {
			t.Fatalf("%s %s: %d result columns for %d fields", tt.def, tt.kind, len(prog.Result.Columns), len(task.Fields))
		}
		for i, f := range task.Fields {
			col := prog.Result.Columns[i]
			want := Column{Name: f.Name, Type: f.Type}
			if f.Role == catalog.RoleKey {
				want = Column{Name: cdm.ColNHSNumber, Type: catalog.FieldString}
			}
			if col != want {
				t.Errorf("%s %s: column %d = %v, want %v", tt.def, tt.kind, i, col, want)
			}
		}
		var cols []string
		for _, c := range prog.InvalidNHSNumbers.Columns {
			cols = append(cols, c.Name)
		}
		if strings.Join(cols, " ") != tt.tables {
			t.Errorf("%s %s: invalid-number columns %v", tt.def, tt.kind, cols)
		}
		// A node counts invalid numbers with InvalidCounts; it must be
		// the program's own statement.
		ic, err := InvalidCounts(tt.kind, PostgreSQL(), prog.Tables)
		if err != nil || !reflect.DeepEqual(ic, prog.InvalidNHSNumbers) {
			t.Errorf("%s %s: InvalidCounts = %+v, %v; want the program's %+v", tt.def, tt.kind, ic, err, prog.InvalidNHSNumbers)
		}
		for _, st := range prog.Statements() {
			if len(st.SHA256) != 64 || st.SQL == "" {
				t.Errorf("%s %s %s: hash %q", tt.def, tt.kind, st.Name, st.SHA256)
			}
			// Placeholders first appear in order, and every argument is used.
			next := 1
			for _, m := range placeholderRE.FindAllString(st.SQL, -1) {
				n, _ := strconv.Atoi(m[1:])
				if n > next {
					t.Errorf("%s %s %s: %s appears before $%d", tt.def, tt.kind, st.Name, m, next)
					break
				}
				if n == next {
					next++
				}
			}
			if next-1 != len(st.Args) {
				t.Errorf("%s %s %s: %d placeholders for %d arguments", tt.def, tt.kind, st.Name, next-1, len(st.Args))
			}
		}
		again, _ := Compile(b, p, tt.kind, PostgreSQL(), Options{SiteODS: "A00001"})
		if again.Result.SHA256 != prog.Result.SHA256 {
			t.Errorf("%s %s: compiling twice gives different SQL", tt.def, tt.kind)
		}
	}
}

var placeholderRE = regexp.MustCompile(`\$[0-9]+`)

func TestParseDialect(t *testing.T) {
	for _, d := range Dialects() {
		got, err := ParseDialect(d.Name())
		if err != nil || got != d {
			t.Errorf("ParseDialect(%q) = %v, %v", d.Name(), got, err)
		}
	}
	if _, err := ParseDialect("mysql"); err == nil || !strings.Contains(err.Error(), "duckdb, postgres") {
		t.Errorf("ParseDialect(mysql) = %v", err)
	}
}

// TestArgumentTypes: arguments are only of the documented Go types.
func TestArgumentTypes(t *testing.T) {
	for _, d := range loadBundle(t).Definitions() {
		p := d.Plan()
		for _, task := range p.Tasks {
			prog, err := Compile(bind(t, d, nil), p, task.Kind, DuckDB(), Options{SiteODS: "A00001", NDOP: []string{"9434765919"}})
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range prog.Statements() {
				for i, a := range st.Args {
					switch a := a.(type) {
					case string, int64, float64, bool, []string:
					case time.Time:
						if a.Location() != time.UTC || a.Hour() != 0 || a.Minute() != 0 || a.Second() != 0 || a.Nanosecond() != 0 {
							t.Errorf("%s %s: argument %d is not a date at midnight UTC: %v", d.ID, st.Name, i+1, a)
						}
					default:
						t.Errorf("%s %s: argument %d has type %T", d.ID, st.Name, i+1, a)
					}
				}
			}
		}
	}
}
