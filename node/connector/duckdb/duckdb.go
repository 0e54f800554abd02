//go:build duckdb_arrow

package duckdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/connector"
)

// Defaults for Config.
const (
	DefaultMemoryLimit = "2GB"
	maxDefaultThreads  = 4
)

// Config says which site directory to read and with what resources.
type Config struct {
	// Dir is the site directory: <table>.parquet or <table>.csv for each
	// CDM table the site holds. It is configuration, not input, but is
	// still quoted as a SQL string wherever it appears.
	Dir string
	// Threads is how many threads DuckDB runs a query on. Zero means one
	// per CPU, at most 4: a node shares its machine.
	Threads int
	// MemoryLimit caps DuckDB's memory, in DuckDB's notation ("2GB",
	// "512MB"). Empty means DefaultMemoryLimit.
	MemoryLimit string
	// TempDir is where DuckDB spills what does not fit in MemoryLimit.
	// Empty means a new directory under the system's, created only if a
	// query spills and removed by Close.
	TempDir string
	// Version is the plugin's release, reported by Describe.
	Version string
}

// Backend reads a site directory with DuckDB. It is safe for concurrent
// use: each query gets its own connection to one in-memory database.
type Backend struct {
	db      *duckdb.Connector
	dir     string
	tables  []string // CDM tables present, in CDM order
	files   []string // their files, in the same order
	version string
	tempDir string // removed by Close, when Open made it
}

var (
	_ connector.Backend       = (*Backend)(nil)
	_ connector.DataVersioner = (*Backend)(nil)
)

