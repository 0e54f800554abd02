// Package release is the format of a released table: the Arrow IPC stream
// the coordinator writes (Encode), signs (Sign), stores and serves with
// Flight DoGet, and every client reads (Read) and checks (Verify). It holds
// the format alone, so that a client needs nothing of the coordinator's
// code to read or verify a table.
//
// A released table is one record batch with these columns, in order:
//
//	row_kind               utf8, not null: "cell", "margin" or "total"
//	<dim> …                utf8, one per group_by variable, in definition order;
//	                       null where a margin or the total spans the dimension
//	<measure>              one per measure, in definition order: int64 for a
//	                       count (a number of patients is whole), float64
//	                       for the others; null when the value was withheld
//	                       or does not exist
//	<measure>__withheld    utf8, beside each measure: the reason code when the
//	                       value is missing (e.g. "low_count", "secondary",
//	                       "not_additive"), null when it was released
//
// Cells come first, sorted by key, then the one-way margins (the margin's
// own dimension holds its category, the others are null), then the grand
// total. The schema's metadata is the release's provenance: the run, its
// submission and release times, the definition (id, version, hash), every
// parameter, the purpose, the bundle revision, the disclosure rules applied
// (threshold, rounding base, dominance rule), the coverage and the node
// software versions of the sites that answered (see Meta), so a table file
// read on its own says what it is. The coordinator signs it (Sign).
package release

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// RowKindField is the name of the column that says what a row is.
const RowKindField = "row_kind"

// WithheldSuffix is appended to a measure's name to name its reason column.
const WithheldSuffix = "__withheld"

// RowKind says what a row of a released table is.
type RowKind string

// Row kinds.
const (
	RowCell   RowKind = "cell"   // one group
	RowMargin RowKind = "margin" // the total over every other dimension, for one value of one dimension
	RowTotal  RowKind = "total"  // the grand total
)

// Meta describes a released table. It travels in the schema's metadata.
type Meta struct {
	RunID              string
	DefinitionID       string
	DefinitionVersion  uint32
	DefinitionHash     string
	Purpose            string
	BundleRevision     string
	ReleasedAt         time.Time
	MinCellCount       int64
	RoundingBase       int64
	SitesExpected      int64
	SitesAnswered      int64
	PopulationExpected int64
	PopulationAnswered int64
	// Trusts and their hospital activity records, asked and answered;
	// written only when the plan asked trusts.
	TrustsExpected   int64
	TrustsAnswered   int64
	ActivityExpected int64
	ActivityAnswered int64
	// Parameters are every parameter the run answered, defaults
	// included, as text (catalog.Bound.Params); written when there are any.
	Parameters map[string]string
	// SubmittedAt is when the run was submitted (ReleasedAt is when it
	// finished); written when set.
	SubmittedAt time.Time
	// DominanceN and DominanceK are the dominance rule applied to the
	// measures policy named for it (N patients holding more than K of a
	// sum); written when N > 0.
	DominanceN int64
	DominanceK float64
	// NodeVersions are the node software versions of the sites that
	// answered, by ODS code, as their nodes reported at release; written
	// when there are any.
	NodeVersions map[string]string
	// PerturbationTable is the bundle path of the p-table the counts were
	// released through (cell-key perturbation), and PerturbationKeyRange
	// its key range R; written when counts were perturbed. Counts are
	// then not rounded and not suppressed as low_count: each is its true
	// count moved by the p-table's value for its cell key.
	PerturbationTable    string
	PerturbationKeyRange int64
}

// Perturbed says whether the table's counts were released through a
// p-table.
func (m Meta) Perturbed() bool { return m.PerturbationTable != "" }

