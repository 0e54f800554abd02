// Package postgres is the PostgreSQL connector: a connector.Backend that
// runs a node's SQL on a PostgreSQL database holding the CDM tables in one
// schema, and streams each result back as Arrow record batches of bounded
// size as rows arrive. The plugin binary cmd/haven-connector-postgres
// serves it. LoadSite loads a site written by `haven synth` into such a
// schema, for tests and the demo.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/connector"
)

// Defaults for Config.
const (
	DefaultBatchRows  = 8192
	DefaultBatchBytes = 4 << 20
	DefaultMaxConns   = 4
)

// Config says which database to read and how.
type Config struct {
	// DSN is the connection string (URL or key=value). It may hold a
	// password, so it is never logged or put in an error.
	DSN string
	// Schema is the schema holding the CDM tables: a plain identifier.
	Schema string
	// BatchRows and BatchBytes bound each record batch: it is sent once
	// it holds BatchRows rows or about BatchBytes bytes. Zero means the
	// defaults.
	BatchRows  int
	BatchBytes int
	// MaxConns is the most connections held, and so the most queries run
	// at once. Zero means DefaultMaxConns.
	MaxConns int32
	// Version is the plugin's release, reported by Describe.
	Version string
}

// String describes c without its DSN.
func (c Config) String() string {
	return fmt.Sprintf("postgres schema %q (DSN not shown)", c.Schema)
}

// identRE is what a schema name must look like. It is quoted anyway; the
// check keeps configuration mistakes out of SQL and error messages.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// CheckIdentifier reports whether name is a plain SQL identifier.
func CheckIdentifier(name string) error {
	if !identRE.MatchString(name) {
		return fmt.Errorf("schema %q: want a letter or underscore, then letters, digits or underscores (at most 63)", name)
	}
	return nil
}

// Backend reads a PostgreSQL schema. It is safe for concurrent use.
type Backend struct {
	pool    *pgxpool.Pool
	schema  string
	rows    int
	bytes   int
	version string
}

var _ connector.Backend = (*Backend)(nil)

// Open connects to the database and checks that it answers.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if err := CheckIdentifier(cfg.Schema); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// The parse error quotes the DSN; give only its cause.
		msg := "postgres: the DSN does not parse (not shown: it may hold a password)"
		if pe, ok := errors.AsType[*pgconn.ParseConfigError](err); ok && pe.Unwrap() != nil {
			msg += ": " + pe.Unwrap().Error()
		}
		return nil, errors.New(msg)
	}
	pc.MaxConns = cfg.MaxConns
	if pc.MaxConns <= 0 {
		pc.MaxConns = DefaultMaxConns
	}
	rp := pc.ConnConfig.RuntimeParams
	// Unqualified CDM names in the node's SQL resolve in the schema.
	rp["search_path"] = pgx.Identifier{cfg.Schema}.Sanitize()
	rp["application_name"] = "haven-connector-postgres"
	// Every query also runs in a read-only transaction; this covers any
	// statement that escapes one.
	rp["default_transaction_read_only"] = "on"
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	b := &Backend{pool: pool, schema: cfg.Schema, rows: cfg.BatchRows, bytes: cfg.BatchBytes, version: cfg.Version}
	if b.rows <= 0 {
		b.rows = DefaultBatchRows
	}
	if b.bytes <= 0 {
		b.bytes = DefaultBatchBytes
	}
	if b.version == "" {
		b.version = "devel"
	}
	return b, nil
}

// Close closes the connections.
func (b *Backend) Close() { b.pool.Close() }

