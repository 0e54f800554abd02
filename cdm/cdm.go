// Package cdm holds Haven's common data model, version 1: the one logical
// schema every node reads, whatever the site's real store is (DESIGN §4).
//
// Every table and column name that reaches SQL, Arrow or a query definition
// is taken from this package and never from input. Callers look names up
// here (Lookup, Table.Column) and use the returned value, so a typo or an
// attacker-supplied identifier fails the lookup instead of reaching a query.
//
// The tables are fixed at compile time and returned by value or as
// read-only views; there is no mutable package state.
package cdm

import (
	"fmt"
	"slices"

	"github.com/apache/arrow/go/v17/arrow"
)

// Version is the CDM version this package describes. Nodes report it when
// they register, and a definition is compiled only against the version it
// names.
const Version = 1

// SiteKind says what sort of provider a site is, and so which tables it holds.
type SiteKind string

// The kinds of site in the network.
const (
	KindGP    SiteKind = "gp"    // GP practice: registered list, primary care record
	KindTrust SiteKind = "trust" // hospital trust: admitted patient care, A&E
)

// SiteKinds lists every valid kind, in a stable order.
func SiteKinds() []SiteKind { return []SiteKind{KindGP, KindTrust} }

// ParseSiteKind returns the kind named by s, or an error listing the valid ones.
func ParseSiteKind(s string) (SiteKind, error) {
	switch k := SiteKind(s); k {
	case KindGP, KindTrust:
		return k, nil
	}
	return "", fmt.Errorf("unknown site kind %q: want one of gp, trust", s)
}

// Type is the logical type of a CDM column. Codes are always strings.
type Type int

// Column types. Dates are calendar days (Arrow date32), never timestamps.
const (
	String     Type = iota + 1 // UTF-8 text; codes, identifiers
	Date                       // calendar day
	Float64                    // numeric observation
	StringList                 // list of codes, e.g. OPCS-4 procedures
)

func (t Type) String() string {
	switch t {
	case String:
		return "string"
	case Date:
		return "date"
	case Float64:
		return "float64"
	case StringList:
		return "list<string>"
	}
	return fmt.Sprintf("Type(%d)", int(t))
}

// Arrow returns the Arrow data type a column of type t has on the wire and
// in Parquet files.
func (t Type) Arrow() arrow.DataType {
	switch t {
	case String:
		return arrow.BinaryTypes.String
	case Date:
		return arrow.FixedWidthTypes.Date32
	case Float64:
		return arrow.PrimitiveTypes.Float64
	case StringList:
		return arrow.ListOf(arrow.BinaryTypes.String)
	}
	panic(fmt.Sprintf("cdm: Arrow of invalid type %d", int(t))) // unreachable: Type values are closed
}

// Table names.
const (
	TablePatient       = "patient"
	TableRegistration  = "registration"
	TableClinicalEvent = "clinical_event"
	TableMedication    = "medication"
	TableAPCEpisode    = "apc_episode"
	TableAEAttendance  = "ae_attendance"
	TableOptOut        = "opt_out"
)

// Column names. One name may appear in several tables (nhs_number in all).
const (
	ColNHSNumber        = "nhs_number"
	ColBirthDate        = "birth_date"
	ColSex              = "sex"
	ColDateOfDeath      = "date_of_death"
	ColLSOA             = "lsoa"
	ColPracticeODS      = "practice_ods"
	ColStartDate        = "start_date"
	ColEndDate          = "end_date"
	ColEventDate        = "event_date"
	ColSNOMEDCode       = "snomed_code"
	ColNumericValue     = "numeric_value"
	ColIssueDate        = "issue_date"
	ColDMDCode          = "dmd_code"
	ColEpisodeID        = "episode_id"
	ColAdmissionDate    = "admission_date"
	ColDischargeDate    = "discharge_date"
	ColAdmissionMethod  = "admission_method"
	ColPrimaryDiagnosis = "primary_diagnosis"
	ColProcedures       = "procedures"
	ColArrivalDate      = "arrival_date"
	ColDiagnosisSNOMED  = "diagnosis_snomed"
	ColKind             = "kind"
	ColRecordedDate     = "recorded_date"
)