// Metadata keys.
const (
	keyRunID       = "haven.run.id"
	keyDefID       = "haven.definition.id"
	keyDefVersion  = "haven.definition.version"
	keyDefHash     = "haven.definition.hash"
	keyPurpose     = "haven.run.purpose"
	keyRevision    = "haven.bundle.revision"
	keyReleasedAt  = "haven.released_at"
	keyMinCount    = "haven.disclosure.min_cell_count"
	keyRounding    = "haven.disclosure.rounding_base"
	keySitesExp    = "haven.coverage.sites_expected"
	keySitesAns    = "haven.coverage.sites_answered"
	keyPopExp      = "haven.coverage.population_expected"
	keyPopAns      = "haven.coverage.population_answered"
	keyTrustsExp   = "haven.coverage.trusts_expected"
	keyTrustsAns   = "haven.coverage.trusts_answered"
	keyActExp      = "haven.coverage.activity_expected"
	keyActAns      = "haven.coverage.activity_answered"
	keyParams      = "haven.run.parameters"
	keySubmittedAt = "haven.run.submitted_at"
	keyDominanceN  = "haven.disclosure.dominance_n"
	keyDominanceK  = "haven.disclosure.dominance_k"
	keyNodeVers    = "haven.nodes.versions"
	keyPTable      = "haven.disclosure.perturbation_table"
	keyPKeyRange   = "haven.disclosure.perturbation_key_range"
	keyDims        = "haven.table.dims"
	keyMeasures    = "haven.table.measures"
	keyMeasureKind = "haven.measure.kind"
)

// Measure is one measure column of a table.
type Measure struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
}

// Kind is what a measure holds: "count", "sum", "mean", "min" or "max", as
// the definition names it. Counts are whole numbers (int64); the others
// are float64.
type Kind string

// KindCount is the kind of a number of patients.
const KindCount Kind = "count"

// Code is the reason a value is missing, e.g. "low_count" or "secondary"
// (disclosure control's codes), or one of the two below, which say that
// no such value exists.
type Code string

// Text says in words what the code means, for a reader of the table.
func (c Code) Text() string {
	switch c {
	case "low_count":
		return "the count is under the threshold"
	case "few_contributors":
		return "too few patients contribute to the value"
	case "dominance":
		return "one patient's value makes up most of it"
	case "secondary":
		return "withheld so that another withheld value cannot be worked out from the totals"
	case "min_max_disclosive":
		return "a minimum or maximum is one patient's own value"
	case "attribute_disclosure":
		return "the group has too few patients: its values would say something about each of them"
	case CodeNoPatients:
		return "there are no patients to take it over"
	case CodeNotAdditive:
		return "a total of a mean, minimum or maximum is not the sum of its cells"
	}
	return "withheld by disclosure control"
}

// Codes of values that do not exist, as opposed to values withheld.
const (
	CodeNoPatients  Code = "no_patients"  // a mean or extreme over no patients
	CodeNotAdditive Code = "not_additive" // a margin or total of a mean, min or max
)

