package client

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// ParseParams types each value by the definition's declared parameter
// and reports every problem at once, naming the parameter.
func TestParseParams(t *testing.T) {
	def := &havenv1.DefinitionSummary{Id: "t2dm-emergency-admissions", Parameters: []*havenv1.ParameterSpec{
		{Name: "index_date", Type: havenv1.ParameterType_PARAMETER_TYPE_DATE},
		{Name: "followup_days", Type: havenv1.ParameterType_PARAMETER_TYPE_INT},
		{Name: "sex", Type: havenv1.ParameterType_PARAMETER_TYPE_ENUM},
		{Name: "condition", Type: havenv1.ParameterType_PARAMETER_TYPE_CODELIST},
		{Name: "mystery", Type: havenv1.ParameterType(42)},
	}}
	if got, err := ParseParams(def, []string{"index_date=2024-04-01", ""}); err == nil || err.Error() != `--param "": want name=value` {
		t.Fatalf("an empty --param: %v, %v", got, err)
	}
	got, err := ParseParams(def, []string{"index_date=2024-04-01", "followup_days=365", "sex=female", "condition=t2dm"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*havenv1.ParameterValue{
		"index_date":    {Value: &havenv1.ParameterValue_DateValue{DateValue: "2024-04-01"}},
		"followup_days": {Value: &havenv1.ParameterValue_IntValue{IntValue: 365}},
		"sex":           {Value: &havenv1.ParameterValue_EnumValue{EnumValue: "female"}},
		"condition":     {Value: &havenv1.ParameterValue_CodelistName{CodelistName: "t2dm"}},
	}
	if len(got) != len(want) {
		t.Fatalf("ParseParams = %v, want %v", got, want)
	}
	for name, w := range want {
		if !proto.Equal(got[name], w) {
			t.Errorf("%s = %v, want %v", name, got[name], w)
		}
	}
	if got, err := ParseParams(def, nil); err != nil || len(got) != 0 {
		t.Errorf("no parameters: %v, %v; want none, so that defaults apply", got, err)
	}

	_, err = ParseParams(def, []string{"index_date=2024-02-30", "followup_days=a year", "nodays", "=5", "lookback=3",
		"sex=male", "sex=female", "mystery=1"})
	if err == nil {
		t.Fatal("bad parameters accepted")
	}
	wantLines := []string{
		`parameter index_date: "2024-02-30" is not a date (YYYY-MM-DD)`,
		`parameter followup_days: "a year" is not a whole number`,
		`--param "nodays": want name=value`,
		`--param "=5": want name=value`,
		`unknown parameter "lookback": t2dm-emergency-admissions takes condition, followup_days, index_date, mystery, sex`,
		`parameter sex is given twice`,
		`parameter mystery has a type this client does not know`,
	}
	if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(wantLines, "\n"))
	}
}

// Explain labels each status code for people, says why a handshake was
// refused, keeps the code reachable, and leaves other errors alone.
func TestExplain(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.PermissionDenied, "run-A belongs to another requester"), "not permitted: run-A belongs to another requester"},
		{status.Error(codes.NotFound, "no definition x"), "not found: no definition x"},
		{status.Error(codes.Unauthenticated, "bad token"), "not authenticated: bad token"},
		{status.Error(codes.Aborted, "try again"), "aborted: try again"},
		{errors.New("disk full"), "disk full"},
	} {
		got := Explain(tc.err)
		if got.Error() != tc.want {
			t.Errorf("Explain(%v) = %q, want %q", tc.err, got, tc.want)
		}
		if status.Code(got) != status.Code(tc.err) {
			t.Errorf("Explain(%v) has code %v, want %v", tc.err, status.Code(got), status.Code(tc.err))
		}
		if again := Explain(got); again.Error() != tc.want {
			t.Errorf("Explain twice = %q", again)
		}
	}
	if Explain(nil) != nil {
		t.Error("Explain(nil) is not nil")
	}
}

// ParseRunState reads states as people write them and names the valid
// ones otherwise.
func TestParseRunState(t *testing.T) {
	for in, want := range map[string]havenv1.RunState{"released": havenv1.RunState_RUN_STATE_RELEASED, "RUNNING": havenv1.RunState_RUN_STATE_RUNNING} {
		if got, err := ParseRunState(in); err != nil || got != want {
			t.Errorf("ParseRunState(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"unspecified", "done", ""} {
		if _, err := ParseRunState(in); err == nil || !strings.Contains(err.Error(), "want pending, running") {
			t.Errorf("ParseRunState(%q) = %v", in, err)
		}
	}
}
