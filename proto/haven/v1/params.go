package havenv1

import "strconv"

// Text returns a parameter value as a commissioner would type it, the form
// the catalogue binds (policy/catalog Bind), and the name of its type as
// the catalogue spells it: "int", "date", "enum" or "codelist". ok is false
// when no value is set.
func (v *ParameterValue) Text() (text, typ string, ok bool) {
	switch x := v.GetValue().(type) {
	case *ParameterValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10), "int", true
	case *ParameterValue_DateValue:
		return x.DateValue, "date", true
	case *ParameterValue_EnumValue:
		return x.EnumValue, "enum", true
	case *ParameterValue_CodelistName:
		return x.CodelistName, "codelist", true
	}
	return "", "", false
}

// ParameterTexts returns each set value's Text, for logs and audits: these
// are what a commissioner chose (dates, numbers, names), never patient data.
func ParameterTexts(in map[string]*ParameterValue) map[string]string {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]string, len(in))
	for name, v := range in {
		if s, _, ok := v.Text(); ok {
			out[name] = s
		}
	}
	return out
}