// Schema is the Arrow schema of a released table with dimensions dims and
// measures ms. It fails if a name is used twice or clashes with the
// row_kind column or a reason column.
func Schema(dims []string, ms []Measure, meta Meta) (*arrow.Schema, error) {
	seen := map[string]bool{RowKindField: true}
	claim := func(name string) error {
		if name == "" {
			return errors.New("release: a column has no name")
		}
		if seen[name] {
			return fmt.Errorf("release: column name %q is used twice", name)
		}
		seen[name] = true
		return nil
	}
	fields := []arrow.Field{{Name: RowKindField, Type: arrow.BinaryTypes.String}}
	for _, d := range dims {
		if err := claim(d); err != nil {
			return nil, err
		}
		fields = append(fields, arrow.Field{Name: d, Type: arrow.BinaryTypes.String, Nullable: true})
	}
	for _, m := range ms {
		if err := claim(m.Name); err != nil {
			return nil, err
		}
		if err := claim(m.Name + WithheldSuffix); err != nil {
			return nil, err
		}
		md := arrow.NewMetadata([]string{keyMeasureKind}, []string{string(m.Kind)})
		fields = append(fields,
			arrow.Field{Name: m.Name, Type: valueType(m.Kind), Nullable: true, Metadata: md},
			arrow.Field{Name: m.Name + WithheldSuffix, Type: arrow.BinaryTypes.String, Nullable: true})
	}
	dimsJSON, _ := json.Marshal(dims)
	msJSON, _ := json.Marshal(ms)
	i := strconv.FormatInt
	keys := []string{keyRunID, keyDefID, keyDefVersion, keyDefHash, keyPurpose, keyRevision, keyReleasedAt,
		keyMinCount, keyRounding, keySitesExp, keySitesAns, keyPopExp, keyPopAns, keyDims, keyMeasures}
	vals := []string{meta.RunID, meta.DefinitionID, i(int64(meta.DefinitionVersion), 10), meta.DefinitionHash,
		meta.Purpose, meta.BundleRevision, meta.ReleasedAt.UTC().Format(time.RFC3339Nano),
		i(meta.MinCellCount, 10), i(meta.RoundingBase, 10), i(meta.SitesExpected, 10), i(meta.SitesAnswered, 10),
		i(meta.PopulationExpected, 10), i(meta.PopulationAnswered, 10), string(dimsJSON), string(msJSON)}
	if meta.TrustsExpected > 0 {
		keys = append(keys, keyTrustsExp, keyTrustsAns, keyActExp, keyActAns)
		vals = append(vals, i(meta.TrustsExpected, 10), i(meta.TrustsAnswered, 10), i(meta.ActivityExpected, 10), i(meta.ActivityAnswered, 10))
	}
	if len(meta.Parameters) > 0 {
		b, err := json.Marshal(meta.Parameters) // keys sorted
		if err != nil {
			return nil, fmt.Errorf("release: parameters: %w", err)
		}
		keys, vals = append(keys, keyParams), append(vals, string(b))
	}
	if !meta.SubmittedAt.IsZero() {
		keys, vals = append(keys, keySubmittedAt), append(vals, meta.SubmittedAt.UTC().Format(time.RFC3339Nano))
	}
	if meta.DominanceN > 0 {
		keys = append(keys, keyDominanceN, keyDominanceK)
		vals = append(vals, i(meta.DominanceN, 10), strconv.FormatFloat(meta.DominanceK, 'g', -1, 64))
	}
	if meta.PerturbationTable != "" {
		keys = append(keys, keyPTable, keyPKeyRange)
		vals = append(vals, meta.PerturbationTable, i(meta.PerturbationKeyRange, 10))
	}
	if len(meta.NodeVersions) > 0 {
		b, err := json.Marshal(meta.NodeVersions) // keys sorted
		if err != nil {
			return nil, fmt.Errorf("release: node versions: %w", err)
		}
		keys, vals = append(keys, keyNodeVers), append(vals, string(b))
	}
	md := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(fields, &md), nil
}

// valueType is the Arrow type of a measure's values: counts are whole
// numbers of patients, so int64; sums, means, minima and maxima may have
// fractions.
func valueType(k Kind) arrow.DataType {
	if k == KindCount {
		return arrow.PrimitiveTypes.Int64
	}
	return arrow.PrimitiveTypes.Float64
}

