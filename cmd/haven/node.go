package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/havenhealth/haven/node"
	"github.com/havenhealth/haven/node/audit"
	"github.com/havenhealth/haven/node/config"
	"github.com/havenhealth/haven/node/state"
)

func newNodeCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a site's node, and watch and control it",
		Long: `The node is the one Haven process at a GP practice or hospital trust. It dials
out to the coordinator (it never listens on a port), runs only tasks that the
board's signed bundle and the site's own policy allow, leaves out every patient
who opted out, and keeps its own audit log of exactly what left the site.

Provider IT runs "haven node run" as a service and uses the other commands to
see its status, read its audit log, pause it and check its setup. All of them
read the same node.yaml (see deploy/examples/node.yaml).`,
		Example: `  haven node check  --config /etc/haven/node.yaml
  haven node run    --config /etc/haven/node.yaml
  haven node status --config /etc/haven/node.yaml
  haven node audit  --config /etc/haven/node.yaml --since 24h
  haven node pause  --config /etc/haven/node.yaml --reason "server maintenance"
  haven node resume --config /etc/haven/node.yaml`,
	}
	var configPaths []string
	cmd.PersistentFlags().StringArrayVar(&configPaths, "config", []string{"node.yaml"},
		"the node's configuration file (run takes it once per site, to serve several sites from one process)")
	load := func() (*config.Config, error) {
		if len(configPaths) != 1 {
			return nil, fmt.Errorf("--config is given %d times; only `haven node run` serves several sites, each of the others reads one node.yaml", len(configPaths))
		}
		return config.Load(configPaths[0])
	}
	loadAll := func() ([]*config.Config, error) {
		var cfgs []*config.Config
		var errs []error
		sites := map[string]string{}
		for _, p := range configPaths {
			cfg, err := config.Load(p)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if other, ok := sites[cfg.Site.ODS]; ok {
				errs = append(errs, fmt.Errorf("%s: site %s is served by %s already", p, cfg.Site.ODS, other))
				continue
			}
			sites[cfg.Site.ODS] = p
			cfgs = append(cfgs, cfg)
		}
		return cfgs, errors.Join(errs...)
	}

	cmd.AddCommand(
		newNodeRunCmd(a, loadAll),
		newNodeStatusCmd(a, load),
		newNodeAuditCmd(a, load),
		newNodePauseCmd(a, load, true),
		newNodePauseCmd(a, load, false),
		newNodeCheckCmd(a, load),
	)
	return cmd
}

type configLoader func() (*config.Config, error)

