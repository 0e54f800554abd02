package runner

import (
	"context"
	"strconv"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// recordKeyer derives the task's record keys; accept has checked the
// secret and the key range already.
func (r *Runner) recordKeyer(j *job) (*pseudonym.RecordKeyer, error) {
	k, err := pseudonym.NewRecordKeyer(r.cfg.PerturbationSecret, j.keyRange)
	if err != nil {
		return nil, taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "record keys: %v", err)
	}
	return k, nil
}

// cellKeys completes the cells of a keyed aggregate plan: it reads the
// program's Keys statement (each patient of the population with its group
// and, per cell key field, whether the count, n or sum it keys counts the
// patient), derives every patient's record key in Go, adds them up per
// cell and key field mod R, and puts each sum in its key column
// (<measure>__key, __n_key, __sum_key). It also checks that the flags
// reproduce every keyed partial, so a key never covers other patients than
// its partial. Without record keys it does nothing.
func (r *Runner) cellKeys(ctx context.Context, j *job, out *output) error {
	if !j.plan.RecordKeys || j.siteTask.Rows != catalog.RowsCells {
		return nil
	}
	if j.prog.Keys == nil {
		return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "a keyed aggregate program has no keys statement")
	}
	rk, err := r.recordKeyer(j)
	if err != nil {
		return err
	}
	fields := j.siteTask.Fields
	var groups []catalog.Field
	var keyAt []int // index in fields of each key field
	for i, f := range fields {
		switch {
		case f.Role == catalog.RoleGroup:
			groups = append(groups, f)
		case f.Partial.IsKey():
			keyAt = append(keyAt, i)
		}
	}
	type cell struct{ keys, counted []uint64 }
	cells := map[string]*cell{}
	R := uint64(j.keyRange)
	nCols := 1 + len(groups) + len(keyAt)
	st := j.prog.Keys
	q := r.statementQuery(*st)
	err = r.query(ctx, "read the counted patients' groups", q, func(rec arrow.Record) error {
		if int(rec.NumCols()) != nCols {
			return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "the keys statement returned %d columns, want %d", rec.NumCols(), nCols)
		}
		nhs, ok := rec.Column(0).(*array.String)
		if !ok {
			return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "keys column nhs_number is %s, want utf8", rec.Column(0).DataType())
		}
		var owned []arrow.Array
		defer func() {
			for _, a := range owned {
				a.Release()
			}
		}()
		gcols := make([]arrow.Array, len(groups))
		for g, f := range groups {
			a, err := conform(rec.Column(1+g), f.Type)
			if err != nil {
				return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "keys column %s: %v", f.Name, err)
			}
			owned = append(owned, a)
			gcols[g] = a
		}
		flags := make([]*array.Boolean, len(keyAt))
		for k := range keyAt {
			a, err := conform(rec.Column(1+len(groups)+k), catalog.FieldBool)
			if err != nil {
				return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "keys column %s: %v", fields[keyAt[k]].Name, err)
			}
			owned = append(owned, a)
			flags[k] = a.(*array.Boolean)
		}
		var b strings.Builder
		for i := range int(rec.NumRows()) {
			if nhs.IsNull(i) {
				return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_CONNECTOR, "the keys statement returned a patient without an NHS number")
			}
			g := groupKey(&b, gcols, i)
			c := cells[g]
			if c == nil {
				c = &cell{keys: make([]uint64, len(keyAt)), counted: make([]uint64, len(keyAt))}
				cells[g] = c
			}
			key := uint64(rk.Of(nhs.Value(i)))
			for k, f := range flags {
				if f.IsValid(i) && f.Value(i) {
					c.keys[k] = (c.keys[k] + key) % R
					c.counted[k]++
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}

	// Result columns are the fields less the key fields, in field order.
	sqlIndex := make([]int, len(fields)) // field index → column of a pending batch, or -1
	n := 0
	for i, f := range fields {
		sqlIndex[i] = -1
		if !goFilled(f) {
			sqlIndex[i] = n
			n++
		}
	}
	for _, p := range out.pending {
		gcols := make([]arrow.Array, len(groups))
		g := 0
		for i, f := range fields {
			if f.Role == catalog.RoleGroup {
				gcols[g] = p.cols[sqlIndex[i]]
				g++
			}
		}
		keyCols := make([]*array.Int64Builder, len(keyAt))
		for k := range keyCols {
			keyCols[k] = array.NewInt64Builder(memory.DefaultAllocator)
			defer keyCols[k].Release()
		}
		var b strings.Builder
		for i := range int(p.rows) {
			gk := groupKey(&b, gcols, i)
			c := cells[gk]
			for k, at := range keyAt {
				// The key field follows the count, n or sum it keys
				// (catalog.Definition.PlanWith), a whole number of
				// patients.
				count, ok := p.cols[sqlIndex[at-1]].(*array.Int64)
				if !ok || fields[at-1].Partial != fields[at].Partial.Keys() {
					return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "cell key %s does not follow the partial it keys", fields[at].Name)
				}
				if c == nil || int64(c.counted[k]) != count.Value(i) {
					return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL,
						"the patients keyed for %s differ from those counted in a cell; nothing was sent", fields[at-1].Name)
				}
				keyCols[k].Append(int64(c.keys[k]))
			}
			delete(cells, gk)
		}
		arrs := make([]arrow.Array, len(fields))
		for i := range fields {
			if sqlIndex[i] >= 0 {
				arrs[i] = p.cols[sqlIndex[i]]
			}
		}
		for k, at := range keyAt {
			arrs[at] = keyCols[k].NewArray()
			defer arrs[at].Release()
		}
		out.records = append(out.records, array.NewRecord(out.schema, arrs, p.rows))
	}
	for _, p := range out.pending {
		p.release()
	}
	out.pending = nil
	if len(cells) > 0 {
		return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "%d groups of counted patients have no cell; nothing was sent", len(cells))
	}
	return nil
}

// groupKey encodes row i of the group columns as a map key: each value
// with its length, or a null mark, so that no two groups share a key.
func groupKey(b *strings.Builder, cols []arrow.Array, i int) string {
	b.Reset()
	for _, c := range cols {
		if c.IsNull(i) {
			b.WriteString("-;")
			continue
		}
		v := c.ValueStr(i)
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
		b.WriteByte(';')
	}
	return b.String()
}
