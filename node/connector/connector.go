// Package connector is how a Haven node reads its site's data: through a
// connector plugin, one binary per kind of store (DuckDB over Parquet files,
// PostgreSQL, ...), run as a child process with hashicorp/go-plugin and
// spoken to over gRPC (proto/haven/connector/v1). The node hands the plugin
// one compiled SQL statement with bound arguments and reads back an Arrow
// IPC stream (DESIGN §3, §4, §6).
//
// The files are split by side, as in Vault's and Terraform's plugin SDKs:
//
//	connector.go  the types both sides share: Connector, Backend, Query, Value, Description
//	wire.go       both sides: those types to and from the protocol's messages
//	log.go        both sides: plugin log lines across the process boundary
//	plugin.go     go-plugin glue: handshake, versioned plugin sets
//	host.go       node side: Launch a plugin binary, checked against its checksum
//	client.go     node side: the gRPC client and the Result it returns
//	stream.go     node side: the result's bytes, framing checked as they arrive
//	fbverify.go   node side: each Arrow message's metadata verified before it is read
//	arrowcheck.go node side: result types, expected schema, record validation
//	server.go     plugin side: the gRPC server over a Backend
//	serve.go      plugin side: Serve, the whole of a plugin binary's main
//
// A node launches its plugin once and keeps it:
//
//	h, err := connector.Launch(ctx, connector.LaunchConfig{Path: cfg.Path, SHA256: cfg.SHA256, Args: cfg.Args, Env: env, Logger: log})
//	defer h.Close()
//	d, err := h.Describe(ctx)   // dialect, CDM tables present
//	res, err := h.Query(ctx, connector.Query{SQL: stmt.SQL, Args: args, MaxRows: n, MaxBytes: m})
//	defer res.Close()
//	for res.Next() { rec := res.Record(); ... }
//	err = res.Err()
//
// # Results
//
// A result is one Arrow IPC stream whose columns have one of the types
// Haven's SQL produces and its code reads (ResultTypes): int64, float64,
// bool, date32, utf8, binary, list<utf8> and list<int64>. Connectors map
// their store's types onto these
// (PostgreSQL int4 becomes int64, DuckDB DECIMAL becomes float64, and so
// on) and refuse a column of any other type with an error naming it. The
// node treats the plugin as untrusted code: a stream that is malformed,
// carries other types, differs from the schema the caller expects, crosses
// a row or byte limit, or stops without saying it is complete gives an
// error, never a crash or a silently short result.
package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/havenhealth/haven/cdm"

	"github.com/apache/arrow/go/v17/arrow"
)

// Connector reads a site's data. *Host is the node's Connector: a plugin
// process reached over gRPC.
type Connector interface {
	// Describe says what the connector reads.
	Describe(ctx context.Context) (Description, error)
	// Query runs q and returns its result, read as it streams in. The
	// caller must Close the result.
	Query(ctx context.Context, q Query) (*Result, error)
}

// Backend is what a connector plugin implements; Serve exposes it to the
// node. Its methods are called concurrently.
type Backend interface {
	// Describe says what the backend reads: its dialect and version and
	// the CDM tables present, with row counts.
	Describe(ctx context.Context) (Description, error)
	// Query runs q and writes its result to w as one Arrow IPC stream
	// (schema, record batches, end-of-stream marker), batch by batch as
	// rows arrive, never the whole result at once. Once the result has
	// more than q.MaxRows rows it stops with the error q.CheckRows gives;
	// the byte limit is enforced by w, whose Write fails with a
	// *LimitError. Query must stop soon after ctx is cancelled.
	Query(ctx context.Context, q Query, w io.Writer) error
}

// DataVersioner is a Backend that can tell which version of its data a
// query reads. The node reuses what it derives from the data, such as the
// site's NHS numbers, while the version stays the same; a Backend that is
// not one makes the node derive it afresh for every task.
type DataVersioner interface {
	// DataVersion returns a string that stays the same while the data
	// does and changes once any of it changes, or "" when it cannot tell.
	// It must be cheap: it is called twice for every query.
	DataVersion() (string, error)
}

// MaxDataVersion is the longest data version a plugin may report, in
// bytes.
const MaxDataVersion = 256

// Dialect is the SQL dialect a connector runs. The node compiles each task
// for the dialect its connector reports.
type Dialect string

// The dialects Haven compiles to.
const (
	DialectDuckDB   Dialect = "duckdb"
	DialectPostgres Dialect = "postgres"
)

// Dialects lists the known dialects in a stable order.
func Dialects() []Dialect { return []Dialect{DialectDuckDB, DialectPostgres} }

