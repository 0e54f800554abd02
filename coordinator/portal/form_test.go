package portal

import (
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

func statinsDef() *havenv1.DefinitionSummary {
	intV := func(s string) *havenv1.ParameterValue {
		v, _ := wire.ParseValue(havenv1.ParameterType_PARAMETER_TYPE_INT, s)
		return v
	}
	dateV := func(s string) *havenv1.ParameterValue {
		v, _ := wire.ParseValue(havenv1.ParameterType_PARAMETER_TYPE_DATE, s)
		return v
	}
	return &havenv1.DefinitionSummary{Id: "statins-chd", Title: "Statins", Parameters: []*havenv1.ParameterSpec{
		{Name: "index_date", Type: havenv1.ParameterType_PARAMETER_TYPE_DATE, Min: dateV("2015-01-01"), DefaultValue: dateV("2024-04-01")},
		{Name: "lookback_days", Type: havenv1.ParameterType_PARAMETER_TYPE_INT, Min: intV("28"), Max: intV("730"), DefaultValue: intV("365"),
			ApprovedGrid: "one of 28, 90, 180, 365, 730"},
	}, Approval: &havenv1.Approval{AllowedPurposes: []string{"clinical_audit", "service_evaluation"}, AllowedRoles: []string{"analyst"}},
		CallerPurposes: []string{"service_evaluation"}}
}

func fieldErrors(f *form) map[string]string {
	out := map[string]string{}
	for _, fl := range f.Fields {
		if fl.Error != "" {
			out[fl.Name] = fl.Error
		}
	}
	if f.PurposeError != "" {
		out["purpose"] = f.PurposeError
	}
	if len(f.Errors) > 0 {
		out[""] = strings.Join(f.Errors, "\n")
	}
	return out
}

func TestNewForm(t *testing.T) {
	f := newForm(statinsDef())
	if len(f.Fields) != 2 || f.Fields[0].Value != "2024-04-01" || f.Fields[1].Value != "365" || f.Fields[1].Input != "number" ||
		f.Fields[1].Grid == "" || f.Fields[1].Max != "730" {
		t.Errorf("fields %+v", f.Fields)
	}
	if len(f.Purposes) != 1 || f.Purposes[0] != "service_evaluation" || f.Purpose != "service_evaluation" || f.Unpermitted {
		t.Errorf("purposes %v (%q, unpermitted %v): want the caller's", f.Purposes, f.Purpose, f.Unpermitted)
	}
	def := statinsDef()
	def.CallerPurposes = nil
	if g := newForm(def); !g.Unpermitted || len(g.Purposes) != 2 {
		t.Errorf("a caller with no purposes: %v, unpermitted %v", g.Purposes, g.Unpermitted)
	}
	if !requestPattern.MatchString(f.Request) {
		t.Errorf("client request id %q", f.Request)
	}
	if err := havenv1.CheckID(f.Request); err != nil {
		t.Errorf("client request id %q is not one the API takes: %v", f.Request, err)
	}
}

// read parses each posted value with the client's parser and puts a value
// of the wrong type at its own field; empty values are left out.
func TestFormRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		post   url.Values
		params []string
		errs   map[string]string // field → substring of its error
	}{
		{name: "defaults", post: url.Values{"purpose": {"clinical_audit"}}, params: nil},
		{name: "values", post: url.Values{"p.lookback_days": {" 90 "}, "p.index_date": {"2023-01-01"}}, params: []string{"index_date", "lookback_days"}},
		{name: "not a number", post: url.Values{"p.lookback_days": {"ninety"}}, errs: map[string]string{"lookback_days": "ninety"}},
		{name: "not a date", post: url.Values{"p.index_date": {"01/02/2023"}, "p.lookback_days": {"90"}},
			params: []string{"lookback_days"}, errs: map[string]string{"index_date": "01/02/2023"}},
		{name: "unknown field ignored", post: url.Values{"p.other": {"1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newForm(statinsDef())
			got := f.read(tc.post)
			errs := fieldErrors(f)
			if len(errs) != len(tc.errs) {
				t.Errorf("errors %v, want %v", errs, tc.errs)
			}
			for k, want := range tc.errs {
				if !strings.Contains(errs[k], want) {
					t.Errorf("error of %s is %q, want it to mention %q", k, errs[k], want)
				}
			}
			if len(got) != len(tc.params) {
				t.Errorf("parameters %v, want %v", got, tc.params)
			}
			for _, p := range tc.params {
				if got[p] == nil {
					t.Errorf("parameter %s missing from %v", p, got)
				}
			}
		})
	}
	f := newForm(statinsDef())
	f.read(url.Values{"request": {"portal-ABCDEFGHIJKLMNOPQRSTUVWXYZ"}})
	if f.Request != "portal-ABCDEFGHIJKLMNOPQRSTUVWXYZ" {
		t.Errorf("a well-formed request id was not kept: %q", f.Request)
	}
	f.read(url.Values{"request": {"../../etc"}})
	if !requestPattern.MatchString(f.Request) || f.Request == "../../etc" {
		t.Errorf("a malformed request id was kept: %q", f.Request)
	}
}

// apply puts the API's errors, in the forms the API and the catalogue
// write them, next to the fields they name.
func TestFormApply(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want map[string]string
	}{
		{name: "bind", err: status.Error(codes.InvalidArgument,
			"parameters of statins-chd:\nparameters.lookback_days: parameter lookback_days: 5000 is above the maximum 730"),
			want: map[string]string{"lookback_days": "5000 is above the maximum 730"}},
		{name: "purpose and type", err: status.Error(codes.InvalidArgument,
			"the submission was refused and nothing was stored:\npurpose \"x\" is not one of the bundle's purposes: a, b\nparameters.index_date: parameter index_date is a date, not a int"),
			want: map[string]string{"purpose": `purpose "x" is not one`, "index_date": "is a date, not a int"}},
		{name: "unknown parameter", err: status.Error(codes.InvalidArgument, "parameters of statins-chd:\nparameters.lookbak: unknown parameter \"lookbak\" (did you mean lookback_days?)"),
			want: map[string]string{"": "unknown parameter"}},
		{name: "one line", err: status.Error(codes.InvalidArgument, "definition_id is required"), want: map[string]string{"": "definition_id is required"}},
		{name: "limit", err: status.Error(codes.ResourceExhausted, "too many refused submissions in 24 hours; nothing was stored"),
			want: map[string]string{"": "too many refused"}},
		{name: "internal", err: status.Error(codes.Internal, "submit run failed; the coordinator's log has the detail"),
			want: map[string]string{"": "try again later"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newForm(statinsDef())
			f.apply(tc.err)
			got := fieldErrors(f)
			if len(got) != len(tc.want) {
				t.Errorf("errors %q, want %q", got, tc.want)
			}
			for k, w := range tc.want {
				if !strings.Contains(got[k], w) {
					t.Errorf("error of %q is %q, want %q", k, got[k], w)
				}
			}
			if !f.hasErrors() {
				t.Error("hasErrors is false")
			}
		})
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/runs/run-1":                  "/runs/run-1",
		"/runs?scope=organisation":     "/runs?scope=organisation",
		"":                             "/catalogue",
		"//evil.example/":              "/catalogue",
		"https://evil.example/":        "/catalogue",
		"/\\evil.example":              "/catalogue",
		"/ok\r\nSet-Cookie: x":         "/catalogue",
		"/" + strings.Repeat("a", 600): "/catalogue",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
