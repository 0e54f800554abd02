package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/demo"
)

func newDemoCmd(a *app) *cobra.Command {
	opts := demo.Options{Dir: demo.DefaultDir}
	var serve bool
	cmd := &cobra.Command{
		Use:   "demo [--dir .demo] [--keep] [--serve] [--postgres]",
		Short: "Run a whole Haven network on this machine and answer two queries",
		Long: `Run the whole system on this machine, each part as its own process: generate
the small synthetic network (8 practices, 2 trusts, seed 1), issue a network CA
and certificates, sign a copy of the reference governance bundle with a demo
board key, build the connector plugins, start a coordinator and one node per
site, and, as a commissioner, run one aggregate-mode query (t2dm-prevalence)
and one linkage-mode query (t2dm-emergency-admissions). Each released table is
printed with its withheld values and their reasons, and its coverage.

The coordinator also serves the commissioners' portal, signing people in
through a development OpenID provider (haven oidc-dev) started with the
network, and the public transparency register. With --serve the network
keeps running after the queries, until Ctrl-C, and the demo prints the
portal's and the register's addresses and the demo sign-ins: open the
portal in a browser, sign in as ana, look at the two runs, ask another
question. Their certificate comes from the demo's own CA, so the browser
warns once.

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
  make demo DEMO_FLAGS=--serve         # then open the portal address it prints
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
			if serve {
				opts.Serve = func(ctx context.Context, _ *demo.Network) error {
					fmt.Fprintln(a.stderr, "serving until Ctrl-C…")
					<-ctx.Done()
					return nil
				}
			}
			_, err = demo.Run(cmd.Context(), opts)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Dir, "dir", opts.Dir, "directory for everything the demo writes")
	f.BoolVar(&serve, "serve", false, "keep the network running after the queries, until Ctrl-C, with its portal and register")
	f.BoolVar(&opts.Keep, "keep", false, "keep the demo directory (network, certificates, configurations, logs, audit logs)")
	f.BoolVar(&opts.Postgres, "postgres", false, "serve one trust from a throwaway PostgreSQL cluster")
	return cmd
}