func (d Dialect) valid() bool {
	switch d {
	case DialectDuckDB, DialectPostgres:
		return true
	}
	return false
}

// Description is what a connector reports about itself and its site.
type Description struct {
	Dialect Dialect
	// PluginVersion is the plugin binary's release, e.g. "v1.4.0" or "devel".
	PluginVersion string
	// CDMVersion is the version of the CDM the tables follow (cdm.Version).
	CDMVersion int
	// Tables lists the CDM tables present, in cdm.Tables order. A table the
	// site does not hold is absent.
	Tables []TableInfo
}

// TableInfo is one CDM table present at a site.
type TableInfo struct {
	Name string // a cdm table name
	Rows int64
}

// Table returns the entry for the CDM table called name, if present.
func (d Description) Table(name string) (TableInfo, bool) {
	for _, t := range d.Tables {
		if t.Name == name {
			return t, true
		}
	}
	return TableInfo{}, false
}

// validate checks what a plugin said about itself: a known dialect, this
// node's CDM version, and only CDM tables, each once.
func (d Description) validate() error {
	if !d.Dialect.valid() {
		return fmt.Errorf("unknown dialect %q", d.Dialect)
	}
	if d.CDMVersion != cdm.Version {
		return fmt.Errorf("plugin reads CDM version %d, this node speaks version %d", d.CDMVersion, cdm.Version)
	}
	seen := make(map[string]bool, len(d.Tables))
	for _, t := range d.Tables {
		if _, ok := cdm.Lookup(t.Name); !ok {
			return fmt.Errorf("table %q is not in the CDM", t.Name)
		}
		if seen[t.Name] {
			return fmt.Errorf("table %q listed twice", t.Name)
		}
		seen[t.Name] = true
		if t.Rows < 0 {
			return fmt.Errorf("table %q has %d rows", t.Name, t.Rows)
		}
	}
	return nil
}

// Limits applied when a Query leaves MaxRows or MaxBytes at zero. A node
// should set its own from its configuration.
const (
	DefaultMaxRows  int64 = 10_000_000
	DefaultMaxBytes int64 = 1 << 30
)

// Query is one compiled statement for a connector to run.
type Query struct {
	// SQL is the statement in the connector's dialect. Every value in it
	// is a placeholder $1, $2, ... bound from Args; identifiers come from
	// the CDM. Cast placeholders whose type the statement does not fix,
	// e.g. CAST($1 AS DATE) + 30, so both dialects read them alike.
	SQL string
	// Args are bound to $1, $2, ... in order.
	Args []Value
	// MaxRows and MaxBytes bound the result: rows, and bytes of Arrow IPC
	// on the wire. The query stops with a *LimitError once either is
	// crossed. Zero or less means DefaultMaxRows, DefaultMaxBytes.
	MaxRows  int64
	MaxBytes int64
	// Schema, when set, is the schema the caller expects: the result must
	// have the same column names in the same order with the same types,
	// or Query fails with ErrSchemaMismatch. Nullability and metadata are
	// not compared.
	Schema *arrow.Schema
}

// withDefaults returns q with its limits filled in.
func (q Query) withDefaults() Query {
	if q.MaxRows <= 0 {
		q.MaxRows = DefaultMaxRows
	}
	if q.MaxBytes <= 0 {
		q.MaxBytes = DefaultMaxBytes
	}
	return q
}

// CheckRows returns a *LimitError if a result of n rows crosses q's row
// limit. Backends call it before writing each batch.
func (q Query) CheckRows(n int64) error {
	if max := q.withDefaults().MaxRows; n > max {
		return &LimitError{Limit: LimitRows, Max: max}
	}
	return nil
}

// Errors a Connector's methods wrap, for callers to test with errors.Is.
var (
	// ErrLimitExceeded: the result crossed its row or byte limit. The
	// error is a *LimitError saying which.
	ErrLimitExceeded = errors.New("result limit exceeded")
	// ErrMalformedResult: the plugin sent something that is not a
	// complete, well-formed Arrow stream of the types connectors return.
	ErrMalformedResult = errors.New("malformed result from connector plugin")
	// ErrSchemaMismatch: the result's schema is not Query.Schema.
	ErrSchemaMismatch = errors.New("result schema differs from the expected one")
	// ErrPluginExited: the plugin process is gone (crashed or was killed).
	ErrPluginExited = errors.New("connector plugin exited")
	// ErrChecksumMismatch: the plugin binary is not the one configured;
	// it was not started.
	ErrChecksumMismatch = errors.New("connector plugin checksum mismatch")
)

