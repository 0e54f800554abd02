// Command haven-connector-postgres is the connector plugin a Haven node
// runs to read CDM tables from a PostgreSQL database. The node starts it;
// run by hand, it says so and exits.
//
// Settings are flags, given in the node's configuration (connector.args):
//
//	--schema cdm               schema holding the CDM tables
//	--dsn-env HAVEN_PG_DSN     read the DSN from this environment variable
//	--dsn-file /etc/haven/dsn  ... or from this file (trimmed)
//
// The DSN may hold a password; it is never logged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/havenhealth/haven/internal/buildinfo"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/connector/postgres"
)

func main() {
	logger := connector.NewPluginLogger(os.Stderr)
	cfg, err := parse(os.Args[1:])
	if err != nil {
		logger.Error("bad settings", "error", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	b, err := postgres.Open(ctx, cfg)
	cancel()
	if err != nil {
		logger.Error("cannot open the database", "error", err)
		os.Exit(1)
	}
	defer b.Close()
	logger.Info("serving", "schema", cfg.Schema, "version", cfg.Version)
	connector.Serve(b, logger)
}

// parse reads the flags and the DSN they point at.
func parse(args []string) (postgres.Config, error) {
	fs := flag.NewFlagSet("haven-connector-postgres", flag.ContinueOnError)
	cfg := postgres.Config{Version: buildinfo.Read().Version}
	var dsnEnv, dsnFile string
	fs.StringVar(&cfg.Schema, "schema", "cdm", "schema holding the CDM tables")
	fs.StringVar(&dsnEnv, "dsn-env", "", "environment variable holding the DSN")
	fs.StringVar(&dsnFile, "dsn-file", "", "file holding the DSN")
	fs.IntVar(&cfg.BatchRows, "batch-rows", postgres.DefaultBatchRows, "most rows in one record batch")
	var maxConns int
	fs.IntVar(&maxConns, "max-conns", postgres.DefaultMaxConns, "most connections, and so queries at once")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.MaxConns = int32(maxConns)
	switch {
	case dsnEnv != "" && dsnFile != "":
		return cfg, errors.New("give --dsn-env or --dsn-file, not both")
	case dsnEnv != "":
		cfg.DSN = os.Getenv(dsnEnv)
		if cfg.DSN == "" {
			return cfg, fmt.Errorf("environment variable %s (--dsn-env) is empty or unset", dsnEnv)
		}
	case dsnFile != "":
		b, err := os.ReadFile(dsnFile)
		if err != nil {
			return cfg, fmt.Errorf("--dsn-file: %w", err)
		}
		cfg.DSN = strings.TrimSpace(string(b))
		if cfg.DSN == "" {
			return cfg, fmt.Errorf("--dsn-file %s is empty", dsnFile)
		}
	default:
		return cfg, errors.New("no DSN: give --dsn-env NAME or --dsn-file PATH")
	}
	if err := postgres.CheckIdentifier(cfg.Schema); err != nil {
		return cfg, err
	}
	return cfg, nil
}
