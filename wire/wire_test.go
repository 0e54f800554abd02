package wire

import (
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// enumValues lists every value an enum's descriptor declares, so a value
// added to the .proto fails these tests until this package handles it.
func enumValues(d protoreflect.EnumDescriptor) []protoreflect.EnumNumber {
	var out []protoreflect.EnumNumber
	for i := range d.Values().Len() {
		out = append(out, d.Values().Get(i).Number())
	}
	return out
}

// TestSiteKind converts every cdm kind to the wire and back, every
// declared wire kind to cdm and back, and refuses unspecified and unknown
// wire kinds naming them.
func TestSiteKind(t *testing.T) {
	for _, k := range cdm.SiteKinds() {
		w := SiteKind(k)
		if w == havenv1.SiteKind_SITE_KIND_UNSPECIFIED {
			t.Errorf("SiteKind(%q) is unspecified", k)
		}
		if back, err := ParseSiteKind(w); err != nil || back != k {
			t.Errorf("ParseSiteKind(SiteKind(%q)) = %q, %v", k, back, err)
		}
		if SiteKindName(w) != string(k) {
			t.Errorf("SiteKindName(%v) = %q, want %q", w, SiteKindName(w), k)
		}
	}
	for _, n := range enumValues(havenv1.SiteKind(0).Descriptor()) {
		w := havenv1.SiteKind(n)
		k, err := ParseSiteKind(w)
		if w == havenv1.SiteKind_SITE_KIND_UNSPECIFIED {
			if err == nil || !strings.Contains(err.Error(), "unknown site kind SITE_KIND_UNSPECIFIED") {
				t.Errorf("ParseSiteKind(unspecified) = %q, %v; want an error naming it", k, err)
			}
			continue
		}
		if err != nil || SiteKind(k) != w {
			t.Errorf("%v: ParseSiteKind = %q, %v; back %v", w, k, err, SiteKind(k))
		}
	}
	if _, err := ParseSiteKind(havenv1.SiteKind(99)); err == nil || !strings.Contains(err.Error(), "unknown site kind 99") {
		t.Errorf("ParseSiteKind(99) = %v, want an error naming 99", err)
	}
	if got := SiteKind("clinic"); got != havenv1.SiteKind_SITE_KIND_UNSPECIFIED {
		t.Errorf("SiteKind(clinic) = %v, want unspecified", got)
	}
}

// TestMode converts every plan mode both ways and refuses unknowns.
func TestMode(t *testing.T) {
	for _, m := range []catalog.Mode{catalog.ModeAggregate, catalog.ModeLinkage} {
		w := Mode(m)
		if back, err := ParseMode(w); w == havenv1.PlanMode_PLAN_MODE_UNSPECIFIED || err != nil || back != m {
			t.Errorf("%q: wire %v, back %q, %v", m, w, back, err)
		}
		if ModeName(w) != string(m) {
			t.Errorf("ModeName(%v) = %q, want %q", w, ModeName(w), m)
		}
	}
	for _, n := range enumValues(havenv1.PlanMode(0).Descriptor()) {
		w := havenv1.PlanMode(n)
		m, err := ParseMode(w)
		if w == havenv1.PlanMode_PLAN_MODE_UNSPECIFIED {
			if err == nil || !strings.Contains(err.Error(), "unknown plan mode") {
				t.Errorf("ParseMode(unspecified) = %q, %v; want an error", m, err)
			}
			continue
		}
		if err != nil || Mode(m) != w {
			t.Errorf("%v: ParseMode = %q, %v", w, m, err)
		}
	}
	if _, err := ParseMode(havenv1.PlanMode(42)); err == nil || !strings.Contains(err.Error(), "unknown plan mode 42") {
		t.Errorf("ParseMode(42) = %v", err)
	}
	if Mode("federated") != havenv1.PlanMode_PLAN_MODE_UNSPECIFIED {
		t.Error("an unknown mode is not unspecified on the wire")
	}
}

// TestParamType converts every parameter type both ways, agrees with the
// type name the proto's Text gives, and refuses unknowns.
func TestParamType(t *testing.T) {
	for _, p := range []catalog.ParamType{catalog.ParamDate, catalog.ParamInt, catalog.ParamEnum, catalog.ParamCodelist} {
		w := ParamType(p)
		if back, err := ParseParamType(w); w == havenv1.ParameterType_PARAMETER_TYPE_UNSPECIFIED || err != nil || back != p {
			t.Errorf("%q: wire %v, back %q, %v", p, w, back, err)
		}
		if ParamTypeName(w) != string(p) {
			t.Errorf("ParamTypeName(%v) = %q, want %q", w, ParamTypeName(w), p)
		}
	}
	for _, n := range enumValues(havenv1.ParameterType(0).Descriptor()) {
		w := havenv1.ParameterType(n)
		p, err := ParseParamType(w)
		if w == havenv1.ParameterType_PARAMETER_TYPE_UNSPECIFIED {
			if err == nil {
				t.Errorf("ParseParamType(unspecified) = %q, want an error", p)
			}
			continue
		}
		if err != nil || ParamType(p) != w {
			t.Errorf("%v: ParseParamType = %q, %v", w, p, err)
		}
	}
	if _, err := ParseParamType(havenv1.ParameterType(7)); err == nil || !strings.Contains(err.Error(), "unknown parameter type 7") {
		t.Errorf("ParseParamType(7) = %v", err)
	}
	if ParamType("float") != havenv1.ParameterType_PARAMETER_TYPE_UNSPECIFIED {
		t.Error("an unknown parameter type is not unspecified on the wire")
	}
}

// TestValue converts a value of each type to the wire, back to text with
// ValueText, and parses that text again with ParseValue to the same wire
// value: what the coordinator sends, a node binds and a commissioner types
// agree.
func TestValue(t *testing.T) {
	for _, tc := range []struct {
		v    catalog.Value
		text string
	}{
		{catalog.Value{Type: catalog.ParamDate, Date: catalog.DateOf(2024, time.April, 1)}, "2024-04-01"},
		{catalog.Value{Type: catalog.ParamInt, Int: -365}, "-365"},
		{catalog.Value{Type: catalog.ParamEnum, Str: "female"}, "female"},
		{catalog.Value{Type: catalog.ParamCodelist, Str: "t2dm-snomed"}, "t2dm-snomed"},
	} {
		w := Value(tc.v)
		text, typ, ok := ValueText(w)
		if !ok || text != tc.text || typ != tc.v.Type {
			t.Errorf("%v: ValueText = %q, %q, %v; want %q, %q", tc.v, text, typ, ok, tc.text, tc.v.Type)
		}
		parsed, err := ParseValue(ParamType(tc.v.Type), text)
		if err != nil || !proto.Equal(parsed, w) {
			t.Errorf("%v: ParseValue(%q) = %v, %v; want %v", tc.v, text, parsed, err, w)
		}
	}
	if w := Value(catalog.Value{Type: "float"}); w.GetValue() != nil {
		t.Errorf("a value of unknown type went on the wire as %v", w)
	}
	if _, _, ok := ValueText(&havenv1.ParameterValue{}); ok {
		t.Error("ValueText of an empty value is ok")
	}
}

// TestParseValueRefuses names what is wrong with text that does not fit
// its type.
func TestParseValueRefuses(t *testing.T) {
	for _, tc := range []struct {
		typ  havenv1.ParameterType
		text string
		want string
	}{
		{havenv1.ParameterType_PARAMETER_TYPE_INT, "12x", `"12x" is not a whole number`},
		{havenv1.ParameterType_PARAMETER_TYPE_INT, "", `"" is not a whole number`},
		{havenv1.ParameterType_PARAMETER_TYPE_DATE, "2024-13-01", `"2024-13-01" is not a date (YYYY-MM-DD)`},
		{havenv1.ParameterType_PARAMETER_TYPE_DATE, "1/4/2024", `"1/4/2024" is not a date (YYYY-MM-DD)`},
		{havenv1.ParameterType_PARAMETER_TYPE_UNSPECIFIED, "x", "unknown parameter type PARAMETER_TYPE_UNSPECIFIED"},
		{havenv1.ParameterType(9), "x", "unknown parameter type 9"},
	} {
		if v, err := ParseValue(tc.typ, tc.text); err == nil || err.Error() != tc.want {
			t.Errorf("ParseValue(%v, %q) = %v, %v; want error %q", tc.typ, tc.text, v, err, tc.want)
		}
	}
}

// TestParameters puts a bound definition's parameters on the wire with
// the defaults filled in, and a node binding the wire values' text gets
// the same values back.
func TestParameters(t *testing.T) {
	cat, err := catalog.Load(os.DirFS("../policy/bundle"))
	if err != nil {
		t.Fatal(err)
	}
	def, ok := cat.Get("t2dm-emergency-admissions")
	if !ok {
		t.Fatal("no definition t2dm-emergency-admissions in the reference bundle")
	}
	b, err := def.Bind(map[string]string{"followup_days": "180"})
	if err != nil {
		t.Fatal(err)
	}
	got := Parameters(b)
	want := map[string]*havenv1.ParameterValue{
		"index_date":    {Value: &havenv1.ParameterValue_DateValue{DateValue: "2023-04-01"}},
		"followup_days": {Value: &havenv1.ParameterValue_IntValue{IntValue: 180}},
	}
	if len(got) != len(want) {
		t.Fatalf("Parameters = %v, want %v", got, want)
	}
	texts := map[string]string{}
	for name, w := range want {
		if !proto.Equal(got[name], w) {
			t.Errorf("%s = %v, want %v", name, got[name], w)
		}
		texts[name], _, _ = ValueText(got[name])
	}
	again, err := def.Bind(texts)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(Parameters(again), got, func(a, b *havenv1.ParameterValue) bool { return proto.Equal(a, b) }) {
		t.Errorf("binding the wire text again gives %v, want %v", Parameters(again), got)
	}
}

// TestStateNames names every declared run and site state in lower case
// without the enum prefix, and FinalRun holds exactly for the states
// nothing follows.
func TestStateNames(t *testing.T) {
	final := map[havenv1.RunState]bool{
		havenv1.RunState_RUN_STATE_RELEASED: true, havenv1.RunState_RUN_STATE_REFUSED: true, havenv1.RunState_RUN_STATE_FAILED: true,
		havenv1.RunState_RUN_STATE_CANCELLED: true, havenv1.RunState_RUN_STATE_INTERRUPTED: true,
	}
	for _, n := range enumValues(havenv1.RunState(0).Descriptor()) {
		s := havenv1.RunState(n)
		if want := strings.ToLower(strings.TrimPrefix(s.String(), "RUN_STATE_")); RunStateName(s) != want || strings.Contains(want, "run_state") {
			t.Errorf("RunStateName(%v) = %q", s, RunStateName(s))
		}
		if FinalRun(s) != final[s] {
			t.Errorf("FinalRun(%v) = %v", s, FinalRun(s))
		}
	}
	for s, want := range map[havenv1.SiteState]string{
		havenv1.SiteState_SITE_STATE_PENDING: "pending", havenv1.SiteState_SITE_STATE_TIMED_OUT: "timed_out",
		havenv1.SiteState_SITE_STATE_DISCONNECTED: "disconnected", havenv1.SiteState(77): "77",
	} {
		if got := SiteStateName(s); got != want {
			t.Errorf("SiteStateName(%v) = %q, want %q", s, got, want)
		}
	}
	if got := RunStateName(havenv1.RunState_RUN_STATE_RELEASED); got != "released" {
		t.Errorf("RunStateName(released) = %q", got)
	}
}