// Limit names a result limit.
type Limit string

// The result limits.
const (
	LimitRows  Limit = "rows"
	LimitBytes Limit = "bytes"
)

// LimitError reports a result that crossed a limit. It matches
// ErrLimitExceeded.
type LimitError struct {
	Limit Limit
	Max   int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("result exceeds the limit of %d %s", e.Max, e.Limit)
}

// Is makes errors.Is(err, ErrLimitExceeded) true.
func (e *LimitError) Is(target error) bool { return target == ErrLimitExceeded }

// Kind is the type of a Value.
type Kind uint8

// The kinds of argument a query binds.
const (
	KindNull Kind = iota
	KindString
	KindInt64
	KindFloat64
	KindBool
	KindDate
	KindStringList
)

func (k Kind) String() string {
	switch k {
	case KindNull:
		return "null"
	case KindString:
		return "string"
	case KindInt64:
		return "int64"
	case KindFloat64:
		return "float64"
	case KindBool:
		return "bool"
	case KindDate:
		return "date"
	case KindStringList:
		return "list<string>"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Value is one bound argument of a Query. The zero Value is NULL.
type Value struct {
	kind Kind
	s    string
	i    int64 // int64, bool (0 or 1), date (days since 1970-01-01)
	f    float64
	list []string
}

// Null returns a NULL argument.
func Null() Value { return Value{} }

// String returns a string argument.
func String(s string) Value { return Value{kind: KindString, s: s} }

// Int64 returns an integer argument.
func Int64(i int64) Value { return Value{kind: KindInt64, i: i} }

// Float64 returns a floating-point argument.
func Float64(f float64) Value { return Value{kind: KindFloat64, f: f} }

// Bool returns a boolean argument.
func Bool(b bool) Value {
	v := Value{kind: KindBool}
	if b {
		v.i = 1
	}
	return v
}

// Date returns a date argument: the calendar day of t in t's location.
func Date(t time.Time) Value {
	y, m, d := t.Date()
	return Value{kind: KindDate, i: time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / secondsPerDay}
}

// DateOfDays returns a date argument days after 1970-01-01 (Arrow date32).
func DateOfDays(days int32) Value { return Value{kind: KindDate, i: int64(days)} }

// StringList returns a list-of-strings argument, bound as text[] or
// VARCHAR[]. The list is copied.
func StringList(s []string) Value {
	return Value{kind: KindStringList, list: append([]string{}, s...)}
}

const secondsPerDay = 24 * 60 * 60

// ValueOf returns the argument for a Go value of one of the types
// node/sqlgen binds: nil, string, int64, int, float64, bool, time.Time (a
// calendar day) and []string.
func ValueOf(x any) (Value, error) {
	switch x := x.(type) {
	case nil:
		return Null(), nil
	case string:
		return String(x), nil
	case int64:
		return Int64(x), nil
	case int:
		return Int64(int64(x)), nil
	case float64:
		return Float64(x), nil
	case bool:
		return Bool(x), nil
	case time.Time:
		return Date(x), nil
	case []string:
		return StringList(x), nil
	}
	return Value{}, fmt.Errorf("cannot bind a %T as a query argument", x)
}

// ValuesOf converts each of xs with ValueOf.
func ValuesOf(xs []any) ([]Value, error) {
	vs := make([]Value, len(xs))
	for i, x := range xs {
		v, err := ValueOf(x)
		if err != nil {
			return nil, fmt.Errorf("argument $%d: %w", i+1, err)
		}
		vs[i] = v
	}
	return vs, nil
}

// Kind returns the type of v.
func (v Value) Kind() Kind { return v.kind }

// Any returns v as a Go value: nil, string, int64, float64, bool,
// time.Time (a date, at midnight UTC) or []string (a copy).
func (v Value) Any() any {
	switch v.kind {
	case KindString:
		return v.s
	case KindInt64:
		return v.i
	case KindFloat64:
		return v.f
	case KindBool:
		return v.i != 0
	case KindDate:
		return time.Unix(v.i*secondsPerDay, 0).UTC()
	case KindStringList:
		return append([]string{}, v.list...)
	}
	return nil
}

// Days returns a date argument as days since 1970-01-01; ok is false if v
// is not a date.
func (v Value) Days() (days int64, ok bool) { return v.i, v.kind == KindDate }

// String describes v for error messages by kind only: arguments may be
// identifying and are never printed.
func (v Value) String() string { return v.kind.String() + " argument" }
