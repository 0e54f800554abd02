package runner

import (
	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/havenhealth/haven/node/pseudonym"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// pseudonymise turns a checked linkage result into what is uploaded: it
// replaces each row's NHS number by the run pseudonym and, in a keyed
// plan, puts the patient's record key right after it
// (catalog.Definition.PlanWith). After it no NHS number is left in out.
//
// It must follow check: the opt-out check reads the numbers, which the
// pseudonyms hide, so it refuses an output check has not passed. An
// aggregate result holds no numbers and is left as it is.
func (r *Runner) pseudonymise(j *job, out *output) error {
	if j.siteTask.Rows != catalog.RowsPatients {
		return nil
	}
	if !out.checked {
		return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "pseudonymise: the result has not passed the check before upload; nothing was sent")
	}
	d, err := pseudonym.NewDeriver(r.cfg.Secret, j.t.GetRunId())
	if err != nil {
		return taskErr(havenv1.TaskErrorCode_TASK_ERROR_CODE_INTERNAL, "derive run key: %v", err)
	}
	var rk *pseudonym.RecordKeyer
	if f, ok := j.siteTask.Field(catalog.FieldNameRecordKey); ok && f.Role == catalog.RoleRecordKey {
		if rk, err = r.recordKeyer(j); err != nil {
			return err
		}
	}
	for _, p := range out.pending {
		b := array.NewFixedSizeBinaryBuilder(memory.DefaultAllocator, &arrow.FixedSizeBinaryType{ByteWidth: pseudonym.Size})
		b.Reserve(p.nhs.Len())
		for k := range p.nhs.Len() {
			ps := d.Of(p.nhs.Value(k))
			b.Append(ps[:])
		}
		lead := []arrow.Array{b.NewArray()}
		b.Release()
		if rk != nil {
			kb := array.NewInt64Builder(memory.DefaultAllocator)
			kb.Reserve(p.nhs.Len())
			for k := range p.nhs.Len() {
				kb.Append(int64(rk.Of(p.nhs.Value(k))))
			}
			lead = append(lead, kb.NewArray())
			kb.Release()
		}
		out.records = append(out.records, array.NewRecord(out.schema, append(lead, p.cols...), p.rows))
		for _, a := range lead {
			a.Release()
		}
		p.release()
	}
	out.pending = nil
	return nil
}
