package nodetest

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// Task builds the task a coordinator would send a site of the given ODS
// code and kind for definition id of cat in run runID: purpose
// commissioning, requester QHM, generous limits, a deadline a minute
// away. params nil means the definition's defaults.
func Task(t testing.TB, cat *catalog.Catalog, id, runID, ods string, kind cdm.SiteKind, params map[string]*havenv1.ParameterValue) *havenv1.Task {
	t.Helper()
	def, ok := cat.Get(id)
	if !ok {
		t.Fatalf("no definition %s", id)
	}
	plan := def.Plan()
	st, ok := plan.Task(kind)
	if !ok {
		t.Fatalf("%s sites take no part in %s", kind, id)
	}
	var fields []string
	for _, f := range st.Fields {
		fields = append(fields, f.Name)
	}
	return &havenv1.Task{
		TaskId: runID + "-" + ods, RunId: runID,
		DefinitionId: id, DefinitionVersion: uint32(def.Version), DefinitionHash: def.Hash(),
		Parameters: params, Purpose: "commissioning", RequesterOrg: "QHM",
		Mode: wire.Mode(plan.Mode), SiteKind: wire.SiteKind(kind), OutputFields: fields,
		Limits:   &havenv1.UploadLimits{MaxRows: 1_000_000, MaxBytes: 64 << 20, MaxBatchBytes: 1 << 20},
		Deadline: timestamppb.New(time.Now().Add(time.Minute)), IssuedAt: timestamppb.Now(),
	}
}
