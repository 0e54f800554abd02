// Package wire converts Haven's own types — site kinds (cdm), plan modes,
// parameter types and parameter values (policy/catalog) — to and from their
// wire forms in proto/haven/v1, and names wire enums in the words people
// read. It is the one home of these conversions: a new site kind, mode or
// parameter type is added here (and in the .proto), not in every side of
// the network.
//
// Go-to-wire conversions are total: a value the Go side does not know
// becomes the enum's UNSPECIFIED value, which every receiver refuses.
// Wire-to-Go conversions (the Parse functions) return an error naming an
// unknown or unspecified value, since a wire value comes from a peer.
package wire

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// SiteKind converts a site kind to its wire form; SITE_KIND_UNSPECIFIED for
// a kind this package does not know.
func SiteKind(k cdm.SiteKind) havenv1.SiteKind {
	switch k {
	case cdm.KindGP:
		return havenv1.SiteKind_SITE_KIND_GP
	case cdm.KindTrust:
		return havenv1.SiteKind_SITE_KIND_TRUST
	}
	return havenv1.SiteKind_SITE_KIND_UNSPECIFIED
}

// ParseSiteKind converts a wire site kind; an error for an unspecified or
// unknown one.
func ParseSiteKind(k havenv1.SiteKind) (cdm.SiteKind, error) {
	switch k {
	case havenv1.SiteKind_SITE_KIND_GP:
		return cdm.KindGP, nil
	case havenv1.SiteKind_SITE_KIND_TRUST:
		return cdm.KindTrust, nil
	}
	return "", fmt.Errorf("unknown site kind %v", k)
}

// Mode converts a plan mode to its wire form; PLAN_MODE_UNSPECIFIED for a
// mode this package does not know.
func Mode(m catalog.Mode) havenv1.PlanMode {
	switch m {
	case catalog.ModeAggregate:
		return havenv1.PlanMode_PLAN_MODE_AGGREGATE
	case catalog.ModeLinkage:
		return havenv1.PlanMode_PLAN_MODE_LINKAGE
	}
	return havenv1.PlanMode_PLAN_MODE_UNSPECIFIED
}

// ParseMode converts a wire plan mode; an error for an unspecified or
// unknown one.
func ParseMode(m havenv1.PlanMode) (catalog.Mode, error) {
	switch m {
	case havenv1.PlanMode_PLAN_MODE_AGGREGATE:
		return catalog.ModeAggregate, nil
	case havenv1.PlanMode_PLAN_MODE_LINKAGE:
		return catalog.ModeLinkage, nil
	}
	return "", fmt.Errorf("unknown plan mode %v", m)
}

// ParamType converts a parameter type to its wire form;
// PARAMETER_TYPE_UNSPECIFIED for a type this package does not know.
func ParamType(t catalog.ParamType) havenv1.ParameterType {
	switch t {
	case catalog.ParamInt:
		return havenv1.ParameterType_PARAMETER_TYPE_INT
	case catalog.ParamDate:
		return havenv1.ParameterType_PARAMETER_TYPE_DATE
	case catalog.ParamEnum:
		return havenv1.ParameterType_PARAMETER_TYPE_ENUM
	case catalog.ParamCodelist:
		return havenv1.ParameterType_PARAMETER_TYPE_CODELIST
	}
	return havenv1.ParameterType_PARAMETER_TYPE_UNSPECIFIED
}

// ParseParamType converts a wire parameter type; an error for an
// unspecified or unknown one.
func ParseParamType(t havenv1.ParameterType) (catalog.ParamType, error) {
	switch t {
	case havenv1.ParameterType_PARAMETER_TYPE_INT:
		return catalog.ParamInt, nil
	case havenv1.ParameterType_PARAMETER_TYPE_DATE:
		return catalog.ParamDate, nil
	case havenv1.ParameterType_PARAMETER_TYPE_ENUM:
		return catalog.ParamEnum, nil
	case havenv1.ParameterType_PARAMETER_TYPE_CODELIST:
		return catalog.ParamCodelist, nil
	}
	return "", fmt.Errorf("unknown parameter type %v", t)
}

// Value converts one bound parameter value to its wire form; an empty
// value (which receivers refuse) for a type this package does not know.
func Value(v catalog.Value) *havenv1.ParameterValue {
	switch v.Type {
	case catalog.ParamDate:
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_DateValue{DateValue: v.Date.String()}}
	case catalog.ParamInt:
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_IntValue{IntValue: v.Int}}
	case catalog.ParamEnum:
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_EnumValue{EnumValue: v.Str}}
	case catalog.ParamCodelist:
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_CodelistName{CodelistName: v.Str}}
	}
	return &havenv1.ParameterValue{}
}

