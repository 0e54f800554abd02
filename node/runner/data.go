package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/sqlgen"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

func connectorErr(what string, err error) error {
	code := havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR
	if errors.Is(err, connector.ErrLimitExceeded) {
		code = havenv1.TaskErrorCode_TASK_ERROR_CODE_LIMIT_EXCEEDED
	}
	return taskErr(code, "%s: %v", what, err)
}

// query runs q within the node's query timeout and calls each for every
// record batch.
func (r *Runner) query(ctx context.Context, what string, q connector.Query, each func(arrow.Record) error) error {
	_, err := r.queryVersion(ctx, what, q, each)
	return err
}

// queryVersion is query, and returns the version of the data the query
// read, or "" when the connector cannot tell.
func (r *Runner) queryVersion(ctx context.Context, what string, q connector.Query, each func(arrow.Record) error) (string, error) {
	if r.cfg.Limits.QueryTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.cfg.Limits.QueryTimeout)
		defer cancel()
	}
	began := time.Now()
	res, err := r.cfg.Source.Query(ctx, q)
	if err != nil {
		return "", connectorErr(what, err)
	}
	defer res.Close()
	for res.Next() {
		if err := each(res.Record()); err != nil {
			return "", err
		}
	}
	if err := res.Err(); err != nil {
		return "", connectorErr(what, err)
	}
	var version string
	if v, ok := res.(versioned); ok {
		version = v.DataVersion()
	}
	r.log.Debug("query done", "query", what, "duration", time.Since(began))
	return version, nil
}

// scanStrings calls each for every value of the first column of q's
// result, which must be a string column.
func (r *Runner) scanStrings(ctx context.Context, what string, q connector.Query, each func(s string, null bool) error) error {
	_, err := r.scanStringsVersion(ctx, what, q, each)
	return err
}

// scanStringsVersion is scanStrings, and returns the version of the data
// the query read, or "" when the connector cannot tell.
func (r *Runner) scanStringsVersion(ctx context.Context, what string, q connector.Query, each func(s string, null bool) error) (string, error) {
	return r.queryVersion(ctx, what, q, func(rec arrow.Record) error {
		if rec.NumCols() < 1 {
			return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "%s: the result has no columns", what)
		}
		col, ok := rec.Column(0).(*array.String)
		if !ok {
			return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "%s: column %s is %s, want utf8", what, rec.ColumnName(0), rec.Column(0).DataType())
		}
		for i := range col.Len() {
			if err := each(col.Value(i), col.IsNull(i)); err != nil {
				return err
			}
		}
		return nil
	})
}