// Describe reports the CDM tables in the schema with their row counts. A
// table that is present but lacks a CDM column is an error.
func (b *Backend) Describe(ctx context.Context) (connector.Description, error) {
	d := connector.Description{Dialect: connector.DialectPostgres, PluginVersion: b.version, CDMVersion: cdm.Version}
	present := map[string]map[string]bool{}
	rows, err := b.pool.Query(ctx, `
		SELECT c.table_name, c.column_name
		FROM information_schema.columns c
		WHERE c.table_schema = $1 AND c.table_name = ANY($2)`, b.schema, cdm.TableNames())
	if err != nil {
		return d, fmt.Errorf("postgres describe: %w", err)
	}
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			return d, fmt.Errorf("postgres describe: %w", err)
		}
		if present[table] == nil {
			present[table] = map[string]bool{}
		}
		present[table][col] = true
	}
	if err := rows.Err(); err != nil {
		return d, fmt.Errorf("postgres describe: %w", err)
	}
	for _, t := range cdm.Tables() {
		cols, ok := present[t.Name]
		if !ok {
			continue
		}
		for _, c := range t.Columns {
			if !cols[c.Name] {
				return d, fmt.Errorf("postgres describe: table %s.%s has no column %s", b.schema, t.Name, c.Name)
			}
		}
		var n int64
		q := "SELECT count(*) FROM " + pgx.Identifier{b.schema, t.Name}.Sanitize()
		if err := b.pool.QueryRow(ctx, q).Scan(&n); err != nil {
			return d, fmt.Errorf("postgres describe: count %s: %w", t.Name, err)
		}
		d.Tables = append(d.Tables, connector.TableInfo{Name: t.Name, Rows: n})
	}
	return d, nil
}

// Query runs q in a read-only transaction and writes its result to w as
// it arrives.
func (b *Backend) Query(ctx context.Context, q connector.Query, w io.Writer) error {
	args := make([]any, len(q.Args))
	for i, a := range q.Args {
		args[i] = argOf(a)
	}
	tx, err := b.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	defer func() {
		// The transaction only read; a rollback that fails (the
		// connection died, ctx ended) loses nothing.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx)
	}()
	rows, err := tx.Query(ctx, q.SQL, args...)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer rows.Close()
	cols, schema, err := resultColumns(rows.FieldDescriptions(), tx.Conn().TypeMap())
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	bw := newBatchWriter(w, schema, b.rows, b.bytes, q)
	defer bw.release()
	dests := make([]any, len(cols))
	for i, c := range cols {
		dests[i] = c.dest
	}
	for rows.Next() {
		if err := rows.Scan(dests...); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		size := 0
		for i, c := range cols {
			n, err := c.add(bw.b.Field(i))
			if err != nil {
				return fmt.Errorf("postgres: column %q: %w", c.name, err)
			}
			size += n
		}
		if err := bw.rowAdded(size); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return bw.close()
}

// argOf converts an argument to the Go value pgx binds for it.
func argOf(v connector.Value) any {
	if v.Kind() == connector.KindDate {
		return pgtype.Date{Time: v.Any().(time.Time), Valid: true}
	}
	return v.Any()
}

// batchWriter builds record batches of bounded size and writes each as it
// fills.
type batchWriter struct {
	w        *ipc.Writer
	b        *array.RecordBuilder
	q        connector.Query
	maxRows  int
	maxBytes int
	rows     int   // in the current batch
	bytes    int   // about, in the current batch
	total    int64 // rows written before the current batch
}

func newBatchWriter(w io.Writer, schema *arrow.Schema, maxRows, maxBytes int, q connector.Query) *batchWriter {
	return &batchWriter{
		w:        ipc.NewWriter(w, ipc.WithSchema(schema)),
		b:        array.NewRecordBuilder(memory.DefaultAllocator, schema),
		q:        q,
		maxRows:  maxRows,
		maxBytes: maxBytes,
	}
}

func (bw *batchWriter) rowAdded(size int) error {
	bw.rows++
	bw.bytes += size
	// Stop as soon as the limit is crossed, not when the batch fills.
	if err := bw.q.CheckRows(bw.total + int64(bw.rows)); err != nil {
		return err
	}
	if bw.rows >= bw.maxRows || bw.bytes >= bw.maxBytes {
		return bw.flush()
	}
	return nil
}

func (bw *batchWriter) flush() error {
	if bw.rows == 0 {
		return nil
	}
	rec := bw.b.NewRecord()
	defer rec.Release()
	bw.total += int64(bw.rows)
	bw.rows, bw.bytes = 0, 0
	return bw.w.Write(rec)
}

// close writes the last batch and the end-of-stream marker.
func (bw *batchWriter) close() error {
	if err := bw.flush(); err != nil {
		return err
	}
	return bw.w.Close()
}

func (bw *batchWriter) release() { bw.b.Release() }
