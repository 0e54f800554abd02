package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/havenhealth/haven/coordinator"
	"github.com/havenhealth/haven/coordinator/config"
)

func newCoordinatorCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run the coordinator: node links, the commissioner API, linkage and release",
		Long: `The coordinator is the one central service of a Haven network. Nodes dial out
to it and hold a link open; commissioners submit runs of approved queries to
it; it sends each site its task, links the pseudonymised partial results in
memory, applies disclosure control and releases the table.

Everything is on one port with mutual TLS: NodeLink for nodes, the
Coordinator API for commissioners and Arrow Flight for uploads and released
tables. deploy/examples/coordinator.yaml is an annotated configuration.`,
		Example: `  haven coordinator check --config coordinator.yaml
  haven coordinator run --config coordinator.yaml
  haven coordinator token --id dashboard-qhm --org QHM --role analyst`,
	}
	cmd.AddCommand(newCoordinatorRunCmd(a), newCoordinatorCheckCmd(a), newCoordinatorTokenCmd(a))
	return cmd
}

func loadCoordinatorConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, errors.New("--config is required")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func newCoordinatorRunCmd(a *app) *cobra.Command {
	var path string
	var prof profiles
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Serve until interrupted (SIGINT or SIGTERM)",
		Long: `Serve the coordinator until SIGINT or SIGTERM. On start, runs that an
earlier process left in progress are marked interrupted. On a signal, runs in
progress are marked interrupted (their linked rows were held only for the process:
in memory, and in spill files that start-up removes),
nodes are told goodbye, requests drain, and the job store and audit log are
closed; nothing stored is lost.`,
		Example: "  haven coordinator run --config /etc/haven/coordinator.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadCoordinatorConfig(path)
			if err != nil {
				return err
			}
			a.logger.Info("coordinator configuration", "config", cfg.File(), "summary", cfg.String())
			if limit, from := applyMemoryLimit(cfg); from != "" {
				a.logger.Info("memory limit for the garbage collector", "limit", config.ByteSize(limit), "from", from)
			}
			if err := prof.start(); err != nil {
				return err
			}
			svc, err := coordinator.New(cmd.Context(), cfg, a.logger)
			if err == nil {
				err = svc.Run(cmd.Context())
			}
			return errors.Join(err, prof.stop())
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "coordinator configuration file (YAML)")
	cmd.Flags().StringVar(&prof.cpuPath, "cpu-profile", "", "write a CPU profile of the whole run to this file when the coordinator stops (for go tool pprof)")
	cmd.Flags().StringVar(&prof.heapPath, "heap-profile", "", "write a heap profile to this file when the coordinator stops (alloc_space: every allocation made)")
	return cmd
}

func newCoordinatorCheckCmd(a *app) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:     "check",
		Short:   "Check a configuration file and report every problem in it",
		Example: "  haven coordinator check --config coordinator.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadCoordinatorConfig(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "ok   %s\n     %s\n", cfg.File(), cfg)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "coordinator configuration file (YAML)")
	return cmd
}

func newCoordinatorTokenCmd(a *app) *cobra.Command {
	var (
		id, org string
		roles   []string
	)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Make a bearer token for a user and print the configuration line for it",
		Long: `Make a random bearer token for a user who cannot present a certificate (a
dashboard, a scheduled job). The token is printed once; the coordinator's
configuration holds only its SHA-256, so add the printed line under users:
and give the token to its user, who passes it with --token-file.`,
		Example: "  haven coordinator token --id dashboard-qhm --org QHM --role analyst",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" || org == "" || len(roles) == 0 {
				return errors.New("--id, --org and at least one --role are required")
			}
			token := rand.Text() + rand.Text()
			fmt.Fprintf(a.stdout, "token (shown once; give it to %s):\n  %s\n\nadd to the coordinator configuration under users:\n  - {id: %s, org: %s, roles: [%s], token_sha256: %s}\n",
				id, token, id, org, strings.Join(roles, ", "), config.HashToken(token))
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "user id")
	cmd.Flags().StringVar(&org, "org", "", "ODS code of the user's organisation")
	cmd.Flags().StringSliceVar(&roles, "role", nil, "role (repeatable)")
	return cmd
}
