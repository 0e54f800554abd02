//go:build duckdb_arrow

// Command haven-connector-duckdb is the connector plugin a Haven node runs
// to read a site directory of CDM files (<table>.parquet or <table>.csv)
// with DuckDB. The node starts it; run by hand, it says so and exits.
//
// Settings are flags, given in the node's configuration (connector.args):
//
//	--dir /srv/haven/site      the site directory
//	--threads 4                DuckDB threads (default: one per CPU, at most 4)
//	--memory-limit 2GB         DuckDB memory limit
//	--temp-dir /var/tmp/haven  where DuckDB spills (default: a new directory, removed at exit)
//
// Build it with -tags duckdb_arrow (it needs cgo).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/havenhealth/haven/internal/buildinfo"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/connector/duckdb"
)

func main() {
	logger := connector.NewPluginLogger(os.Stderr)
	cfg, err := parse(os.Args[1:])
	if err != nil {
		logger.Error("bad settings", "error", err)
		os.Exit(2)
	}
	b, err := duckdb.Open(context.Background(), cfg)
	if err != nil {
		logger.Error("cannot open the site directory", "error", err)
		os.Exit(1)
	}
	defer b.Close()
	logger.Info("serving", "dir", cfg.Dir, "version", cfg.Version)
	connector.Serve(b, logger)
}

func parse(args []string) (duckdb.Config, error) {
	fs := flag.NewFlagSet("haven-connector-duckdb", flag.ContinueOnError)
	cfg := duckdb.Config{Version: buildinfo.Read().Version}
	fs.StringVar(&cfg.Dir, "dir", "", "site directory holding <table>.parquet or <table>.csv files")
	fs.IntVar(&cfg.Threads, "threads", 0, "DuckDB threads (0: one per CPU, at most 4)")
	fs.StringVar(&cfg.MemoryLimit, "memory-limit", duckdb.DefaultMemoryLimit, "DuckDB memory limit, e.g. 2GB")
	fs.StringVar(&cfg.TempDir, "temp-dir", "", "where DuckDB spills to disk (default: a new temporary directory)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.Dir == "" {
		return cfg, errors.New("no site directory: give --dir")
	}
	if cfg.Threads < 0 {
		return cfg, fmt.Errorf("--threads %d: must not be negative", cfg.Threads)
	}
	return cfg, nil
}
