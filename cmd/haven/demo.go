package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/demo"
)

func newDemoCmd(a *app) *cobra.Command {
	opts := demo.Options{Dir: demo.DefaultDir}
	cmd := &cobra.Command{
		Use:   "demo [--dir .demo] [--keep] [--postgres]",
		Short: "Run a whole Haven network on this machine and answer two queries",
		Long: `Run the whole system on this machine, each part as its own process: generate
the small synthetic network (8 practices, 2 trusts, seed 1), issue a network CA
and certificates, sign a copy of the reference governance bundle with a demo
board key, build the connector plugins, start a coordinator and one node per
site, and, as a commissioner, run one aggregate-mode query (t2dm-prevalence)
and one linkage-mode query (t2dm-emergency-admissions). Each released table is
printed with its withheld values and their reasons, and its coverage.

Progress goes to stderr, results to stdout. Every process is stopped before
the command returns, also on Ctrl-C or failure. The demo directory is
removed afterwards unless --keep is given (or the demo failed: then it keeps
the logs).

It needs the Go toolchain and this repository (it builds the plugins with go
build; the DuckDB plugin needs cgo). --postgres loads one trust into a
throwaway PostgreSQL cluster and has its node use the PostgreSQL connector;
it needs PostgreSQL's server binaries (scripts/setup-postgres.sh).`,
		Example: `  make demo
  haven demo --keep
  haven demo --dir /tmp/haven-demo --postgres`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the haven binary to run the coordinator and nodes with: %w", err)
			}
			opts.Haven = exe
			opts.Stdout, opts.Stderr = a.stdout, a.stderr
			opts.PrintTable = client.WriteTable
			_, err = demo.Run(cmd.Context(), opts)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Dir, "dir", opts.Dir, "directory for everything the demo writes")
	f.BoolVar(&opts.Keep, "keep", false, "keep the demo directory (network, certificates, configurations, logs, audit logs)")
	f.BoolVar(&opts.Postgres, "postgres", false, "serve one trust from a throwaway PostgreSQL cluster")
	return cmd
}
