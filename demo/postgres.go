package demo

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/havenhealth/haven/internal/pgtest"
	"github.com/havenhealth/haven/node/connector/postgres"
)

// pgSchema is the schema the trust's CDM tables are loaded into.
const pgSchema = "cdm"

// pgDSNEnv is the variable the PostgreSQL plugin reads its DSN from: the
// node passes connector.env, never its own environment, and values there
// are never printed.
const pgDSNEnv = "HAVEN_PG_DSN"

// startPostgres starts a throwaway PostgreSQL cluster, loads the CDM files
// of the site in siteDir into it, and returns the cluster and how a node
// reads it with plugin. The caller stops the cluster.
func startPostgres(ctx context.Context, plugin plugin, siteDir string) (*pgtest.Server, siteSource, error) {
	srv, err := pgtest.StartServer(ctx)
	if err != nil {
		if errors.Is(err, pgtest.ErrNoBinaries) {
			return nil, siteSource{}, fmt.Errorf("--postgres: %w", err)
		}
		return nil, siteSource{}, fmt.Errorf("--postgres: start PostgreSQL: %w", err)
	}
	if err := load(ctx, srv.DSN(), siteDir); err != nil {
		return nil, siteSource{}, errors.Join(err, srv.Stop())
	}
	return srv, siteSource{
		plugin: plugin,
		args:   []string{"--schema", pgSchema, "--dsn-env", pgDSNEnv},
		env:    map[string]string{pgDSNEnv: srv.DSN()},
	}, nil
}

func load(ctx context.Context, dsn, siteDir string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("--postgres: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := postgres.LoadSite(ctx, conn, pgSchema, siteDir); err != nil {
		return fmt.Errorf("--postgres: %w", err)
	}
	return nil
}
