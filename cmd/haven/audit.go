package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/store"
	"github.com/spf13/cobra"
)

func newAuditCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify and read the coordinator's hash-chained audit log",
		Long: `The coordinator records every submission, policy decision, dispatch, node
response and release in an append-only log in which each entry carries the
SHA-256 of the one before, and anchors the last entry's number and hash in its
job store. "verify" checks the whole chain and the anchor and names the first
entry that was edited, deleted, inserted or moved, or a log cut short,
emptied or replaced; "head" prints the head for someone else to keep; "show"
prints entries.`,
		Example: `  haven audit verify --log /var/lib/haven/audit.jsonl
  haven audit show --log /var/lib/haven/audit.jsonl --run r-20261125-0001`,
	}
	var path, storePath string
	cmd.PersistentFlags().StringVar(&path, "log", "audit.jsonl", "path of the coordinator's audit log")
	cmd.PersistentFlags().StringVar(&storePath, "store", "", "the coordinator's job store, which anchors the log's head (default: coordinator.db beside the log)")

	var head string
	var noStore bool
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check every entry of the audit log, its chain, and its anchor in the job store",
		Long: `Check every entry of the audit log: that it parses, that its hash matches its
content, and that it chains to the entry before it. Then check the log against
the head the coordinator anchored in its job store after every append: a log
cut short, emptied, or replaced by another chain fails here although its chain
is intact. Exits 1 naming the first broken entry or the disagreement.

With --head (as printed by "haven audit head" and kept by someone outside the
coordinator), also check that the log still holds that entry: this catches a
log and store rewritten together.

The store is only read, so this can run beside a live coordinator; entries the
coordinator appends after the store was read are reported, not refused.`,
		Example: `  haven audit verify --log /var/lib/haven/audit.jsonl
  haven audit verify --log audit.jsonl --head 1042:3f1c…
  haven audit verify --log copy-of-audit.jsonl --no-store`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var anchor *audit.Head
			if !noStore {
				sp := storeFor(path, storePath)
				if _, err := os.Stat(sp); err != nil {
					return fmt.Errorf("audit verify: no job store to check the log against: %w (pass --store, or --no-store to check the chain alone)", err)
				}
				// The store first: a live coordinator only moves the
				// anchor forward, so the log read next holds it.
				seq, hash, anchored, err := store.ReadAuditHead(cmd.Context(), sp)
				if err != nil {
					return fmt.Errorf("audit verify: %w", err)
				}
				if anchored {
					anchor = &audit.Head{Seq: seq, Hash: hash}
				}
			}
			f, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("audit verify: %w", err)
			}
			defer f.Close()
			var hashes []string
			sum, err := audit.Scan(f, func(e audit.Entry) { hashes = append(hashes, e.Hash) })
			if err != nil {
				return fmt.Errorf("audit verify %s: %w", path, err)
			}
			if head != "" {
				if err := checkKeptHead(hashes, head); err != nil {
					return fmt.Errorf("audit verify %s: %w", path, err)
				}
			}
			note := "not checked against a job store"
			if anchor != nil {
				ahead, err := audit.CheckAgainst(hashes, *anchor)
				if err != nil {
					return fmt.Errorf("audit verify %s against %s: %w", path, storeFor(path, storePath), err)
				}
				note = fmt.Sprintf("matches the job store's anchor (entry %d)", anchor.Seq)
				if ahead > 0 {
					note += fmt.Sprintf(", %d later entries not yet anchored", ahead)
				}
			} else if !noStore {
				note = "the job store has not anchored a log yet"
			}
			fmt.Fprintf(a.stdout, "%s: %d entries, chain intact, head %s; %s\n", path, sum.Entries, sum.Head, note)
			return nil
		},
	}
	verify.Flags().StringVar(&head, "head", "", `a head kept earlier, "SEQ:HASH" (or a bare hash): the log must still hold that entry`)
	verify.Flags().BoolVar(&noStore, "no-store", false, "check the chain alone (a copy of the log without its store)")

	headCmd := &cobra.Command{
		Use:   "head",
		Short: "Print the audit log's head for someone outside the coordinator to keep",
		Long: `Verify the log against the job store, as "verify" does, and print its head as
SEQ:HASH. Whoever keeps a printed head (the board, an auditor, the transparency
register) can later run "haven audit verify --head SEQ:HASH": a coordinator's
operator who rewrote both the log and the store cannot make it pass.`,
		Example: "  haven audit head --log /var/lib/haven/audit.jsonl",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sp := storeFor(path, storePath)
			if _, err := os.Stat(sp); err != nil {
				return fmt.Errorf("audit head: no job store: %w (pass --store)", err)
			}
			seq, hash, anchored, err := store.ReadAuditHead(cmd.Context(), sp)
			if err != nil {
				return fmt.Errorf("audit head: %w", err)
			}
			f, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("audit head: %w", err)
			}
			defer f.Close()
			var hashes []string
			sum, err := audit.Scan(f, func(e audit.Entry) { hashes = append(hashes, e.Hash) })
			if err != nil {
				return fmt.Errorf("audit head %s: %w", path, err)
			}
			if anchored {
				if _, err := audit.CheckAgainst(hashes, audit.Head{Seq: seq, Hash: hash}); err != nil {
					return fmt.Errorf("audit head %s against %s: %w", path, sp, err)
				}
			}
			fmt.Fprintf(a.stdout, "%d:%s\n", sum.Entries, sum.Head)
			return nil
		},
	}

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
	cmd.AddCommand(verify, headCmd, show)
	return cmd
}

// storeFor is the job store that anchors the log at logPath: flag, or the
// coordinator's layout (both files in its data directory).
func storeFor(logPath, flag string) string {
	if flag != "" {
		return flag
	}
	return filepath.Join(filepath.Dir(logPath), "coordinator.db")
}

// checkKeptHead checks that a log, given by its entries' hashes, still holds
// a head kept earlier: "SEQ:HASH", or a bare hash anywhere in the log.
func checkKeptHead(hashes []string, kept string) error {
	seqText, hash, withSeq := strings.Cut(kept, ":")
	if !withSeq {
		hash = seqText
	}
	if withSeq {
		seq, err := strconv.ParseUint(seqText, 10, 64)
		if err != nil || seq == 0 {
			return fmt.Errorf("--head %.80q: want SEQ:HASH as \"haven audit head\" prints it", kept)
		}
		if seq <= uint64(len(hashes)) && hashes[seq-1] == hash {
			return nil
		}
		if seq > uint64(len(hashes)) {
			return fmt.Errorf("chain is intact but has %d entries, not the %d of the recorded head (entries removed from the end?)", len(hashes), seq)
		}
		return fmt.Errorf("chain is intact but entry %d has hash %s, not the recorded head's %s (log rewritten?)", seq, hashes[seq-1], hash)
	}
	if slices.Contains(hashes, hash) {
		return nil
	}
	last := audit.ZeroHash
	if len(hashes) > 0 {
		last = hashes[len(hashes)-1]
	}
	return fmt.Errorf("chain is intact but ends at %s and holds no entry with the recorded head %s (entries removed from the end?)", last, hash)
}
