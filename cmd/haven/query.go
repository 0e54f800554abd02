package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/havenhealth/haven/client"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// queryFlags say how to reach the coordinator and who is asking.
type queryFlags struct {
	addr, ca, cert, key, tokenFile, serverName string
}

// fromEnv fills each flag the user did not give from its environment
// variable.
func (f *queryFlags) fromEnv(cmd *cobra.Command) {
	for flag, p := range map[string]*string{
		"coordinator": &f.addr, "ca": &f.ca, "cert": &f.cert, "key": &f.key,
		"token-file": &f.tokenFile, "server-name": &f.serverName,
	} {
		if !cmd.Flags().Changed(flag) {
			if v := os.Getenv(envName(flag)); v != "" {
				*p = v
			}
		}
	}
}

func envName(flag string) string {
	return "HAVEN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// dial checks the flags and connects to the coordinator with a client
// certificate or, failing that, a bearer token.
func (f *queryFlags) dial() (*client.Client, error) {
	if f.addr == "" {
		return nil, errors.New("--coordinator is required (or set HAVEN_COORDINATOR), e.g. coordinator.example.nhs.uk:7443")
	}
	if f.ca == "" {
		return nil, errors.New("--ca is required (or set HAVEN_CA): the network CA certificate the coordinator's is checked against")
	}
	switch {
	case f.cert != "" || f.key != "":
		if f.cert == "" || f.key == "" {
			return nil, errors.New("--cert and --key go together")
		}
	case f.tokenFile == "":
		return nil, errors.New("say who you are: --cert and --key (a network user certificate) or --token-file (or HAVEN_CERT, HAVEN_KEY, HAVEN_TOKEN_FILE)")
	}
	return client.Dial(client.Config{Addr: f.addr, CAFile: f.ca, CertFile: f.cert, KeyFile: f.key, TokenFile: f.tokenFile,
		ServerName: f.serverName, Program: "haven query"})
}

func newQueryCmd(a *app) *cobra.Command {
	f := &queryFlags{}
	cmd := &cobra.Command{
		Use:   "query",
		Short: "Browse the approved catalogue, submit runs and fetch released tables",
		Long: `The commissioner's client. It talks to the coordinator with a network user
certificate (--cert, --key) or a bearer token (--token-file), checking the
coordinator's certificate against the network CA (--ca). Every flag can come
from the environment instead: HAVEN_COORDINATOR, HAVEN_CA, HAVEN_CERT,
HAVEN_KEY, HAVEN_TOKEN_FILE, HAVEN_SERVER_NAME.

A run asks every site the approved plan needs; only a disclosure-controlled
table comes back. Withheld values are shown with the reason they were
withheld.`,
		Example: `  export HAVEN_COORDINATOR=coordinator.example.nhs.uk:7443 HAVEN_CA=ca.crt HAVEN_CERT=ana.crt HAVEN_KEY=ana.key
  haven query list
  haven query show t2dm-emergency-admissions
  haven query submit t2dm-emergency-admissions --param index_date=2024-04-01 --purpose commissioning --wait
  haven query fetch run-ABC123 --format csv > table.csv`,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if p := cmd.Root(); p.PersistentPreRunE != nil {
				if err := p.PersistentPreRunE(cmd, args); err != nil {
					return err
				}
			}
			f.fromEnv(cmd)
			return nil
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.addr, "coordinator", "", "coordinator address, host:port ($HAVEN_COORDINATOR)")
	pf.StringVar(&f.ca, "ca", "", "network CA certificate ($HAVEN_CA)")
	pf.StringVar(&f.cert, "cert", "", "your network user certificate ($HAVEN_CERT)")
	pf.StringVar(&f.key, "key", "", "its private key ($HAVEN_KEY)")
	pf.StringVar(&f.tokenFile, "token-file", "", "file holding a bearer token, instead of a certificate ($HAVEN_TOKEN_FILE)")
	pf.StringVar(&f.serverName, "server-name", "", "name to check the coordinator's certificate for, if not the address's host ($HAVEN_SERVER_NAME)")

	cmd.AddCommand(
		newQueryListCmd(a, f), newQueryShowCmd(a, f), newQuerySubmitCmd(a, f), newQueryStatusCmd(a, f),
		newQueryFetchCmd(a, f), newQueryRunsCmd(a, f), newQueryCancelCmd(a, f), newQueryVerifyCmd(a),
	)
	return cmd
}

// withClient dials, runs fn and closes the connection.
func (f *queryFlags) withClient(fn func(*client.Client) error) error {
	c, err := f.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

func newQueryListCmd(a *app, f *queryFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the approved query definitions",
		Example: "  haven query list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withClient(func(c *client.Client) error {
				defs, err := c.Definitions(cmd.Context())
				if err != nil {
					return err
				}
				return client.WriteDefinitions(a.stdout, defs)
			})
		},
	}
}