// Open checks the site directory, starts an in-memory DuckDB database with
// one view per CDM table present, and locks it down: it may read only the
// site directory, may load no extension, and its settings are frozen, so
// no query can widen what it reaches.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("duckdb: site directory: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("duckdb: site directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("duckdb: site directory %s is not a directory", dir)
	}
	threads := cfg.Threads
	if threads <= 0 {
		threads = min(runtime.NumCPU(), maxDefaultThreads)
	}
	memLimit := cfg.MemoryLimit
	if memLimit == "" {
		memLimit = DefaultMemoryLimit
	}
	b := &Backend{dir: dir, version: cfg.Version}
	if b.version == "" {
		b.version = "devel"
	}
	tempDir := cfg.TempDir
	if tempDir == "" {
		// Named, not made: DuckDB creates it only if a query spills, so
		// a plugin that is killed leaves nothing behind unless it did.
		var buf [8]byte
		if _, err := rand.Read(buf[:]); err != nil {
			return nil, fmt.Errorf("duckdb: %w", err)
		}
		tempDir = filepath.Join(os.TempDir(), fmt.Sprintf("haven-duckdb-%d-%x", os.Getpid(), buf))
		b.tempDir = tempDir
	}
	// Database-wide settings go in the DSN: they hold for every connection.
	dsn := "?" + url.Values{
		"threads":                      {strconv.Itoa(threads)},
		"memory_limit":                 {memLimit},
		"temp_directory":               {tempDir},
		"autoinstall_known_extensions": {"false"},
		"autoload_known_extensions":    {"false"},
	}.Encode()
	if b.db, err = duckdb.NewConnector(dsn, nil); err != nil {
		b.Close()
		return nil, fmt.Errorf("duckdb: %w", err)
	}
	if err := b.setUp(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// setUp creates the views and locks the database.
func (b *Backend) setUp(ctx context.Context) error {
	conn, err := b.db.Connect(ctx)
	if err != nil {
		return fmt.Errorf("duckdb: %w", err)
	}
	defer conn.Close()
	exec := func(sql string) error {
		_, err := conn.(driver.ExecerContext).ExecContext(ctx, sql, nil)
		return err
	}
	for _, t := range cdm.Tables() {
		view, file, err := b.viewSQL(t)
		if err != nil {
			return err
		}
		if view == "" {
			continue
		}
		// A Parquet file is checked as the view binds; a CSV file only
		// when read, so read it now rather than at the first query.
		if err := exec(view); err != nil {
			return fmt.Errorf("duckdb: table %s: %w", t.Name, err)
		}
		if err := exec("SELECT count(*) FROM " + quoteIdent(t.Name)); err != nil {
			return fmt.Errorf("duckdb: table %s: %w", t.Name, err)
		}
		b.tables = append(b.tables, t.Name)
		b.files = append(b.files, file)
	}
	if len(b.tables) == 0 {
		return fmt.Errorf("duckdb: no CDM table files (<table>.parquet or <table>.csv) in %s", b.dir)
	}
	for _, sql := range []string{
		"SET allowed_directories = [" + quoteString(b.dir) + "]",
		"SET enable_external_access = false",
		"SET lock_configuration = true",
	} {
		if err := exec(sql); err != nil {
			return fmt.Errorf("duckdb: %s: %w", sql, err)
		}
	}
	return nil
}

// viewSQL returns the statement creating t's view over its file, and the
// file, or "" if the site has no file for t. The view casts every column
// to its CDM type, so a file with a missing or mistyped column fails here,
// by name.
func (b *Backend) viewSQL(t cdm.Table) (string, string, error) {
	var found []string
	for _, ext := range []string{".parquet", ".csv"} {
		p := filepath.Join(b.dir, t.Name+ext)
		if _, err := os.Stat(p); err == nil {
			found = append(found, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("duckdb: %w", err)
		}
	}
	switch len(found) {
	case 0:
		return "", "", nil
	case 2:
		return "", "", fmt.Errorf("duckdb: both %s and %s: keep one", found[0], found[1])
	}
	cols := make([]string, len(t.Columns))
	csvCols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		typ := sqlType(c.Type)
		cols[i] = "CAST(" + quoteIdent(c.Name) + " AS " + typ + ") AS " + quoteIdent(c.Name)
		csvCols[i] = quoteString(c.Name) + ": " + quoteString(typ)
	}
	from := "read_parquet(" + quoteString(found[0]) + ")"
	if strings.HasSuffix(found[0], ".csv") {
		from = "read_csv(" + quoteString(found[0]) + ", header = true, auto_detect = false, columns = {" +
			strings.Join(csvCols, ", ") + "})"
	}
	return "CREATE VIEW " + quoteIdent(t.Name) + " AS SELECT " + strings.Join(cols, ", ") + " FROM " + from, found[0], nil
}

// DataVersion names the version of the site's files: a hash of each
// table file's name, size and modification time. The views read the
// files afresh for every query, so a file replaced or rewritten changes
// both what queries see and the version.
func (b *Backend) DataVersion() (string, error) {
	h := sha256.New()
	for _, f := range b.files {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("duckdb: data version: %w", err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\n", filepath.Base(f), fi.Size(), fi.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

func sqlType(t cdm.Type) string {
	switch t {
	case cdm.Date:
		return "DATE"
	case cdm.Float64:
		return "DOUBLE"
	case cdm.StringList:
		return "VARCHAR[]"
	}
	return "VARCHAR"
}

// quoteIdent quotes a SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteString quotes a SQL string literal. DuckDB reads backslashes in a
// standard string literal as themselves, so only quotes need doubling.
func quoteString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Close closes the database and removes the spill directory Open made.
func (b *Backend) Close() error {
	var err error
	if b.db != nil {
		err = b.db.Close()
	}
	if b.tempDir != "" {
		os.RemoveAll(b.tempDir)
	}
	return err
}

// Describe reports the CDM tables present with their row counts.
func (b *Backend) Describe(ctx context.Context) (connector.Description, error) {
	d := connector.Description{Dialect: connector.DialectDuckDB, PluginVersion: b.version, CDMVersion: cdm.Version}
	conn, err := b.db.Connect(ctx)
	if err != nil {
		return d, fmt.Errorf("duckdb describe: %w", err)
	}
	defer conn.Close()
	for _, name := range b.tables {
		rows, err := conn.(driver.QueryerContext).QueryContext(ctx, "SELECT count(*) FROM "+quoteIdent(name), nil)
		if err != nil {
			return d, fmt.Errorf("duckdb describe: count %s: %w", name, err)
		}
		vals := make([]driver.Value, 1)
		err = rows.Next(vals)
		rows.Close()
		if err != nil {
			return d, fmt.Errorf("duckdb describe: count %s: %w", name, err)
		}
		n, ok := vals[0].(int64)
		if !ok {
			return d, fmt.Errorf("duckdb describe: count %s: got %T", name, vals[0])
		}
		d.Tables = append(d.Tables, connector.TableInfo{Name: name, Rows: n})
	}
	return d, nil
}

// Query runs q on a connection of its own and writes its result to w,
// chunk by chunk as DuckDB produces it.
func (b *Backend) Query(ctx context.Context, q connector.Query, w io.Writer) error {
	conn, err := b.db.Connect(ctx)
	if err != nil {
		return fmt.Errorf("duckdb: %w", err)
	}
	defer conn.Close()
	ar, err := duckdb.NewArrowFromConn(conn)
	if err != nil {
		return fmt.Errorf("duckdb: %w", err)
	}
	args := make([]any, len(q.Args))
	for i, a := range q.Args {
		args[i] = argOf(a)
	}
	rr, err := ar.QueryContext(ctx, q.SQL, args...)
	if err != nil {
		return fmt.Errorf("duckdb: %w", err)
	}
	defer rr.Release()
	norm, err := newNormaliser(rr.Schema())
	if err != nil {
		return fmt.Errorf("duckdb: %w", err)
	}
	iw := ipc.NewWriter(w, ipc.WithSchema(norm.schema))
	var rows int64
	for rr.Next() {
		rec := rr.RecordBatch()
		rows += rec.NumRows()
		if err := q.CheckRows(rows); err != nil {
			return err
		}
		out, err := norm.apply(rec)
		if err != nil {
			return fmt.Errorf("duckdb: %w", err)
		}
		err = iw.Write(out)
		out.Release()
		if err != nil {
			return err
		}
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("duckdb: %w", err)
	}
	return iw.Close()
}

// argOf converts an argument to the Go value duckdb-go binds for it. A
// date is bound as DATE, not as the TIMESTAMP a time.Time would make.
func argOf(v connector.Value) any {
	if v.Kind() == connector.KindDate {
		return duckdb.Typed(v.Any().(time.Time), duckdb.TYPE_DATE)
	}
	return v.Any()
}
