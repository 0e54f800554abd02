package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/spf13/cobra"
)

func newAuditCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify and read the coordinator's hash-chained audit log",
		Long: `The coordinator records every submission, policy decision, dispatch, node
response and release in an append-only log in which each entry carries the
SHA-256 of the one before. "verify" checks the whole chain and names the first
entry that was edited, deleted, inserted or moved; "show" prints entries.`,
		Example: `  haven audit verify --log /var/lib/haven/audit.jsonl
  haven audit show --log /var/lib/haven/audit.jsonl --run r-20261125-0001`,
	}
	var path string
	cmd.PersistentFlags().StringVar(&path, "log", "audit.jsonl", "path of the coordinator's audit log")

	var head string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check every entry of the audit log and its chain",
		Long: `Check every entry of the audit log: that it parses, that its hash matches its
content, and that it chains to the entry before it. Exits 1 naming the first
broken entry. With --head, also checks that the log ends at the entry with
that hash, which shows entries cut from the end.`,
		Example: "  haven audit verify --log audit.jsonl --head 3f1c…",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("audit verify: %w", err)
			}
			defer f.Close()
			sum, err := audit.Verify(f)
			if err != nil {
				return fmt.Errorf("audit verify %s: %w", path, err)
			}
			if head != "" && head != sum.Head {
				return fmt.Errorf("audit verify %s: chain is intact but ends at %s, not the recorded head %s (entries removed from the end?)", path, sum.Head, head)
			}
			fmt.Fprintf(a.stdout, "%s: %d entries, chain intact, head %s\n", path, sum.Entries, sum.Head)
			return nil
		},
	}
	verify.Flags().StringVar(&head, "head", "", "hash the last entry must have (as recorded by the coordinator)")

	var runID string
	show := &cobra.Command{
		Use:     "show",
		Short:   "Print audit entries, optionally of one run",
		Example: "  haven audit show --log audit.jsonl --run r-20261125-0001",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("audit show: %w", err)
			}
			defer f.Close()
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tKIND\tRUN\tACTOR\tDETAIL")
			_, err = audit.Scan(f, func(e audit.Entry) {
				if runID != "" && e.RunID != runID {
					return
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), e.Kind, e.RunID, e.Actor, e.Data)
			})
			tw.Flush()
			if be, ok := errors.AsType[*audit.BrokenError](err); ok {
				return &exitError{code: 1, err: fmt.Errorf("stopped: %w", be)}
			}
			return err
		},
	}
	show.Flags().StringVar(&runID, "run", "", "only entries of this run id")
	cmd.AddCommand(verify, show)
	return cmd
}
