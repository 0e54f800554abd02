// Package sqlgen compiles a bound query definition into the SQL a node's
// connector runs (DESIGN §4–§6): for one plan, one kind of site and one SQL
// dialect (DuckDB or PostgreSQL), a Program of named statements.
//
//	prog, err := sqlgen.Compile(bound, plan, cdm.KindGP, sqlgen.DuckDB(),
//		sqlgen.Options{SiteODS: "G80001", NDOP: optedOut})
//
// # What reaches the SQL text
//
// Every value is a bound argument ($1, $2 …): parameter values, dates,
// codelist codes, vocabulary values, age band limits and labels, the
// site's ODS code and the national opt-out list, and even the few fixed
// strings the SQL compares with (the type 1 opt-out kind, the ICD-10 dot).
// The SQL text holds no string literal at all. Identifiers are CDM table
// and column names looked up in cdm, names of the compiler's own CTEs,
// and the plan's variable and field names, which must match
// ^[a-z][a-z0-9_]*$ and are quoted. The text therefore depends only on the
// definition, the plan, the site kind and the dialect: two runs with
// different parameters run the same SQL, and its SHA-256 identifies it in
// the node's audit log.
//
// Arguments are Go values of these types only: string, int64, float64,
// bool, time.Time (a calendar day at midnight UTC, bound as DATE) and
// []string (bound as an array of text).
//
// # Statements
//
// Result is what the site computes for the coordinator. In aggregate mode
// it has exactly the columns of the site's SiteTask.Fields, one row per
// non-empty cell, ordered by the group columns (byte order, NULLs last). In
// linkage mode its first column is nhs_number, which the node replaces with
// the run pseudonym in Go (the linkage secret never reaches SQL), followed
// by the task's other fields, one row per relevant patient, ordered by
// nhs_number. Members (aggregate mode only) lists every patient counted,
// so that the node can check them against its own opt-out set before
// anything leaves. CheckedResult (aggregate mode only) is Result with the
// numbers of each cell's patients as a last column, members: one statement
// in place of Result and Members, so that the node computes the population
// once per task. With record keys (catalog.PlanOptions.RecordKeys), Result
// leaves out the <measure>__key cell keys (aggregate) or record_key
// (linkage), which need the perturbation secret and so are computed by the
// node in Go, and Keys (aggregate) lists each patient of the population
// with its group columns and, per cell key, whether that count counts the
// patient. InvalidNHSNumbers counts, per table read, the rows
// whose NHS number fails the check, and BadValueCounts those holding an
// invalid numeric value. Day fields come back as BIGINT days
// after their anchor and day lists as BIGINT lists; the node narrows them
// to the plan's int32.
//
// The node's own statements about the site, which belong to no program,
// come from here too, under the same rules: SiteOptOuts (the type 1
// objections in opt_out), SiteNumbers (every NHS number the site holds,
// to cut the opt-out lists to it), and, for the configuration check,
// TableNHSNumbers and NumericValues.
//
// # Semantics
//
// Where the catalogue's documentation leaves a choice, this package makes
// it as follows; the tests check each rule in DuckDB and PostgreSQL against
// a plain-Go reference and against hand-made data.
//
// NHS numbers. A valid number is ten ASCII digits with a correct
// modulus-11 check digit (cdm.CheckNHSNumber), tested in SQL by arithmetic
// on character codes (PostgreSQL) or, once the text is shown to be ten
// ASCII digits, on the number (DuckDB); NULL is invalid. A row with an invalid number is
// never a patient and never counts for one: numbers are checked once per
// patient — on the patient table, and at a trust on the set of numbers it
// reports on — and every event row is matched by equality to a checked
// number. InvalidNHSNumbers counts every such row of each table the
// program reads, whatever its date.
//
// Numeric values. A row whose numeric column (clinical_event.numeric_value)
// holds a value cdm.ValidValue rejects — NaN, ±Inf, or outside the range
// the CDM gives the row's code, such as a systolic reading of 4000 mmHg —
// is left out of every statement, as if the site did not hold it; NULL is
// no reading and stays. BadValueCounts counts such rows per table, whatever
// their date, so that the node reports them instead of failing the site.
//
// Patients. The patient table gives one patient per valid number. Where a
// number has several rows (exact duplicates, or rows that disagree), each
// column takes its smallest value: the earliest birth and death dates, the
// smallest sex code. A patient is never counted twice.
//
// Opt-outs. Patients on the national data opt-out list (Options.NDOP) are
// left out of every statement at every site. At a practice, patients with
// a type 1 row in the opt_out table are left out too, whatever its
// recorded_date: an objection applies from when it is made to every
// extraction after. Trusts hold no opt_out table. Patients whose type 1
// objection was recorded at another practice (Options.Network: the node
// matched them against the network list by keyed hash) are left out at
// every site too, bound in the same list as the national ones.
//
// Registration. A patient is registered on day d when a registration row
// with this practice's ODS code (Options.SiteODS, never taken from the
// data) has start_date ≤ d and end_date NULL or after d: a registration
// that ends on d is over on d, as a death on d makes a patient not alive
// on d, so a patient who transfers on d is counted once, at the new
// practice (whose registration starts on d). Rows for other
// practices are ignored, so a store that holds them cannot make a
// practice count another's patients. registered_practice is this
// practice's code when the patient is registered here on its date, and
// NULL otherwise.
//
// Age. Age on day d is the difference of the years less one if the
// birthday (month and day) falls after d's, so someone born on 29 February
// turns a year older on 1 March in other years. A NULL birth date gives a
// NULL age, which fails every age criterion and falls in no age band (a
// NULL group); a birth after d gives a negative age, in no band either.
// Age bands are labelled as catalog.AgeBandVar.Bands says ("0-9" … "90+",
// "18-39").
//
// Alive. alive_on d holds when date_of_death is NULL or after d.
//
// Events. A window includes both ends; a row whose date is NULL is in no
// window. SNOMED CT and dm+d codes match the codelist exactly; an ICD-10
// code matches when, with its first dot removed, it starts with a code of
// the list (catalog.Codelist.Matches): J44.1, J441 and J44 all fall under
// J44. A NULL code matches no codelist. where filters keep rows whose
// column holds one of the allowed values.
//
// Events after death. An event dated after the patient's date of death,
// as the site's own patient table records it, is ignored everywhere:
// counts, exists, latest values, population criteria, first days and
// readmission days. The date is the table's own event date (event_date,
// issue_date, admission_date, arrival_date), also for readmission index
// episodes selected by discharge date. A patient without a patient row at
// the site has no known death.
//
// Duplicates. A count counts distinct events, not rows: rows of one
// patient equal in every column count once (for admitted patient care, one
// episode_id is one episode however many rows carry it). Two genuinely
// separate events the same day with the same code and value are
// indistinguishable from a duplicated row and count once too. Day lists
// hold one day per distinct episode.
//
// Latest value. Among the matching rows with a non-NULL value, the value
// of the latest, ties on the day broken by the larger value; NULL when
// there is none.
//
// Measures. A condition's comparison with a NULL value fails; a bool
// counts 1 or 0. Counts count the patients of the cell meeting the
// measure's where. A sum adds the non-NULL values of those patients, and
// is 0 when there are none. n counts the contributors (catalog.Partial):
// for a sum the non-NULL values that are not 0, for a mean, min or max
// every non-NULL value, zeros included. A sum's top (its largest single
// contribution, for the dominance rule) is the largest value that is not
// 0, a mean's the largest value; min, max and top are NULL when n is 0.
//
// Linkage rows. A practice sends a row for every patient in its
// population. A trust that does not evaluate the population sends a row
// for every patient with something to report: a count above 0, an exists
// that is true, a first day, or a non-empty day list. A trust that
// evaluates a hospital population considers everyone in its patient table
// or in an event table the task reads, and sends a row for those in its
// part of the population (in_population) or with something to report;
// attribute variables such as sex or age band are sent on those rows but
// are never by themselves a reason to send one.
//
// # Dialects
//
// DuckDB and PostgreSQL share almost all of the SQL. They differ in type
// names, in how an array argument is tested for membership (a semi-join on
// unnest in DuckDB, = ANY in PostgreSQL), in list aggregation, and in
// ordering text (PostgreSQL orders with COLLATE "C", so that both give
// rows in the same order whatever the database's collation). Population
// criteria on events are uncorrelated IN subqueries and per-patient values
// are CTEs joined to the patients, never correlated subqueries, which
// PostgreSQL would run once per patient.
package sqlgen