// siteOptOuts reads the type 1 opt-outs the site records. A practice must
// hold the opt_out table; a trust may.
//
// It also returns the version of the data the read saw, or "" when the
// connector cannot tell or the site holds no opt_out table.
func (r *Runner) siteOptOuts(ctx context.Context) (*optout.Set, string, error) {
	has, err := r.cfg.Source.HasTable(ctx, cdm.TableOptOut)
	if err != nil {
		return nil, "", connectorErr("connector", err)
	}
	if !has {
		if r.cfg.Kind == cdm.KindGP {
			return nil, "", taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR,
				"the connector exposes no %s table, so this practice's type 1 opt-outs cannot be honoured", cdm.TableOptOut)
		}
		return &optout.Set{}, "", nil
	}
	d, err := r.cfg.Source.Dialect(ctx)
	if err != nil {
		return nil, "", connectorErr("connector", err)
	}
	st, err := sqlgen.SiteOptOuts(d)
	if err != nil {
		return nil, "", taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "read type 1 opt-outs: %v", err)
	}
	var b optout.Builder
	version, err := r.scanStringsVersion(ctx, "read type 1 opt-outs", r.statementQuery(st), func(s string, null bool) error {
		if !null {
			b.Add(s)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return b.Set(), version, nil
}

// versioned is a result that can say which version of the site's data
// it read (*connector.Result).
type versioned interface {
	DataVersion() string
}

// siteCut is what a task works out from the site's NHS numbers and the
// opt-out lists before its result: the lists cut to the site, and how
// many patient rows they leave out. It holds for as long as the data, the
// national list and the network list are the ones it was made from.
type siteCut struct {
	version  string          // the data's, as the connector named it; never ""
	ndop     *optout.Set     // the national list it was cut from
	network  *optout.Network // the network list it was matched against
	numbers  int             // valid numbers at the site, for the log
	relevant *optout.Set     // national objectors among them
	matched  *optout.Set     // network objectors among them
	excluded int64           // patient rows on any list
}

// cachedCut returns the cut made for tables from the same data version
// and lists, if there is one.
func (r *Runner) cachedCut(tables []string, version string, ndop *optout.Set, network *optout.Network) *siteCut {
	if version == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cuts[strings.Join(tables, ",")]
	if c == nil || c.version != version || c.ndop != ndop || c.network != network {
		return nil
	}
	return c
}

// keepCut remembers c for later tasks that read tables, if its data
// version is known.
func (r *Runner) keepCut(tables []string, c *siteCut) {
	if c.version == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cuts[strings.Join(tables, ",")] = c
}

// invalidCountTTL is how long a count of invalid NHS numbers is reused.
// The count scans whole tables, is the same for every task that reads the
// same tables, and only informs (the rows are excluded by the SQL either
// way); a site's data changes far more slowly than tasks arrive.
const invalidCountTTL = 10 * time.Minute

type cachedCount struct {
	n  int64
	at time.Time
}

// invalidCount returns the rows left out for invalid NHS numbers, summed
// over the tables the program reads. Each table's count is reused for
// invalidCountTTL; only tables without a recent count are counted, in one
// statement.
func (r *Runner) invalidCount(ctx context.Context, p *sqlgen.Program) (int64, error) {
	now := r.cfg.Now()
	var total int64
	var stale []string
	r.mu.Lock()
	for _, t := range p.Tables {
		if c, ok := r.invalidCounts[t]; ok && now.Sub(c.at) < invalidCountTTL {
			total += c.n
		} else {
			stale = append(stale, t)
		}
	}
	r.mu.Unlock()
	if len(stale) == 0 {
		return total, nil
	}
	d, err := r.cfg.Source.Dialect(ctx)
	if err != nil {
		return 0, connectorErr("count invalid NHS numbers", err)
	}
	counts, err := r.countInvalid(ctx, d, stale)
	if err != nil {
		return 0, err
	}
	for _, n := range counts {
		total += n
	}
	return total, nil
}

// WarmUp counts the invalid NHS numbers of every table the site holds, so
// that the first tasks after a start find the counts made. The node runs
// it once its connector is up; it is best effort, and a task counts for
// itself whatever is missing.
func (r *Runner) WarmUp(ctx context.Context) error {
	d, err := r.cfg.Source.Dialect(ctx)
	if err != nil {
		return err
	}
	var tables []string
	for _, t := range cdm.Tables() {
		if !t.HeldByKind(r.cfg.Kind) {
			continue
		}
		has, err := r.cfg.Source.HasTable(ctx, t.Name)
		if err != nil {
			return err
		}
		if has {
			tables = append(tables, t.Name)
		}
	}
	if len(tables) == 0 {
		return nil
	}
	began := time.Now()
	counts, err := r.countInvalid(ctx, d, tables)
	if err != nil {
		return err
	}
	var total int64
	for _, n := range counts {
		total += n
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "counted rows with invalid NHS numbers", slog.Int("tables", len(tables)),
		slog.Int64("rows", total), slog.Duration("duration", time.Since(began)))
	return nil
}

// countInvalid counts the rows with invalid NHS numbers of each table,
// and keeps the counts for later tasks.
func (r *Runner) countInvalid(ctx context.Context, d sqlgen.Dialect, tables []string) (map[string]int64, error) {
	const what = "count invalid NHS numbers"
	st, err := sqlgen.InvalidCounts(r.cfg.Kind, d, tables)
	if err != nil {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "%s: %v", what, err)
	}
	counts := map[string]int64{}
	err = r.query(ctx, what, r.statementQuery(st), func(rec arrow.Record) error {
		if int(rec.NumCols()) != len(st.Columns) {
			return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "%s: the result has %d columns, want %d", what, rec.NumCols(), len(st.Columns))
		}
		for c, want := range st.Columns {
			col, ok := rec.Column(c).(*array.Int64)
			if !ok {
				return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "%s: column %s is %s, want int64", what, rec.ColumnName(c), rec.Column(c).DataType())
			}
			for i := range col.Len() {
				counts[want.Name] += col.Value(i)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	at := r.cfg.Now()
	r.mu.Lock()
	for t, n := range counts {
		r.invalidCounts[t] = cachedCount{n: n, at: at}
	}
	r.mu.Unlock()
	return counts, nil
}

// siteNumbers reads every NHS number in the site's patient table and in
// the given tables, and returns the valid ones as a set, and how many
// patient rows carry a number optedOut says yes to: the patients every
// statement leaves out as objectors. optedOut is asked once about every
// valid number.
//
// It also returns the version of the data the read saw, or "" when the
// connector cannot tell.
func (r *Runner) siteNumbers(ctx context.Context, d sqlgen.Dialect, tables []string, optedOut func(string) bool) (*optout.Set, int64, string, error) {
	const what = "read the site's NHS numbers"
	st, err := sqlgen.SiteNumbers(r.cfg.Kind, d, tables)
	if err != nil {
		return nil, 0, "", taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "%s: %v", what, err)
	}
	var b optout.Builder
	var excluded int64
	version, err := r.queryVersion(ctx, what, r.statementQuery(st), func(rec arrow.Record) error {
		if int(rec.NumCols()) != len(st.Columns) {
			return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "%s: the result has %d columns, want %d", what, rec.NumCols(), len(st.Columns))
		}
		nums, ok := rec.Column(0).(*array.String)
		if !ok {
			return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "%s: column %s is %s, want utf8", what, rec.ColumnName(0), rec.Column(0).DataType())
		}
		rows, ok := rec.Column(1).(*array.Int64)
		if !ok {
			return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "%s: column %s is %s, want int64", what, rec.ColumnName(1), rec.Column(1).DataType())
		}
		for i := range nums.Len() {
			if nums.IsNull(i) {
				continue
			}
			n := nums.Value(i)
			if !b.Add(n) {
				continue // invalid: no statement counts it
			}
			if out := optedOut(n); out && rows.Value(i) > 0 {
				excluded += rows.Value(i)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, "", err
	}
	return b.Set(), excluded, version, nil
}

// args converts sqlgen's argument values to connector values.
func args(in []any) []connector.Value {
	out := make([]connector.Value, len(in))
	for i, a := range in {
		switch v := a.(type) {
		case string:
			out[i] = connector.String(v)
		case int64:
			out[i] = connector.Int64(v)
		case float64:
			out[i] = connector.Float64(v)
		case bool:
			out[i] = connector.Bool(v)
		case time.Time:
			out[i] = connector.Date(v)
		case []string:
			out[i] = connector.StringList(v)
		default:
			out[i] = connector.Null() // unreachable: sqlgen binds only the types above
		}
	}
	return out
}

// output is a task's result, held in full before any of it is sent.
type output struct {
	schema  *arrow.Schema  // the plan's schema: what is uploaded
	records []arrow.Record // ready to send, in schema
	// pending holds linkage batches until pseudonymise replaces their NHS
	// numbers, and aggregate batches until cellKeys adds their keys.
	pending []pendingBatch
	rows    int64
	// members holds, for an aggregate result, each batch's lists of the
	// NHS numbers of its cells' patients, for check.
	members []*array.List
	// checked is set by check once every NHS number the result rests on
	// has passed it; pseudonymise refuses an output without it.
	checked bool
}

// pendingBatch is a linkage batch before pseudonymise, or an aggregate
// batch before cellKeys adds its cell keys.
type pendingBatch struct {
	nhs  *array.String // nil for cells
	cols []arrow.Array // linkage: the fields after the pseudonym, less record_key; cells: the fields less the cell keys
	rows int64
}

// goFilled reports whether the node fills f in Go rather than read it from
// the Result statement.
func goFilled(f catalog.Field) bool {
	return f.Role == catalog.RoleRecordKey || f.Partial.IsKey()
}

func (p pendingBatch) release() {
	if p.nhs != nil {
		p.nhs.Release()
	}
	for _, c := range p.cols {
		c.Release()
	}
}

func (o *output) release() {
	release(o.records)
	for _, p := range o.pending {
		p.release()
	}
	for _, m := range o.members {
		m.Release()
	}
	o.records, o.pending, o.members = nil, nil, nil
}

func release(recs []arrow.Record) {
	for _, r := range recs {
		r.Release()
	}
}

// result runs the program's Result statement and holds what it returns,
// each column in the plan's Arrow type.
func (r *Runner) result(ctx context.Context, j *job) (*output, error) {
	schema, ok := j.plan.Schema(r.cfg.Kind)
	if !ok {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "no schema for %s sites", r.cfg.Kind)
	}
	// Record keys and cell keys are not the SQL's: the node adds them in
	// Go (cellKeys, pseudonymise), because they need the perturbation
	// secret.
	fields := slices.DeleteFunc(slices.Clone(j.siteTask.Fields), goFilled)
	linkage := j.siteTask.Rows == catalog.RowsPatients
	st := resultStatement(j.prog)
	// An aggregate result carries its cells' patients in a last column,
	// for check; it never leaves.
	withMembers := st.Name == sqlgen.StatementCheckedResult
	cols := st.Columns
	want := len(fields)
	if linkage {
		// nhs_number stands where the pseudonym goes.
		if len(cols) != want || cols[0].Name != cdm.ColNHSNumber {
			return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "the compiled linkage result does not start with %s", cdm.ColNHSNumber)
		}
	} else if withMembers && (len(cols) != want+1 || cols[want].Name != sqlgen.ColMembers) {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "the compiled checked result does not end with %s after the plan's %d columns", sqlgen.ColMembers, want)
	} else if !withMembers && len(cols) != want {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "the compiled result has %d columns, the plan %d", len(cols), want)
	}

	maxRows := r.cfg.Limits.MaxRows
	if l := j.t.GetLimits().GetMaxRows(); l > 0 {
		maxRows = min(maxRows, l)
	}
	q := connector.Query{SQL: st.SQL, Args: args(st.Args), MaxRows: maxRows, MaxBytes: r.cfg.Limits.MaxBytes}
	out := &output{schema: schema}
	// A connector error is most often about the site's data (a corrupt or
	// missing file, a column of the wrong type); naming the tables the
	// query reads tells provider IT where to look.
	what := "run the query over " + strings.Join(j.prog.Tables, ", ")
	err := r.query(ctx, what, q, func(rec arrow.Record) error {
		if int(rec.NumCols()) != len(cols) {
			return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "the result has %d columns, want %d", rec.NumCols(), len(cols))
		}
		if withMembers {
			m, err := membersColumn(rec, want)
			if err != nil {
				return err
			}
			out.members = append(out.members, m)
		}
		var nhs *array.String
		arrs := make([]arrow.Array, 0, want)
		keep := false
		defer func() {
			if !keep {
				for _, a := range arrs {
					a.Release()
				}
				if nhs != nil {
					nhs.Release()
				}
			}
		}()
		for i := range want {
			if got := rec.ColumnName(i); got != cols[i].Name {
				return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "result column %d is %q, want %q", i, got, cols[i].Name)
			}
			if linkage && i == 0 {
				s, ok := rec.Column(0).(*array.String)
				if !ok {
					return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "result column %s is %s, want utf8", cdm.ColNHSNumber, rec.Column(0).DataType())
				}
				s.Retain()
				nhs = s
				continue
			}
			a, err := conform(rec.Column(i), fields[i].Type)
			if err != nil {
				return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "result column %s: %v", cols[i].Name, err)
			}
			arrs = append(arrs, a)
		}
		if linkage || j.plan.RecordKeys {
			keep = true // pending owns them now
			out.pending = append(out.pending, pendingBatch{nhs: nhs, cols: arrs, rows: rec.NumRows()})
		} else {
			out.records = append(out.records, array.NewRecord(schema, arrs, rec.NumRows()))
		}
		out.rows += rec.NumRows()
		return nil
	})
	if err != nil {
		out.release()
		return nil, err
	}
	return out, nil
}