// Sensitivity says whether a column identifies a person. Identifying
// columns never leave a site, in any mode (DESIGN §2).
type Sensitivity int

const (
	// Plain columns may be used to derive fields that leave a site.
	Plain Sensitivity = iota
	// Identifying columns (NHS number, birth date, postcode-level area)
	// are used only inside the node, to link, filter and derive.
	Identifying
)

// Column describes one column of a CDM table.
type Column struct {
	Name        string
	Type        Type
	Nullable    bool
	Sensitivity Sensitivity
	// Vocabulary, when set, lists every value the column may hold.
	Vocabulary []string
	Doc        string
}

// Table describes one CDM table.
type Table struct {
	Name    string
	Columns []Column
	// HeldBy lists the site kinds that hold this table.
	HeldBy []SiteKind
	Doc    string
}

// Column returns the column called name, if the table has it.
func (t Table) Column(name string) (Column, bool) {
	for _, c := range t.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// HeldByKind reports whether sites of kind k hold this table.
func (t Table) HeldByKind(k SiteKind) bool { return slices.Contains(t.HeldBy, k) }

// ColumnNames returns the table's column names in schema order.
func (t Table) ColumnNames() []string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return names
}

// Schema returns the Arrow schema of the table, in column order. The
// schema's metadata names the table and CDM version so that a file or
// stream can be checked against what it claims to be.
func (t Table) Schema() *arrow.Schema {
	fields := make([]arrow.Field, len(t.Columns))
	for i, c := range t.Columns {
		fields[i] = arrow.Field{Name: c.Name, Type: c.Type.Arrow(), Nullable: c.Nullable}
	}
	md := arrow.NewMetadata(
		[]string{"haven.cdm.table", "haven.cdm.version"},
		[]string{t.Name, fmt.Sprint(Version)},
	)
	return arrow.NewSchema(fields, &md)
}

// Sex values (NHS Data Dictionary person stated gender, as single letters).
const (
	SexFemale        = "F"
	SexMale          = "M"
	SexIndeterminate = "I"
	SexUnknown       = "U"
)

// Admission methods, grouped from the NHS Data Dictionary's coded list.
const (
	AdmissionElective  = "elective"
	AdmissionEmergency = "emergency"
	AdmissionMaternity = "maternity"
	AdmissionOther     = "other"
)

// Opt-out kinds.
const (
	OptOutType1 = "type1" // GP-held objection to data leaving the practice
	OptOutNDOP  = "ndop"  // national data opt-out
)

// SexValues lists the valid sex codes.
func SexValues() []string {
	return []string{SexFemale, SexMale, SexIndeterminate, SexUnknown}
}

// AdmissionMethods lists the valid admission methods.
func AdmissionMethods() []string {
	return []string{AdmissionElective, AdmissionEmergency, AdmissionMaternity, AdmissionOther}
}

// OptOutKinds lists the valid opt-out kinds.
func OptOutKinds() []string { return []string{OptOutType1, OptOutNDOP} }

// ValidSex reports whether s is a CDM sex code.
func ValidSex(s string) bool { return slices.Contains(SexValues(), s) }

// ValidAdmissionMethod reports whether s is a CDM admission method.
func ValidAdmissionMethod(s string) bool { return slices.Contains(AdmissionMethods(), s) }

// ValidOptOutKind reports whether s is a CDM opt-out kind.
func ValidOptOutKind(s string) bool { return slices.Contains(OptOutKinds(), s) }

func nhsNumber() Column {
	return Column{Name: ColNHSNumber, Type: String, Sensitivity: Identifying,
		Doc: "10-digit NHS number with modulus-11 check digit"}
}

