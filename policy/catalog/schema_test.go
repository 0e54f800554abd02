package catalog

import (
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
)

func TestCheckSchema(t *testing.T) {
	md := arrow.NewMetadata([]string{"haven.definition.id"}, []string{"statins-chd"})
	want := arrow.NewSchema([]arrow.Field{
		{Name: "sex", Type: arrow.BinaryTypes.String},
		{Name: "patients", Type: arrow.PrimitiveTypes.Int64},
		{Name: "top", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	}, &md)
	f := want.Fields()
	other := arrow.NewMetadata([]string{"haven.definition.id"}, []string{"t2dm-prevalence"})
	// A repeated key is checked at each occurrence, not only the first.
	repeated := arrow.NewMetadata([]string{"haven.definition.id", "haven.definition.id"}, []string{"statins-chd", "t2dm-prevalence"})
	unrelated := arrow.NewMetadata([]string{"origin"}, []string{"node 1.4"})
	for _, tc := range []struct {
		name  string
		got   *arrow.Schema
		err   string
		field string // SchemaError.Field
	}{
		{name: "same", got: want},
		{name: "no metadata", got: arrow.NewSchema(f, nil)},
		{name: "metadata the plan lacks", got: arrow.NewSchema(f, &unrelated)},
		{name: "missing field", got: arrow.NewSchema(f[:2], nil), err: `schema has 2 fields, the plan 3: "top" is missing`, field: "top"},
		{name: "extra field", got: arrow.NewSchema(append(f, arrow.Field{Name: "nhs_number", Type: arrow.BinaryTypes.String}), nil),
			err: `unexpected field: "nhs_number" is not in the plan, which has 3 fields`, field: "nhs_number"},
		{name: "renamed", got: arrow.NewSchema([]arrow.Field{f[1], f[0], f[2]}, nil), err: `field 0 is "patients"; the plan has "sex"`, field: "sex"},
		{name: "retyped", got: arrow.NewSchema([]arrow.Field{f[0], {Name: "patients", Type: arrow.PrimitiveTypes.Float64}, f[2]}, nil),
			err: `field "patients" is float64; the plan has int64`, field: "patients"},
		{name: "nullability", got: arrow.NewSchema([]arrow.Field{f[0], {Name: "patients", Type: arrow.PrimitiveTypes.Int64, Nullable: true}, f[2]}, nil),
			err: `field "patients" has nullable=true; the plan has false`, field: "patients"},
		{name: "another definition", got: arrow.NewSchema(f, &other), err: `schema metadata haven.definition.id is "t2dm-prevalence"; this run's is "statins-chd"`},
		{name: "repeated metadata key", got: arrow.NewSchema(f, &repeated), err: `"t2dm-prevalence"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSchema(tc.got, want)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("CheckSchema = %v; want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("CheckSchema = %v; want %q", err, tc.err)
			}
			se, ok := errors.AsType[*SchemaError](err)
			if !ok {
				t.Fatalf("CheckSchema = %T; want a *SchemaError", err)
			}
			if se.Field != tc.field {
				t.Errorf("Field = %q; want %q", se.Field, tc.field)
			}
		})
	}
}
