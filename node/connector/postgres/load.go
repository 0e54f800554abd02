package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/havenhealth/haven/cdm"
)

// Conn is what LoadSite needs of a connection: *pgx.Conn, *pgxpool.Pool
// and pgx.Tx all have it.
type Conn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// sqlType is the PostgreSQL type of a CDM column type.
func sqlType(t cdm.Type) string {
	switch t {
	case cdm.Date:
		return "date"
	case cdm.Float64:
		return "double precision"
	case cdm.StringList:
		return "text[]"
	}
	return "text"
}

// LoadSite creates the CDM tables found in siteDir (the layout `haven
// synth` writes: <table>.parquet) in schema, creating the schema if need
// be, and copies each file's rows in. Tables absent from siteDir are not
// created. A table that already exists is an error: load into a fresh
// schema.
func LoadSite(ctx context.Context, conn Conn, schema, siteDir string) error {
	if err := CheckIdentifier(schema); err != nil {
		return fmt.Errorf("load site: %w", err)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
		return fmt.Errorf("load site: %w", err)
	}
	found := 0
	for _, t := range cdm.Tables() {
		path := filepath.Join(siteDir, t.Name+".parquet")
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		found++
		if err := loadTable(ctx, conn, schema, t, path); err != nil {
			return fmt.Errorf("load site: %s: %w", path, err)
		}
	}
	if found == 0 {
		return fmt.Errorf("load site: no CDM table files (<table>.parquet) in %s", siteDir)
	}
	return nil
}

func loadTable(ctx context.Context, conn Conn, schema string, t cdm.Table, path string) error {
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		return err
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 8192}, memory.DefaultAllocator)
	if err != nil {
		return err
	}
	rr, err := fr.GetRecordReader(ctx, nil, nil)
	if err != nil {
		return err
	}
	defer rr.Release()
	if err := checkFileSchema(rr.Schema(), t); err != nil {
		return err
	}

	ident := pgx.Identifier{schema, t.Name}
	defs := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		defs[i] = pgx.Identifier{c.Name}.Sanitize() + " " + sqlType(c.Type)
		if !c.Nullable {
			defs[i] += " NOT NULL"
		}
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE "+ident.Sanitize()+" ("+strings.Join(defs, ", ")+")"); err != nil {
		return err
	}
	if _, err := conn.CopyFrom(ctx, ident, t.ColumnNames(), &recordSource{rr: rr}); err != nil {
		return fmt.Errorf("copy into %s: %w", ident.Sanitize(), err)
	}
	_, err = conn.Exec(ctx, "ANALYZE "+ident.Sanitize())
	return err
}

// checkFileSchema checks that a file holds exactly the CDM columns of t,
// in order, with their types.
func checkFileSchema(s *arrow.Schema, t cdm.Table) error {
	if s.NumFields() != len(t.Columns) {
		return fmt.Errorf("%d columns, the CDM table %s has %d (%s)", s.NumFields(), t.Name, len(t.Columns), strings.Join(t.ColumnNames(), ", "))
	}
	for i, c := range t.Columns {
		f := s.Field(i)
		if f.Name != c.Name || !arrow.TypeEqual(f.Type, c.Type.Arrow()) {
			return fmt.Errorf("column %d is %s %s, want %s %s", i+1, f.Name, f.Type, c.Name, c.Type.Arrow())
		}
	}
	return nil
}

// recordSource feeds the rows of an Arrow record reader to COPY, one
// record batch in memory at a time.
type recordSource struct {
	rr   pqarrow.RecordReader
	rec  arrow.Record
	row  int
	vals []any
	err  error
}

func (s *recordSource) Next() bool {
	for s.rec == nil || s.row+1 >= int(s.rec.NumRows()) {
		if !s.rr.Next() {
			// The Parquet record reader reports its end as io.EOF.
			if err := s.rr.Err(); err != nil && !errors.Is(err, io.EOF) {
				s.err = err
			}
			return false
		}
		s.rec, s.row = s.rr.Record(), -1
	}
	s.row++
	return true
}

func (s *recordSource) Values() ([]any, error) {
	if s.vals == nil {
		s.vals = make([]any, s.rec.NumCols())
	}
	for i, col := range s.rec.Columns() {
		if col.IsNull(s.row) {
			s.vals[i] = nil
			continue
		}
		switch a := col.(type) {
		case *array.String:
			s.vals[i] = a.Value(s.row)
		case *array.Float64:
			s.vals[i] = a.Value(s.row)
		case *array.Date32:
			s.vals[i] = pgtype.Date{Time: a.Value(s.row).ToTime(), Valid: true}
		case *array.List:
			start, end := a.ValueOffsets(s.row)
			elems := a.ListValues().(*array.String)
			list := make([]pgtype.Text, 0, end-start)
			for j := start; j < end; j++ {
				list = append(list, pgtype.Text{String: elems.Value(int(j)), Valid: elems.IsValid(int(j))})
			}
			s.vals[i] = list
		default:
			return nil, fmt.Errorf("column %s: unexpected Arrow type %s", s.rec.ColumnName(i), col.DataType())
		}
	}
	return s.vals, nil
}

func (s *recordSource) Err() error { return s.err }
