package catalog

import (
	"fmt"

	"github.com/apache/arrow/go/v17/arrow"
)

// SchemaError says how an upload's schema differs from the plan's
// (Plan.Schema).
type SchemaError struct {
	// Field is the plan's field at fault, or the field the plan lacks; it
	// is empty when the fault is in the schema's metadata.
	Field string
	Msg   string
}

func (e *SchemaError) Error() string { return e.Msg }

// CheckSchema compares an upload's schema with want, the plan's schema for
// the site's kind: the same fields, in order, with the same types and
// nullability. Metadata is optional, but a key that is present in both
// (the definition, its hash, the mode, the site kind) must agree, so a
// site cannot send the answer to another question. The error is a
// *SchemaError naming the field, and its position when the names differ.
func CheckSchema(got, want *arrow.Schema) error {
	bad := func(field, format string, args ...any) error {
		return &SchemaError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	for i, wf := range want.Fields() {
		if i >= got.NumFields() {
			return bad(wf.Name, "schema has %d fields, the plan %d: %q is missing", got.NumFields(), want.NumFields(), wf.Name)
		}
		gf := got.Field(i)
		switch {
		case gf.Name != wf.Name:
			return bad(wf.Name, "field %d is %q; the plan has %q", i, gf.Name, wf.Name)
		case !arrow.TypeEqual(gf.Type, wf.Type):
			return bad(wf.Name, "field %q is %s; the plan has %s", wf.Name, gf.Type, wf.Type)
		case gf.Nullable != wf.Nullable:
			return bad(wf.Name, "field %q has nullable=%v; the plan has %v", wf.Name, gf.Nullable, wf.Nullable)
		}
	}
	if got.NumFields() > want.NumFields() {
		name := got.Field(want.NumFields()).Name
		return bad(name, "unexpected field: %q is not in the plan, which has %d fields", name, want.NumFields())
	}
	// Every occurrence of a key is checked: Arrow metadata may repeat one.
	gm, wm := got.Metadata(), want.Metadata()
	for i, k := range gm.Keys() {
		j := wm.FindKey(k)
		if j < 0 {
			continue
		}
		if gm.Values()[i] != wm.Values()[j] {
			return bad("", "schema metadata %s is %q; this run's is %q", k, gm.Values()[i], wm.Values()[j])
		}
	}
	return nil
}