// Encode writes t as an Arrow IPC stream of one record batch, its Meta in
// the schema's metadata. A released value of a count must be whole, and
// a value that was not released must have its reason.
func Encode(t *Table) ([]byte, error) {
	if t == nil {
		return nil, errors.New("release: no table")
	}
	schema, err := Schema(t.Dims, t.Measures, t.Meta)
	if err != nil {
		return nil, err
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	kinds := b.Field(0).(*array.StringBuilder)
	for i, r := range t.Rows {
		if err := encodeRow(b, kinds, t, r); err != nil {
			return nil, fmt.Errorf("release: row %d: %w", i, err)
		}
	}
	rec := b.NewRecord()
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	if err := w.Write(rec); err != nil {
		return nil, fmt.Errorf("release: encode: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("release: encode: %w", err)
	}
	return buf.Bytes(), nil
}

// encodeRow appends one row of t to b.
func encodeRow(b *array.RecordBuilder, kinds *array.StringBuilder, t *Table, r Row) error {
	nd, ms := len(t.Dims), t.Measures
	if len(r.Key) != nd {
		return fmt.Errorf("%d key values for %d dimensions", len(r.Key), nd)
	}
	if len(r.Values) != len(ms) {
		return fmt.Errorf("%d values for %d measures", len(r.Values), len(ms))
	}
	switch r.Kind {
	case RowCell:
	case RowMargin:
		if r.MarginDim < 0 || r.MarginDim >= nd {
			return fmt.Errorf("a margin over dimension %d of %d", r.MarginDim, nd)
		}
	case RowTotal:
	default:
		return fmt.Errorf("row kind %q", r.Kind)
	}
	kinds.Append(string(r.Kind))
	for d, k := range r.Key {
		sb := b.Field(1 + d).(*array.StringBuilder)
		if r.Kind == RowCell || (r.Kind == RowMargin && d == r.MarginDim) {
			sb.Append(k)
		} else {
			sb.AppendNull()
		}
	}
	for j, v := range r.Values {
		vb := b.Field(1 + nd + 2*j)
		rb := b.Field(2 + nd + 2*j).(*array.StringBuilder)
		if v.Released {
			switch vb := vb.(type) {
			case *array.Int64Builder:
				if v.Value != math.Trunc(v.Value) || math.Abs(v.Value) > 1<<53 {
					return fmt.Errorf("measure %s: count %v is not a whole number", ms[j].Name, v.Value)
				}
				vb.Append(int64(v.Value))
			case *array.Float64Builder:
				vb.Append(v.Value)
			}
			rb.AppendNull()
			continue
		}
		if v.Reason == "" {
			return fmt.Errorf("measure %s: a value that was not released has no reason", ms[j].Name)
		}
		vb.AppendNull()
		rb.Append(string(v.Reason))
	}
	return nil
}

// Table is a released table as read back.
type Table struct {
	Meta     Meta
	Dims     []string
	Measures []Measure
	Rows     []Row
}

// Row is one row of a released table.
type Row struct {
	Kind RowKind
	// Key holds one value per dimension; for a margin only MarginDim's
	// is set, for the total none is ("").
	Key []string
	// MarginDim is the index of the dimension of a margin row; -1 otherwise.
	MarginDim int
	Values    []Value // one per measure
}

// Value is one measure in one row.
type Value struct {
	// Released says the value was released; Value holds it.
	Released bool
	Value    float64
	// Reason is the reason code when the value is missing.
	Reason Code
}

// Withheld reports whether disclosure control withheld the value, as
// opposed to the value not existing (a mean over no patients, a margin of
// a mean).
func (v Value) Withheld() bool {
	return !v.Released && v.Reason != CodeNoPatients && v.Reason != CodeNotAdditive
}

// ReadIPC reads a table from an Arrow IPC stream.
func ReadIPC(r io.Reader) (*Table, error) {
	rdr, err := ipc.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("read released table: %w", err)
	}
	defer rdr.Release()
	return Read(rdr)
}

// Read reads a table from a record reader (an IPC or a Flight reader).
func Read(rdr array.RecordReader) (t *Table, err error) {
	defer func() {
		// A damaged stream can make Arrow's accessors panic; say so
		// instead of crashing the reader.
		if p := recover(); p != nil {
			t, err = nil, fmt.Errorf("read released table: malformed data: %v", p)
		}
	}()
	t, err = tableOf(rdr.Schema())
	if err != nil {
		return nil, err
	}
	for rdr.Next() {
		if err := t.appendRecord(rdr.Record()); err != nil {
			return nil, err
		}
	}
	if err := rdr.Err(); err != nil {
		return nil, fmt.Errorf("read released table: %w", err)
	}
	return t, nil
}

func tableOf(s *arrow.Schema) (_ *Table, err error) {
	md := s.Metadata()
	get := func(k string) string {
		if i := md.FindKey(k); i >= 0 {
			return md.Values()[i]
		}
		return ""
	}
	t := &Table{}
	if err := json.Unmarshal([]byte(get(keyDims)), &t.Dims); err != nil {
		return nil, fmt.Errorf("read released table: metadata %s: %w", keyDims, err)
	}
	if err := json.Unmarshal([]byte(get(keyMeasures)), &t.Measures); err != nil {
		return nil, fmt.Errorf("read released table: metadata %s: %w", keyMeasures, err)
	}
	num := func(k string) int64 { n, _ := strconv.ParseInt(get(k), 10, 64); return n }
	at, _ := time.Parse(time.RFC3339Nano, get(keyReleasedAt))
	t.Meta = Meta{
		RunID: get(keyRunID), DefinitionID: get(keyDefID), DefinitionVersion: uint32(num(keyDefVersion)),
		DefinitionHash: get(keyDefHash), Purpose: get(keyPurpose), BundleRevision: get(keyRevision), ReleasedAt: at,
		MinCellCount: num(keyMinCount), RoundingBase: num(keyRounding),
		SitesExpected: num(keySitesExp), SitesAnswered: num(keySitesAns),
		PopulationExpected: num(keyPopExp), PopulationAnswered: num(keyPopAns),
		TrustsExpected: num(keyTrustsExp), TrustsAnswered: num(keyTrustsAns),
		ActivityExpected: num(keyActExp), ActivityAnswered: num(keyActAns),
	}
	if v := get(keySubmittedAt); v != "" {
		if t.Meta.SubmittedAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return nil, fmt.Errorf("read released table: metadata %s: %w", keySubmittedAt, err)
		}
	}
	t.Meta.DominanceN = num(keyDominanceN)
	t.Meta.PerturbationTable, t.Meta.PerturbationKeyRange = get(keyPTable), num(keyPKeyRange)
	if v := get(keyDominanceK); v != "" {
		if t.Meta.DominanceK, err = strconv.ParseFloat(v, 64); err != nil {
			return nil, fmt.Errorf("read released table: metadata %s: %w", keyDominanceK, err)
		}
	}
	if v := get(keyNodeVers); v != "" {
		if err := json.Unmarshal([]byte(v), &t.Meta.NodeVersions); err != nil {
			return nil, fmt.Errorf("read released table: metadata %s: %w", keyNodeVers, err)
		}
	}
	if p := get(keyParams); p != "" {
		if err := json.Unmarshal([]byte(p), &t.Meta.Parameters); err != nil {
			return nil, fmt.Errorf("read released table: metadata %s: %w", keyParams, err)
		}
	}
	want, err := Schema(t.Dims, t.Measures, t.Meta)
	if err != nil {
		return nil, fmt.Errorf("read released table: %w", err)
	}
	if !want.Equal(s) {
		return nil, errors.New("read released table: the columns do not match the dimensions and measures its metadata names")
	}
	return t, nil
}