// resultStatement is the statement that computes p's result: in
// aggregate mode CheckedResult, which also gives the numbers check needs,
// else Result.
func resultStatement(p *sqlgen.Program) sqlgen.Statement {
	if p.CheckedResult != nil {
		return *p.CheckedResult
	}
	return p.Result
}

// membersColumn returns column i of rec, the cells' patients, retained.
func membersColumn(rec arrow.Record, i int) (*array.List, error) {
	if got := rec.ColumnName(i); got != sqlgen.ColMembers {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "result column %d is %q, want %q", i, got, sqlgen.ColMembers)
	}
	l, ok := rec.Column(i).(*array.List)
	if ok {
		_, ok = l.ListValues().(*array.String)
	}
	if !ok {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "result column %s is %s, want list<utf8>", sqlgen.ColMembers, rec.Column(i).DataType())
	}
	l.Retain()
	return l, nil
}

// conform returns a as Arrow type t, the plan's, or says why it cannot.
// Connectors return integers as int64 only; days are narrowed to int32.
func conform(a arrow.Array, t catalog.FieldType) (arrow.Array, error) {
	want := t.Arrow()
	if arrow.TypeEqual(a.DataType(), want) {
		a.Retain()
		return a, nil
	}
	switch t {
	case catalog.FieldDay:
		if src, ok := a.(*array.Int64); ok {
			return narrowDays(src)
		}
	case catalog.FieldDays:
		if src, ok := a.(*array.List); ok {
			if vals, ok := src.ListValues().(*array.Int64); ok {
				return narrowDayLists(src, vals)
			}
		}
	}
	return nil, fmt.Errorf("type %s cannot carry the plan's %s (%s)", a.DataType(), t, want)
}

