package portal

import (
	"crypto/rand"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/client"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// field is one parameter's input on the submit form.
type field struct {
	// Name is the parameter's name; the input is named "p." + Name.
	Name, Description string
	// Type is the parameter's type in words; Input, the input's type
	// attribute ("number", "date", "text"); Options, a select's values.
	Type, Input string
	Options     []string
	// Min, Max and Default are as the definition declares them; Grid,
	// the approval's grid in words.
	Min, Max, Default, Grid string
	// Value is what the form shows: the value posted, or the default.
	Value string
	// Error is the problem with the value, from the parser or the API.
	Error string
}

// form is the submit form of one definition, with what was posted and
// what was wrong with it.
type form struct {
	Definition *havenv1.DefinitionSummary
	Fields     []field
	// Purposes are those the signed-in person may state in a run of the
	// definition (the API's caller purposes); Unpermitted says there are
	// none, and the approval's are offered so that the refusal says why.
	Purposes     []string
	Unpermitted  bool
	Purpose      string
	PurposeError string
	// Errors are problems no one field owns.
	Errors []string
	// Request is the client request id the form submits with, so that
	// posting it twice (a double click, a reload) makes one run.
	Request string
}

// newForm is a definition's empty form: each parameter at its default.
func newForm(def *havenv1.DefinitionSummary) *form {
	f := &form{Definition: def, Purposes: slices.Clone(def.GetCallerPurposes()), Request: "portal-" + rand.Text()}
	if len(f.Purposes) == 0 {
		f.Purposes, f.Unpermitted = slices.Clone(def.GetApproval().GetAllowedPurposes()), true
	}
	for _, p := range def.GetParameters() {
		fl := field{Name: p.GetName(), Description: p.GetDescription(), Type: wire.ParamTypeName(p.GetType()),
			Min: valueText(p.GetMin()), Max: valueText(p.GetMax()), Default: valueText(p.GetDefaultValue()), Grid: p.GetApprovedGrid()}
		switch p.GetType() {
		case havenv1.ParameterType_PARAMETER_TYPE_INT:
			fl.Input = "number"
		case havenv1.ParameterType_PARAMETER_TYPE_DATE:
			fl.Input = "date"
		default:
			fl.Input = "text"
		}
		if len(p.GetAllowedValues()) > 0 {
			fl.Input, fl.Options = "select", slices.Clone(p.GetAllowedValues())
		}
		fl.Value = fl.Default
		f.Fields = append(f.Fields, fl)
	}
	if len(f.Purposes) == 1 {
		f.Purpose = f.Purposes[0]
	}
	return f
}

func valueText(v *havenv1.ParameterValue) string {
	if s, _, ok := wire.ValueText(v); ok {
		return s
	}
	return ""
}

// requestPattern is the form's client request id; anything else posted is
// replaced, not passed on.
var requestPattern = regexp.MustCompile(`^portal-[A-Z2-7]{26}$`)

// read takes the posted values into f and parses each parameter's with
// the client package's parser (the one `haven query` uses), so that a
// value of the wrong type is reported at its field. An empty value leaves
// the parameter out, for its default. It returns the parameters to
// submit; f.hasErrors says whether any failed to parse.
func (f *form) read(post url.Values) map[string]*havenv1.ParameterValue {
	out := map[string]*havenv1.ParameterValue{}
	for i := range f.Fields {
		fl := &f.Fields[i]
		fl.Value = strings.TrimSpace(post.Get("p." + fl.Name))
		if fl.Value == "" {
			continue
		}
		v, err := client.ParseParams(f.Definition, []string{fl.Name + "=" + fl.Value})
		if err != nil {
			fl.Error = strings.TrimPrefix(err.Error(), "parameter "+fl.Name+": ")
			continue
		}
		out[fl.Name] = v[fl.Name]
	}
	f.Purpose = post.Get("purpose")
	if r := post.Get("request"); requestPattern.MatchString(r) {
		f.Request = r
	}
	return out
}

func (f *form) hasErrors() bool {
	if len(f.Errors) > 0 || f.PurposeError != "" {
		return true
	}
	return slices.ContainsFunc(f.Fields, func(fl field) bool { return fl.Error != "" })
}

// paramRef finds the parameter a line of an API error is about:
// "parameters.lookback_days: ..." (the API's and catalogue's paths) or
// "parameter lookback_days ...".
var paramRef = regexp.MustCompile(`(?:^|[\s:])parameters?[.\s]([A-Za-z_][A-Za-z0-9_]*)\b`)

// apply puts an error from the commissioner API next to the fields it
// names. An InvalidArgument status lists one problem a line under a
// heading; each line naming a parameter goes to that field, a line about
// the purpose to the purpose, and the rest to the form as a whole. Any
// other error is the form's.
func (f *form) apply(err error) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		f.Errors = append(f.Errors, apiMessage(err))
		return
	}
	lines := strings.Split(st.Message(), "\n")
	if len(lines) > 1 && strings.HasSuffix(lines[0], ":") {
		lines = lines[1:] // the heading
	}
	for _, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if m := paramRef.FindStringSubmatch(line); m != nil {
			if i := slices.IndexFunc(f.Fields, func(fl field) bool { return fl.Name == m[1] }); i >= 0 {
				f.Fields[i].Error = join(f.Fields[i].Error, fieldMessage(line, m[1]))
				continue
			}
		}
		if strings.HasPrefix(line, "purpose") {
			f.PurposeError = join(f.PurposeError, line)
			continue
		}
		f.Errors = append(f.Errors, line)
	}
}

// fieldMessage drops the parameter's path from the front of line: the
// field already says which parameter it is.
func fieldMessage(line, name string) string {
	for _, prefix := range []string{"parameters." + name + ": ", "parameter " + name + ": "} {
		line = strings.TrimPrefix(line, prefix)
	}
	return line
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// apiMessage is an API error as a person reads it: its status message,
// which the API writes for the caller, without the gRPC framing.
func apiMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Internal, codes.Unknown:
			return "The coordinator could not do that just now; try again later."
		}
		return st.Message()
	}
	return fmt.Sprintf("The coordinator could not do that: %v", err)
}