func (t *Table) appendRecord(rec arrow.Record) error {
	nd := len(t.Dims)
	kinds, ok := rec.Column(0).(*array.String)
	if !ok {
		return errors.New("read released table: row_kind is not a string column")
	}
	dims := make([]*array.String, nd)
	for d := range nd {
		dims[d] = rec.Column(1 + d).(*array.String)
	}
	for i := range int(rec.NumRows()) {
		row := Row{Kind: RowKind(kinds.Value(i)), Key: make([]string, nd), MarginDim: -1, Values: make([]Value, len(t.Measures))}
		for d := range nd {
			if dims[d].IsValid(i) {
				row.Key[d] = dims[d].Value(i)
				if row.Kind == RowMargin {
					row.MarginDim = d
				}
			}
		}
		for j := range t.Measures {
			vs := rec.Column(1 + nd + 2*j)
			rs := rec.Column(2 + nd + 2*j).(*array.String)
			if vs.IsValid(i) {
				v := Value{Released: true}
				switch vs := vs.(type) {
				case *array.Int64:
					v.Value = float64(vs.Value(i))
				case *array.Float64:
					v.Value = vs.Value(i)
				default:
					return fmt.Errorf("read released table: measure %s is %s, not a number", t.Measures[j].Name, vs.DataType())
				}
				row.Values[j] = v
			} else if rs.IsValid(i) {
				row.Values[j] = Value{Reason: Code(rs.Value(i))}
			} else {
				return fmt.Errorf("read released table: row %d, measure %s: neither a value nor a reason", i, t.Measures[j].Name)
			}
		}
		t.Rows = append(t.Rows, row)
	}
	return nil
}
