package havenv1

import "testing"

func TestParameterValueText(t *testing.T) {
	tests := []struct {
		v         *ParameterValue
		text, typ string
		ok        bool
	}{
		{&ParameterValue{Value: &ParameterValue_IntValue{IntValue: -365}}, "-365", "int", true},
		{&ParameterValue{Value: &ParameterValue_DateValue{DateValue: "2025-03-31"}}, "2025-03-31", "date", true},
		{&ParameterValue{Value: &ParameterValue_EnumValue{EnumValue: "F"}}, "F", "enum", true},
		{&ParameterValue{Value: &ParameterValue_CodelistName{CodelistName: "t2dm"}}, "t2dm", "codelist", true},
		{&ParameterValue{}, "", "", false},
		{nil, "", "", false},
	}
	for _, tt := range tests {
		text, typ, ok := tt.v.Text()
		if text != tt.text || typ != tt.typ || ok != tt.ok {
			t.Errorf("Text(%v) = %q, %q, %v; want %q, %q, %v", tt.v, text, typ, ok, tt.text, tt.typ, tt.ok)
		}
	}
	got := ParameterTexts(map[string]*ParameterValue{"a": tests[0].v, "unset": {}})
	if len(got) != 1 || got["a"] != "-365" {
		t.Errorf("ParameterTexts = %v", got)
	}
}
