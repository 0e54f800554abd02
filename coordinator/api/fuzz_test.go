package api

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// FuzzSubmitRequest feeds SubmitRun's input checks arbitrary requests, as
// they arrive on the wire (binary protobuf): the client request id check,
// the definition lookup in the reference catalogue, the parameters' types
// (rawParameters) and binding (catalog Bind), then the policy input built
// from the bound values. Each must return an error or a value, never panic.
func FuzzSubmitRequest(f *testing.F) {
	cat, err := catalog.Load(os.DirFS(filepath.Join("..", "..", "policy", "bundle")))
	if err != nil {
		f.Fatal(err)
	}
	date := func(s string) *havenv1.ParameterValue {
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_DateValue{DateValue: s}}
	}
	num := func(n int64) *havenv1.ParameterValue {
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_IntValue{IntValue: n}}
	}
	for _, req := range []*havenv1.SubmitRunRequest{
		{DefinitionId: "t2dm-prevalence", Purpose: "commissioning", Parameters: map[string]*havenv1.ParameterValue{
			"index_date": date("2024-04-01"), "min_age": num(17)}},
		{DefinitionId: "statins-chd", Purpose: "research", ClientRequestId: "req-1", Parameters: map[string]*havenv1.ParameterValue{
			"index_date": date("2024-04-01"), "lookback_days": num(90)}},
		{DefinitionId: "t2dm-emergency-admissions", Purpose: "commissioning", Parameters: map[string]*havenv1.ParameterValue{
			"index_date": date("2023-04-01"), "followup_days": num(-365), "x": {}}},
		{DefinitionId: "no-such-definition"},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req havenv1.SubmitRunRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			return
		}
		if crid := req.GetClientRequestId(); crid != "" {
			_ = havenv1.CheckID(crid)
		}
		d, ok := cat.Get(req.GetDefinitionId())
		if !ok {
			return
		}
		raw, err := rawParameters(d, req.GetParameters())
		if err != nil {
			return
		}
		bound, err := d.Bind(raw)
		if err != nil {
			return
		}
		_ = policy.ParametersOf(bound)
	})
}