func newNodeRunCmd(a *app, loadAll func() ([]*config.Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the node daemon until interrupted",
		Long: `Run the node: check its files, verify the governance bundle, start the
connector plugin, then connect out to the coordinator and serve tasks until
SIGINT or SIGTERM. A bundle that does not verify, a certificate for another
site, a linkage secret others can read or a plugin whose checksum differs
stops the node before it connects.

Given --config more than once, one process serves several sites (a host run
for a group of practices): each site keeps its own configuration, connector
plugin, link, state, audit log and certificate, exactly as if it ran alone.
If any site cannot start, none is started; a site whose node stops with an
error stops the others, so that the service manager restarts them together.`,
		Example: `  haven node run --config /etc/haven/node.yaml
  haven node run --config /etc/haven/A81001.yaml --config /etc/haven/A81002.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfgs, err := loadAll()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var nodes []*node.Node
			for _, cfg := range cfgs {
				n, err := node.New(ctx, cfg, node.Options{Logger: a.logger})
				if err != nil {
					for _, started := range nodes {
						started.Close()
					}
					if len(cfgs) > 1 {
						err = fmt.Errorf("site %s: %w", cfg.Site.ODS, err)
					}
					return err
				}
				nodes = append(nodes, n)
			}
			if len(nodes) == 1 {
				return nodes[0].Run(ctx)
			}
			return runNodes(ctx, cfgs, nodes)
		},
	}
}

// runNodes runs several sites' nodes until ctx ends or one of them stops
// with an error, which stops the rest.
func runNodes(ctx context.Context, cfgs []*config.Config, nodes []*node.Node) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Run(ctx); err != nil {
				errs[i] = fmt.Errorf("site %s: %w", cfgs[i].Site.ODS, err)
				cancel(errs[i])
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func newNodeStatusCmd(a *app, load configLoader) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the node is connected, paused, and what it did last",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			pause, perr := state.ReadPause(cfg.StateDir)
			s, err := state.ReadStatus(cfg.StateDir)
			if errors.Is(err, fs.ErrNotExist) {
				w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(w, "Site:\t%s (%s)\nDaemon:\thas not run yet (no %s in %s)\n", cfg.Site.ODS, cfg.Site.Kind, state.StatusFile, cfg.StateDir)
				printPause(w, pause, perr)
				return w.Flush()
			}
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "Site:\t%s (%s)\n", s.Site, s.Kind)
			fmt.Fprintf(w, "Daemon:\t%s\n", daemonState(s))
			var link string
			if s.Connected {
				link = fmt.Sprintf("connected to %s since %s (session %s)", s.Coordinator, s.Since.Local().Format(time.DateTime), s.SessionID)
			} else {
				link = fmt.Sprintf("not connected to %s (%s since %s)", s.Coordinator, s.Link, s.Since.Local().Format(time.DateTime))
				if s.LastError != "" {
					link += "; last error: " + s.LastError
				}
			}
			fmt.Fprintf(w, "Link:\t%s\n", link)
			fmt.Fprintf(w, "Bundle:\trevision %s\n", s.BundleRevision)
			fmt.Fprintf(w, "Connector:\t%s %s (%s)\n", s.ConnectorPlugin, s.ConnectorVersion, s.ConnectorDialect)
			fmt.Fprintf(w, "Tasks running:\t%d\n", s.TasksRunning)
			if no := s.NetworkOptOuts; no != nil {
				fmt.Fprintf(w, "Network type 1 list:\t%d patients from %d practices, version %s, received %s\n",
					no.Hashes, no.Publishers, no.Version, no.Received.Local().Format(time.DateTime))
				if !no.PublishedAt.IsZero() {
					fmt.Fprintf(w, "Published:\t%d type 1 objections of this practice at %s\n", no.Published, no.PublishedAt.Local().Format(time.DateTime))
				}
			} else {
				fmt.Fprintf(w, "Network type 1 list:\tnot received yet (the node runs no task without it)\n")
			}
			printPause(w, pause, perr)
			w.Flush()
			if len(s.LastTasks) > 0 {
				fmt.Fprintln(a.stdout, "\nLast tasks:")
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "  TIME\tTASK\tRUN\tDEFINITION\tOUTCOME\tROWS\tBYTES\tNETWORK LIST\tDETAIL")
				for _, t := range s.LastTasks {
					fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", t.At.Local().Format(time.DateTime), t.TaskID, t.RunID, t.DefinitionID, t.Outcome, t.Rows, t.Bytes, cmp.Or(t.NetworkOptOutVersion, "-"), strings.TrimSpace(t.Detail))
				}
				tw.Flush()
			}
			return nil
		},
	}
}

// daemonState says whether the process that wrote the status file still
// runs and writes it.
func daemonState(s state.Status) string {
	age := time.Since(s.UpdatedAt).Round(time.Second)
	alive := s.PID > 0 && syscall.Kill(s.PID, 0) == nil
	switch {
	case alive && age < time.Minute:
		return fmt.Sprintf("running, pid %d, started %s", s.PID, s.StartedAt.Local().Format(time.DateTime))
	case alive:
		return fmt.Sprintf("pid %d exists but has not updated its status for %s", s.PID, age)
	}
	return fmt.Sprintf("not running (last status %s ago, pid %d)", age, s.PID)
}

// printPause writes the pause switch as read from disk: it, not the
// status file, is what the node obeys.
func printPause(w io.Writer, p state.Pause, err error) {
	switch {
	case err != nil:
		fmt.Fprintf(w, "Paused:\tyes: the pause switch cannot be read (%v)\n", err)
	case p.Paused:
		fmt.Fprintf(w, "Paused:\tyes, since %s: %s\n", p.Since.Local().Format(time.DateTime), p.Reason)
	default:
		fmt.Fprintln(w, "Paused:\tno")
	}
}

func newNodeAuditCmd(a *app, load configLoader) *cobra.Command {
	var since string
	var asJSON, all bool
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show what left the site: every task's outcome, rows, bytes and fields",
		Long: `Read the node's audit log and show, for each task, what was decided and what
was sent: rows, bytes and field names, or why the task was refused or failed.
--since takes a duration back from now (24h, 90m) or a date (2026-03-01) or
time (RFC 3339). --all shows every event (received, accepted…), --json the
records as written.`,
		Example: `  haven node audit --config node.yaml --since 168h
  haven node audit --config node.yaml --since 2026-03-01 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			from, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			recs, err := audit.Read(cfg.AuditDir, from)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				for _, r := range recs {
					if err := enc.Encode(r); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tEVENT\tRUN\tTASK\tDEFINITION\tPURPOSE\tREQUESTER\tROWS\tBYTES\tSENT / WHY")
			var sentRows, sentBytes, n int64
			for _, r := range recs {
				if !all && !outcomeEvent(r.Event) {
					continue
				}
				n++
				why := ""
				switch r.Event {
				case audit.EventDone:
					why = strings.Join(r.Fields, ",")
					sentRows += r.Rows
					sentBytes += r.Bytes
				case audit.EventRefused:
					codes := make([]string, len(r.Reasons))
					for i, rs := range r.Reasons {
						codes[i] = rs.Code
					}
					why = strings.Join(codes, ",")
				case audit.EventFailed:
					why = r.ErrorCode + ": " + r.Message
				default:
					why = r.Message
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.Time.Local().Format(time.DateTime), strings.TrimPrefix(string(r.Event), "task_"),
					dash(r.RunID), dash(r.TaskID), dash(r.DefinitionID), dash(r.Purpose), dash(r.RequesterOrg), r.Rows, r.Bytes, why)
			}
			tw.Flush()
			fmt.Fprintf(a.stdout, "\n%d entries; %d rows and %d bytes left the site\n", n, sentRows, sentBytes)
			return nil
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "show entries from this long ago (e.g. 24h) or this date/time on; empty: all")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the records as JSON lines")
	cmd.Flags().BoolVar(&all, "all", false, "show every event, not only task outcomes and pauses")
	return cmd
}

func outcomeEvent(e audit.Event) bool {
	switch e {
	case audit.EventDone, audit.EventRefused, audit.EventFailed, audit.EventPaused, audit.EventResumed:
		return true
	}
	return false
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseSince reads --since: empty (everything), a duration back from now,
// a date, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: a duration back from now must be positive", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration (24h), a date (2026-03-01) or an RFC 3339 time", s)
}

func newNodePauseCmd(a *app, load configLoader, pause bool) *cobra.Command {
	var reason string
	use, short := "resume", "Let the node take tasks again"
	if pause {
		use, short = "pause", "Stop the node taking tasks, from the next task on"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + `.

A paused node stays connected and refuses every new task with the reason
site_paused; tasks already running finish. The switch is a file in the state
directory that the node reads before every task, so it takes effect at once,
whether or not the daemon is running, and survives restarts. Each change is
recorded in the audit log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			now := time.Now().UTC()
			p := state.Pause{Paused: pause, Reason: reason, Since: now}
			if err := state.WritePause(cfg.StateDir, p); err != nil {
				return err
			}
			ev := audit.EventResumed
			if pause {
				ev = audit.EventPaused
			}
			l, err := audit.Open(cfg.AuditDir)
			if err != nil {
				return err
			}
			defer l.Close()
			if err := l.Append(audit.Record{Time: now, Event: ev, Message: reason}); err != nil {
				return err
			}
			if pause {
				fmt.Fprintf(a.stdout, "Node %s paused: it refuses every task from the next one on.\n", cfg.Site.ODS)
			} else {
				fmt.Fprintf(a.stdout, "Node %s resumed: it takes tasks again.\n", cfg.Site.ODS)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, in your words; shown to the coordinator and in the audit log")
	return cmd
}

func newNodeCheckCmd(a *app, load configLoader) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Check the node's setup and report each finding; exit 1 on any failure",
		Long: `Check everything the node depends on, without starting it: the certificate
(site, expiry), the network CA, the linkage secret (private, long enough), the
national opt-out list, the governance bundle's signature, the state and audit
directories, the connector plugin (checksum, start, CDM tables with row counts
and the rows in each with an invalid NHS number or a bad numeric value, which
every query leaves out) and whether the coordinator answers a TLS
handshake. Exits 1 if anything fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			// Findings carry every error; the parts' own logs would
			// only repeat them, so they are kept for --log-level debug.
			var logger *slog.Logger
			if a.logLevel == "debug" {
				logger = a.logger
			}
			findings := node.Check(cmd.Context(), cfg, logger)
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			failed := 0
			for _, f := range findings {
				mark := "ok"
				switch {
				case !f.OK:
					mark = "FAIL"
					failed++
				case f.Warn:
					mark = "warn"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", mark, f.Check, f.Detail)
			}
			tw.Flush()
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("node check: %d of %d checks failed", failed, len(findings))}
			}
			fmt.Fprintf(a.stdout, "\nAll %d checks passed.\n", len(findings))
			return nil
		},
	}
}
