package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/havenhealth/haven/demo"
	"github.com/havenhealth/haven/demo/national"
)

func newBenchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Haven at scale on this machine",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBenchNationalCmd(a))
	return cmd
}

func newBenchNationalCmd(a *app) *cobra.Command {
	var (
		opts      national.Options
		scales    string
		keep      bool
		noIdle    bool
		noFaults  bool
		timeLimit time.Duration
	)
	cmd := &cobra.Command{
		Use:   "national",
		Short: "Run one coordinator against a simulated national network and print what it costs",
		Long: `Run one real coordinator process against a simulated national network
(6,500 practices and 230 trusts by default) at each population scale given,
and print a table: sites, patients, the time for every site to register, an
aggregate run (statins-chd) and a linkage run (t2dm-emergency-admissions)
from submission to release, the rows linked, the coordinator's peak memory
and what its linkage spilled to disk.

The sites are simulated in this process, not run as nodes: each has its own
node certificate, mTLS connection and NodeLink stream, and answers its tasks
with real Arrow Flight uploads computed from a generated population (sized by
the synthesiser's model, never held in memory, the same for the same
--seed). Every released table is checked: coverage must count exactly the
sites that answered, and each count's total must be the same question
answered centrally over the generated population (make bench-national checks
every cell).

At the first scale it also measures the coordinator with every link idle (30
seconds) and the time for every site to register again after a restart; at
the last it writes the coordinator's CPU and heap profiles to --profiles, if
given. Then a run with faults: one site in twenty silent, a malformed upload,
an upload dropped half way, an oversized one; coverage and answer are checked.

It runs from the haven source tree (it signs a copy of policy/bundle) and
needs its own coordinator port on loopback. The sweep 1.5M,6M,15M,60M took
about 12 minutes on two cores; at 60M the coordinator needs about 6 GiB
of memory (with --memory-limit 6GiB) and the simulator about 4 GiB.`,
		Example: `  # The curve, with profiles at 60M
  haven bench national --scales 1.5M,6M,15M,60M --profiles ./profiles

  # A quick look at a small network
  haven bench national --practices 200 --trusts 10 --scales 100k --no-idle --no-faults`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if opts.Scales, err = national.ParseScales(scales); err != nil {
				return fmt.Errorf("--scales: %w", err)
			}
			if opts.Haven, err = os.Executable(); err != nil {
				return fmt.Errorf("find the haven binary: %w", err)
			}
			root, err := demo.ModuleRoot(cmd.Context())
			if err != nil {
				return err
			}
			opts.BundleSource = filepath.Join(root, "policy", "bundle")
			kept := opts.Dir != "" || keep
			if opts.Dir == "" {
				if opts.Dir, err = os.MkdirTemp("", "haven-bench-national-"); err != nil {
					return err
				}
				if !keep {
					defer os.RemoveAll(opts.Dir)
				}
			}
			opts.Idle, opts.Faults = !noIdle, !noFaults
			opts.Progress = a.stderr
			ctx := cmd.Context()
			if timeLimit > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeLimit)
				defer cancel()
			}
			rep, err := national.Run(ctx, opts)
			if rep != nil {
				rep.Print(a.stdout)
			}
			if err != nil && kept {
				return fmt.Errorf("national simulation (its files and logs are in %s): %w", opts.Dir, err)
			}
			if err != nil {
				return fmt.Errorf("national simulation (--keep keeps its files and logs): %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&scales, "scales", "1.5M", "population sizes to simulate, in order, each on a fresh coordinator (e.g. 1.5M,6M,15M,60M)")
	f.IntVar(&opts.Practices, "practices", 6500, "GP practices")
	f.IntVar(&opts.Trusts, "trusts", 230, "hospital trusts")
	f.Uint64Var(&opts.Seed, "seed", 1, "seed of the generated population")
	f.StringVar(&opts.Budget, "budget", "", "the coordinator's linkage.memory_budget (default its own, 4GiB)")
	f.StringVar(&opts.MemoryLimit, "memory-limit", "6GiB", "the coordinator's memory_limit (\"\" for none): the budget and 2GiB, as docs/national-scale.md advises")
	f.IntVar(&opts.Dials, "dials", 256, "sites dialling at once")
	f.DurationVar(&opts.Jitter, "jitter", 10*time.Second, "spread of the sites' reconnection after the restart")
	f.StringVar(&opts.Profiles, "profiles", "", "directory for the coordinator's CPU and heap profiles at the last scale")
	f.StringVar(&opts.Dir, "dir", "", "directory for the networks' files and logs (default a temporary one, removed unless --keep)")
	f.BoolVar(&keep, "keep", false, "keep the temporary directory")
	f.BoolVar(&noIdle, "no-idle", false, "skip the idle and restart measurements")
	f.BoolVar(&noFaults, "no-faults", false, "skip the run with faults")
	f.DurationVar(&opts.FaultDeadline, "fault-deadline", 3*time.Minute, "deadline of the fault run's runs, which its silent sites wait out")
	f.DurationVar(&timeLimit, "timeout", 2*time.Hour, "give up after this long")
	return cmd
}
