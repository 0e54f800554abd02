package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/havenhealth/haven/policy/ptable"
	"github.com/spf13/cobra"
)

func newPolicyPTableCmd(a *app) *cobra.Command {
	var p ptable.Params
	var out, table string
	var show int64
	cmd := &cobra.Command{
		Use:   "ptable",
		Short: "Generate a cell-key perturbation table, or describe one, for the board",
		Long: `Generate a perturbation table (p-table) from stated parameters, or read one
with --table, and print what it does: for each true count up to --show, the
values it can be released as with their probabilities, and the expected
absolute error of the released value by cell size.

A released count is looked up in the table by the cell's true count and its
cell key (the sum of its patients' record keys mod the key range), so the
same patients always give the same value. The generator follows the ONS and
ABS method: released values are multiples of --base, 0 or at least
--threshold, within --max-perturbation of the truth and unbiased; every count
from 1 to the threshold (rounded up to the base) can be released both as 0
and as that value, so no released value proves on which side of the
threshold a count lies. --out writes the table, to be put in the bundle and
named in data.json under disclosure.perturbation.table.`,
		Example: `  haven policy ptable --threshold 8 --base 5 --max-perturbation 10 --variance 9 --out policy/bundle/disclosure/ptable-8-5.csv
  haven policy ptable --table policy/bundle/disclosure/ptable-8-5.csv --threshold 8 --base 5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var t *ptable.Table
			var err error
			if table != "" {
				b, rerr := os.ReadFile(table)
				if rerr != nil {
					return fmt.Errorf("policy ptable: %w", rerr)
				}
				if t, err = ptable.Parse(bytes.NewReader(b), table); err == nil {
					err = t.Validate(p.Threshold, p.Base)
				}
				if err != nil {
					return fmt.Errorf("policy ptable: %w", err)
				}
				fmt.Fprintf(a.stdout, "p-table %s: threshold %d, rounding base %d, key range %d, max perturbation %d\n",
					table, p.Threshold, p.Base, t.KeyRange(), t.MaxPerturbation())
			} else {
				if t, err = ptable.Generate(p); err != nil {
					return fmt.Errorf("policy ptable: %w", err)
				}
				fmt.Fprintf(a.stdout, "p-table: threshold %d, rounding base %d, max perturbation %d, variance %v, key range %d\n",
					p.Threshold, p.Base, p.MaxPerturbation, p.Variance, p.KeyRange)
			}
			describePTable(a.stdout, t, show)
			if out != "" {
				var buf bytes.Buffer
				if err := t.WriteCSV(&buf); err != nil {
					return fmt.Errorf("policy ptable: %w", err)
				}
				if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
					return fmt.Errorf("policy ptable: %w", err)
				}
				fmt.Fprintf(a.stdout, "wrote %s\n", out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&p.Threshold, "threshold", 8, "smallest positive count that may be released (the bundle's min_cell_count)")
	f.IntVar(&p.Base, "base", 5, "rounding base: every released value is a multiple of it")
	f.IntVar(&p.MaxPerturbation, "max-perturbation", 10, "largest difference between a true and a released count")
	f.Float64Var(&p.Variance, "variance", 9, "target variance of the perturbation of large counts")
	f.IntVar(&p.KeyRange, "key-range", 256, "number of record and cell keys (R)")
	f.StringVar(&out, "out", "", "write the generated table to this CSV file")
	f.StringVar(&table, "table", "", "describe this table instead of generating one")
	f.Int64Var(&show, "show", 25, "print the distribution for true counts 0 to this")
	return cmd
}

// describePTable prints, for each true count up to show, the released
// values with their probabilities, then the expected absolute error by
// cell size.
func describePTable(w io.Writer, t *ptable.Table, show int64) {
	fmt.Fprintf(w, "\n%6s  %-60s %s\n", "true", "released as (probability)", "E|error|")
	for c := int64(0); c <= show; c++ {
		var parts []string
		for _, o := range t.Outcomes(c) {
			parts = append(parts, fmt.Sprintf("%d (%.3f)", o.Value, o.Probability))
		}
		fmt.Fprintf(w, "%6d  %-60s %.2f\n", c, strings.Join(parts, " "), t.ExpectedAbsError(c))
	}
	fmt.Fprintf(w, "\nexpected absolute error by cell size (mean over the true counts in the band):\n")
	for _, b := range [][2]int64{{1, 4}, {5, 9}, {10, 19}, {20, 49}, {50, 99}, {100, 999}, {1000, 9999}} {
		var e float64
		for c := b[0]; c <= b[1]; c++ {
			e += t.ExpectedAbsError(c)
		}
		fmt.Fprintf(w, "  %5d-%-5d %.2f\n", b[0], b[1], e/float64(b[1]-b[0]+1))
	}
}