func narrowDays(src *array.Int64) (arrow.Array, error) {
	b := array.NewInt32Builder(memory.DefaultAllocator)
	defer b.Release()
	b.Reserve(src.Len())
	for i := range src.Len() {
		if src.IsNull(i) {
			b.AppendNull()
			continue
		}
		v := src.Value(i)
		if v < math.MinInt32 || v > math.MaxInt32 {
			return nil, fmt.Errorf("a day offset is outside int32")
		}
		b.Append(int32(v))
	}
	return b.NewArray(), nil
}

func narrowDayLists(src *array.List, vals *array.Int64) (arrow.Array, error) {
	b := array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Int32)
	defer b.Release()
	vb := b.ValueBuilder().(*array.Int32Builder)
	for i := range src.Len() {
		if src.IsNull(i) {
			b.AppendNull()
			continue
		}
		b.Append(true)
		from, to := src.ValueOffsets(i)
		for k := from; k < to; k++ {
			if vals.IsNull(int(k)) {
				return nil, fmt.Errorf("a day list holds a null")
			}
			v := vals.Value(int(k))
			if v < math.MinInt32 || v > math.MaxInt32 {
				return nil, fmt.Errorf("a day offset is outside int32")
			}
			vb.Append(int32(v))
		}
	}
	return b.NewArray(), nil
}