// tables builds the CDM. It is a function, not a package variable, so that
// no caller can mutate the model another caller sees.
func tables() []Table {
	gp, trust := []SiteKind{KindGP}, []SiteKind{KindTrust}
	both := []SiteKind{KindGP, KindTrust}
	return []Table{
		{Name: TablePatient, HeldBy: both, Doc: "one row per person known to the site", Columns: []Column{
			nhsNumber(),
			{Name: ColBirthDate, Type: Date, Sensitivity: Identifying},
			{Name: ColSex, Type: String, Vocabulary: SexValues()},
			{Name: ColDateOfDeath, Type: Date, Nullable: true},
			{Name: ColLSOA, Type: String, Nullable: true, Sensitivity: Identifying,
				Doc: "lower layer super output area of residence"},
			{Name: ColPracticeODS, Type: String, Nullable: true,
				Doc: "ODS code of the registered practice, as the site knows it"},
		}},
		{Name: TableRegistration, HeldBy: gp, Doc: "periods of registration with a practice", Columns: []Column{
			nhsNumber(),
			{Name: ColPracticeODS, Type: String},
			{Name: ColStartDate, Type: Date},
			{Name: ColEndDate, Type: Date, Nullable: true, Doc: "null while registered"},
		}},
		{Name: TableClinicalEvent, HeldBy: gp, Doc: "coded primary care events", Columns: []Column{
			nhsNumber(),
			{Name: ColEventDate, Type: Date},
			{Name: ColSNOMEDCode, Type: String},
			{Name: ColNumericValue, Type: Float64, Nullable: true, Doc: "e.g. systolic blood pressure in mmHg"},
		}},
		{Name: TableMedication, HeldBy: gp, Doc: "prescriptions issued", Columns: []Column{
			nhsNumber(),
			{Name: ColIssueDate, Type: Date},
			{Name: ColDMDCode, Type: String},
		}},
		{Name: TableAPCEpisode, HeldBy: trust, Doc: "admitted patient care episodes", Columns: []Column{
			nhsNumber(),
			{Name: ColEpisodeID, Type: String},
			{Name: ColAdmissionDate, Type: Date},
			{Name: ColDischargeDate, Type: Date, Nullable: true},
			{Name: ColAdmissionMethod, Type: String, Vocabulary: AdmissionMethods()},
			{Name: ColPrimaryDiagnosis, Type: String, Doc: "ICD-10 code"},
			{Name: ColProcedures, Type: StringList, Nullable: true, Doc: "OPCS-4 codes"},
		}},
		{Name: TableAEAttendance, HeldBy: trust, Doc: "accident and emergency attendances", Columns: []Column{
			nhsNumber(),
			{Name: ColArrivalDate, Type: Date},
			{Name: ColDiagnosisSNOMED, Type: String, Nullable: true},
		}},
		{Name: TableOptOut, HeldBy: gp, Doc: "recorded objections; the national list reaches every node separately", Columns: []Column{
			nhsNumber(),
			{Name: ColKind, Type: String, Vocabulary: OptOutKinds()},
			{Name: ColRecordedDate, Type: Date},
		}},
	}
}

// Tables returns every CDM table in a stable order.
func Tables() []Table { return tables() }

// TableNames returns the name of every CDM table in a stable order.
func TableNames() []string {
	ts := tables()
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	return names
}

// Lookup returns the table called name. The returned Table, not the name
// passed in, is what callers should use to build identifiers.
func Lookup(name string) (Table, bool) {
	for _, t := range tables() {
		if t.Name == name {
			return t, true
		}
	}
	return Table{}, false
}

// TablesFor returns the tables a site of kind k holds, in stable order.
func TablesFor(k SiteKind) []Table {
	var out []Table
	for _, t := range tables() {
		if t.HeldByKind(k) {
			out = append(out, t)
		}
	}
	return out
}
