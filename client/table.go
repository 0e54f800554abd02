package client

import (
	"crypto/ed25519"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/havenhealth/haven/release"
)

func formatValue(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// formatDisplay is formatValue for people reading a table: whole numbers as
// they are, fractions (means, rates) to 4 significant figures. CSV, JSON and
// Arrow keep the released value exactly.
func formatDisplay(v float64) string {
	if v == math.Trunc(v) {
		return formatValue(v)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// keyCells are a row's dimension values for people: a margin or the total
// says what it spans.
func keyCells(tab *release.Table, r release.Row) []string {
	out := make([]string, len(tab.Dims))
	for d := range tab.Dims {
		switch {
		case r.Kind == release.RowTotal:
			out[d] = "(total)"
		case r.Kind == release.RowMargin && d != r.MarginDim:
			out[d] = "(all)"
		default:
			out[d] = r.Key[d]
		}
	}
	return out
}

// WriteTable writes a released table for people to read: its provenance
// (run, definition, parameters, coverage, disclosure rules, node versions),
// then the rows with withheld values shown with their reasons, then what
// each reason means.
func WriteTable(w io.Writer, tab *release.Table) {
	m := tab.Meta
	fmt.Fprintf(w, "run %s: %s v%d, purpose %s, released %s\n", m.RunID, m.DefinitionID, m.DefinitionVersion, m.Purpose,
		m.ReleasedAt.Format(time.RFC3339))
	var sub string
	if !m.SubmittedAt.IsZero() {
		sub = ", submitted " + m.SubmittedAt.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "definition sha256 %s, bundle %s%s\n", m.DefinitionHash, m.BundleRevision, sub)
	if len(m.Parameters) > 0 {
		var ps []string
		for _, k := range slices.Sorted(maps.Keys(m.Parameters)) {
			ps = append(ps, k+"="+m.Parameters[k])
		}
		fmt.Fprintf(w, "parameters %s\n", strings.Join(ps, " "))
	}
	if m.Perturbed() {
		// Perturbed counts are neither rounded nor withheld as small: say
		// so, or a reader takes 0 or 10 for an exact or rounded count.
		fmt.Fprintf(w, "coverage %d of %d sites, %d of %d people; counts perturbed by %s (key range %d; the same people give the same value in every run), other values rounded to %d\n",
			m.SitesAnswered, m.SitesExpected, m.PopulationAnswered, m.PopulationExpected, m.PerturbationTable, m.PerturbationKeyRange, m.RoundingBase)
	} else {
		fmt.Fprintf(w, "coverage %d of %d sites, %d of %d people; counts under %d withheld, values rounded to %d\n",
			m.SitesAnswered, m.SitesExpected, m.PopulationAnswered, m.PopulationExpected, m.MinCellCount, m.RoundingBase)
	}
	if m.TrustsExpected > 0 {
		fmt.Fprintf(w, "trusts %d of %d, %s\n", m.TrustsAnswered, m.TrustsExpected, activityShare(m.ActivityAnswered, m.ActivityExpected))
	}
	if m.DominanceN > 0 {
		fmt.Fprintf(w, "dominance rule (%d, %g) on the measures policy names\n", m.DominanceN, m.DominanceK)
	}
	if len(m.NodeVersions) > 0 {
		var vs []string
		for _, k := range slices.Sorted(maps.Keys(m.NodeVersions)) {
			vs = append(vs, k+"="+m.NodeVersions[k])
		}
		fmt.Fprintf(w, "node versions %s\n", strings.Join(vs, " "))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := slices.Clone(tab.Dims)
	for _, ms := range tab.Measures {
		header = append(header, ms.Name)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	reasons := map[string]bool{}
	for _, r := range tab.Rows {
		cells := keyCells(tab, r)
		for _, v := range r.Values {
			switch {
			case v.Released:
				cells = append(cells, formatDisplay(v.Value))
			case v.Withheld():
				cells = append(cells, "withheld ("+string(v.Reason)+")")
				reasons[string(v.Reason)] = true
			default:
				cells = append(cells, "n/a")
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
	if len(reasons) > 0 {
		fmt.Fprintln(w)
		for _, code := range slices.Sorted(maps.Keys(reasons)) {
			fmt.Fprintf(w, "withheld (%s): %s\n", code, release.Code(code).Text())
		}
	}
}

// WriteSidecar writes a CSV table's provenance beside it, to path: CSV has
// no place for it that every reader skips.
func WriteSidecar(path string, tab *release.Table) error {
	b, err := json.MarshalIndent(Provenance(tab), "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write the provenance sidecar: %w", err)
	}
	return nil
}

// WriteCSV writes a released table as CSV: the row kind, the dimensions,
// and for each measure its value and a <measure>__withheld column with the
// reason a value is missing. Values are exactly as released.
func WriteCSV(w io.Writer, tab *release.Table) error {
	cw := csv.NewWriter(w)
	header := append([]string{release.RowKindField}, tab.Dims...)
	for _, m := range tab.Measures {
		header = append(header, m.Name, m.Name+release.WithheldSuffix)
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	for _, r := range tab.Rows {
		rec := append([]string{string(r.Kind)}, r.Key...)
		for _, v := range r.Values {
			if v.Released {
				rec = append(rec, formatValue(v.Value), "")
			} else {
				rec = append(rec, "", string(v.Reason))
			}
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// Provenance is a table's provenance as a JSON document: the fields of
// WriteJSON's document, and the CSV sidecar.
func Provenance(tab *release.Table) map[string]any {
	m := tab.Meta
	doc := map[string]any{
		"run_id": m.RunID, "definition": m.DefinitionID, "definition_version": m.DefinitionVersion,
		"definition_sha256": m.DefinitionHash, "purpose": m.Purpose, "bundle_revision": m.BundleRevision,
		"released_at": m.ReleasedAt, "submitted_at": nil,
		"min_cell_count": m.MinCellCount, "rounding_base": m.RoundingBase,
		"dominance": map[string]any{"n": m.DominanceN, "k": m.DominanceK}, "perturbation": nil,
		"coverage": map[string]int64{"sites_expected": m.SitesExpected, "sites_answered": m.SitesAnswered,
			"population_expected": m.PopulationExpected, "population_answered": m.PopulationAnswered,
			"trusts_expected": m.TrustsExpected, "trusts_answered": m.TrustsAnswered,
			"activity_expected": m.ActivityExpected, "activity_answered": m.ActivityAnswered},
		"parameters": m.Parameters, "node_versions": m.NodeVersions, "dims": tab.Dims, "measures": tab.Measures,
	}
	if !m.SubmittedAt.IsZero() {
		doc["submitted_at"] = m.SubmittedAt
	}
	if m.Perturbed() {
		doc["perturbation"] = map[string]any{"table": m.PerturbationTable, "key_range": m.PerturbationKeyRange}
	}
	return doc
}

// WriteJSON writes a released table as one JSON document: its provenance
// and its rows, each value beside its <measure>__withheld reason.
func WriteJSON(w io.Writer, tab *release.Table) error {
	doc := Provenance(tab)
	rows := make([]map[string]any, 0, len(tab.Rows))
	for _, r := range tab.Rows {
		row := map[string]any{release.RowKindField: r.Kind}
		for d, name := range tab.Dims {
			if r.Kind == release.RowCell || (r.Kind == release.RowMargin && d == r.MarginDim) {
				row[name] = r.Key[d]
			} else {
				row[name] = nil
			}
		}
		for j, ms := range tab.Measures {
			v := r.Values[j]
			if v.Released {
				row[ms.Name] = v.Value
				row[ms.Name+release.WithheldSuffix] = nil
			} else {
				row[ms.Name] = nil
				row[ms.Name+release.WithheldSuffix] = v.Reason
			}
		}
		rows = append(rows, row)
	}
	doc["rows"] = rows
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// MaxTableFileBytes bounds the table file VerifyFile reads: a released
// table is small (one row per cell, margin and total).
const MaxTableFileBytes = 256 << 20

// VerifyFile checks that the file at path, a table written by WriteArrow,
// is exactly what the coordinator released: the coordinator's ed25519
// signature (pub) covers every value of every row and the provenance. A
// table that is unsigned, signed by another key, or altered is refused,
// naming what failed.
func VerifyFile(path string, pub ed25519.PublicKey) (*release.Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxTableFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxTableFileBytes {
		return nil, fmt.Errorf("%s: over %d bytes; not a released table", path, MaxTableFileBytes)
	}
	tab, err := release.Verify(b, pub)
	if err != nil {
		return nil, fmt.Errorf("%s: REFUSED: %w", path, err)
	}
	return tab, nil
}

// WriteVerified says that the table read from path has a good signature
// by pub, and what it is, then writes it as WriteTable does.
func WriteVerified(w io.Writer, path string, pub ed25519.PublicKey, tab *release.Table) {
	m := tab.Meta
	fmt.Fprintf(w, "%s: signature good (key %s)\nrun %s: %s v%d (sha256 %s), purpose %s, bundle %s, released %s\n",
		SafeText(path), release.KeyID(pub), SafeText(m.RunID), SafeText(m.DefinitionID), m.DefinitionVersion,
		SafeText(m.DefinitionHash), SafeText(m.Purpose), SafeText(m.BundleRevision), m.ReleasedAt.UTC().Format(time.RFC3339))
	WriteTable(w, tab)
}
