package disclosure

import (
	"errors"
	"slices"

	"github.com/havenhealth/haven/release"
)

// Released is a table after disclosure control: the only form in which a
// table may leave the coordinator.
type Released struct {
	Dims     []string       `json:"dims"`
	Measures []Measure      `json:"measures"`
	Cells    []ReleasedCell `json:"cells"` // sorted by key
	// Margins are the one-way totals: for each dimension in turn, one per
	// value of that dimension (sorted), over all the other dimensions.
	// Tables of fewer than two dimensions have none: their one-way totals
	// would be the cells themselves.
	Margins []Margin `json:"margins,omitempty"`
	// Total is the grand total, one value per measure; nil for a table
	// without dimensions, whose single cell is its total.
	Total []Value `json:"total,omitempty"`
}

// ReleasedCell is one group of a released table.
type ReleasedCell struct {
	Key    []string `json:"key"`
	Values []Value  `json:"values"` // one per measure
}

// Margin is the total over all cells whose Dim has the value Category.
type Margin struct {
	Dim      string  `json:"dim"`
	Category string  `json:"category"`
	Values   []Value `json:"values"` // one per measure
}

// Status says whether a value was released.
type Status string

// Statuses of a value.
const (
	StatusReleased      Status = "released"
	StatusWithheld      Status = "withheld"       // disclosure control withheld it
	StatusNotApplicable Status = "not_applicable" // there is no such value
)

// Value is one measure in one cell, margin or total of a released table.
type Value struct {
	Status Status `json:"status"`
	// Value is the released value: a count or a sum rounded to the rounding
	// base; a binary or integer mean as the rounded sum over the rounded N,
	// a continuous one to 4 significant figures; a min or max as it is.
	// Zero unless Status is StatusReleased.
	Value float64 `json:"value"`
	// Reason says why the value is missing; zero when it is released.
	Reason Reason `json:"reason,omitzero"`
}

// Reason says why a value was not released.
type Reason struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Code is a stable, machine-readable reason. It is the release format's
// code: a released table carries it beside each missing value.
type Code = release.Code

// Reasons for withholding a value (StatusWithheld).
const (
	// CodeLowCount: a count from 1 to MinCount-1.
	CodeLowCount Code = "low_count"
	// CodeFewContributors: a sum, mean, min or max from 1 to MinCount-1
	// patients, or a binary or integer mean whose sum is from 1 to
	// MinCount-1.
	CodeFewContributors Code = "few_contributors"
	// CodeDominance: the largest contributions make up too much of a sum.
	CodeDominance Code = "dominance"
	// CodeSecondary: withheld so that another withheld value cannot be
	// worked out from the released values and totals, or, for a binary or
	// integer mean, from the rounded values beside it in its cell.
	CodeSecondary Code = "secondary"
	// CodeMinMaxDisclosive: a min or max is one patient's own value, and
	// the thresholds do not allow those to be released.
	CodeMinMaxDisclosive Code = "min_max_disclosive"
	// CodeAttributeDisclosure: a value of a group whose total is from 1
	// to MinCount-1, under Thresholds.AttributeDisclosure.
	CodeAttributeDisclosure Code = "attribute_disclosure"
)

// Reasons for a value that does not exist (StatusNotApplicable).
const (
	// CodeNoPatients: a mean, min or max over no patients.
	CodeNoPatients = release.CodeNoPatients
	// CodeNotAdditive: margins and totals are given only for count and
	// sum measures.
	CodeNotAdditive = release.CodeNotAdditive
)

// Encode writes r in the format of a released table (release.Encode),
// with its provenance meta: what the coordinator signs, stores and serves.
func (r *Released) Encode(meta release.Meta) ([]byte, error) {
	if r == nil {
		return nil, errors.New("release: no table")
	}
	return release.Encode(r.releaseTable(meta))
}

// releaseTable is r as the release format's table.
func (r *Released) releaseTable(meta release.Meta) *release.Table {
	t := &release.Table{Meta: meta, Dims: r.Dims, Measures: make([]release.Measure, len(r.Measures))}
	for i, m := range r.Measures {
		t.Measures[i] = release.Measure{Name: m.Name, Kind: m.Kind}
	}
	values := func(vs []Value) []release.Value {
		out := make([]release.Value, len(vs))
		for i, v := range vs {
			if v.Status == StatusReleased {
				out[i] = release.Value{Released: true, Value: v.Value}
			} else {
				out[i] = release.Value{Reason: v.Reason.Code}
			}
		}
		return out
	}
	for _, c := range r.Cells {
		t.Rows = append(t.Rows, release.Row{Kind: release.RowCell, Key: c.Key, MarginDim: -1, Values: values(c.Values)})
	}
	for _, m := range r.Margins {
		d := slices.Index(r.Dims, m.Dim)
		key := make([]string, len(r.Dims))
		if d >= 0 {
			key[d] = m.Category
		}
		t.Rows = append(t.Rows, release.Row{Kind: release.RowMargin, Key: key, MarginDim: d, Values: values(m.Values)})
	}
	if r.Total != nil {
		t.Rows = append(t.Rows, release.Row{Kind: release.RowTotal, Key: make([]string, len(r.Dims)), MarginDim: -1, Values: values(r.Total)})
	}
	return t
}

// WithheldCounts returns how many values of r (cells, margins and the total)
// were withheld, by reason. It is meant for the audit log.
func (r *Released) WithheldCounts() map[Code]int {
	counts := make(map[Code]int)
	add := func(vs []Value) {
		for _, v := range vs {
			if v.Status == StatusWithheld {
				counts[v.Reason.Code]++
			}
		}
	}
	for _, c := range r.Cells {
		add(c.Values)
	}
	for _, m := range r.Margins {
		add(m.Values)
	}
	add(r.Total)
	return counts
}
