package runner

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// linkageOutput is a linkage result as result leaves it: one pending
// batch of the given NHS numbers, with a column n numbering the rows.
func linkageOutput(t *testing.T, keyed bool, nhs []string) *output {
	t.Helper()
	fields := []arrow.Field{{Name: "pseudonym", Type: &arrow.FixedSizeBinaryType{ByteWidth: pseudonym.Size}}}
	if keyed {
		fields = append(fields, arrow.Field{Name: catalog.FieldNameRecordKey, Type: arrow.PrimitiveTypes.Int64})
	}
	fields = append(fields, arrow.Field{Name: "n", Type: arrow.PrimitiveTypes.Int64})
	sb := array.NewStringBuilder(memory.DefaultAllocator)
	defer sb.Release()
	nb := array.NewInt64Builder(memory.DefaultAllocator)
	defer nb.Release()
	for i, n := range nhs {
		sb.Append(n)
		nb.Append(int64(i))
	}
	out := &output{schema: arrow.NewSchema(fields, nil), rows: int64(len(nhs))}
	out.pending = []pendingBatch{{nhs: sb.NewStringArray(), cols: []arrow.Array{nb.NewArray()}, rows: int64(len(nhs))}}
	t.Cleanup(out.release)
	return out
}

// TestPseudonymise: the numbers of a linkage result give way to run
// pseudonyms (and record keys) only once check has passed them.
func TestPseudonymise(t *testing.T) {
	secret, err := pseudonym.NewSecret([]byte("test-linkage-secret-0123456789-abcdefghij"))
	if err != nil {
		t.Fatal(err)
	}
	perturbation, err := pseudonym.NewPerturbationSecret([]byte("test-perturbation-secret-0123456789-abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	const runID, keyRange = "run-pseudonymise", 1000
	valid := func(serial uint32) string {
		n, _, err := cdm.NHSNumberFromSerial(serial)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	a, b, objector := valid(1_000_100), valid(1_000_200), valid(1_000_300)
	tests := []struct {
		name     string
		rows     catalog.RowKind
		keyed    bool
		nhs      []string
		check    bool   // run check first
		checkErr string // check fails so
		err      string // pseudonymise fails so
	}{
		{name: "checked", rows: catalog.RowsPatients, nhs: []string{a, b}, check: true},
		{name: "checked, keyed", rows: catalog.RowsPatients, keyed: true, nhs: []string{a, b}, check: true},
		{name: "unchecked", rows: catalog.RowsPatients, nhs: []string{a, b}, err: "has not passed the check"},
		{name: "an objector", rows: catalog.RowsPatients, nhs: []string{a, objector}, check: true,
			checkErr: "1 opted-out patients and 0 invalid", err: "has not passed the check"},
		{name: "an invalid number", rows: catalog.RowsPatients, nhs: []string{a, "1234567890"}, check: true,
			checkErr: "0 opted-out patients and 1 invalid", err: "has not passed the check"},
		{name: "cells hold no numbers", rows: catalog.RowsCells, nhs: []string{a}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Runner{cfg: Config{Secret: secret, PerturbationSecret: perturbation}, log: slog.New(slog.DiscardHandler)}
			j := &job{t: &havenv1.Task{TaskId: "task", RunId: runID}, siteTask: catalog.SiteTask{Rows: tt.rows}}
			if tt.keyed {
				j.siteTask.Fields = []catalog.Field{{Name: catalog.FieldNameRecordKey, Role: catalog.RoleRecordKey}}
				j.keyRange = keyRange
			}
			out := linkageOutput(t, tt.keyed, tt.nhs)
			if tt.check {
				err := r.check(t.Context(), j, out, func(n string) bool { return n == objector })
				if tt.checkErr == "" && err != nil || tt.checkErr != "" && (err == nil || !strings.Contains(err.Error(), tt.checkErr)) {
					t.Fatalf("check = %v, want %q", err, tt.checkErr)
				}
				if len(out.records) != 0 || len(out.pending) != 1 {
					t.Fatal("check changed the result")
				}
			}
			err := r.pseudonymise(j, out)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("pseudonymise = %v, want %q", err, tt.err)
				}
				if len(out.records) != 0 || len(out.pending) != 1 {
					t.Fatal("a refused pseudonymise changed the result")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.rows != catalog.RowsPatients {
				if len(out.records) != 0 || len(out.pending) != 1 {
					t.Fatal("pseudonymise changed an aggregate result")
				}
				return
			}
			if len(out.pending) != 0 || len(out.records) != 1 {
				t.Fatalf("%d pending and %d records after pseudonymise, want 0 and 1", len(out.pending), len(out.records))
			}
			rec := out.records[0]
			d, _ := pseudonym.NewDeriver(secret, runID)
			rk, _ := pseudonym.NewRecordKeyer(perturbation, keyRange)
			ps := rec.Column(0).(*array.FixedSizeBinary)
			for i, n := range tt.nhs {
				want := d.Of(n)
				if !bytes.Equal(ps.Value(i), want[:]) {
					t.Errorf("row %d: pseudonym %x, want the run pseudonym %x", i, ps.Value(i), want)
				}
				if tt.keyed {
					if got := rec.Column(1).(*array.Int64).Value(i); got != int64(rk.Of(n)) {
						t.Errorf("row %d: record key %d, want %d", i, got, rk.Of(n))
					}
				}
				if got := rec.Column(int(rec.NumCols()) - 1).(*array.Int64).Value(i); got != int64(i) {
					t.Errorf("row %d: n = %d: the other columns moved", i, got)
				}
			}
			// No NHS number is left in the output.
			for c := range int(rec.NumCols()) {
				s, ok := rec.Column(c).(*array.String)
				for i := 0; ok && i < s.Len(); i++ {
					if slices.Contains(tt.nhs, s.Value(i)) {
						t.Errorf("column %s holds an NHS number", rec.ColumnName(c))
					}
				}
			}
		})
	}
}