func newQueryShowCmd(a *app, f *queryFlags) *cobra.Command {
	var source bool
	cmd := &cobra.Command{
		Use:     "show DEFINITION",
		Short:   "Show a definition: what it answers, its parameters, approval and plan",
		Example: "  haven query show statins-chd\n  haven query show statins-chd --source",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.withClient(func(c *client.Client) error {
				resp, err := c.Definition(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if source {
					_, err := a.stdout.Write([]byte(resp.GetSource()))
					return err
				}
				return client.WriteDefinition(a.stdout, resp)
			})
		},
	}
	cmd.Flags().BoolVar(&source, "source", false, "print the definition's YAML as the board signed it")
	return cmd
}

func newQuerySubmitCmd(a *app, f *queryFlags) *cobra.Command {
	var (
		params                   []string
		purpose, clientRequestID string
		wait                     bool
	)
	cmd := &cobra.Command{
		Use:   "submit DEFINITION --purpose PURPOSE [--param name=value]... [--wait]",
		Short: "Submit a run of an approved definition",
		Long: `Submit a run. Parameters left out take their defaults. The coordinator checks
the values against the definition and the governance board's policy; a run
the policy refuses is recorded and its reasons are printed.

With --wait the command follows the run, with a progress line on stderr
(sites answered of those asked), until it finishes, and exits 0 only if a
table was released.`,
		Example: `  haven query submit t2dm-emergency-admissions --param index_date=2024-04-01 \
      --param followup_days=365 --purpose commissioning --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if purpose == "" {
				return errors.New("--purpose is required: why the run is needed, one of the purposes its approval allows (see haven query show)")
			}
			return f.withClient(func(c *client.Client) error {
				ctx := cmd.Context()
				run, err := c.Submit(ctx, client.Submission{Definition: args[0], Params: params, Purpose: purpose, ClientRequestID: clientRequestID})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "run %s: %s\n", run.GetId(), client.StateLabel(run.GetState()))
				if err := client.Outcome(run); err != nil || !wait {
					return err
				}
				p := client.NewProgress(a.stderr, isTerminal(a.stderr))
				run, err = c.Follow(ctx, run.GetId(), p.Update)
				p.Done()
				if err != nil {
					return err
				}
				client.WriteRun(a.stdout, run)
				return client.Outcome(run)
			})
		},
	}
	cmd.Flags().StringArrayVar(&params, "param", nil, "parameter as name=value (repeatable)")
	cmd.Flags().StringVar(&purpose, "purpose", "", "purpose of the run, one its approval allows")
	cmd.Flags().StringVar(&clientRequestID, "client-request-id", "", "id that makes retrying this submission return the same run")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the run until it finishes")
	return cmd
}

func newQueryStatusCmd(a *app, f *queryFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "status RUN",
		Short:   "Show a run: its state, coverage and each site's part",
		Example: "  haven query status run-ABC123",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client.CheckRunID(args[0]); err != nil {
				return err
			}
			return f.withClient(func(c *client.Client) error {
				run, err := c.Run(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				client.WriteRun(a.stdout, run)
				return nil
			})
		},
	}
}

func newQueryCancelCmd(a *app, f *queryFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:     "cancel RUN",
		Short:   "Cancel a run in progress; its sites are told to stop",
		Example: "  haven query cancel run-ABC123 --reason 'wrong index date'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client.CheckRunID(args[0]); err != nil {
				return err
			}
			return f.withClient(func(c *client.Client) error {
				run, err := c.Cancel(cmd.Context(), args[0], reason)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "run %s: %s\n", args[0], client.StateLabel(run.GetState()))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the run register")
	return cmd
}

func newQueryRunsCmd(a *app, f *queryFlags) *cobra.Command {
	var (
		states     []string
		definition string
		limit      int
	)
	cmd := &cobra.Command{
		Use:     "runs",
		Short:   "List runs, newest first",
		Example: "  haven query runs\n  haven query runs --state released --definition statins-chd",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var want []havenv1.RunState
			for _, s := range states {
				st, err := client.ParseRunState(s)
				if err != nil {
					return fmt.Errorf("--state %w", err)
				}
				want = append(want, st)
			}
			if limit < 1 {
				return errors.New("--limit must be at least 1")
			}
			return f.withClient(func(c *client.Client) error {
				runs, err := c.Runs(cmd.Context(), client.RunFilter{States: want, Definition: definition, Limit: limit})
				if err != nil {
					return err
				}
				return client.WriteRuns(a.stdout, runs)
			})
		},
	}
	cmd.Flags().StringSliceVar(&states, "state", nil, "only runs in these states (repeatable)")
	cmd.Flags().StringVar(&definition, "definition", "", "only runs of this definition")
	cmd.Flags().IntVar(&limit, "limit", 50, "most runs to list")
	return cmd
}

func newQueryFetchCmd(a *app, f *queryFlags) *cobra.Command {
	var format, out string
	cmd := &cobra.Command{
		Use:   "fetch RUN [--format table|csv|json|arrow]",
		Short: "Fetch a run's released table",
		Long: `Fetch the released table of a run you submitted. Withheld values are shown
with the reason disclosure control withheld them: low_count (a count under the
threshold), few_contributors, dominance (one patient would dominate a sum),
secondary (withheld so another withheld value cannot be worked out). Margin
rows total over the other dimensions; the total row over everything.

Formats: table (for reading), csv and json (values, and a <measure>__withheld
column with the reason), arrow (the Arrow IPC stream as released, signed by the
coordinator; check it with haven query verify). Every format carries the
release's provenance: the run, definition id, version and hash, parameters,
purpose, bundle revision, disclosure rules, coverage, node versions and times;
json in the document, arrow in the schema metadata, and csv written with --out
in a sidecar file <out>.provenance.json.`,
		Example: "  haven query fetch run-ABC123\n  haven query fetch run-ABC123 --format csv --out table.csv",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client.CheckRunID(args[0]); err != nil {
				return err
			}
			switch format {
			case "table", "csv", "json", "arrow":
			default:
				return fmt.Errorf("--format %q: want table, csv, json or arrow", format)
			}
			return f.withClient(func(c *client.Client) error {
				rdr, err := c.Records(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				defer rdr.Release()
				w := a.stdout
				if out != "" {
					file, err := os.Create(out)
					if err != nil {
						return err
					}
					defer file.Close()
					w = file
				}
				if format == "arrow" {
					return client.WriteArrow(w, rdr)
				}
				tab, err := client.ReadTable(rdr)
				if err != nil {
					return err
				}
				switch format {
				case "csv":
					if out != "" {
						if err := client.WriteSidecar(out+".provenance.json", tab); err != nil {
							return err
						}
					}
					return client.WriteCSV(w, tab)
				case "json":
					return client.WriteJSON(w, tab)
				}
				client.WriteTable(w, tab)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "table, csv, json or arrow")
	cmd.Flags().StringVar(&out, "out", "", "write to this file instead of standard output")
	return cmd
}

func newQueryVerifyCmd(a *app) *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "verify --public-key COORDINATOR.pub FILE",
		Short: "Check a fetched Arrow table's signature and provenance",
		Long: `Check that FILE, a table written by haven query fetch --format arrow, is
exactly what the coordinator released: the coordinator's ed25519 signature
covers every value of every row and the provenance in the schema metadata (run,
definition id, version and hash, parameters, purpose, bundle revision,
disclosure rules, coverage, columns). A table that is unsigned, signed by
another key, or altered is refused, naming what failed. Needs no connection.

The key is --public-key, not --key: --key is every haven query command's
private key for TLS, and reusing the name hid it.`,
		Example: "  haven query fetch run-ABC123 --format arrow --out table.arrow\n  haven query verify --public-key release-signing.pub table.arrow",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return errors.New("--public-key: required: the coordinator's release public key (PEM), from haven pki signing-key")
			}
			pub, err := release.LoadPublicKey(keyFile)
			if err != nil {
				return err
			}
			tab, err := client.VerifyFile(args[0], pub)
			if err != nil {
				return err
			}
			client.WriteVerified(a.stdout, args[0], pub, tab)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "public-key", "", "the coordinator's release public key (PEM), from haven pki signing-key")
	return cmd
}