// check is the last look before anything leaves the site. Every NHS
// number the result rests on must be valid and on no opt-out list
// (optedOut says no); any that is not aborts the task. It reads the
// numbers and changes nothing: pseudonymise, which replaces them, runs
// after it and only on a checked output.
func (r *Runner) check(ctx context.Context, j *job, out *output, optedOut func(string) bool) error {
	var invalid, refused int64
	verify := func(s string, null bool) {
		switch {
		case null || !cdm.ValidNHSNumber(s):
			invalid++
		case optedOut(s):
			refused++
		}
	}
	if j.siteTask.Rows == catalog.RowsPatients {
		for _, p := range out.pending {
			for i := range p.nhs.Len() {
				verify(p.nhs.Value(i), p.nhs.IsNull(i))
			}
		}
	} else if j.prog.CheckedResult != nil {
		// The numbers came with the cells, from the statement that
		// counted them.
		for _, l := range out.members {
			nums := l.ListValues().(*array.String) // membersColumn checked it
			for i := range l.Len() {
				if l.IsNull(i) {
					invalid++ // a cell whose patients are unknown
					continue
				}
				from, to := l.ValueOffsets(i)
				for k := from; k < to; k++ {
					verify(nums.Value(int(k)), nums.IsNull(int(k)))
				}
			}
		}
	} else if j.prog.Members != nil {
		m := j.prog.Members
		err := r.scanStrings(ctx, "read the counted patients", r.statementQuery(*m), func(s string, null bool) error {
			verify(s, null)
			return nil
		})
		if err != nil {
			return err
		}
	} else {
		return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "an aggregate program without its members statement cannot be checked")
	}
	if invalid > 0 || refused > 0 {
		r.log.Error("opt-out check failed: the result rests on patients it must not; nothing was sent",
			"task_id", j.t.GetTaskId(), "opted_out", refused, "invalid_nhs_numbers", invalid)
		return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL,
			"check before upload failed: the result rests on %d opted-out patients and %d invalid NHS numbers; nothing was sent", refused, invalid)
	}
	out.checked = true
	return nil
}