// Parameters returns a bound definition's parameters, defaults filled in,
// in wire form.
func Parameters(b *catalog.Bound) map[string]*havenv1.ParameterValue {
	out := map[string]*havenv1.ParameterValue{}
	for _, p := range b.Definition().Parameters {
		v, ok := b.Value(p.Name)
		if !ok {
			continue
		}
		out[p.Name] = Value(v)
	}
	return out
}

// ValueText returns a wire parameter value as the text catalog Bind reads
// and the catalogue's type of the value; ok is false when no value is set.
func ValueText(v *havenv1.ParameterValue) (text string, typ catalog.ParamType, ok bool) {
	s, t, ok := v.Text()
	if !ok {
		return "", "", false
	}
	return s, catalog.ParamType(t), true
}

// ParseValue turns text a person typed into a wire value of type t: a
// whole number for an int, YYYY-MM-DD for a date, the text itself for an
// enum or a codelist name. It checks the form only; the coordinator checks
// ranges, allowed values and grids against the definition.
func ParseValue(t havenv1.ParameterType, text string) (*havenv1.ParameterValue, error) {
	switch t {
	case havenv1.ParameterType_PARAMETER_TYPE_INT:
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", text)
		}
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_IntValue{IntValue: n}}, nil
	case havenv1.ParameterType_PARAMETER_TYPE_DATE:
		if _, err := time.Parse(time.DateOnly, text); err != nil {
			return nil, fmt.Errorf("%q is not a date (YYYY-MM-DD)", text)
		}
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_DateValue{DateValue: text}}, nil
	case havenv1.ParameterType_PARAMETER_TYPE_ENUM:
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_EnumValue{EnumValue: text}}, nil
	case havenv1.ParameterType_PARAMETER_TYPE_CODELIST:
		return &havenv1.ParameterValue{Value: &havenv1.ParameterValue_CodelistName{CodelistName: text}}, nil
	}
	return nil, fmt.Errorf("unknown parameter type %v", t)
}

// enumName is a wire enum value in words: its name without the enum's
// prefix, in lower case ("SITE_STATE_TIMED_OUT" → "timed_out"). A number
// no name is known for stays a number.
func enumName(s fmt.Stringer, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), prefix))
}

// SiteKindName is a wire site kind in words: "gp", "trust", "unspecified".
func SiteKindName(k havenv1.SiteKind) string { return enumName(k, "SITE_KIND_") }

// ModeName is a wire plan mode in words: "aggregate", "linkage",
// "unspecified".
func ModeName(m havenv1.PlanMode) string { return enumName(m, "PLAN_MODE_") }

// ParamTypeName is a wire parameter type in words: "int", "date", "enum",
// "codelist", "unspecified".
func ParamTypeName(t havenv1.ParameterType) string { return enumName(t, "PARAMETER_TYPE_") }

// RunStateName is a run state in words: "pending", "released", ….
func RunStateName(s havenv1.RunState) string { return enumName(s, "RUN_STATE_") }

// SiteStateName is a site's state in a run in words: "pending",
// "timed_out", ….
func SiteStateName(s havenv1.SiteState) string { return enumName(s, "SITE_STATE_") }

// FinalRun reports whether a run state is final: nothing more will happen
// to the run.
func FinalRun(s havenv1.RunState) bool {
	switch s {
	case havenv1.RunState_RUN_STATE_RELEASED, havenv1.RunState_RUN_STATE_REFUSED, havenv1.RunState_RUN_STATE_FAILED,
		havenv1.RunState_RUN_STATE_CANCELLED, havenv1.RunState_RUN_STATE_INTERRUPTED:
		return true
	}
	return false
}

// OutcomeMessage is the NodeMessage that reports a task's outcome on a
// live link (TaskDone, TaskFailed or TaskRefused), or nil for an empty
// outcome. Outcomes travel in this form on a link and as TaskOutcome in
// a Register and the node's journal.
func OutcomeMessage(o *havenv1.TaskOutcome) *havenv1.NodeMessage {
	switch x := o.GetOutcome().(type) {
	case *havenv1.TaskOutcome_Done:
		return &havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskDone{TaskDone: x.Done}}
	case *havenv1.TaskOutcome_Failed:
		return &havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskFailed{TaskFailed: x.Failed}}
	case *havenv1.TaskOutcome_Refused:
		return &havenv1.NodeMessage{Body: &havenv1.NodeMessage_TaskRefused{TaskRefused: x.Refused}}
	}
	return nil
}
