package runner

import (
	"math"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// checkFinite is the last look at the values of a result before upload:
// no float in any batch, lists included, may be NaN or ±Inf. The SQL
// leaves out rows holding such values (sqlgen, cdm.ValidValue), so one
// here means a computation overflowed or the connector returned what the
// SQL did not; the coordinator would reject the upload, so the task fails
// here instead, with nothing sent and the column named.
func checkFinite(batches []arrow.Record) error {
	for _, rec := range batches {
		for c, col := range rec.Columns() {
			if i, v, bad := firstNonFinite(col); bad {
				return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL,
					"check before upload failed: column %s holds %v (row %d of a batch); nothing was sent", rec.ColumnName(c), v, i)
			}
		}
	}
	return nil
}

// firstNonFinite returns the index and value of the first non-NULL
// non-finite float in a, looking inside lists and structs.
func firstNonFinite(a arrow.Array) (int, float64, bool) {
	bad := func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }
	switch a := a.(type) {
	case *array.Float64:
		for i := range a.Len() {
			if a.IsValid(i) && bad(a.Value(i)) {
				return i, a.Value(i), true
			}
		}
	case *array.Float32:
		for i := range a.Len() {
			if a.IsValid(i) && bad(float64(a.Value(i))) {
				return i, float64(a.Value(i)), true
			}
		}
	case array.ListLike:
		return firstNonFinite(a.ListValues())
	case *array.Struct:
		for f := range a.NumField() {
			if i, v, ok := firstNonFinite(a.Field(f)); ok {
				return i, v, true
			}
		}
	}
	return 0, 0, false
}
